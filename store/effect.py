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

from sqlalchemy import Float, String, and_, case, func, literal, null, select, text, union_all
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


def prepare(session: Session) -> None:
    """Room for the report's sorts and hashes in memory (PostgreSQL; this transaction only)."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SET LOCAL work_mem = '128MB'"))


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


def _instance_counts(session: Session, period: Period, by: Grouping | None, journeys, when, *extra) -> list:
    """Instance rows whose `when` falls in the period, counted per (journey, group, *extra); by
    step or channel, per journey (an instance has neither)."""
    i = InstanceRow
    by = by if by in ("variant", "day") else None
    group = _group(by, i, when, period)
    where = [when >= _at(period.start), when < _at(period.end)]
    if journeys is not None:
        where.append(i.journey.in_(journeys))
    return list(
        session.execute(
            select(i.journey, group.label("grp"), *extra, func.count())
            .where(*where)
            .group_by(*_keys(i.journey, group, by), *extra)
        )
    )


def entered_counts(
    session: Session, period: Period, by: Grouping | None, journeys: list[str] | None = None
) -> dict[tuple[str, str], int]:
    """Instances started in the period per (journey, group)."""
    rows = _instance_counts(session, period, by, journeys, InstanceRow.entered_at)
    return {(journey, grp): int(count) for journey, grp, count in rows}


def exit_counts(
    session: Session, period: Period, by: Grouping | None, journeys: list[str] | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    """Runs that ended in the period per (journey, group), by reason (revision 3 runs record it)."""
    reason = func.coalesce(InstanceRow.exit_reason, "unknown")
    found: dict[tuple[str, str], dict[str, int]] = {}
    for journey, grp, why, count in _instance_counts(session, period, by, journeys, InstanceRow.ended_at, reason):
        found.setdefault((journey, grp), {})[why] = int(count)
    return found


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


def _first_goal_at(rule: GoalRule, order_id, customer_id, after) -> ColumnElement:
    """When the first goal event for the key came strictly after `after` and at most `within`
    after it (else NULL): a scalar subquery correlated to the caller's row, one look-up on the
    key's index."""
    goal = aliased(EventRow)
    key = goal.order_id == order_id if rule.key == "order" else goal.customer_id == customer_id
    return (
        select(func.min(goal.occurred_at))
        .where(goal.type == rule.event, key, goal.occurred_at > after, goal.occurred_at <= shifted(after, rule.within))
        .scalar_subquery()
    )


def reached(journey: str, rule: GoalRule | None, period: Period, by: Grouping | None) -> Any:  # a CTE
    """Each instance of `journey` whose first sent message falls in the period, with that
    message's group, and its conversion by the rule (time, order; none without a goal). The goal
    events are joined to the instances (a hash join on the key, not a look-up per instance)."""
    m, earlier = MessageRow, aliased(MessageRow)
    # The period's sent messages, first per run; a run that sent before the period is not new.
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
        .where(m.journey == journey, _in(m.status, SENT_STATUSES), m.at >= _at(period.start), m.at < _at(period.end))
        .subquery()
    )
    sent_before = (
        select(earlier.id)
        .where(
            earlier.workflow_id == ranked.c.workflow_id,
            earlier.run_id == ranked.c.run_id,
            earlier.at < _at(period.start),
            _in(earlier.status, SENT_STATUSES),
        )
        .exists()
    )
    firsts = select(ranked).where(ranked.c.n == 1, ~sent_before).subquery()
    if rule is None:
        nothing = null()
        return select(
            firsts.c.workflow_id, firsts.c.grp, nothing.label("converted_at"), nothing.label("converted_order")
        ).cte(f"reached_{journey}")
    # A look-up per instance on the key's index: the planner cannot turn it into a join that
    # compares every instance with every goal event.
    converted_at = _first_goal_at(rule, firsts.c.order_id, firsts.c.customer_id, firsts.c.at)
    found = select(
        firsts.c.workflow_id, firsts.c.grp, firsts.c.order_id, firsts.c.customer_id, converted_at.label("converted_at")
    ).subquery()
    if rule.key == "order":
        order = found.c.order_id
    else:  # the order of the goal event that converted it
        same = aliased(EventRow)
        order = (
            select(same.order_id)
            .where(
                same.customer_id == found.c.customer_id,
                same.type == rule.event,
                same.occurred_at == found.c.converted_at,
            )
            .order_by(same.event_id)
            .limit(1)
            .scalar_subquery()
        )
    return select(
        found.c.workflow_id,
        found.c.grp,
        found.c.converted_at,
        case((found.c.converted_at.is_not(None), order)).label("converted_order"),
    ).cte(f"reached_{journey}")


@dataclass
class Conversions:
    #: Per journey, per group: reached, converted, revenue.
    journeys: dict[str, dict[str, dict[str, Any]]]
    #: Orders converted by any journey, each once however many journeys claim it, and their amount.
    orders: int
    revenue: float


_TOTAL = "*"  # the row of the deduplicated totals, beside the journeys' rows


