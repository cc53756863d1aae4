"""The loyalty programme at work (core/loyalty.py, definitions/loyalty.yaml): what happens as events
are logged, and once a day.

- As events are logged (`note_logged`, called by the API in the transaction that logs them, after
  the read models): purchases earn points and refunds reverse them, bonus events earn theirs
  (activities/points.py); the customers whose orders changed are re-evaluated for their tier,
  upgrades at once (activities/tiers.py), and for their lifecycle stage (activities/lifecycle.py).
  History (`backfill`) earns nothing and moves no tier by itself.
- Once a day (`LoyaltyActivities.run_loyalty_daily`, started by the `journeys-loyalty:<queue>`
  schedule, journeys/loyalty.py): points past their expiry lapse, oldest first, and
  points.expiring notices go out; cards past their end are re-evaluated (downgrade by at most
  one level) and member.card_expiring notices go out; every customer's lifecycle stage is
  evaluated and each move written.

Each part returns the engine's own events (core/loyalty.py) it caused; they are written into the
event log by activities/engine_events.py (`write_engine_events`), in the same transaction as the ledger or tier change
that caused them. Their ids are made of what they are about, so a retry or a second delivery
writes nothing twice: each is logged exactly once, and the dispatcher routes it like any event.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import lifecycle, points, tiers
from activities.engine_events import write_engine_events
from core.records import Event
from definitions.loader import LOYALTY_FILE, Definitions, check_definitions
from store.db import Store


def note_logged(session: Session, events: list[Event], definitions: Definitions, now: datetime) -> list[Event]:
    """Apply the loyalty programme to events just logged (each once: those the log took now) and
    log the engine events that follows; returns those engine events."""
    caused = points.note_events(session, events, definitions, now)
    customers = {event.customer_id for event in events if event.type.startswith("order.")}
    caused += tiers.note_customers(session, customers, definitions, now)
    caused += lifecycle.note_customers(session, customers, definitions, now)
    write_engine_events(session, caused, definitions, now)
    return caused


class DailyRequest(BaseModel):
    """One day's run: the moment it is made at (the workflow's clock)."""

    at: datetime


class DailyReport(BaseModel):
    at: datetime
    expired_points: int = Field(0, description="Points that lapsed in this run.")
    events: dict[str, int] = Field(default_factory=dict, description="Engine events written, by type.")


def loyalty_schedule_id(task_queue: str) -> str:
    """The daily loyalty schedule of the deployment on `task_queue`."""
    return f"journeys-loyalty:{task_queue}"


class LoyaltyActivities:
    """`directory` is read at each run, so an edit of loyalty.yaml counts from the next day's run
    without a restart."""

    def __init__(self, store: Store, directory: Path):
        self.store = store
        self.directory = directory

    def definitions(self) -> Definitions:
        """The definitions as they are now; a loyalty.yaml with problems fails the run, naming them
        (another file's problems do not: the loyalty programme does not depend on it)."""
        loaded, problems = check_definitions(self.directory)
        mine = [problem for problem in problems if LOYALTY_FILE in problem or "segments" in problem]
        if mine:
            raise ApplicationError("loyalty.yaml cannot be read: " + "; ".join(mine), non_retryable=True)
        return loaded

    @activity.defn(name="run_loyalty_daily")
    def run_loyalty_daily(self, request: DailyRequest) -> DailyReport:
        """Safe to retry: each part works in batches of customers, one transaction each, and what
        a batch writes is keyed by its source (a lot's expiry, a card's end, a stage's move), so
        a batch done before a retry writes nothing again."""
        report = DailyReport(at=request.at)
        definitions = self.definitions()
        for part in (points.daily, tiers.daily, lifecycle.daily):
            for event in part(self.store, definitions, request.at, report):
                report.events[event.type] = report.events.get(event.type, 0) + 1
        return report
