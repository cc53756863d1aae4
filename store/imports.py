"""Writing an import of an order export (core/order_exports.py reads it; triggers/imports.py runs
both): a batch of whole orders at a time, each batch in one transaction, and the `imports` jobs.

A batch is written the way the API writes history (`POST /events?backfill=true`), through the
one writer of the event log, `store_events`, so the `orders` and `reached` read models follow as
they do for any event; its events are `backfill`. What routing would still do with history is end
the instances that exit on it (triggers/router.py `plan`): the events of an order or customer
with an instance still open stay pending for the dispatcher to route; the others are written
already dispatched, with the router's note for history, since routing them would do nothing.

Customers: an export is older than what the shop's systems have sent since, so an import fills in
what a record lacks (no name, no phone, a trait it does not have) and never overwrites; a new
buyer gets a record. A customer erased on request stays erased: their orders are not imported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from core.order_exports import ParsedOrder
from core.records import Customer, Event
from store import queries
from store.portable import upsert_insert
from store.tables import CustomerRow, ErasureRow, ImportRow, InstanceRow

#: How many problems an import job keeps to show (all are counted).
MAX_KEPT_PROBLEMS = 1000


class ImportCounts(BaseModel):
    """What an import read and what it changed. Importing the same file again gives
    `events_new` 0, `customers_new` 0 and `customers_updated` 0."""

    rows: int = Field(default=0, description="Rows of data read (an item row counts).")
    orders: int = Field(default=0, description="Orders read whole and written (or already there).")
    events_new: int = Field(default=0, description="Order events written to the log now.")
    events_known: int = Field(default=0, description="Order events the log already held: unchanged.")
    left_for_exits: int = Field(
        default=0,
        description="Events left pending: an open journey instance of their order or customer may exit on them.",
    )
    customers_new: int = 0
    customers_updated: int = Field(
        default=0, description="Existing customers given a name, phone or trait they lacked."
    )
    customers_unchanged: int = 0
    erased: int = Field(default=0, description="Orders not imported: their customer was erased on request.")
    duplicates: int = Field(default=0, description="Rows that repeat a row already read: skipped.")
    skipped: int = Field(default=0, description="Rows skipped for a problem (listed).")
    masked_phones: int = Field(default=0, description="Masked phone numbers (138****8000): not stored.")


def open_instance_keys(session: Session) -> tuple[set[str], set[str]]:
    """The orders and customers with a journey instance not known to have ended: their history
    may still end it (one query, at the start of an import)."""
    rows = session.execute(select(InstanceRow.order_id, InstanceRow.customer_id).where(InstanceRow.ended_at.is_(None)))
    orders: set[str] = set()
    customers: set[str] = set()
    for order_id, customer_id in rows:
        customers.add(customer_id)
        if order_id:
            orders.add(order_id)
    return orders, customers


def write_orders(
    session: Session,
    orders: list[ParsedOrder],
    received_at: datetime,
    counts: ImportCounts,
    *,
    open_keys: tuple[set[str], set[str]],
    note: str,
    customers_seen: set[str],
) -> None:
    """Write a batch of whole orders (their buyers, then their events) in the caller's
    transaction, adding what it did to `counts`. `customers_seen`: the buyers counted already by
    this import (a buyer of many orders is counted once)."""
    erased = _erased(session, {order.customer.customer_id for order in orders})
    if erased:
        counts.erased += sum(order.customer.customer_id in erased for order in orders)
        orders = [order for order in orders if order.customer.customer_id not in erased]
    if not orders:
        return
    _write_customers(session, orders, received_at, counts, customers_seen)
    open_orders, open_customers = open_keys
    pending, settled = [], []
    for order in orders:
        steered = order.order_id in open_orders or order.customer.customer_id in open_customers
        (pending if steered else settled).extend(order.events)
    for events, dispatched in ((settled, received_at), (pending, None)):
        if not events:
            continue
        written = _log_events(session, events, received_at, dispatched, note if dispatched else None)
        counts.events_new += len(written)
        counts.events_known += len(events) - len(written)
        if dispatched is None:
            counts.left_for_exits += len(written)
    counts.orders += len(orders)


def _log_events(
    session: Session, events: list[Event], received_at: datetime, dispatched_at: datetime | None, note: str | None
) -> set[str]:
    """Log a batch of imported events as backfill, the ids written now. On PostgreSQL by COPY
    into a temporary table and one INSERT ... SELECT from it (a multi-row INSERT of thousands of
    events costs several times as much to build and parse), then the read models as
    `store_events` keeps them (`note_logged`); elsewhere by `store_events` itself."""
    if session.bind.dialect.name != "postgresql":
        return queries.store_events(
            session, events, received_at, backfill=True, dispatched_at=dispatched_at, note=note
        )  # fmt: skip
    received, dispatched = received_at.isoformat(), dispatched_at.isoformat() if dispatched_at else None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for e in events:
        data = json.dumps(e.data, ensure_ascii=False, separators=(",", ":"))
        writer.writerow((e.event_id, e.type, e.customer_id, e.order_id, e.occurred_at.isoformat(), data, received,
                         dispatched, 0, "true", note))  # fmt: skip
    buffer.seek(0)
    session.execute(text(_STAGING))
    cursor = session.connection().connection.cursor()
    try:
        cursor.copy_expert(f"COPY import_events ({_COLUMNS}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()
    written = set(session.scalars(text(_COPIED)))
    queries.note_logged(session, events, written)
    return written


_COLUMNS = (
    "event_id, type, customer_id, order_id, occurred_at, data, received_at, dispatched_at, attempts, backfill, note"
)
#: The staging table: one per connection, emptied at each commit.
_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS import_events "
    "(LIKE events INCLUDING DEFAULTS EXCLUDING INDEXES) ON COMMIT DELETE ROWS"
)
_COPIED = (
    f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM import_events "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


def _erased(session: Session, customer_ids: set[str]) -> set[str]:
    rows = session.scalars(
        select(ErasureRow.customer_id).where(
            ErasureRow.customer_id.in_(sorted(customer_ids)), ErasureRow.recreated_at.is_(None)
        )
    )
    return set(rows)


#: What an import may fill in on a customer's record: the fields, and the traits.
_FILLED = ("name", "phone")


def _write_customers(
    session: Session, orders: list[ParsedOrder], at: datetime, counts: ImportCounts, seen: set[str]
) -> None:
    """The batch's buyers: new ones inserted, existing ones given what they lack. Of a buyer's
    orders in the batch, the latest (by creation) that gives a field or trait gives it (an order
    whose phone was masked does not take away the number an earlier one gave)."""
    latest: dict[str, Customer] = {}
    for order in sorted(orders, key=lambda order: order.events[0].occurred_at):
        held = latest.get(order.customer.customer_id)
        latest[order.customer.customer_id] = order.customer if held is None else _merged(held, order.customer)
    ids = sorted(latest)
    table = CustomerRow.__table__
    existing = {
        row.customer_id: row
        for row in session.execute(
            select(table.c.customer_id, table.c.name, table.c.phone, table.c.traits).where(table.c.customer_id.in_(ids))
        )
    }
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for customer_id in ids:
        customer = latest[customer_id]
        row = existing.get(customer_id)
        first_time = customer_id not in seen
        seen.add(customer_id)
        if row is None:
            new.append({**customer.model_dump(exclude={"customer_id"}), "customer_id": customer_id, "updated_at": at})
            counts.customers_new += first_time
            continue
        filled = _filled(row, customer)
        if filled:
            changed.append({"b_id": customer_id, "updated_at": at, **filled})
            counts.customers_updated += first_time
        else:
            counts.customers_unchanged += first_time
    if new:  # RETURNING makes it one multi-row INSERT per thousand customers, not one per customer
        statement = upsert_insert(session, table).on_conflict_do_nothing(index_elements=[table.c.customer_id])
        list(session.scalars(statement.returning(table.c.customer_id), new))
    for columns, rows in _by_columns(changed):
        statement = update(table).where(table.c.customer_id == bindparam("b_id"))
        session.execute(statement.values({column: bindparam(column) for column in columns}), rows)


def _merged(earlier: Customer, later: Customer) -> Customer:
    """A buyer as two of their orders tell it: the later one's fields and traits, the earlier
    one's where the later gives none."""
    changes: dict[str, Any] = {column: getattr(earlier, column) for column in _FILLED if not getattr(later, column)}
    changes["traits"] = {**earlier.traits, **later.traits}
    return later.model_copy(update=changes)


