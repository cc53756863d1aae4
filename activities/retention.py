"""Retention: personal data older than JOURNEYS_RETENTION_DAYS leaves the store. The schedule
that runs it is registered by the worker (journeys.retention); what is removed is
store.queries.expire_personal_data."""

from __future__ import annotations

from temporalio import activity

from activities.payloads import RetentionReport, RetentionRequest
from store import queries
from store.db import Store


class RetentionActivities:
    def __init__(self, store: Store):
        self.store = store

    @activity.defn(name="expire_personal_data")
    def expire_personal_data(self, request: RetentionRequest) -> RetentionReport:
        """Batch after batch, each in its own transaction, until a batch finds less than a full
        one of anything; safe to retry (what is removed is not found again). Heartbeats the
        counts so far, so a worker that dies is noticed within the heartbeat timeout."""
        report = RetentionReport(before=request.before)
        while True:
            with self.store.transaction() as session:
                done = queries.expire_personal_data(session, request.before, request.batch)
            report.messages += done["messages"]
            report.provider_events += done["provider_events"]
            report.events += done["events"]
            activity.heartbeat(report.model_dump(mode="json"))
            if max(done.values()) < request.batch:
                return report
