"""Member tiers (core/loyalty.py, tables `member_tiers` and `tier_changes`): each customer's tier
with its card's validity, the change log (变更日志), and what the tiers are measured on.

- `window_measures`: per customer, as of a moment, the purchases held then and first paid in the
  window (core/amounts.py's one rule on the `orders` read model: `held_sql` and the window's
  start, as RFM's year and `bought:` segments read it), their amount (store/orders.py `amount`),
  their items (the `quantity` of the order's latest `items`, as store/products.py reads an order's
  items: core/products.py `quantity_of`) and the points earned in it (ledger entries of kind
  earn and reverse);
- `set_tier` / `remove_tier` and `log_change` (once per source: a retry writes nothing twice);
- the daily run's pages: cards ended by a moment, cards near their end, customers without a tier
  who may qualify;
- the report's reads: the distribution at a moment (from the change log) and a period's moves.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, select, union
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from core.amounts import held_sql
from core.products import quantity_of
from store.orders import amount
from store.portable import in_slices, upsert_insert
from store.tables import CustomerRow, EventRow, MemberTierRow, OrderRow, PointsEntryRow, TierChangeRow, UTCDateTime

#: The ledger's kinds that count as points earned in a window (a reversal takes its earning back).
EARNED_KINDS = ("earn", "reverse")


def _at(value: datetime):
    return literal(value, UTCDateTime())


def current(session: Session, customer_id: str) -> MemberTierRow | None:
    """The customer's tier row, or None for a customer without a tier."""
    return session.get(MemberTierRow, customer_id)


def current_of(session: Session, customer_ids: Collection[str]) -> dict[str, MemberTierRow]:
    """The tier rows of these customers (those who hold one)."""
    if not customer_ids:
        return {}
    rows = session.scalars(select(MemberTierRow).where(MemberTierRow.customer_id.in_(sorted(customer_ids))))
    return {row.customer_id: row for row in rows}


@dataclass
class WindowMeasures:
    """A customer's window (rules.tiers.Measures is built from it)."""

    orders: int = 0
    spend: float = 0.0
    items: int = 0
    points: int = 0


def _held_in_window(at: datetime, window_days: int):
    return and_(
        held_sql(OrderRow.paid_at, OrderRow.refunded_at, at),
        OrderRow.paid_at > _at(at - timedelta(days=window_days)),
    )


def window_measures(
    session: Session, customer_ids: Collection[str], at: datetime, window_days: int
) -> dict[str, WindowMeasures]:
    """Each customer's measures as of `at` over the `window_days` before it (every customer asked
    for is in the answer, with zeros when nothing counts)."""
    found = {customer: WindowMeasures() for customer in customer_ids}
    if not found:
        return found
    customers = sorted(found)
    window = _held_in_window(at, window_days)
    orders: dict[str, str] = {}
    for order_id, customer_id, spent in session.execute(
        select(OrderRow.order_id, OrderRow.customer_id, amount()).where(OrderRow.customer_id.in_(customers), window)
    ):
        measures = found[customer_id]
        measures.orders += 1
        measures.spend += float(spent or 0.0)
        orders[order_id] = customer_id
    # Items: the order's latest `items` among its creation and payment events (as the order context merges them).
    latest: dict[str, tuple[datetime, object]] = {}
    ids = sorted(orders)
    for chunk in in_slices(ids):
        rows = session.execute(
            select(EventRow.order_id, EventRow.customer_id, EventRow.occurred_at, EventRow.data).where(
                EventRow.order_id.in_(chunk),
                EventRow.type.in_(("order.created", "order.paid")),
            )
        )
        for order_id, customer_id, occurred_at, data in rows:
            items = data.get("items") if isinstance(data, dict) else None
            if orders.get(order_id) != customer_id or not isinstance(items, list):
                continue
            if order_id not in latest or occurred_at >= latest[order_id][0]:
                latest[order_id] = (occurred_at, items)
    for order_id, (_, items) in latest.items():
        found[orders[order_id]].items += sum(quantity_of(item) for item in items if isinstance(item, dict))  # type: ignore[union-attr]
    earned = session.execute(
        select(PointsEntryRow.customer_id, func.sum(PointsEntryRow.points))
        .where(
            PointsEntryRow.customer_id.in_(customers),
            PointsEntryRow.kind.in_(EARNED_KINDS),
            PointsEntryRow.at > _at(at - timedelta(days=window_days)),
            PointsEntryRow.at <= _at(at),
        )
        .group_by(PointsEntryRow.customer_id)
    )
    for customer_id, points in earned:
        found[customer_id].points = max(0, int(points or 0))
    return found


def _forget(session: Session, customer_id: str) -> None:
    """Drop the session's copy of the customer's row (the statements above bypass it), so the next
    read sees what was written."""
    cached = session.identity_map.get(identity_key(MemberTierRow, customer_id))
    if cached is not None:
        session.expire(cached)


def set_tier(
    session: Session,
    customer_id: str,
    tier: str,
    *,
    since: datetime,
    until: datetime,
    overridden: bool,
    now: datetime,
) -> None:
    """Hold `tier` from `since` with a card valid until `until`."""
    table = MemberTierRow.__table__
    row = {"customer_id": customer_id, "tier": tier, "since": since, "until": until, "overridden": overridden}
    statement = upsert_insert(session, table).values(**row, updated_at=now)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.customer_id],
            set_={**{k: statement.excluded[k] for k in row if k != "customer_id"}, "updated_at": now},
        )
    )
    _forget(session, customer_id)


