"""Segments in SQL (a read model): a segment's condition (core/audience.py, one file each in
definitions/segments/) compiled to one query over the customers table, with RFM as of a time
computed by the database (core.rfm's rule, with core/amounts.py's SQL form of what an amount and
a purchase are: a purchase is an order first paid in (T-365 d, T] and not refunded by T, its
amount the first order.paid's data.amount, else the latest order.created's, else 0), and the
lifecycle stage as of a time (core.lifecycle's rule over the `orders` read model). Counting a
segment is one `SELECT count(*)`; listing pages through it by customer id. Nothing loads
customers into Python one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Float,
    Numeric,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from core.amounts import amount_sql, decimal_text_sql, held_sql, in_year_log_sql, order_amount_sql
from core.audience import (
    AllOf,
    AnyOf,
    BoughtTest,
    LastPurchaseTest,
    LifecycleTest,
    LocaleTest,
    NoPurchaseTest,
    Not,
    OrdersTest,
    RfmTest,
    Segment,
    SpentTest,
    SubscribedTest,
    TagTest,
    TimezoneTest,
    TraitTest,
    uses_lifecycle,
    uses_rfm,
)
from core.durations import parse_duration
from core.lifecycle import LifecycleTable
from core.products import normalise_sku
from core.rfm import RfmTable
from store.tables import CustomerRow, EventRow, OrderRow, ProductRow, UTCDateTime

# ---------------------------------------------------------------------------------------------
# JSON, the same on both databases


class _JsonNumber(FunctionElement):
    """`traits.key` as a number for a trait's `at_least`/`at_most`: a JSON number within +-10^300,
    or a string of digits with an optional decimal part, at most 300 characters; else NULL (so
    no value makes PostgreSQL's cast to a double fail). Amounts have their own, bounded rule:
    core/amounts.py `amount_sql`."""

    type = Float()
    inherit_cache = True
    name = "json_number"


#: Bounds within which a trait's number is read (a double's range, with room).
_TRAIT_NUMBER_BOUND = "1e300"
_TRAIT_TEXT_LENGTH = 300


@compiles(_JsonNumber, "sqlite")
def _json_number_sqlite(element, compiler, **kw):
    column, key = element.clauses
    col, path = compiler.process(column, **kw), f"'$.\"{key.value}\"'"
    value = f"json_extract({col}, {path})"
    return (
        f"CASE WHEN json_type({col}, {path}) IN ('integer', 'real') THEN "
        f"CASE WHEN {value} BETWEEN -{_TRAIT_NUMBER_BOUND} AND {_TRAIT_NUMBER_BOUND} THEN {value} END "
        f"WHEN json_type({col}, {path}) = 'text' AND {decimal_text_sql('sqlite', value, _TRAIT_TEXT_LENGTH)} "
        f"THEN CAST({value} AS REAL) END"
    )


@compiles(_JsonNumber, "postgresql")
def _json_number_pg(element, compiler, **kw):
    column, key = element.clauses
    col, name = compiler.process(column, **kw), key.value.replace("'", "''")
    value = f"({col} -> '{name}')"
    text = f"({col} ->> '{name}')"
    return (
        f"CASE WHEN json_typeof({value}) = 'number' THEN "
        f"CASE WHEN CAST({text} AS NUMERIC) BETWEEN -{_TRAIT_NUMBER_BOUND} AND {_TRAIT_NUMBER_BOUND} "
        f"THEN CAST({text} AS DOUBLE PRECISION) END "
        f"WHEN json_typeof({value}) = 'string' AND {decimal_text_sql('postgresql', text, _TRAIT_TEXT_LENGTH)} "
        f"THEN CAST({text} AS DOUBLE PRECISION) END"
    )


class _JsonText(FunctionElement):
    """`data.key` as text when it is a JSON string, number or boolean; else NULL."""

    type = String()
    inherit_cache = True
    name = "json_text"


@compiles(_JsonText, "sqlite")
def _json_text_sqlite(element, compiler, **kw):
    column, key = element.clauses
    col, path = compiler.process(column, **kw), f"'$.\"{key.value}\"'"
    return (
        f"CASE json_type({col}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"WHEN 'text' THEN json_extract({col}, {path}) WHEN 'integer' THEN CAST(json_extract({col}, {path}) AS TEXT) "
        f"WHEN 'real' THEN CAST(json_extract({col}, {path}) AS TEXT) END"
    )


@compiles(_JsonText, "postgresql")
def _json_text_pg(element, compiler, **kw):
    column, key = element.clauses
    col, name = compiler.process(column, **kw), key.value.replace("'", "''")
    return f"CASE WHEN json_typeof({col} -> '{name}') IN ('string', 'number', 'boolean') THEN ({col} ->> '{name}') END"


class _JsonHas(FunctionElement):
    """Whether the JSON object has `key` (with a value other than null)."""

    inherit_cache = True
    name = "json_has"


@compiles(_JsonHas, "sqlite")
def _json_has_sqlite(element, compiler, **kw):
    column, key = element.clauses
    col = compiler.process(column, **kw)
    return f"(json_type({col}, '$.\"{key.value}\"') IS NOT NULL AND json_type({col}, '$.\"{key.value}\"') != 'null')"


@compiles(_JsonHas, "postgresql")
def _json_has_pg(element, compiler, **kw):
    column, key = element.clauses
    col, name = compiler.process(column, **kw), key.value.replace("'", "''")
    return f"(({col} -> '{name}') IS NOT NULL AND json_typeof({col} -> '{name}') != 'null')"


class _JsonArrayHas(FunctionElement):
    """Whether the JSON array `column` holds the string `value` (tags, unsubscribed)."""

    inherit_cache = True
    name = "json_array_has"


@compiles(_JsonArrayHas, "sqlite")
def _json_array_has_sqlite(element, compiler, **kw):
    column, value = element.clauses
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(value, **kw)})"
    )


@compiles(_JsonArrayHas, "postgresql")
def _json_array_has_pg(element, compiler, **kw):
    column, value = element.clauses
    return f"(CAST({compiler.process(column, **kw)} AS JSONB) ? {compiler.process(value, **kw)})"


class _ItemIn(FunctionElement):
    """Whether the JSON object's `items` array has an item (an object) whose `sku` is among the
    values of a scalar subquery (`bought:`): items that are not objects, and `items` that is no
    array, match nothing, and nothing they hold makes the query fail. A `sku` is read as
    core.products.item_sku reads it as far as SQL can: a string (trimmed) or an integer, not a
    fraction or a bool; full-width characters are compared as written (SQL has no NFKC)."""

    inherit_cache = True
    name = "item_in"


@compiles(_ItemIn, "sqlite")
def _item_in_sqlite(element, compiler, **kw):
    column, skus = element.clauses
    col = compiler.process(column, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type({col}, '$.items') = 'array' THEN {col} "
        f"ELSE '{{\"items\": []}}' END, '$.items') AS item "
        f"WHERE json_type({col}, '$.items[' || item.key || '].sku') IN ('text', 'integer') "
        f"AND TRIM(CAST(json_extract({col}, '$.items[' || item.key || '].sku') AS TEXT)) "
        f"IN {compiler.process(skus, **kw)})"
    )


@compiles(_ItemIn, "postgresql")
def _item_in_pg(element, compiler, **kw):
    column, skus = element.clauses
    items = f"(CAST({compiler.process(column, **kw)} AS JSONB) -> 'items')"
    return (
        f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({items}) = 'array' THEN {items} "
        f"ELSE CAST('[]' AS JSONB) END) AS item(value) "
        f"WHERE TRIM(CASE WHEN jsonb_typeof(item.value) = 'object' AND (jsonb_typeof(item.value -> 'sku') = 'string' "
        f"OR (jsonb_typeof(item.value -> 'sku') = 'number' AND item.value ->> 'sku' ~ '^-?[0-9]+$')) "
        f"THEN item.value ->> 'sku' END) IN {compiler.process(skus, **kw)})"
    )


def _key(name: str):
    return literal(name, literal_execute=True)


def json_number(column, key: str) -> ColumnElement:
    return _JsonNumber(column, _key(key))


# ---------------------------------------------------------------------------------------------
# RFM in SQL


def _at(value: datetime):
    return literal(value, UTCDateTime())


def _scoped(column, scope: _Scope) -> ColumnElement:
    """`column` (a customer id) within the scope: one customer, those after an id, or all."""
    if scope.only is not None:
        return column == scope.only
    return true() if scope.after is None else column > scope.after


@dataclass(frozen=True)
class _Scope:
    """Which customers a query is about: one (`only`, a profile), those after an id (a page)."""

    only: str | None = None
    after: str | None = None


def rfm_columns(at: datetime, table: RfmTable, scope: _Scope = _Scope()):
    """A subquery of customers (within `scope`) with purchases in the year to `at`:
    customer_id, purchases, amount, last (time), r, f, m, score."""
    paid = aliased(EventRow)
    first_paid = (
        select(paid.customer_id, paid.order_id, func.min(paid.occurred_at).label("paid_at"))
        .where(paid.type == "order.paid", paid.occurred_at <= _at(at), _scoped(paid.customer_id, scope))
        .group_by(paid.customer_id, paid.order_id)
        .subquery("first_paid")
    )
    payment, created, refund = aliased(EventRow), aliased(EventRow), aliased(EventRow)
    paid_amount = (
        select(amount_sql(payment.data))
        .where(
            payment.order_id == first_paid.c.order_id,
            payment.customer_id == first_paid.c.customer_id,
            payment.type == "order.paid",
            payment.occurred_at == first_paid.c.paid_at,
        )
        .limit(1)
        .scalar_subquery()
    )
    created_amount = (
        select(amount_sql(created.data))
        .where(
            created.order_id == first_paid.c.order_id,
            created.customer_id == first_paid.c.customer_id,
            created.type == "order.created",
            created.occurred_at <= _at(at),
        )
        .order_by(created.occurred_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    purchases = (
        select(
            first_paid.c.customer_id,
            first_paid.c.paid_at,
            order_amount_sql(paid_amount, created_amount).label("amount"),
        )
        .where(
            in_year_log_sql(
                first_paid.c.paid_at,
                refund,
                at,
                order_id=first_paid.c.order_id,
                customer_id=first_paid.c.customer_id,
            )
        )
        .subquery("purchases")
    )
    totals = (
        select(
            purchases.c.customer_id,
            func.count().label("purchases"),
            func.round(cast(func.sum(purchases.c.amount), Numeric), 2).label("amount"),
            func.max(purchases.c.paid_at).label("last"),
        )
        .group_by(purchases.c.customer_id)
        .subquery("totals")
    )
    grades = (5, 4, 3, 2, 1)
    r = case(
        *[(totals.c.last >= _at(at - timedelta(days=d)), g) for g, d in zip(grades, table.recency_days, strict=True)],
        else_=0,
    )
    f = case(*[(totals.c.purchases >= n, g) for g, n in zip((5, 4, 3, 2, 1), table.frequency, strict=True)], else_=0)
    m = case(
        *[
            (and_(totals.c.amount >= bound, totals.c.amount > 0), g)
            for g, bound in zip((5, 4, 3, 2, 1), table.monetary, strict=True)
        ],
        else_=0,
    )
    weights = table.weights
    return select(
        totals.c.customer_id,
        totals.c.purchases,
        totals.c.amount,
        totals.c.last,
        r.label("r"),
        f.label("f"),
        m.label("m"),
        (weights["r"] * r + weights["f"] * f + weights["m"] * m).label("score"),
    ).subquery("rfm")


def lifecycle_columns(at: datetime, table: LifecycleTable, scope: _Scope = _Scope()):
    """A subquery of customers (within `scope`) holding a purchase at `at` (core/amounts.py's
    rule on the `orders` read model, refunded ones excluded), with their stage (core.lifecycle's
    rule in SQL): customer_id, first, last (times), recent (purchases within `active_days`),
    stage. A customer without a row is a prospect."""
    held = held_sql(OrderRow.paid_at, OrderRow.refunded_at, at)
    active = _at(at - timedelta(days=table.active_days))  # within N days: paid at or after at - N
    recent = func.sum(case((OrderRow.paid_at >= active, 1), else_=0))
    totals = (
        select(
            OrderRow.customer_id,
            func.min(OrderRow.paid_at).label("first"),
            func.max(OrderRow.paid_at).label("last"),
            recent.label("recent"),
        )
        .where(held, _scoped(OrderRow.customer_id, scope))
        .group_by(OrderRow.customer_id)
        .subquery("held_orders")
    )
    new = totals.c.first >= active
    stage = case(
        (and_(totals.c.recent == 1, new), "new_once"),
        (and_(totals.c.recent >= 2, new), "new_repeat"),
        (totals.c.recent == 1, "old_once"),
        (totals.c.recent >= 2, "old_repeat"),
        (totals.c.last >= _at(at - timedelta(days=table.churned_days)), "churned"),
        (totals.c.last >= _at(at - timedelta(days=table.sleeping_days)), "sleeping"),
        else_="silent",
    )
    return select(totals, stage.label("stage")).subquery("lifecycle")


def _tier(score, table: RfmTable):
    return case(*[(score >= tier.min_score, tier.name) for tier in table.tiers[:-1]], else_=table.tiers[-1].name)


# ---------------------------------------------------------------------------------------------
# Conditions


@dataclass
class _Compiler:
    at: datetime
    table: RfmTable
    rfm: Any  # the RFM subquery, outer-joined (None when the condition needs none)
    lifecycle: Any = None  # the lifecycle subquery, outer-joined (None when the condition needs none)

    def condition(self, node: Any) -> ColumnElement:
        match node:
            case AllOf():
                return and_(*(self.condition(c) for c in node.all))
            case AnyOf():
                return or_(*(self.condition(c) for c in node.any))
            case Not():
                # A test on a missing value is unknown (NULL) in SQL; here it is false, so its
                # negation holds: `not: {trait: level, is: gold}` takes customers with no level.
                return not_(func.coalesce(self.condition(node.not_), false()))
            case TraitTest():
                return self._trait(node)
            case TagTest():
                return _JsonArrayHas(CustomerRow.tags, literal(node.tag))
            case RfmTest():
                return self._rfm(node)
            case OrdersTest():
                return self._orders(node)
            case LastPurchaseTest():
                return self.rfm.c.last >= _at(self.at - timedelta(days=node.last_purchase_within_days))
            case NoPurchaseTest():
                since = _at(self.at - timedelta(days=node.no_purchase_for_days))
                return or_(self.rfm.c.last.is_(None), self.rfm.c.last < since)
            case LifecycleTest():
                return func.coalesce(self.lifecycle.c.stage, "prospect").in_(node.stages)
            case SpentTest():
                amount = func.coalesce(self.rfm.c.amount, 0.0)
                bounds = node.spent_in_year
                return and_(
                    true() if bounds.at_least is None else amount >= bounds.at_least,
                    true() if bounds.at_most is None else amount <= bounds.at_most,
                )
            case SubscribedTest():
                contact = CustomerRow.phone if node.subscribed == "sms" else CustomerRow.email
                return and_(
                    contact.is_not(None),
                    contact != "",
                    CustomerRow.blacklisted.is_(False),
                    not_(_JsonArrayHas(CustomerRow.unsubscribed, literal(node.subscribed))),
                )
            case LocaleTest():
                return CustomerRow.locale == node.locale
            case TimezoneTest():
                return CustomerRow.timezone == node.timezone
            case BoughtTest():
                return self._bought(node)
        raise TypeError(f"not a segment condition: {node!r}")

    @staticmethod
    def _compare(value, node, numeric) -> ColumnElement:
        if node.is_ is not None:
            return value == (float(node.is_) if numeric and not isinstance(node.is_, str) else node.is_)
        if node.in_ is not None:
            return value.in_(node.in_)
        return and_(
            true() if node.at_least is None else value >= node.at_least,
            true() if node.at_most is None else value <= node.at_most,
        )

    def _trait(self, node: TraitTest) -> ColumnElement:
        if node.within_next_days is not None:  # ISO dates (and times) compare as text
            day = self.at.astimezone(UTC).date()
            text = _JsonText(CustomerRow.traits, _key(node.trait))
            return and_(text >= day.isoformat(), text < (day + timedelta(days=node.within_next_days + 1)).isoformat())
        if node.exists is not None and not node._given():
            has = _JsonHas(CustomerRow.traits, _key(node.trait))
            return has if node.exists else not_(has)
        if node.at_least is not None or node.at_most is not None:
            return self._compare(json_number(CustomerRow.traits, node.trait), node, numeric=True)
        text = _JsonText(CustomerRow.traits, _key(node.trait))
        if node.is_ is not None:
            return text == _as_text(node.is_)
        return text.in_([_as_text(v) for v in node.in_ or []])

    def _rfm(self, node: RfmTest) -> ColumnElement:
        if node.rfm == "tier":
            tier = _tier(func.coalesce(self.rfm.c.score, 0), self.table)
            if node.is_ is not None:
                return tier == str(node.is_)
            if node.in_ is not None:
                return tier.in_([str(v) for v in node.in_])
            return false()  # at_least/at_most on a tier name: refused when the segment loads
        value = func.coalesce(getattr(self.rfm.c, node.rfm), 0)
        return self._compare(value, node, numeric=True)

    def _orders(self, node: OrdersTest) -> ColumnElement:
        orders = (
            select(func.count(func.distinct(EventRow.order_id)))
            .where(
                EventRow.customer_id == CustomerRow.customer_id,
                EventRow.type == "order.created",
                EventRow.occurred_at > _at(self.at - timedelta(days=node.orders_in_last_days)),
                EventRow.occurred_at <= _at(self.at),
            )
            .scalar_subquery()
        )
        return and_(
            true() if node.at_least is None else orders >= node.at_least,
            true() if node.at_most is None else orders <= node.at_most,
        )

    def _bought(self, node: BoughtTest) -> ColumnElement:
        """A purchase held at `at` (core/amounts.py's rule on the `orders` read model: first paid
        by then, in the window, not refunded by then) with an item of the SKU (read by
        core.products.normalise_sku), or of a SKU the catalogue files under the category."""
        spec = node.bought
        skus = (
            select(ProductRow.sku).where(ProductRow.category == spec.category)
            if spec.category is not None
            else select(literal(normalise_sku(spec.sku) or str(spec.sku), String()))
        ).scalar_subquery()
        window = [held_sql(OrderRow.paid_at, OrderRow.refunded_at, self.at)]
        if spec.within is not None:
            window.append(OrderRow.paid_at > _at(self.at - parse_duration(spec.within)))
        listed = aliased(EventRow)
        has_item = (
            select(listed.event_id)
            .where(
                listed.order_id == OrderRow.order_id,
                listed.customer_id == OrderRow.customer_id,
                listed.type.in_(("order.created", "order.paid")),
                _ItemIn(listed.data, skus),
            )
            .exists()
        )
        return (
            select(OrderRow.order_id).where(OrderRow.customer_id == CustomerRow.customer_id, *window, has_item).exists()
        )


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _source(segment: Segment, at: datetime, table: RfmTable, scope: _Scope, rfm_always: bool):
    """The customers in scope, outer-joined to their RFM when the segment (or the caller) needs
    it, with the segment's condition: (from clause, where clause, rfm subquery or None)."""
    rfm = rfm_columns(at, table, scope) if rfm_always or uses_rfm(segment.where) else None
    lifecycle = lifecycle_columns(at, table.lifecycle, scope) if uses_lifecycle(segment.where) else None
    source = CustomerRow.__table__
    if rfm is not None:
        source = source.outerjoin(rfm, rfm.c.customer_id == CustomerRow.customer_id)
    if lifecycle is not None:
        source = source.outerjoin(lifecycle, lifecycle.c.customer_id == CustomerRow.customer_id)
    compiler = _Compiler(at, table, rfm, lifecycle)
    where = and_(_scoped(CustomerRow.customer_id, scope), compiler.condition(segment.where))
    return source, where, rfm


def members_query(segment: Segment, at: datetime, table: RfmTable, scope: _Scope = _Scope()):
    """SELECT customer_id, r, f, m, score, tier of the segment's members at `at`, by id."""
    source, where, rfm = _source(segment, at, table, scope, rfm_always=True)
    score = func.coalesce(rfm.c.score, 0)
    return (
        select(
            CustomerRow.customer_id,
            func.coalesce(rfm.c.r, 0).label("r"),
            func.coalesce(rfm.c.f, 0).label("f"),
            func.coalesce(rfm.c.m, 0).label("m"),
            score.label("score"),
            _tier(score, table).label("tier"),
        )
        .select_from(source)
        .where(where)
    )


def count_members(session: Session, segment: Segment, at: datetime, table: RfmTable) -> int:
    """How many customers are in the segment at `at`: one count in the database."""
    source, where, _rfm = _source(segment, at, table, _Scope(), rfm_always=False)
    return session.execute(select(func.count()).select_from(source).where(where)).scalar_one()


class Member(BaseModel):
    """A segment member as lists show it: the id and RFM, no contact data."""

    customer_id: str
    r: int
    f: int
    m: int
    score: int
    tier: str


def members(
    session: Session, segment: Segment, at: datetime, table: RfmTable, *, after: str | None = None, limit: int = 1000
) -> list[Member]:
    """One page of members, by customer id, after `after` (keyset paging: a page costs the same
    wherever it is; RFM is computed for the customers after it only)."""
    query = members_query(segment, at, table, _Scope(after=after))
    rows = session.execute(query.order_by(CustomerRow.customer_id).limit(limit))
    return [Member.model_validate(dict(row._mapping)) for row in rows]


def iterate_members(
    session_factory, segment: Segment, at: datetime, table: RfmTable, page: int = 1000
) -> Iterator[Member]:
    """Every member, page by page, each page in its own transaction."""
    after = None
    while True:
        with session_factory() as session:
            found = members(session, segment, at, table, after=after, limit=page)
        yield from found
        if len(found) < page:
            return
        after = found[-1].customer_id


def segments_of(
    session: Session, customer_id: str, segments: list[Segment], at: datetime, table: RfmTable
) -> list[str]:
    """The names of the segments the customer is in at `at` (a profile's `segments`)."""
    names = []
    for segment in segments:
        source, where, _rfm = _source(segment, at, table, _Scope(only=customer_id), rfm_always=False)
        if session.execute(select(CustomerRow.customer_id).select_from(source).where(where)).first() is not None:
            names.append(segment.name)
    return names


def member_zones(session: Session, segment: Segment, at: datetime, table: RfmTable) -> dict[str, int]:
    """How many of the segment's members at `at` live in each time zone: one grouped count (a
    batched broadcast's send moments are those of its members' zones)."""
    source, where, _rfm = _source(segment, at, table, _Scope(), rfm_always=False)
    query = select(CustomerRow.timezone, func.count()).select_from(source).where(where)
    return {zone: count for zone, count in session.execute(query.group_by(CustomerRow.timezone))}


def member_ids(
    session: Session,
    segment: Segment,
    at: datetime,
    table: RfmTable,
    *,
    zones: list[str] | None = None,
    after: str | None = None,
    limit: int = 500,
    unless: Any = None,
) -> list[str]:
    """One page of the ids of the segment's members at `at`, by id after `after`: in `zones` only
    when given, and but those `unless` (a condition on CustomerRow.customer_id, e.g. already
    decided) holds for. No RFM is computed unless the segment's condition reads it."""
    source, where, _rfm = _source(segment, at, table, _Scope(after=after), rfm_always=False)
    query = select(CustomerRow.customer_id).select_from(source).where(where)
    if zones is not None:
        query = query.where(CustomerRow.timezone.in_(zones))
    if unless is not None:
        query = query.where(~unless)
    return list(session.scalars(query.order_by(CustomerRow.customer_id).limit(limit)))
