"""The points ledger (积分日志, core/loyalty.py, table `points_ledger`): append-only entries, one per
source per customer; a balance is the sum of a customer's entries.

Entries are only ever added (`append`: INSERT .. ON CONFLICT DO NOTHING on (customer, source), so a
source offered twice, even by two writers at once, is one entry). What is left of each lot is
worked out from the entries in the order they were recorded (rules/points.py `allocate`, applied by
activities/points.py): this module reads and writes rows, and does no points arithmetic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, and_, case, cast, exists, func, literal, select
from sqlalchemy.orm import Session, aliased

from core.loyalty import ENTRY_KINDS
from store import queries
from store.portable import upsert_insert
from store.reached import lock_customers
from store.tables import PointsEntryRow

#: The prefix of an expiry's source; the lot's entry_id follows (`expire:42`).
EXPIRE_SOURCE = "expire:"


@dataclass(frozen=True)
class NewEntry:
    """An entry to append. `at`: when it counts (a payment's time, a request's); `expires_at`: when
    a positive entry (a lot) lapses, None for never or for a debit."""

    customer_id: str
    kind: str
    points: int
    reason: str
    source: str
    at: datetime
    expires_at: datetime | None = None
    event_id: str | None = None
    order_id: str | None = None


def append(session: Session, entries: Iterable[NewEntry], now: datetime) -> list[PointsEntryRow]:
    """Add the entries whose (customer, source) the ledger does not hold yet, in one statement;
    returns those added now (the others were there already, or came twice: nothing changed)."""
    rows = [
        {
            "customer_id": entry.customer_id,
            "kind": entry.kind,
            "points": entry.points,
            "reason": entry.reason,
            "source": entry.source,
            "event_id": entry.event_id,
            "order_id": entry.order_id,
            "at": entry.at,
            "recorded_at": now,
            "expires_at": entry.expires_at,
        }
        for entry in entries
    ]
    if not rows:
        return []
    for row in rows:
        if row["kind"] not in ENTRY_KINDS or not row["points"]:
            raise ValueError(f"a ledger entry needs a kind of {ENTRY_KINDS} and points other than 0: {row}")
    table = PointsEntryRow.__table__
    statement = upsert_insert(session, table).on_conflict_do_nothing(
        index_elements=[table.c.customer_id, table.c.source]
    )
    written = set(session.execute(statement.returning(table.c.entry_id), rows).scalars())
    if not written:
        return []
    added = session.scalars(
        select(PointsEntryRow).where(PointsEntryRow.entry_id.in_(written)).order_by(PointsEntryRow.entry_id)
    )
    return list(added)


def lock(session: Session, customer_ids: Iterable[str]) -> None:
    """Serialise the writers of these customers' entries until commit (PostgreSQL's advisory lock,
    the one the read models' writers take; SQLite transactions take the write lock at BEGIN), so
    a balance read and the debit it allows are one step."""
    lock_customers(session, customer_ids)


def balance(session: Session, customer_id: str) -> int:
    """The customer's points now: the sum of their entries (0 without any)."""
    total = session.scalar(select(func.sum(PointsEntryRow.points)).where(PointsEntryRow.customer_id == customer_id))
    return int(total or 0)


def balances(session: Session, customer_ids: Iterable[str]) -> dict[str, int]:
    """Each customer's points now (0 for one without entries), in one query."""
    ids = set(customer_ids)
    found = {customer_id: 0 for customer_id in ids}
    if ids:
        query = select(PointsEntryRow.customer_id, func.sum(PointsEntryRow.points)).where(
            PointsEntryRow.customer_id.in_(ids)
        )
        found |= {
            customer_id: int(total or 0)
            for customer_id, total in session.execute(query.group_by(PointsEntryRow.customer_id))
        }
    return found


def balance_through(session: Session, customer_id: str, entry_id: int) -> int:
    """The customer's balance as it was right after entry `entry_id` was recorded."""
    total = session.scalar(
        select(func.sum(PointsEntryRow.points)).where(
            PointsEntryRow.customer_id == customer_id, PointsEntryRow.entry_id <= entry_id
        )
    )
    return int(total or 0)


def entries(session: Session, customer_id: str) -> list[PointsEntryRow]:
    """Every entry of the customer, in the order recorded."""
    return entries_of_customers(session, [customer_id])[customer_id]


