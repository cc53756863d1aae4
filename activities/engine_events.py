"""Writing the engine's own events (core/loyalty.py) into the event log: one way for every part of
the loyalty programme, as events are logged and in the daily run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core.records import Event
from definitions.loader import Definitions
from store import queries


def write_engine_events(session: Session, events: list[Event], definitions: Definitions, now: datetime) -> set[str]:
    """Log the engine's own events; the ids written now. Those of a type some journey starts on,
    waits for or exits on are pending, for the dispatcher to route; the others are logged as
    already dispatched (with a note saying why), so a paid order's `points.earned` costs the
    dispatcher nothing while no journey uses it. Goals and reports read the log either way."""
    routed = definitions.routed_events
    pending = [event for event in events if event.type in routed]
    quiet = [event for event in events if event.type not in routed]
    written = queries.store_events(session, pending, now) if pending else set()
    if quiet:
        written |= queries.store_events(session, quiet, now, dispatched_at=now, note=NO_JOURNEY)
    return written


#: The event log's note on an engine event no journey had anything to do with when it was written.
NO_JOURNEY = "no journey starts on, waits for or exits on it"
