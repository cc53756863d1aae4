"""Lifecycle moves (客户生命周期, core/lifecycle.py): each customer's stage is written to the log as
lifecycle.changed when it moves, on a purchase or a refund, and by the daily evaluation
(activities/loyalty.py calls these)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.records import Event
from definitions.loader import Definitions
from store.db import Store

if TYPE_CHECKING:
    from activities.loyalty import DailyReport


def note_customers(session: Session, customers: Iterable[str], definitions: Definitions, now: datetime) -> list[Event]:
    """The lifecycle.changed events of customers whose orders just changed. (To be built.)"""
    return []


def daily(store: Store, definitions: Definitions, at: datetime, report: DailyReport) -> Iterator[Event]:
    """Evaluate every customer's stage at `at`; yield each move. Each batch of customers is one transaction that
    writes its changes and its events (queries.store_events) together. (To be built.)"""
    return iter(())