def entries_of_customers(session: Session, customer_ids: Iterable[str]) -> dict[str, list[PointsEntryRow]]:
    """Every entry of each of these customers, in the order recorded, in one query."""
    wanted = list(dict.fromkeys(customer_ids))
    found: dict[str, list[PointsEntryRow]] = {customer_id: [] for customer_id in wanted}
    if wanted:
        query = select(PointsEntryRow).where(PointsEntryRow.customer_id.in_(wanted)).order_by(PointsEntryRow.entry_id)
        for row in session.scalars(query):
            found[row.customer_id].append(row)
    return found


def find(session: Session, customer_id: str, source: str) -> PointsEntryRow | None:
    """The customer's entry of `source`, if the ledger holds it."""
    return session.scalars(
        select(PointsEntryRow).where(PointsEntryRow.customer_id == customer_id, PointsEntryRow.source == source)
    ).first()


def log(session: Session, customer_id: str, *, limit: int = 50, before: int | None = None) -> list[PointsEntryRow]:
    """The customer's entries, the latest recorded first, at most `limit`; `before` (an entry_id)
    pages on: the entries recorded before that one."""
    query = select(PointsEntryRow).where(PointsEntryRow.customer_id == customer_id)
    if before is not None:
        query = query.where(PointsEntryRow.entry_id < before)
    return list(session.scalars(query.order_by(PointsEntryRow.entry_id.desc()).limit(limit)))


def entries_of_order(
    session: Session, customer_id: str, order_id: str, kind: str | None = None
) -> list[PointsEntryRow]:
    """The customer's entries that name `order_id` (of one `kind`, if given), in the order recorded."""
    query = select(PointsEntryRow).where(PointsEntryRow.customer_id == customer_id, PointsEntryRow.order_id == order_id)
    if kind is not None:
        query = query.where(PointsEntryRow.kind == kind)
    return list(session.scalars(query.order_by(PointsEntryRow.entry_id)))


def known(session: Session, customer_id: str) -> bool:
    """Whether the store has heard of the customer (store/queries.py `known_customer`), or their
    points (an import may bring points before the customer's record)."""
    if queries.known_customer(session, customer_id):
        return True
    return (
        session.scalar(select(PointsEntryRow.entry_id).where(PointsEntryRow.customer_id == customer_id).limit(1))
        is not None
    )


def customers_due(session: Session, by: datetime, *, after: str | None = None, limit: int = 500) -> list[str]:
    """Customers, in id order after `after`, with points left to look at by `by`: a balance above
    zero and a lot lapsing at or before `by` that no expiry names yet. (A customer whose balance
    is zero or below has nothing left in any lot: debits take the oldest lots first.)"""
    lot = aliased(PointsEntryRow)
    expired = aliased(PointsEntryRow)
    expiry_source = literal(EXPIRE_SOURCE, String()) + cast(lot.entry_id, String())
    open_lot = (
        select(lot.customer_id)
        .where(
            lot.points > 0,
            lot.expires_at.is_not(None),
            lot.expires_at <= by,
            ~exists().where(and_(expired.customer_id == lot.customer_id, expired.source == expiry_source)),
        )
        .distinct()
    )
    if after is not None:
        open_lot = open_lot.where(lot.customer_id > after)
    candidates = open_lot.subquery()
    total = (
        select(func.sum(PointsEntryRow.points))
        .where(PointsEntryRow.customer_id == candidates.c.customer_id)
        .scalar_subquery()
    )
    query = select(candidates.c.customer_id).where(total > 0).order_by(candidates.c.customer_id).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Totals:
    """积分总览's sums: each kind's net points counted in a period (signed: redeemed is negative),
    and the ledger's sum now (what is outstanding)."""

    by_kind: dict[str, int]
    outstanding: int
    customers: int


def totals(session: Session, since: datetime | None, until: datetime | None) -> Totals:
    """Each kind's net points among the entries counting in [since, until) (either end open when
    None), and the whole ledger's sum and the number of customers holding more than 0 now."""
    query = select(PointsEntryRow.kind, func.sum(PointsEntryRow.points)).group_by(PointsEntryRow.kind)
    if since is not None:
        query = query.where(PointsEntryRow.at >= since)
    if until is not None:
        query = query.where(PointsEntryRow.at < until)
    by_kind = {kind: 0 for kind in ENTRY_KINDS} | {kind: int(total or 0) for kind, total in session.execute(query)}
    balances = select(func.sum(PointsEntryRow.points).label("held")).group_by(PointsEntryRow.customer_id).subquery()
    outstanding, holders = session.execute(
        select(func.sum(balances.c.held), func.sum(case((balances.c.held > 0, 1), else_=0)))
    ).one()
    return Totals(by_kind=by_kind, outstanding=int(outstanding or 0), customers=int(holders or 0))
