"""Tracked short links (短链) after they are made: following one, and forgetting them.

The send activity writes a `ShortLinkRow` per `{{ link(url) }}` with the message's ledger row
(activities/journey.py); the API's `GET /l/{code}` (triggers/api/links.py) looks the code up here
and records each click as a `LinkClickRow`, moving the message to `clicked`. The effect report
and the SMS report count a message clicked when its status says so or it has a click
(`clicked_messages`): each message once, however often it was clicked.

Codes are random (`secrets.token_urlsafe`), so nothing about a message can be guessed from one;
a code that is not of that alphabet or too long is refused before the store is asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Subquery, delete, literal, select
from sqlalchemy.orm import Session

from core.vocabulary import Status
from store import queries
from store.tables import LinkClickRow, MessageRow, ShortLinkRow, UTCDateTime

#: What a code may be: token_urlsafe's alphabet, at most the column's 32 characters.
CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: How much of a user agent a click keeps (the column's size).
USER_AGENT_CHARS = 400


def well_formed(code: str) -> bool:
    """Whether `code` could be one of ours (anything else is a 404 without a query)."""
    return CODE.fullmatch(code) is not None


@dataclass(frozen=True)
class Click:
    """A click recorded: its row's id and the message the link was in."""

    id: int
    code: str
    url: str
    message_id: str
    customer_id: str
    journey: str
    step: str
    variant: str | None
    channel: str | None


def live_link(session: Session, code: str, now: datetime) -> ShortLinkRow | None:
    """The link of `code` while it works (before its `expires_at`), else None."""
    if not well_formed(code):
        return None
    link = session.get(ShortLinkRow, code)
    if link is None or link.expires_at <= now:
        return None
    return link


def record_click(session: Session, link: ShortLinkRow, at: datetime, user_agent: str | None) -> Click | None:
    """One click on `link`: a `LinkClickRow` (each click one row, its user agent cut to the
    column), and the message moved forward to `clicked` (queries.advance_status: never back, and
    a click after a late receipt changes nothing). None when the message is gone (the link
    outlived its ledger row): nothing is recorded."""
    message = session.get(MessageRow, link.message_id, with_for_update=True)
    if message is None:
        return None
    agent = user_agent[:USER_AGENT_CHARS] if user_agent else None
    row = LinkClickRow(code=link.code, message_id=link.message_id, at=at, user_agent=agent)
    session.add(row)
    session.flush()  # its id names the click's event
    queries.advance_status(message, Status.CLICKED, at)
    return Click(
        id=row.id,
        code=link.code,
        url=link.url,
        message_id=message.id,
        customer_id=message.customer_id,
        journey=message.journey,
        step=message.step,
        variant=message.variant,
        channel=message.channel,
    )


def clicked_messages(since: datetime) -> Subquery:
    """The messages with a click at or after `since`, each once: what the reports join (by hash,
    not a lookup per message) to count a message clicked even when a status written later hid
    it (a send in doubt settled as `sent` after its customer had clicked)."""
    return (
        select(LinkClickRow.message_id)
        .where(LinkClickRow.at >= literal(since, UTCDateTime()))
        .distinct()
        .subquery("clicked")
    )


def expire_links(session: Session, now: datetime, clicks_before: datetime, batch: int = 1000) -> dict[str, int]:
    """One batch of retention: links past their `expires_at` (they redirect no more) are
    deleted, and so are clicks older than `clicks_before` (the retention period: their user
    agents are personal data). A message keeps its `clicked` status, which the effect report
    reads. Returns the counts; call again while any reaches `batch`."""
    codes = list(session.scalars(select(ShortLinkRow.code).where(ShortLinkRow.expires_at <= now).limit(batch)))
    if codes:
        session.execute(delete(ShortLinkRow).where(ShortLinkRow.code.in_(codes)))
    click_ids = list(session.scalars(select(LinkClickRow.id).where(LinkClickRow.at < clicks_before).limit(batch)))
    if click_ids:
        session.execute(delete(LinkClickRow).where(LinkClickRow.id.in_(click_ids)))
    return {"links": len(codes), "link_clicks": len(click_ids)}
