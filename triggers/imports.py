"""Import a platform's order export as history: `journeys import orders` and `POST /imports` run
`run_import`, which reads the file (core/order_exports.py) and writes its orders in batches
(store/imports.py).

History means backfill, the one meaning the API's `POST /events?backfill=true` has: the events
update orders, customers, RFM and traits, and start and steer no journey (an instance that exits
on one still exits: those few events are left to the dispatcher, the router's `plan` for history).
Nothing is sent.

**Batches, not one transaction.** Each batch of whole orders (`BATCH_ORDERS`) is one transaction:
an order is never half-written, its events, its read-model rows and its buyer go in together. A
million-row file in one transaction would hold the read models' per-customer locks
(store/reached.py `lock_customers`, PostgreSQL advisory locks: one per customer, more than the
server's lock table holds) and, on SQLite, the only write lock for minutes, stopping the shop's
live events. An import cut short (the database gone, the process killed) says where it stopped;
running it again completes it and doubles nothing, because every imported event has a fixed id
(`import:ORDER:TYPE`) that the log takes once, and a customer is only filled in. A dry run writes
each batch the same way and rolls it back, so its counts are what the import would do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.order_exports import ExportReader, ImportProblem, ParsedOrder, ReadTally
from store import imports
from store.db import Store
from store.imports import ImportCounts
from triggers.router import note_of

#: Orders written per transaction.
BATCH_ORDERS = 1000
#: Problems kept in memory to list (all are counted).
MAX_LISTED_PROBLEMS = 10_000


@dataclass
class ImportState:
    """How far an import has got, for a progress bar or a job's row."""

    tally: ReadTally
    counts: ImportCounts
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Set when the import stopped before the end of the file: why, and where.
    error: str | None = None
    seconds: float = 0.0

    @property
    def fraction(self) -> float:
        """How far through the file (by bytes read)."""
        return min(1.0, self.tally.bytes_read / self.tally.bytes_total) if self.tally.bytes_total else 1.0

    def rows_per_second(self) -> float:
        return self.tally.rows / max(time.monotonic() - self.started, 1e-9)

    def seconds_left(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.fraction <= 0 or elapsed <= 0:
            return None
        return elapsed * (1 - self.fraction) / self.fraction


class _DryRun(Exception):
    """Raised inside a batch's transaction to roll it back."""


class ImportStopped(RuntimeError):
    """The import stopped before the end of the file; what was written before stays (whole
    orders) and running it again completes it."""


def run_import(
    store: Store,
    reader: ExportReader,
    *,
    dry_run: bool = False,
    on_progress: Callable[[ImportState], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    batch_orders: int = BATCH_ORDERS,
) -> ImportState:
    """Read `reader`'s file and write its orders as history; `on_progress` is called after each
    batch. Raises core.order_exports.ExportError (nothing read: the file's header is wrong) and
    ImportStopped (the store failed midway, `state.error` says at which line)."""
    state = ImportState(tally=reader.tally, counts=ImportCounts())
    note = note_of([], backfill=True)
    with store.transaction() as session:
        open_keys = imports.open_instance_keys(session)
    customers_seen: set[str] = set()
    batch: list[ParsedOrder] = []

    def flush() -> None:
        if not batch:
            return
        try:
            with store.transaction() as session:
                imports.write_orders(
                    session, batch, clock(), state.counts, open_keys=open_keys, note=note,
                    customers_seen=customers_seen,
                )  # fmt: skip
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        except Exception as err:
            state.error = (
                f"{reader.name}:{batch[0].line}: stopped: {type(err).__name__}: {str(err).splitlines()[0][:300]}. "
                f"The orders before line {batch[0].line} are imported; run the same import again to complete it "
                "(nothing is imported twice)"
            )
            raise ImportStopped(state.error) from err
        batch.clear()
        if on_progress is not None:
            on_progress(state)

    for item in reader.read():
        if isinstance(item, ImportProblem):
            state.problem_count += 1
            state.counts.skipped += 1
            if len(state.problems) < MAX_LISTED_PROBLEMS:
                state.problems.append(reader.problem_text(item))
            continue
        batch.append(item)
        if len(batch) >= batch_orders:
            _tally(state)
            flush()
    _tally(state)
    flush()
    state.seconds = time.monotonic() - state.started
    if on_progress is not None:
        on_progress(state)
    return state


def _tally(state: ImportState) -> None:
    """The reader's counts into the import's."""
    state.counts.rows = state.tally.rows
    state.counts.duplicates = state.tally.duplicates
    state.counts.masked_phones = state.tally.masked_phones


def summary(state: ImportState, *, dry_run: bool) -> list[str]:
    """The import's result in a few lines, for the command."""
    c = state.counts
    verb = "would write" if dry_run else "wrote"
    rate = c.rows / state.seconds if state.seconds else 0.0
    lines = [
        f"{'dry run: ' if dry_run else ''}{c.rows:,} rows read ({state.tally.encoding}) in {state.seconds:.1f} s, "
        f"{rate:,.0f} rows/s: {c.orders:,} orders, {c.duplicates:,} duplicate rows, {c.skipped:,} rows skipped",
        f"events: {verb} {c.events_new:,} new, {c.events_known:,} already in the log"
        + (
            f", {c.left_for_exits:,} left for the dispatcher (an open journey may exit on them)"
            if c.left_for_exits
            else ""
        ),
        f"customers: {c.customers_new:,} new, {c.customers_updated:,} filled in, {c.customers_unchanged:,} unchanged"
        + (f"; {c.masked_phones:,} masked phone numbers not stored" if c.masked_phones else ""),
        "as history (backfill): no journey started, nothing sent",
    ]
    if c.erased:
        lines.append(f"{c.erased:,} orders of erased customers not imported")
    return lines
