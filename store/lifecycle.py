"""Lifecycle stages as written and as reported (core/lifecycle.py, table `lifecycle_stages`):

- each customer's stage as last written to the log (`lifecycle.changed`), read and written by
  activities/lifecycle.py so a move is written once;
- the stages the daily evaluation reads, in SQL (store/segments.py `lifecycle_columns`, the same
  rule as core.lifecycle.stage), a batch of customers at a time;
- the monthly report (客户生命周期报表): the distribution of stages at a month's end and the
  migration matrix from its start to its end (正向迁移/负向迁移), each customer's stage at both
  moments computed from the `orders` read model, so a month before the engine ran is right too.

A move's direction (`direction`): `forward` toward buying more (a first purchase, a repeat
purchase, a lapsed customer buying again), `backward` toward lapsing (aging out of a window, a
refund taking a purchase back), `sideways` when the customer buys as often as before and only
their first purchase has left the active window (new_once -> old_once, new_repeat ->
old_repeat, or back when an old first purchase is refunded). Erased customers (PIPL/GDPR, an
`erasures` row not followed by a new customer.created) have no stage: they are evaluated and
reported no more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field
from sqlalchemy import exists, func, literal, select, update
from sqlalchemy.orm import Session

from core.lifecycle import STAGES, TITLES, LifecycleTable, stage
from core.rfm import purchases_from
from store.segments import lifecycle_columns
from store.tables import ErasureRow, EventRow, LifecycleStageRow, OrderRow, UTCDateTime

Direction = Literal["forward", "backward", "sideways"]

#: How much a stage buys: a move to a higher rank is forward, to a lower one backward; new_* and
#: old_* of the same frequency rank alike (the customer buys as often: a sideways move).
RANK = {
    "prospect": 0,
    "silent": 1,
    "sleeping": 2,
    "churned": 3,
    "new_once": 4,
    "old_once": 4,
    "new_repeat": 5,
    "old_repeat": 5,
}


def direction(before: str, after: str) -> Direction:
    """The direction of a move from `before` to `after` (two different stages)."""
    change = RANK[after] - RANK[before]
    return "forward" if change > 0 else "backward" if change < 0 else "sideways"


def _not_erased(column):
    """`column` (a customer id) is not erased, or came back with a new customer.created."""
    return ~exists().where(ErasureRow.customer_id == column, ErasureRow.recreated_at.is_(None))


# ---------------------------------------------------------------------------------------------
# The stored stages


def stored(session: Session, customer_ids: Iterable[str]) -> dict[str, LifecycleStageRow]:
    """The customers' stage rows (those who have one)."""
    ids = list(customer_ids)
    if not ids:
        return {}
    rows = session.scalars(select(LifecycleStageRow).where(LifecycleStageRow.customer_id.in_(ids)))
    return {row.customer_id: row for row in rows}


def write(session: Session, row: LifecycleStageRow | None, customer_id: str, stage_now: str, at: datetime) -> None:
    """Record the customer's stage at `at`: a new row, or a moved one (since `at`)."""
    if row is None:
        session.add(LifecycleStageRow(customer_id=customer_id, stage=stage_now, since=at, evaluated_at=at))
        return
    if row.stage != stage_now:
        row.stage, row.since = stage_now, at
    row.evaluated_at = at


def erased(session: Session, customer_ids: Iterable[str]) -> set[str]:
    """Those of the customers erased (and not created again since)."""
    ids = list(customer_ids)
    if not ids:
        return set()
    query = select(ErasureRow.customer_id).where(ErasureRow.customer_id.in_(ids), ErasureRow.recreated_at.is_(None))
    return set(session.scalars(query))


def stages_now_and_before(
    session: Session, customer_ids: Iterable[str], now: datetime, table: LifecycleTable
) -> dict[str, tuple[str, str]]:
    """Each customer's stage at `now` from the whole log, and at `now` from the log as it was
    before the events received at `now` (those just logged: store_events stamps them `now`):
    (before, after). One query over the customers' payments and refunds."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = list(
        session.execute(
            select(
                EventRow.customer_id,
                EventRow.type,
                EventRow.order_id,
                EventRow.occurred_at,
                EventRow.data,
                EventRow.received_at,
            ).where(EventRow.customer_id.in_(ids), EventRow.type.in_(("order.paid", "order.refunded")))
        )
    )
    by_customer: dict[str, list] = {customer_id: [] for customer_id in ids}
    for row in rows:
        by_customer[row.customer_id].append(row)
    found: dict[str, tuple[str, str]] = {}
    for customer_id, mine in by_customer.items():
        earlier = [row for row in mine if row.received_at < now]
        found[customer_id] = (stage(purchases_from(earlier), now, table), stage(purchases_from(mine), now, table))
    return found


# ---------------------------------------------------------------------------------------------
# The daily evaluation


def next_customers(session: Session, after: str | None, limit: int) -> list[str]:
    """The next `limit` customers (by id, after `after`) who have a paid order or a stored stage:
    those the daily evaluation reads (erased ones among them: `erased` tells). Each source is
    read in id order up to `limit` (an index scan that stops), then merged: the `limit` smallest
    of both are all there are up to the last of them."""
    paid = select(OrderRow.customer_id).where(OrderRow.paid_at.is_not(None)).distinct()
    written = select(LifecycleStageRow.customer_id)
    found: set[str] = set()
    for query, column in ((paid, OrderRow.customer_id), (written, LifecycleStageRow.customer_id)):
        if after is not None:
            query = query.where(column > after)
        found.update(session.scalars(query.order_by(column).limit(limit)))
    return sorted(found)[:limit]


def stages_at(session: Session, customer_ids: list[str], at: datetime, table: LifecycleTable) -> dict[str, str]:
    """The customers' stages at `at`, computed by the database (prospect without a purchase)."""
    lifecycle = lifecycle_columns(at, table)
    query = select(lifecycle.c.customer_id, lifecycle.c.stage).where(lifecycle.c.customer_id.in_(customer_ids))
    found = {customer_id: found for customer_id, found in session.execute(query)}
    return {customer_id: found.get(customer_id, "prospect") for customer_id in customer_ids}