def conversions(
    session: Session, rules: dict[str, GoalRule | None], period: Period, by: Grouping | None
) -> Conversions:
    """For each journey (its goal, or None for a journey without one): per group, the instances
    reached (a first sent message in the period), converted, and revenue; and the orders converted
    by any of them, each once. One statement: each journey's instances are computed once, for
    its rows and for the totals."""
    found = Conversions({journey: {} for journey in rules}, 0, 0.0)
    if not rules:
        return found
    instances = {journey: reached(journey, rule, period, by) for journey, rule in rules.items()}
    parts = []
    for journey, rows in instances.items():
        rule = rules[journey]
        revenue = order_amount(rows.c.converted_order) if rule and rule.earns else literal(0.0, Float())
        parts.append(
            select(
                literal(journey, String()).label("journey"),
                rows.c.grp,
                func.count().label("reached"),
                func.count(rows.c.converted_at).label("converted"),
                func.sum(case((rows.c.converted_at.is_not(None), revenue), else_=0.0)).label("revenue"),
            ).group_by(rows.c.grp)
        )
    earning = [
        select(rows.c.converted_order.label("order_id")).where(rows.c.converted_at.is_not(None))
        for journey, rows in instances.items()
        if (rule := rules[journey]) is not None and rule.earns
    ]
    if earning:
        claimed = union_all(*earning).subquery()
        orders = select(claimed.c.order_id).where(claimed.c.order_id.is_not(None)).distinct().subquery()
        parts.append(
            select(
                literal(_TOTAL, String()).label("journey"),
                literal("", String()).label("grp"),
                func.count().label("reached"),
                func.count().label("converted"),
                func.sum(order_amount(orders.c.order_id)).label("revenue"),
            ).select_from(orders)
        )
    for row in session.execute(union_all(*parts)):
        if row.journey == _TOTAL:
            found.orders, found.revenue = int(row.converted), float(row.revenue or 0)
        else:
            found.journeys[row.journey][row.grp] = {
                "reached": int(row.reached),
                "converted": int(row.converted),
                "revenue": float(row.revenue or 0),
            }
    return found


def holdout(session: Session, journey: str, rule: GoalRule, period: Period, group: str) -> tuple[int, int]:
    """The holdout of a journey's split entered in the period: (instances, converted), each from
    its entry on the same rule."""
    i = InstanceRow
    converted_at = _first_goal_at(rule, i.order_id, i.customer_id, i.entered_at)
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


def _purchases(since: datetime, until: datetime, *, amounts: bool = False):
    """Purchases in [since, until): orders paid then (their first order.paid), not refunded by
    `until`: customer, order, paid_at, and with `amounts` the order's amount."""
    paid, refund = aliased(EventRow), aliased(EventRow)
    first_paid = (
        select(paid.customer_id, paid.order_id, func.min(paid.occurred_at).label("paid_at"))
        .where(
            paid.type == "order.paid",
            paid.order_id.is_not(None),
            paid.occurred_at >= _at(since),
            paid.occurred_at < _at(until),
        )
        .group_by(paid.customer_id, paid.order_id)
        .subquery()
    )
    refunded = (
        select(refund.event_id)
        .where(
            refund.order_id == first_paid.c.order_id, refund.type == "order.refunded", refund.occurred_at < _at(until)
        )
        .exists()
    )
    columns = [first_paid.c.customer_id, first_paid.c.order_id, first_paid.c.paid_at]
    if amounts:
        columns.append(order_amount(first_paid.c.order_id).label("amount"))
    return select(*columns).where(~refunded).subquery()


def _paid(customer_id, after, before) -> ColumnElement:
    """Whether the customer has an order.paid event in (after, before) (an index look-up)."""
    paid = aliased(EventRow)
    return (
        select(paid.event_id)
        .where(
            paid.customer_id == customer_id,
            paid.type == "order.paid",
            paid.occurred_at > after,
            paid.occurred_at < before,
        )
        .exists()
    )


def result_indicators(session: Session, period: Period, silent_days: int) -> dict[str, Any]:
    """For the period: buyers and purchases; repeat buyers (two or more purchases) and the amount
    of the purchases after each buyer's first; retention (buyers of the period before, of the
    same length, who bought again in this one); reactivation (customers sent a message in the
    period who had paid for an order before but not in the `silent_days` before it, and paid for
    one after it within the period)."""
    purchases = _purchases(period.start, period.end, amounts=True)
    in_period = select(
        purchases,
        func.row_number()
        .over(partition_by=purchases.c.customer_id, order_by=(purchases.c.paid_at, purchases.c.order_id))
        .label("n"),
    ).subquery()
    buyers, repeat_buyers, orders, amount, repeat_amount = session.execute(
        select(
            func.count(in_period.c.customer_id.distinct()),
            func.count(case((in_period.c.n >= 2, in_period.c.customer_id)).distinct()),
            func.count(),
            func.sum(in_period.c.amount),
            func.sum(case((in_period.c.n >= 2, in_period.c.amount), else_=0.0)),
        )
    ).one()

    length = period.end - period.start
    earlier = _purchases(period.start - length, period.start)
    now = _purchases(period.start, period.end)
    before = select(earlier.c.customer_id)
    again = select(now.c.customer_id)
    earlier_buyers = session.scalar(select(func.count()).select_from(before.distinct().subquery()))
    retained = session.scalar(select(func.count()).select_from(before.intersect(again).subquery()))

    m = MessageRow
    first_message = (
        select(m.customer_id, func.min(m.at).label("at"))
        .where(_in(m.status, SENT_STATUSES), m.at >= _at(period.start), m.at < _at(period.end))
        .group_by(m.customer_id)
        .subquery()
    )
    at = first_message.c.at
    last = aliased(EventRow)
    last_paid = (
        select(func.max(last.occurred_at))
        .where(last.customer_id == first_message.c.customer_id, last.type == "order.paid", last.occurred_at < at)
        .scalar_subquery()
    )
    silent = last_paid <= shifted(at, -timedelta(days=silent_days))
    came_back = _paid(first_message.c.customer_id, after=at, before=_at(period.end))
    silent_messaged, reactivated = session.execute(
        select(_count_if(silent), _count_if(and_(silent, came_back))).select_from(first_message)
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