def _filled(row, customer: Customer) -> dict[str, Any]:
    """What `customer` (from the export) adds to the stored `row`: the fields and traits it lacks."""
    filled: dict[str, Any] = {}
    for column in _FILLED:
        value = getattr(customer, column)
        if value and not getattr(row, column):
            filled[column] = value
    traits = dict(row.traits or {})
    added = {key: value for key, value in customer.traits.items() if key not in traits}
    if added:
        filled["traits"] = {**traits, **added}
    return filled


def _by_columns(rows: Iterable[dict[str, Any]]) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """Updates grouped by the columns they set, one executemany each."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        columns = tuple(sorted(k for k in row if k != "b_id"))
        groups.setdefault(columns, []).append(row)
    return list(groups.items())


# ---------------------------------------------------------------------------------------------
# Import jobs


def start_job(
    session: Session, import_id: str, file: str, format: str, dry_run: bool, bytes_total: int, at: datetime
) -> None:
    session.add(
        ImportRow(
            import_id=import_id, file=file[:300], format=format, dry_run=dry_run, status="running", started_at=at,
            updated_at=at, bytes_total=bytes_total, bytes_read=0, rows=0, counts={}, problems=[], problem_count=0,
        )
    )  # fmt: skip


def record_job(
    session: Session,
    import_id: str,
    at: datetime,
    *,
    bytes_read: int,
    counts: ImportCounts,
    problems: list[str],
    problem_count: int,
    status: str = "running",
    error: str | None = None,
) -> None:
    """The job's progress after a batch, or its end (`status` done or failed, with `error`)."""
    values: dict[str, Any] = {
        "updated_at": at,
        "bytes_read": bytes_read,
        "rows": counts.rows,
        "counts": counts.model_dump(),
        "problems": problems[:MAX_KEPT_PROBLEMS],
        "problem_count": problem_count,
        "status": status,
    }
    if status != "running":
        values |= {"finished_at": at, "error": error[:4000] if error else None}
    session.execute(update(ImportRow).where(ImportRow.import_id == import_id).values(values))


def get_job(session: Session, import_id: str) -> ImportRow | None:
    return session.get(ImportRow, import_id)
