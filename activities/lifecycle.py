"""Lifecycle moves (客户生命周期, core/lifecycle.py): each customer's stage is written to the log as
lifecycle.changed when it moves, on a purchase or a refund, and by the daily evaluation
(activities/loyalty.py calls these).

`lifecycle_stages` holds each customer's stage as last written (store/lifecycle.py); a move is a
stage that differs from it. The event's id is made of the move and its moment
(`lifecycle.changed:<customer>:<from>><to>@<moment>`), and the row changes in the transaction
that logs the event, so a move is written exactly once: a retried request or daily run finds the
row already moved.

- On a purchase or a refund (`note_customers`, in the API's transaction): the stage at `now`
  from the log. A customer without a row is compared with their stage just before this change
  (the log without the events received now), so a first purchase writes prospect -> new_once and
  a purchase of a long-standing customer that changes nothing writes nothing (only the row).
- Daily (`daily`): the stage at `at`, computed in SQL, of every customer with a paid order or a
  row, in batches of one transaction each. A customer without a row gets one silently: the first
  daily run on a shop with history writes each customer's stage as it is, and no move from
  `prospect` (journeys would otherwise start for every customer at once). A row evaluated after
  `at` (a purchase noted while a delayed run was going) is left alone: it knows more.

Erased customers are not evaluated (store/lifecycle.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from activities.engine_events import write_engine_events
from core.loyalty import engine_event
from core.records import Event
from definitions.loader import Definitions
from store import lifecycle as stages
from store import reached
from store.db import Store

if TYPE_CHECKING:
    from activities.loyalty import DailyReport

#: Customers evaluated per transaction by the daily run.
BATCH = 500


def moved(customer_id: str, before: str, after: str, at: datetime) -> Event:
    """The lifecycle.changed event of a move, its id made of the move and its moment."""
    data = {"from": before, "to": after, "direction": stages.direction(before, after)}
    return engine_event("lifecycle.changed", customer_id, f"{before}>{after}@{at.isoformat()}", at, data)


def note_customers(session: Session, customers: Iterable[str], definitions: Definitions, now: datetime) -> list[Event]:
    """The lifecycle.changed events of customers whose orders just changed (their rows written)."""
    ids = set(customers)
    ids -= stages.erased(session, ids)
    if not ids:
        return []
    table = definitions.rfm.lifecycle
    rows = stages.stored(session, ids)
    events = []
    for customer_id, (before, after) in sorted(stages.stages_now_and_before(session, ids, now, table).items()):
        row = rows.get(customer_id)
        written = row.stage if row is not None else before
        if after != written:
            events.append(moved(customer_id, written, after, now))
        if row is not None or after != "prospect":  # a prospect without a row needs none
            stages.write(session, row, customer_id, after, now)
    return events


def daily(store: Store, definitions: Definitions, at: datetime, report: DailyReport) -> Iterator[Event]:
    """Evaluate every customer's stage at `at`; yield each move. Each batch of customers is one
    transaction that writes its changes and its events (queries.store_events) together."""
    table = definitions.rfm.lifecycle
    after: str | None = None
    while True:
        with store.transaction() as session:
            scanned = stages.next_customers(session, after, BATCH)
            if not scanned:
                return
            gone = stages.erased(session, scanned)
            ids = [customer_id for customer_id in scanned if customer_id not in gone]
            reached.lock_customers(session, ids)  # the API's note_customers writes these rows too
            now = stages.stages_at(session, ids, at, table)
            rows = stages.stored(session, ids)
            events, unchanged = [], []
            for customer_id in ids:
                row = rows.get(customer_id)
                if row is not None and row.evaluated_at > at:
                    continue  # evaluated later than this run's moment: it knows more
                if row is not None and row.stage != now[customer_id]:
                    events.append(moved(customer_id, row.stage, now[customer_id], at))
                if row is None or row.stage != now[customer_id]:
                    stages.write(session, row, customer_id, now[customer_id], at)
                else:
                    unchanged.append(customer_id)
            stages.touch(session, unchanged, at)
            written = write_engine_events(session, events, definitions, at)
        after = scanned[-1]
        yield from (event for event in events if event.event_id in written)
