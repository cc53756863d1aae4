"""Member tiers (VIP体系): evaluation when a customer's orders change (upgrades at once),
re-evaluation at a card's end (downgrade by at most one level), and the member.tier_changed /
member.card_expiring notices (activities/loyalty.py calls these)."""

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
    """Re-evaluate the tiers of customers whose orders just changed; returns the
    member.tier_changed events to log. (To be built.)"""
    return []


def daily(store: Store, definitions: Definitions, at: datetime, report: DailyReport) -> Iterator[Event]:
    """Re-evaluate the cards that ended by `at`; yield member.card_expiring notices due. Each batch of customers is one
    transaction that writes its changes and its events (queries.store_events) together. (To be built.)"""
    return iter(())
