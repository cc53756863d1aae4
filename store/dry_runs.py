"""Dry-run jobs (docs/publishing.md, docs/dry-runs.md): a set of files queued to be simulated
against the shop's own events beside what runs now, claimed by the process that runs it, its
progress written as it goes, and its result or failure at the end; the console polls the row.

A job is `queued`, then `running` (its process's pid and when it started), then `done` (with the
result) or `failed` (with a message). A process can die without saying so (killed, out of
memory, the machine restarted): a job is read through `get`, which fails a running job whose
process is gone, so nobody waits on a job that will never end.

At most MAX_RUNNING jobs run at once: `claim_next` takes the oldest queued job only while fewer
run, and a process that finishes a job claims the next (journeys/dry_run.py).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.records import Customer, Event
from store import definition_changes
from store.portable import in_slices
from store.queries import _event_of, customer_of
from store.tables import CustomerRow, DryRunRow, ErasureRow, EventRow

#: Simulations are CPU-bound; a third would only slow the other two (and the engine).
MAX_RUNNING = 2
#: A job claimed this recently may not have its process's pid yet (the API claims, then spawns).
GRACE = timedelta(seconds=10)
#: How far before a dry run's window its customers' earlier events are read (RFM looks back a year).
HISTORY_DAYS = 400
STATES = ("queued", "running", "done", "failed")


def queue(
    session: Session, files: dict[str, str], days: int, requested_by: str, change_id: str | None, now: datetime
) -> DryRunRow:
    """A new job, `queued`, with the files as they are now (a change edited later keeps its dry run)."""
    row = DryRunRow(
        id=uuid.uuid4().hex,
        change_id=change_id,
        files=dict(files),
        days=days,
        state="queued",
        progress=0.0,
        requested_by=requested_by,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def running_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(DryRunRow).where(DryRunRow.state == "running")) or 0


def claim(session: Session, job_id: str, now: datetime, pid: int | None) -> bool:
    """Mark a queued job running (by `pid`, or no pid yet when the caller spawns it next): True
    when this caller took it, False when it was not queued (another process took it, or it ended)."""
    result = session.execute(
        update(DryRunRow)
        .where(DryRunRow.id == job_id, DryRunRow.state == "queued")
        .values(state="running", started_at=now, pid=pid, progress=0.0, message=None)
    )
    return result.rowcount == 1


def claim_next(session: Session, now: datetime, pid: int | None, limit: int = MAX_RUNNING) -> str | None:
    """The oldest queued job, now running, if fewer than `limit` run; else None."""
    fail_abandoned(session, now)
    if running_count(session) >= limit:
        return None
    candidates = session.scalars(
        select(DryRunRow.id).where(DryRunRow.state == "queued").order_by(DryRunRow.created_at, DryRunRow.id).limit(5)
    )
    for job_id in list(candidates):
        if claim(session, job_id, now, pid):
            return job_id
    return None


def set_pid(session: Session, job_id: str, pid: int) -> None:
    session.execute(update(DryRunRow).where(DryRunRow.id == job_id).values(pid=pid))


def set_progress(session: Session, job_id: str, progress: float) -> None:
    """Progress 0..1 of a running job (never back, never past 1)."""
    value = min(max(progress, 0.0), 1.0)
    session.execute(
        update(DryRunRow)
        .where(DryRunRow.id == job_id, DryRunRow.state == "running", DryRunRow.progress < value)
        .values(progress=value)
    )


def finish(session: Session, job_id: str, result: dict[str, Any], now: datetime) -> None:
    """A running job is done with `result`. Only a running one: a job already failed (its process
    judged gone, fail_abandoned) stays failed, whatever a late process still writes."""
    session.execute(
        update(DryRunRow)
        .where(DryRunRow.id == job_id, DryRunRow.state == "running")
        .values(state="done", progress=1.0, result=result, finished_at=now, message=None)
    )


def fail(session: Session, job_id: str, message: str, now: datetime) -> None:
    session.execute(
        update(DryRunRow)
        .where(DryRunRow.id == job_id, DryRunRow.state.in_(("queued", "running")))
        .values(state="failed", message=message, finished_at=now)
    )


def audit(session: Session, row: DryRunRow, files_hash: str, now: datetime) -> None:
    """The change's audit row for a dry run that ended (docs/publishing.md `GET /audit`): who asked,
    the hash of the files it ran, and its figures (the diff, per journey) or why it failed. A dry
    run of files that are no change's is in no audit."""
    if row.change_id is None:
        return
    figures = None
    if row.result is not None:
        figures = {key: row.result[key] for key in ("window", "events", "customers", "diff")} | {"dry_run": row.id}
    definition_changes.record(
        session, "dry_run", row.requested_by, row.change_id, files_hash, now, comment=row.message, figures=figures
    )


