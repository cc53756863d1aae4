"""The effect report's queries (a read model over the ledger, the instances and the event log),
computed by the database on PostgreSQL and SQLite alike: counts grouped in SQL, conversions by
correlated subqueries on indexed columns, never rows walked in Python.

The conversion rule (views/effect.py assembles the report):
- an instance converts when its first goal event for the instance's key (its order, or its
  customer) occurs strictly after the instance's first sent message and at most `within` after
  it; once per instance;
- revenue counts for purchase goals (order.created, order.paid) only: the converting order's
  amount, order.paid's `data.amount`, else order.created's;
- the holdout of a journey's split converts on the same rule from its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Float, String, and_, case, func, literal, null, select, union_all
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from core.vocabulary import Status
from store.segments import json_number
from store.tables import EventRow, InstanceRow, MessageRow, ProviderEventRow, UTCDateTime

#: A message that reached the provider (it was sent, whatever happened after).
SENT_STATUSES = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.OPENED, Status.CLICKED)
DELIVERED_STATUSES = (Status.DELIVERED, Status.OPENED, Status.CLICKED)
OPENED_STATUSES = (Status.OPENED, Status.CLICKED)
#: Goal event types whose order has an amount: only these earn revenue.
PURCHASE_GOALS = ("order.created", "order.paid")
#: Provider events that are an unsubscribe or a complaint about a message.
UNSUBSCRIBE_KINDS = ("unsubscribe", "group_unsubscribe")
COMPLAINT_KINDS = ("spamreport",)

Grouping = Literal["journey", "step", "channel", "variant", "day"]
GROUPINGS: tuple[Grouping, ...] = ("journey", "step", "channel", "variant", "day")


@dataclass(frozen=True)
class Period:
    """[start, end), with days counted in the shop's time zone."""

    start: datetime
    end: datetime
    timezone: str


@dataclass(frozen=True)
class GoalRule:
    """A journey's goal as the queries need it."""

    event: str
    within: timedelta
    key: Literal["order", "customer"]

    @property
    def earns(self) -> bool:
        return self.event in PURCHASE_GOALS


# ---------------------------------------------------------------------------------------------
# Time arithmetic, the same on both databases (SQLite gets the functions from store/db.py)


def _sql_function(name: str, result_type, postgresql: str) -> type[FunctionElement]:
    """A function PostgreSQL writes as `postgresql` ({0}, {1}: the arguments) and SQLite calls by
    `name` (store/db.py registers it on every connection)."""
    function = type(name, (FunctionElement,), {"name": name, "inherit_cache": True, "type": result_type})

    @compiles(function, "postgresql")
    def _postgresql(element, compiler, **kw):
        return postgresql.format(*(compiler.process(clause, **kw) for clause in element.clauses))

    @compiles(function, "sqlite")
    def _sqlite(element, compiler, **kw):
        return f"{name}({', '.join(compiler.process(clause, **kw) for clause in element.clauses)})"

    return function


_Shifted = _sql_function("journeys_shift", UTCDateTime(), "({0} + make_interval(secs => {1}))")
_LocalDay = _sql_function("journeys_local_day", String(), "to_char({0} AT TIME ZONE {1}, 'YYYY-MM-DD')")


def shifted(column, delta: timedelta) -> ColumnElement:
    """A time plus a fixed duration."""
    return _Shifted(column, literal(delta.total_seconds(), Float(), literal_execute=True))


def local_day(column, timezone: str) -> ColumnElement:
    """A time's date (YYYY-MM-DD) in a time zone."""
    return _LocalDay(column, literal(timezone, String()))


def _at(value: datetime):
    return literal(value, UTCDateTime())


# ---------------------------------------------------------------------------------------------
# Messages


def _group(by: Grouping | None, table, time_column, period: Period) -> ColumnElement:
    """The column a report is grouped by, besides the journey ('' for journey totals)."""
    if by == "step" and hasattr(table, "step"):
        return table.step
    if by == "channel" and hasattr(table, "channel"):
        return func.coalesce(table.channel, "none")
    if by == "variant":
        return func.coalesce(table.variant, "")
    if by == "day":
        return local_day(time_column, period.timezone)
    return literal("", String())


def _keys(journey, group, by: Grouping | None) -> tuple:
    """What to GROUP BY: the journey, and the group when there is one (PostgreSQL refuses to
    group by a constant)."""
    return (journey, group) if by not in (None, "journey") else (journey,)


def _in(column, values) -> ColumnElement:
    return column.in_([str(v) for v in values])


