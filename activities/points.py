"""Points (积分体系): earning on purchases and bonus events, reversal on refunds, expiry oldest first,
and the points.earned / points.expiring notices (activities/loyalty.py calls these)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.records import Event
from definitions.loader import Definitions
from store.db import Store

if TYPE_CHECKING:
    from activities.loyalty import DailyReport


def note_events(session: Session, events: list[Event], definitions: Definitions, now: datetime) -> list[Event]:
    """Earn for the purchases and bonus events among `events` (just logged), reverse for refunds;
    returns the points.earned events to log. (To be built.)"""
    return []


def daily(store: Store, definitions: Definitions, at: datetime, report: DailyReport) -> Iterator[Event]:
    """Lapse what expired by `at` (oldest first); yield the points.expiring notices due. Each batch of customers is one
    transaction that writes its changes and its events (queries.store_events) together. (To be built.)"""
    return iter(())