def get(session: Session, job_id: str, now: datetime | None = None) -> DryRunRow | None:
    """The job, a running one whose process is gone failed first (`process_gone`)."""
    row = session.get(DryRunRow, job_id)
    if row is not None and _abandoned(row, now or datetime.now(UTC)):
        fail(session, row.id, _gone_message(row), now or datetime.now(UTC))
        session.refresh(row)
    return row


def of_change(session: Session, change_id: str) -> list[DryRunRow]:
    """A change's dry runs, newest first (its page lists them)."""
    rows = session.scalars(
        select(DryRunRow).where(DryRunRow.change_id == change_id).order_by(DryRunRow.created_at.desc())
    )
    return list(rows)


def fail_abandoned(session: Session, now: datetime) -> list[str]:
    """Fail every running job whose process is gone; their ids."""
    gone = [row for row in session.scalars(select(DryRunRow).where(DryRunRow.state == "running"))]
    failed = []
    for row in gone:
        if _abandoned(row, now):
            fail(session, row.id, _gone_message(row), now)
            failed.append(row.id)
    return failed


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, if not ours
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill said it exists
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _abandoned(row: DryRunRow, now: datetime) -> bool:
    if row.state != "running" or row.started_at is None or now - row.started_at < GRACE:
        return False
    return row.pid is None or not process_alive(row.pid)


def _gone_message(row: DryRunRow) -> str:
    who = f"its process (pid {row.pid})" if row.pid is not None else "no process"
    return (
        f"the dry run stopped: {who} is no longer running (killed, out of memory, or the machine "
        "restarted); its log is in the data directory's dry-runs folder. Start it again."
    )


def window(
    session: Session, start: datetime, end: datetime, every_customer: bool = False, history_days: int = HISTORY_DAYS
) -> tuple[list[Customer], list[Event], list[Event]]:
    """What a dry run plays: the events of [start, end] in time order, as the shop sent them
    (history imported as backfill left out: it started nothing when it came), the records of
    their customers as they are now (every customer with `every_customer`: a broadcast's segment
    decides whom it reaches), and those customers' events of the `history_days` before `start`
    (imported ones too), which the simulation writes as history: RFM, lifecycle stages and
    past-purchase segments read earlier orders. A customer erased on request is in none."""
    erased = set(session.scalars(select(ErasureRow.customer_id).where(ErasureRow.recreated_at.is_(None))))
    rows = session.scalars(
        select(EventRow)
        .where(EventRow.occurred_at >= start, EventRow.occurred_at <= end, EventRow.backfill.is_(False))
        .order_by(EventRow.occurred_at, EventRow.event_id)
    )
    events = [_event_of(row) for row in rows if row.customer_id not in erased]
    query = select(CustomerRow).order_by(CustomerRow.customer_id)
    if not every_customer:
        query = query.where(CustomerRow.customer_id.in_({event.customer_id for event in events}))
    customers = [customer_of(row) for row in session.scalars(query) if row.customer_id not in erased]
    ids = sorted(customer.customer_id for customer in customers)
    history: list[Event] = []
    for chunk in in_slices(ids):
        history += [
            _event_of(row)
            for row in session.scalars(
                select(EventRow).where(
                    EventRow.customer_id.in_(chunk),
                    EventRow.occurred_at >= start - timedelta(days=history_days),
                    EventRow.occurred_at < start,
                )
            )
        ]
    history.sort(key=lambda event: (event.occurred_at, event.event_id))
    return customers, events, history
