"""Tracked short links (短链): the `{{ link(url) }}`s of a message, written with its ledger row.

A code is random and unguessable (definitions/render.py makes it); it redirects until it expires
with the retention period (JOURNEYS_RETENTION_DAYS; 0, keep everything: ten years).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from store.tables import ShortLinkRow

#: How long a link lives when the shop keeps everything (retention 0).
KEPT_DAYS = 3650


def link_lifetime(retention_days: int) -> timedelta:
    """How long a short link redirects: the retention period, or ten years when it is 0."""
    return timedelta(days=retention_days or KEPT_DAYS)


def record_links(
    session: Session, message_id: str, links: Iterable[tuple[str, str]], now: datetime, days: int
) -> list[ShortLinkRow]:
    """Add one row per `(code, url)` of message `message_id`, in the caller's transaction (the
    one writing the ledger row), expiring `days` after `now` (0: ten years)."""
    expires_at = now + link_lifetime(days)
    rows = [
        ShortLinkRow(code=code, message_id=message_id, url=url, created_at=now, expires_at=expires_at)
        for code, url in links
    ]
    session.add_all(rows)
    return rows
