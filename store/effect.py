"""The effect report's queries (a read model over the ledger, the instances and the event log),
computed by the database on PostgreSQL and SQLite alike: counts grouped in SQL over indexed
columns, never rows walked in Python.

Conversions are read from the `reached` read model, where store/reached.py applies the one
conversion rule as sends and goal events are written (views/effect.py assembles the report):
- revenue counts for purchase goals (order.created, order.paid) only: the converting order's
  amount, order.paid's `data.amount`, else order.created's;
- the holdout of a journey's split converts on the same rule from its entry (`holdout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Float, String, and_, case, func, literal, null, select, text, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement

from core.vocabulary import SENT_STATUSES, Status
from store.reached import GoalRule, first_goal_event
from store.segments import json_number
from store.sqltime import local_day, shifted
from store.tables import EventRow, InstanceRow, MessageRow, ProviderEventRow, ReachedRow, UTCDateTime

DELIVERED_STATUSES = (Status.DELIVERED, Status.OPENED, Status.CLICKED)
OPENED_STATUSES = (Status.OPENED, Status.CLICKED)
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


def reached(journey: str, rule: GoalRule | None, period: Period, by: Grouping | None) -> Any:  # a CTE
    """Each run of `journey` whose first sent message falls in the period, with that message's
    group and the run's conversion (time, order; none without a goal): rows of the `reached`
    read model (store/reached.py), kept by the rule `sync_goals` recorded."""
    r = ReachedRow
    converted_at, converted_order = (r.converted_at, r.converted_order) if rule else (null(), null())
    return (
        select(
            r.workflow_id,
            _group(by, r, r.at, period).label("grp"),
            converted_at.label("converted_at"),
            converted_order.label("converted_order"),
        )
        .where(r.journey == journey, r.at >= _at(period.start), r.at < _at(period.end))
        .cte(f"reached_{journey}")
    )


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
    earning = [
        select(rows.c.converted_order.label("order_id")).where(rows.c.converted_at.is_not(None))
        for journey, rows in instances.items()
        if (rule := rules[journey]) is not None and rule.earns
    ]
    parts = []
    amounts = None
    if earning:
        # Each converted order's amount, looked up once for the journeys' revenue and the totals.
        claimed = union_all(*earning).subquery()
        orders = select(claimed.c.order_id).where(claimed.c.order_id.is_not(None)).distinct().subquery()
        amounts = (
            select(orders.c.order_id, order_amount(orders.c.order_id).label("amount"))
            .cte("amounts")
            .prefix_with("MATERIALIZED")
        )
        parts.append(
            select(
                literal(_TOTAL, String()).label("journey"),
                literal("", String()).label("grp"),
                func.count().label("reached"),
                func.count().label("converted"),
                func.sum(amounts.c.amount).label("revenue"),
            ).select_from(amounts)
        )
    for journey, rows in instances.items():
        rule = rules[journey]
        earns = rule is not None and rule.earns and amounts is not None
        query = select(
            literal(journey, String()).label("journey"),
            rows.c.grp,
            func.count().label("reached"),
            func.count(rows.c.converted_at).label("converted"),
            func.sum(func.coalesce(amounts.c.amount, 0.0) if earns else literal(0.0, Float())).label("revenue"),
        ).select_from(rows)
        if earns:
            query = query.outerjoin(
                amounts, and_(rows.c.converted_at.is_not(None), amounts.c.order_id == rows.c.converted_order)
            )
        parts.append(query.group_by(rows.c.grp))
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
    converted_at = first_goal_event(rule, i.order_id, i.customer_id, i.entered_at)
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
    """Purchases in [since, until): orders paid then (their first order.paid then), not refunded
    by `until`: customer, order, paid_at, and with `amounts` the amount of that payment (else, when
    it has none, the order's amount by `order_amount`)."""
    paid, refund = aliased(EventRow), aliased(EventRow)
    ranked = (
        select(
            paid.customer_id,
            paid.order_id,
            paid.occurred_at.label("paid_at"),
            json_number(paid.data, "amount").label("amount"),
            func.row_number()
            .over(partition_by=(paid.customer_id, paid.order_id), order_by=(paid.occurred_at, paid.event_id))
            .label("n"),
        )
        .where(
            paid.type == "order.paid",
            paid.order_id.is_not(None),
            paid.occurred_at >= _at(since),
            paid.occurred_at < _at(until),
        )
        .subquery()
    )
    refunded = (
        select(refund.event_id)
        .where(refund.order_id == ranked.c.order_id, refund.type == "order.refunded", refund.occurred_at < _at(until))
        .exists()
    )
    columns = [ranked.c.customer_id, ranked.c.order_id, ranked.c.paid_at]
    if amounts:  # the fallback's look-ups run only for payments without an amount
        columns.append(func.coalesce(ranked.c.amount, order_amount(ranked.c.order_id)).label("amount"))
    return select(*columns).where(ranked.c.n == 1, ~refunded).subquery()


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
    same length, who bought again in this one); reactivation (customers a journey reached in the
    period, from the first message of their first reached run, who had paid for an order before it
    but not in the `silent_days` before it, and paid for one after it within the period)."""
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

    # Customers a journey reached in the period, from their first reached run; their last
    # purchase before it and whether they bought after it, in one join with their purchases.
    r = ReachedRow
    first_message = (
        select(r.customer_id, func.min(r.at).label("at"))
        .where(r.at >= _at(period.start), r.at < _at(period.end))
        .group_by(r.customer_id)
        .subquery()
    )
    paid = aliased(EventRow)
    before = paid.occurred_at < first_message.c.at
    messaged = (
        select(
            func.max(case((before, paid.occurred_at))).label("last_paid"),
            func.max(case((paid.occurred_at > first_message.c.at, 1), else_=0)).label("came_back"),
            first_message.c.at,
        )
        .select_from(first_message)
        .outerjoin(
            paid,
            and_(
                paid.customer_id == first_message.c.customer_id,
                paid.type == "order.paid",
                paid.occurred_at < _at(period.end),
            ),
        )
        .group_by(first_message.c.customer_id, first_message.c.at)
        .subquery()
    )
    silent = messaged.c.last_paid <= shifted(messaged.c.at, -timedelta(days=silent_days))
    silent_messaged, reactivated = session.execute(
        select(_count_if(silent), _count_if(and_(silent, messaged.c.came_back == 1)))
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
