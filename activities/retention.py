"""Retention: personal data older than JOURNEYS_RETENTION_DAYS leaves the store. The schedule
that runs it is registered by the worker (journeys.retention); what is removed is
store.queries.expire_personal_data, and store.clicks.expire_links: short links past their
`expires_at` (made for the same period, so they redirect no more) and clicks older than the
period (their user agents), and store.replies.expire_replies: the SMS replies received before it
and the text `sms.replied` events carry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio import activity

from activities.payloads import RetentionReport, RetentionRequest
from core.outbox import expire_lines
from store import clicks, queries
from store import replies as reply_store
from store.db import Store
from store.tables import MessageRow

log = logging.getLogger("journeys.retention")


class RetentionActivities:
    def __init__(self, store: Store, outbox: Path | None = None):
        self.store = store
        self.outbox = outbox  # the local outbox file (JOURNEYS_OUTBOX): its lines hold addresses and bodies

    @activity.defn(name="expire_personal_data")
    def expire_personal_data(self, request: RetentionRequest) -> RetentionReport:
        """Batch after batch, each in its own transaction, until a batch finds less than a full
        one of anything; safe to retry (what is removed is not found again). Heartbeats the
        counts so far, so a worker that dies is noticed within the heartbeat timeout. Then, on
        SQLite, the write-ahead log is emptied of the replaced pages, and the outbox file loses
        its lines written before the same time."""
        report = RetentionReport(before=request.before)
        while True:
            with self.store.transaction() as session:
                done = queries.expire_personal_data(session, request.before, request.batch)
            report.messages += done["messages"]
            report.provider_events += done["provider_events"]
            report.events += done["events"]
            activity.heartbeat(report.model_dump(mode="json"))
            if max(done.values()) < request.batch:
                break
        now = datetime.now(UTC)
        before = request.before if request.before.tzinfo else request.before.replace(tzinfo=UTC)
        links = self._until_done(lambda session: clicks.expire_links(session, now, before, request.batch), request)
        replies = self._until_done(lambda session: reply_store.expire_replies(session, before, request.batch), request)
        report.links, report.link_clicks = links["links"], links["link_clicks"]
        report.sms_replies, report.reply_events = replies["sms_replies"], replies["reply_events"]
        self.store.checkpoint()
        before = request.before if request.before.tzinfo else request.before.replace(tzinfo=UTC)
        report.outbox_lines = expire_lines(self.outbox, before, self._sent_at)
        return report

    def _until_done(self, work: Callable[[Session], dict[str, int]], request: RetentionRequest) -> dict[str, int]:
        """`work` (one batch of deletions, its counts) in a transaction each, until a batch finds
        less than a full one of anything; the counts deleted in all."""
        deleted: dict[str, int] = {}
        while True:
            with self.store.transaction() as session:
                done = work(session)
            for name, count in done.items():
                deleted[name] = deleted.get(name, 0) + count
            activity.heartbeat(deleted)
            if max(done.values()) < request.batch:
                return deleted

    def _sent_at(self, message_ids: list[str]) -> dict[str, datetime]:
        """When the ledger recorded these messages (for outbox lines written before they were dated)."""
        found: dict[str, datetime] = {}
        for start in range(0, len(message_ids), 500):
            chunk = message_ids[start : start + 500]
            with self.store.transaction() as session:
                rows = session.execute(select(MessageRow.id, MessageRow.at).where(MessageRow.id.in_(chunk)))
                found.update({message_id: at.replace(tzinfo=at.tzinfo or UTC) for message_id, at in rows})
        return found