def _count_if(condition) -> ColumnElement:
    return func.sum(case((condition, 1), else_=0))


def message_counts(
    session: Session, period: Period, by: Grouping | None, journeys: list[str] | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (journey, group): sent, skipped, failed, in_doubt, delivered, opened, clicked,
    bounced, sms_segments (of SMS sent), emails (sent), and skipped/failed by reason
    (`skipped:quiet_hours`), for messages due in the period."""
    m = MessageRow
    group = _group(by, m, m.at, period)
    where = [m.at >= _at(period.start), m.at < _at(period.end)]
    if journeys is not None:
        where.append(m.journey.in_(journeys))
    sent = _in(m.status, SENT_STATUSES)
    rows = session.execute(
        select(
            m.journey,
            group.label("grp"),
            _count_if(sent).label("sent"),
            _count_if(m.status == Status.SKIPPED).label("skipped"),
            _count_if(m.status == Status.FAILED).label("failed"),
            _count_if(_in(m.status, (Status.SENDING, Status.UNKNOWN))).label("in_doubt"),
            _count_if(_in(m.status, DELIVERED_STATUSES)).label("delivered"),
            _count_if(_in(m.status, OPENED_STATUSES)).label("opened"),
            _count_if(m.status == Status.CLICKED).label("clicked"),
            _count_if(m.status == Status.UNDELIVERED).label("bounced"),
            func.sum(case((and_(sent, m.channel == "sms"), func.coalesce(m.segments, 1)), else_=0)).label(
                "sms_segments"
            ),
            _count_if(and_(sent, m.channel == "email")).label("emails"),
        )
        .where(*where)
        .group_by(*_keys(m.journey, group, by))
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        found[row.journey, row.grp] = {k: int(v or 0) for k, v in row._mapping.items() if k not in ("journey", "grp")}
    reasons = session.execute(
        select(
            m.journey, group.label("grp"), m.status, func.coalesce(m.reason, "unknown").label("reason"), func.count()
        )
        .where(*where, _in(m.status, (Status.SKIPPED, Status.FAILED)))
        .group_by(*_keys(m.journey, group, by), m.status, func.coalesce(m.reason, "unknown"))
    )
    for journey, grp, status, reason, count in reasons:
        found[journey, grp][f"{status}:{reason}"] = int(count)
    feedback = session.execute(
        select(
            m.journey,
            group.label("grp"),
            _count_if(_in(ProviderEventRow.kind, UNSUBSCRIBE_KINDS)).label("unsubscribes"),
            _count_if(_in(ProviderEventRow.kind, COMPLAINT_KINDS)).label("complaints"),
        )
        .join(ProviderEventRow, ProviderEventRow.message_id == m.id)
        .where(*where, _in(ProviderEventRow.kind, UNSUBSCRIBE_KINDS + COMPLAINT_KINDS))
        .group_by(*_keys(m.journey, group, by))
    )
    for journey, grp, unsubscribes, complaints in feedback:
        found[journey, grp].update(unsubscribes=int(unsubscribes or 0), complaints=int(complaints or 0))
    return found


def entered_counts(
    session: Session, period: Period, by: Grouping | None, journeys: list[str] | None = None
) -> dict[tuple[str, str], int]:
    """Instances started in the period per (journey, group); by step or channel, per journey."""
    i = InstanceRow
    by = by if by in ("variant", "day") else None
    group = _group(by, i, i.entered_at, period)
    where = [i.entered_at >= _at(period.start), i.entered_at < _at(period.end)]
    if journeys is not None:
        where.append(i.journey.in_(journeys))
    rows = session.execute(
        select(i.journey, group.label("grp"), func.count()).where(*where).group_by(*_keys(i.journey, group, by))
    )
    return {(journey, grp): int(count) for journey, grp, count in rows}


# ---------------------------------------------------------------------------------------------
# Conversions


def order_amount(order_id) -> ColumnElement:
    """An order's amount: its first order.paid's `data.amount`, else its latest order.created's."""
    paid, created = aliased(EventRow), aliased(EventRow)
    paid_amount = (
        select(json_number(paid.data, "amount"))
        .where(paid.order_id == order_id, paid.type == "order.paid")
        .order_by(paid.occurred_at)
        .limit(1)
        .scalar_subquery()
    )
    created_amount = (
        select(json_number(created.data, "amount"))
        .where(created.order_id == order_id, created.type == "order.created")
        .order_by(created.occurred_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(paid_amount, created_amount, 0.0)


def _goal_event(rule: GoalRule, order_id, customer_id, after) -> tuple[ColumnElement, ColumnElement]:
    """The first goal event for the key strictly after `after` and at most `within` after it:
    (its time, the order it is about), as scalar subqueries correlated to the caller's row."""

    def matching(goal):
        key = goal.order_id == order_id if rule.key == "order" else goal.customer_id == customer_id
        return (goal.type == rule.event, key, goal.occurred_at > after, goal.occurred_at <= shifted(after, rule.within))

    first, same = aliased(EventRow), aliased(EventRow)
    converted_at = select(func.min(first.occurred_at)).where(*matching(first)).scalar_subquery()
    converted_order = (
        select(same.order_id)
        .where(*matching(same))
        .order_by(same.occurred_at, same.event_id)
        .limit(1)
        .scalar_subquery()
    )
    return converted_at, converted_order


def reached(journey: str, rule: GoalRule | None, period: Period, by: Grouping | None) -> Any:  # a subquery
    """Each instance of `journey` whose first sent message falls in the period, with that
    message's group, and its conversion by the rule (time, order; none without a goal)."""
    m = MessageRow
    ranked = (
        select(
            m.workflow_id,
            m.run_id,
            m.at,
            m.customer_id,
            m.order_id,
            _group(by, m, m.at, period).label("grp"),
            func.row_number().over(partition_by=(m.workflow_id, m.run_id), order_by=(m.at, m.id)).label("n"),
        )
        .where(m.journey == journey, _in(m.status, SENT_STATUSES), m.at < _at(period.end))
        .subquery()
    )
    firsts = select(ranked).where(ranked.c.n == 1, ranked.c.at >= _at(period.start)).subquery()
    if rule is None:
        nothing = null()
        return select(
            firsts.c.workflow_id, firsts.c.grp, nothing.label("converted_at"), nothing.label("converted_order")
        ).subquery()
    converted_at, converted_order = _goal_event(rule, firsts.c.order_id, firsts.c.customer_id, firsts.c.at)
    order = converted_order if rule.key == "customer" else firsts.c.order_id
    return select(
        firsts.c.workflow_id,
        firsts.c.grp,
        converted_at.label("converted_at"),
        case((converted_at.is_not(None), order)).label("converted_order"),
    ).subquery()


def conversions(
    session: Session, journey: str, rule: GoalRule | None, period: Period, by: Grouping | None
) -> dict[str, dict[str, Any]]:
    """Per group: instances reached (a first sent message in the period), converted, revenue
    (no conversions for a journey without a goal)."""
    instances = reached(journey, rule, period, by)
    revenue = order_amount(instances.c.converted_order) if rule and rule.earns else literal(0.0)
    rows = session.execute(
        select(
            instances.c.grp,
            func.count().label("reached"),
            func.count(instances.c.converted_at).label("converted"),
            func.sum(case((instances.c.converted_at.is_not(None), revenue), else_=0.0)).label("revenue"),
        ).group_by(instances.c.grp)
    )
    return {
        row.grp: {"reached": int(row.reached), "converted": int(row.converted), "revenue": float(row.revenue or 0)}
        for row in rows
    }


def converted_orders_revenue(session: Session, rules: dict[str, GoalRule], period: Period) -> tuple[int, float]:
    """Orders converted by any journey in the period, each once however many journeys claim it,
    and their amount: the total a shop earned from its journeys."""
    selects = []
    for journey, rule in rules.items():
        if not rule.earns:
            continue
        instances = reached(journey, rule, period, None)
        selects.append(
            select(instances.c.converted_order.label("order_id")).where(instances.c.converted_at.is_not(None))
        )
    if not selects:
        return 0, 0.0
    orders = union_all(*selects).subquery("converted")
    distinct = select(orders.c.order_id).where(orders.c.order_id.is_not(None)).distinct().subquery("distinct_orders")
    count, total = session.execute(
        select(func.count(), func.sum(order_amount(distinct.c.order_id))).select_from(distinct)
    ).one()
    return int(count), float(total or 0)


def holdout(session: Session, journey: str, rule: GoalRule, period: Period, group: str) -> tuple[int, int]:
    """The holdout of a journey's split entered in the period: (instances, converted), each from
    its entry on the same rule."""
    i = InstanceRow
    converted_at, _ = _goal_event(rule, i.order_id, i.customer_id, i.entered_at)
    n, converted = session.execute(
        select(func.count(), func.count(converted_at)).where(
            i.journey == journey,
            i.variant == group,
            i.entered_at >= _at(period.start),
            i.entered_at < _at(period.end),
        )
    ).one()
    return int(n), int(converted)


# ---------------------------------------------------------------------------------------------
# Result indicators


def _purchases(until: datetime):
    """Purchases: orders with their first order.paid, not refunded by `until`: customer, order,
    paid_at, amount."""
    paid, refund = aliased(EventRow), aliased(EventRow)
    first_paid = (
        select(paid.customer_id, paid.order_id, func.min(paid.occurred_at).label("paid_at"))
        .where(paid.type == "order.paid", paid.order_id.is_not(None), paid.occurred_at < _at(until))
        .group_by(paid.customer_id, paid.order_id)
        .subquery("first_paid")
    )
    refunded = (
        select(refund.event_id)
        .where(
            refund.order_id == first_paid.c.order_id, refund.type == "order.refunded", refund.occurred_at < _at(until)
        )
        .exists()
    )
    return (
        select(
            first_paid.c.customer_id,
            first_paid.c.order_id,
            first_paid.c.paid_at,
            order_amount(first_paid.c.order_id).label("amount"),
        )
        .where(~refunded)
        .subquery("purchases")
    )


def result_indicators(session: Session, period: Period, silent_days: int) -> dict[str, Any]:
    """For the period: buyers and purchases; repeat buyers (two or more purchases) and the amount
    of the purchases after each buyer's first; retention (buyers of the period before, of the
    same length, who bought again in this one); reactivation (customers sent a message in the
    period who had bought before but not in the `silent_days` before it, and bought after it
    within the period)."""
    purchases = _purchases(period.end)
    start, end = _at(period.start), _at(period.end)
    in_period = (
        select(
            purchases,
            func.row_number()
            .over(partition_by=purchases.c.customer_id, order_by=(purchases.c.paid_at, purchases.c.order_id))
            .label("n"),
        )
        .where(purchases.c.paid_at >= start)
        .subquery("in_period")
    )
    per_buyer = (
        select(in_period.c.customer_id, func.count().label("orders"))
        .group_by(in_period.c.customer_id)
        .subquery("per_buyer")
    )
    buyers, repeat_buyers = session.execute(select(func.count(), _count_if(per_buyer.c.orders >= 2))).one()
    later_amount = func.sum(case((in_period.c.n >= 2, in_period.c.amount), else_=0.0))
    orders, amount, repeat_amount = session.execute(
        select(func.count(), func.sum(in_period.c.amount), later_amount)
    ).one()

    length = period.end - period.start
    before = select(purchases.c.customer_id).where(
        purchases.c.paid_at >= _at(period.start - length), purchases.c.paid_at < start
    )
    again = select(purchases.c.customer_id).where(purchases.c.paid_at >= start)
    earlier_buyers = session.scalar(select(func.count()).select_from(before.distinct().subquery()))
    retained = session.scalar(select(func.count()).select_from(before.intersect(again).subquery()))

    m = MessageRow
    first_message = (
        select(m.customer_id, func.min(m.at).label("at"))
        .where(_in(m.status, SENT_STATUSES), m.at >= start, m.at < end)
        .group_by(m.customer_id)
        .subquery("first_message")
    )
    earlier, later = aliased(purchases), aliased(purchases)
    bought_before = select(earlier.c.order_id).where(
        earlier.c.customer_id == first_message.c.customer_id, earlier.c.paid_at < first_message.c.at
    )
    bought_recently = select(earlier.c.order_id).where(
        earlier.c.customer_id == first_message.c.customer_id,
        earlier.c.paid_at < first_message.c.at,
        earlier.c.paid_at >= shifted(first_message.c.at, -timedelta(days=silent_days)),
    )
    bought_after = select(later.c.order_id).where(
        later.c.customer_id == first_message.c.customer_id, later.c.paid_at > first_message.c.at
    )
    silent = and_(bought_before.exists(), ~bought_recently.exists())
    silent_messaged, reactivated = session.execute(
        select(_count_if(silent), _count_if(and_(silent, bought_after.exists()))).select_from(first_message)
    ).one()
    return {
        "buyers": int(buyers or 0),
        "orders": int(orders or 0),
        "amount": round(float(amount or 0), 2),
        "repeat_buyers": int(repeat_buyers or 0),
        "repeat_amount": round(float(repeat_amount or 0), 2),
        "earlier_buyers": int(earlier_buyers or 0),
        "retained": int(retained or 0),
        "silent_days": silent_days,
        "silent_messaged": int(silent_messaged or 0),
        "reactivated": int(reactivated or 0),
    }