def remove_tier(session: Session, customer_id: str) -> None:
    """The customer holds no tier any more."""
    session.execute(delete(MemberTierRow).where(MemberTierRow.customer_id == customer_id))
    _forget(session, customer_id)


def log_change(session: Session, change: dict[str, Any]) -> bool:
    """Add a change to the log (`customer_id`, `from_tier`, `to_tier`, `direction`, `reason`,
    `by`, `source`, `at`), once per (customer, source); whether it was added now."""
    table = TierChangeRow.__table__
    statement = upsert_insert(session, table).values(**{**change, "source": change["source"][:300]})
    written = session.execute(
        statement.on_conflict_do_nothing(index_elements=[table.c.customer_id, table.c.source]).returning(
            table.c.change_id
        )
    )
    return written.first() is not None


def changes(session: Session, customer_id: str, limit: int = 100) -> list[TierChangeRow]:
    """The customer's change log, newest first."""
    query = (
        select(TierChangeRow)
        .where(TierChangeRow.customer_id == customer_id)
        .order_by(TierChangeRow.at.desc(), TierChangeRow.change_id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


# ---------------------------------------------------------------------------------------------
# The daily run's pages (keyset by customer id: a page costs the same wherever it is)


def _page(query, after: str | None, limit: int):
    if after is not None:
        query = query.where(MemberTierRow.customer_id > after)
    return query.order_by(MemberTierRow.customer_id).limit(limit)


def cards_ended(session: Session, at: datetime, *, after: str | None = None, limit: int = 500) -> list[MemberTierRow]:
    """Tiers whose card ended at or before `at`, by customer id, after `after`."""
    query = select(MemberTierRow).where(MemberTierRow.until <= _at(at))
    return list(session.scalars(_page(query, after, limit)))


def cards_ending(
    session: Session, at: datetime, days: int, *, after: str | None = None, limit: int = 500
) -> list[MemberTierRow]:
    """Tiers whose card ends after `at` and within `days` days of it, by customer id."""
    query = select(MemberTierRow).where(
        MemberTierRow.until > _at(at), MemberTierRow.until <= _at(at + timedelta(days=days))
    )
    return list(session.scalars(_page(query, after, limit)))


def holders(session: Session, *, after: str | None = None, limit: int = 500) -> list[MemberTierRow]:
    """Every tier row, by customer id, a page at a time."""
    return list(session.scalars(_page(select(MemberTierRow), after, limit)))


def untiered_candidates(
    session: Session, at: datetime, window_days: int, *, everyone: bool, after: str | None = None, limit: int = 500
) -> list[str]:
    """Customers without a tier who may qualify at `at`: those with a purchase or points earned in
    the window (`everyone`: every known customer, when a level needs nothing), by id after `after`."""
    sources = [
        select(OrderRow.customer_id.label("customer_id")).where(_held_in_window(at, window_days)),
        select(PointsEntryRow.customer_id.label("customer_id")).where(
            PointsEntryRow.kind.in_(EARNED_KINDS),
            PointsEntryRow.at > _at(at - timedelta(days=window_days)),
            PointsEntryRow.at <= _at(at),
        ),
    ]
    if everyone:
        sources.append(select(CustomerRow.customer_id.label("customer_id")))
    found = union(*sources).subquery("candidates")
    query = select(found.c.customer_id).where(
        ~select(MemberTierRow.customer_id).where(MemberTierRow.customer_id == found.c.customer_id).exists()
    )
    if after is not None:
        query = query.where(found.c.customer_id > after)
    return list(session.scalars(query.order_by(found.c.customer_id).limit(limit)))


# ---------------------------------------------------------------------------------------------
# The report


def distribution(session: Session, at: datetime) -> dict[str | None, int]:
    """How many customers held each tier just before `at`, by the change log (each customer's latest
    change before it; those whose latest change removed their tier count under None): a month's
    end counts the changes of the month [start, end), as `moves` does."""
    ranked = select(
        TierChangeRow.to_tier,
        func.row_number()
        .over(
            partition_by=TierChangeRow.customer_id, order_by=(TierChangeRow.at.desc(), TierChangeRow.change_id.desc())
        )
        .label("n"),
    ).where(TierChangeRow.at < _at(at))
    latest = ranked.subquery("latest")
    rows = session.execute(select(latest.c.to_tier, func.count()).where(latest.c.n == 1).group_by(latest.c.to_tier))
    return {tier: int(count) for tier, count in rows}


def moves(session: Session, start: datetime, end: datetime) -> list[tuple[str | None, str | None, str, int]]:
    """The changes logged in [start, end): (from, to, direction, count) per kind of move."""
    rows = session.execute(
        select(TierChangeRow.from_tier, TierChangeRow.to_tier, TierChangeRow.direction, func.count())
        .where(TierChangeRow.at >= _at(start), TierChangeRow.at < _at(end))
        .group_by(TierChangeRow.from_tier, TierChangeRow.to_tier, TierChangeRow.direction)
    )
    return [(from_tier, to_tier, direction, int(count)) for from_tier, to_tier, direction, count in rows]