def touch(session: Session, customer_ids: list[str], at: datetime) -> None:
    """Mark the customers' rows evaluated at `at` (one statement)."""
    if customer_ids:
        session.execute(
            update(LifecycleStageRow)
            .where(LifecycleStageRow.customer_id.in_(customer_ids))
            .values(evaluated_at=at)
            .execution_options(synchronize_session=False)
        )


# ---------------------------------------------------------------------------------------------
# The monthly report

_MONTH = re.compile(r"^\s*(\d{4})\s*-\s*(\d{1,2})\s*$")
#: The earliest month reported (the moment before it must be a time every database holds).
FIRST_YEAR = 1970


class StageCount(BaseModel):
    stage: str
    title: str
    start: int = Field(description="Customers in the stage as the month began.")
    end: int = Field(description="Customers in the stage at the month's end (now, for the current month).")


class Migration(BaseModel):
    source: str = Field(alias="from")
    to: str
    direction: Direction
    count: int

    model_config = {"populate_by_name": True}


class LifecycleReport(BaseModel):
    """生命周期分布与迁移: the stages at a month's start and end, and who moved between them."""

    month: str = Field(description="YYYY-MM, in the shop's time zone.")
    zone: str
    start: datetime = Field(description="The month's first moment (the stages 'at the start' are as of just before).")
    end: datetime = Field(description="The next month's first moment, or now for the current month.")
    customers: int = Field(description="Customers known by the end (any logged event), erased ones left out.")
    stages: list[StageCount]
    matrix: dict[str, dict[str, int]] = Field(
        description="matrix[from][to]: customers in `from` at the start and `to` at the end."
    )
    migrations: list[Migration] = Field(description="The matrix's cells off the diagonal that hold anyone.")
    forward: int = Field(description="正向迁移: customers who moved toward buying more.")
    backward: int = Field(description="负向迁移: customers who moved toward lapsing.")
    sideways: int = Field(description="Customers whose first purchase left the active window, buying as often.")
    unchanged: int


def month_bounds(month: str, zone: str, now: datetime) -> tuple[str, datetime, datetime]:
    """The month (YYYY-MM, full-width digits too) as (YYYY-MM, its first moment, the next month's
    first moment or `now` if sooner), in UTC. ValueError names the value at fault."""
    found = _MONTH.match(month or "")
    if found is None:
        raise ValueError(f"month {month!r} is not a month like 2026-11 (YYYY-MM)")
    year, number = int(found[1]), int(found[2])
    if not 1 <= number <= 12:
        raise ValueError(f"month {month!r}: {number} is not a month of the year (01 to 12)")
    if year < FIRST_YEAR:
        raise ValueError(f"month {month!r} is before {FIRST_YEAR}")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"the shop's time zone {zone!r} is not a time zone") from None
    start = datetime(year, number, 1, tzinfo=tz)
    if start > now:
        raise ValueError(f"month {month!r} has not begun yet")
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=tz)
    return f"{year:04d}-{number:02d}", start.astimezone(UTC), min(following.astimezone(UTC), now)


def _stage_column(lifecycle):
    return func.coalesce(lifecycle.c.stage, literal("prospect"))


def report(session: Session, month: str, zone: str, table: LifecycleTable, now: datetime) -> LifecycleReport:
    """The month's report: every customer known by its end (a customer known later is no one
    then; one arriving during the month was a prospect at its start). The stage at the start is
    as of the moment before the month begins; at the end, as of the moment before the next one
    begins. One query."""
    name, start, end = month_bounds(month, zone, now)
    before = timedelta(microseconds=1)
    at_start = lifecycle_columns(start - before, table).element.subquery("stage_start")
    at_end = lifecycle_columns(end - before, table).element.subquery("stage_end")
    known = (
        select(EventRow.customer_id)
        .where(EventRow.occurred_at < literal(end, UTCDateTime()), _not_erased(EventRow.customer_id))
        .distinct()
        .subquery("known")
    )
    first, last = _stage_column(at_start).label("first"), _stage_column(at_end).label("last")
    query = (
        select(first, last, func.count().label("n"))
        .select_from(known)
        .outerjoin(at_start, at_start.c.customer_id == known.c.customer_id)
        .outerjoin(at_end, at_end.c.customer_id == known.c.customer_id)
        .group_by(first, last)
    )
    matrix = {a: dict.fromkeys(STAGES, 0) for a in STAGES}
    for source, target, count in session.execute(query):
        matrix[source][target] += count
    migrations = [
        Migration(source=a, to=b, direction=direction(a, b), count=matrix[a][b])
        for a in STAGES
        for b in STAGES
        if a != b and matrix[a][b]
    ]
    total = {
        kind: sum(m.count for m in migrations if m.direction == kind) for kind in ("forward", "backward", "sideways")
    }
    stages = [
        StageCount(stage=s, title=TITLES[s], start=sum(matrix[s].values()), end=sum(row[s] for row in matrix.values()))
        for s in STAGES
    ]
    return LifecycleReport(
        month=name,
        zone=zone,
        start=start,
        end=end,
        customers=sum(count.end for count in stages),
        stages=stages,
        matrix=matrix,
        migrations=migrations,
        unchanged=sum(matrix[s][s] for s in STAGES),
        **total,
    )
