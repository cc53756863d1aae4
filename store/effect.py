"""The effect report's queries (a read model over the ledger, the instances and the event log),
computed by the database on PostgreSQL and SQLite alike: counts grouped in SQL over indexed
columns, never rows walked in Python.

Conversions are read from the `reached` read model, where store/reached.py applies the one
conversion rule as sends and goal events are written (views/effect.py assembles the report):
- revenue counts for purchase goals (order.created, order.paid) only: the converting order's
  amount, its first order.paid's `data.amount`, else its latest order.created's (core/amounts.py:
  what an amount is, and what a purchase and a refund are, for every reader);
- the holdout of a journey's split converts on the same rule from its entry (`holdout`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import String, and_, case, func, literal, null, select, text, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from core.amounts import in_period_sql
from core.vocabulary import SENT_STATUSES, Status
from store.clicks import clicked_messages
from store.orders import amount
from store.portable import bytewise, local_day, shifted
from store.reached import GoalRule, first_goal_event
from store.tables import DeferralRow, InstanceRow, MessageRow, OrderRow, ProviderEventRow, ReachedRow, UTCDateTime

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
    (`skipped:quiet_hours`), for messages due in the period. Clicked counts messages, each
    once: an email by its status (SendGrid's click event moves it there), an SMS by its status
    or a click on its short link (store/clicks.py: a click moves the status too, but a send in
    doubt settled later may write `sent` over it; the status outlives the click rows retention
    deletes). A message clicked was delivered, whatever its status says."""
    m = MessageRow
    group = _group(by, m, m.at, period)
    where = [m.at >= _at(period.start), m.at < _at(period.end)]
    if journeys is not None:
        where.append(m.journey.in_(journeys))
    # One pass: rows per (journey, group, status, reason, channel), added up here; a few hundred
    # groups however many messages.
    sms = m.channel == "sms"
    clicks = clicked_messages(period.start)  # a click comes after its message
    link_clicked = clicks.c.message_id.is_not(None)
    rows = session.execute(
        select(
            m.journey,
            group.label("grp"),
            m.status,
            m.reason,
            m.channel,
            link_clicked.label("link_clicked"),
            func.count(),
            func.sum(case((sms, func.coalesce(m.segments, 1)), else_=0)),
        )
        .select_from(m)
        .outerjoin(clicks, clicks.c.message_id == m.id)
        .where(*where)
        .group_by(*_keys(m.journey, group, by), m.status, m.reason, m.channel, link_clicked)
    )
    names = (
        "sent",
        "skipped",
        "failed",
        "in_doubt",
        "delivered",
        "opened",
        "clicked",
        "bounced",
        "sms_segments",
        "emails",
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for journey, grp, status, reason, channel, followed, count, segments in rows:
        counts = found.setdefault((journey, grp), dict.fromkeys(names, 0))
        count = int(count)
        if status in SENT_STATUSES:
            counts["sent"] += count
            counts["sms_segments"] += int(segments or 0) if channel == "sms" else 0
            counts["emails"] += count if channel == "email" else 0
        if status in (Status.SKIPPED, Status.FAILED):
            counts[status] += count
            why = f"{status}:{reason or 'unknown'}"
            counts[why] = counts.get(why, 0) + count
        counts["in_doubt"] += count if status in (Status.SENDING, Status.UNKNOWN) else 0
        clicked = status == Status.CLICKED or (bool(followed) and status in SENT_STATUSES)
        counts["delivered"] += count if status in DELIVERED_STATUSES or clicked else 0
        counts["opened"] += count if status in OPENED_STATUSES else 0
        counts["clicked"] += count if clicked else 0
        counts["bounced"] += count if status == Status.UNDELIVERED and not clicked else 0
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
    for (journey, grp), deferred in deferral_counts(session, period, by, journeys).items():
        counts = found.setdefault((journey, grp), dict.fromkeys(names, 0))
        for why, count in deferred.items():
            counts["deferred"] = counts.get("deferred", 0) + count
            counts[f"deferred:{why}"] = count
    return found


def deferral_counts(
    session: Session, period: Period, by: Grouping | None, journeys: list[str] | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    """Per (journey, group): the times the contact policy put a send off in the period (by the
    deferral's journey time), by reason (quiet_hours, send_window, frequency_cap). A message
    deferred twice counts twice; it is counted once more, sent or skipped, in the ledger."""
    d = DeferralRow
    group = _group(by, d, d.at, period)
    where = [d.at >= _at(period.start), d.at < _at(period.end)]
    if journeys is not None:
        where.append(d.journey.in_(journeys))
    rows = session.execute(
        select(d.journey, group.label("grp"), d.reason, func.count())
        .where(*where)
        .group_by(*_keys(d.journey, group, by), d.reason)
    )
    found: dict[tuple[str, str], dict[str, int]] = {}
    for journey, grp, reason, count in rows:
        found.setdefault((journey, grp), {})[reason] = int(count)
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


@dataclass
class Conversions:
    #: Per journey, per group: reached, converted, revenue.
    journeys: dict[str, dict[str, dict[str, Any]]]
    #: Orders converted by any journey, each once however many journeys claim it, and their amount.
    orders: int
    revenue: float


def conversions(
    session: Session,
    rules: dict[str, GoalRule | None],
    period: Period,
    by: Grouping | None,
    journeys: list[str] | None = None,
) -> Conversions:
    """For each journey with runs reached in the period (a first sent message in it), or only
    `journeys`: per group, the runs reached, converted (by its goal in `rules`; none without one)
    and revenue; and the orders converted by any of them, each once. The rows of the `reached`
    read model (store/reached.py, kept by the rules `sync_goals` recorded), read in one pass;
    each converted order's amount is kept on the run."""
    found = Conversions(defaultdict(dict), 0, 0.0)
    r = ReachedRow
    converting = [journey for journey, rule in rules.items() if rule is not None]
    earning = [journey for journey, rule in rules.items() if rule is not None and rule.earns]
    in_period = [r.at >= _at(period.start), r.at < _at(period.end)]
    if journeys is not None:
        in_period.append(r.journey.in_(journeys))
    converted = and_(r.journey.in_(converting or [""]), r.converted_at.is_not(None))
    earned = and_(r.journey.in_(earning or [""]), r.converted_at.is_not(None))
    group = _group(by, r, r.at, period)
    rows = session.execute(
        select(r.journey, group.label("grp"), func.count(), _count_if(converted))
        .where(*in_period)
        .group_by(*_keys(r.journey, group, by))
    )
    for journey, grp, reached, count in rows:
        found.journeys[journey][grp] = {"reached": int(reached), "converted": int(count or 0), "revenue": 0.0}
    if not earning:
        return found
    # The converted runs of earning journeys with their order's amount (kept on the run): revenue
    # per journey and group, and each order once in total.
    earned_rows = (
        select(
            r.journey,
            group.label("grp"),
            r.converted_order.label("order_id"),
            func.coalesce(r.converted_amount, 0.0).label("amount"),
        )
        .where(*in_period, earned)
        .cte("earned")
        .prefix_with("MATERIALIZED")
    )
    orders = (
        select(earned_rows.c.order_id, func.max(earned_rows.c.amount).label("amount"))
        .where(earned_rows.c.order_id.is_not(None))
        .group_by(earned_rows.c.order_id)
        .subquery()
    )
    statement = union_all(
        select(earned_rows.c.journey, earned_rows.c.grp, func.count(), func.sum(earned_rows.c.amount)).group_by(
            earned_rows.c.journey, earned_rows.c.grp
        ),
        select(literal(_TOTAL, String()), literal("", String()), func.count(), func.sum(orders.c.amount)),
    )
    for journey, grp, count, revenue in session.execute(statement):
        if journey == _TOTAL:
            found.orders, found.revenue = int(count or 0), float(revenue or 0)
        else:
            found.journeys[journey][grp]["revenue"] = float(revenue or 0)
    return found


_TOTAL = "*"  # the row of the orders converted by any journey, each once, beside the journeys' rows


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


def _purchases(since: datetime, until: datetime):
    """Purchases in [since, until): orders first paid then and not refunded by `until` (the
    `orders` read model; core/amounts.py `in_period`): customer, order, paid_at and the order's
    amount."""
    o = OrderRow
    return (
        select(o.customer_id, o.order_id, o.paid_at, amount(o).label("amount"))
        .where(in_period_sql(o.paid_at, o.refunded_at, since, until))
        .subquery()
    )


def result_indicators(session: Session, period: Period, silent_days: int) -> dict[str, Any]:
    """For the period: buyers and purchases; repeat buyers (two or more purchases) and the amount
    of the purchases after each buyer's first; retention (buyers of the period before, of the
    same length, who bought again in this one); reactivation (customers a journey reached in the
    period, from the first message of their first reached run, who had paid for an order before it
    but not in the `silent_days` before it, and paid for one after it within the period)."""
    purchases = _purchases(period.start, period.end)
    in_period = select(
        purchases,
        func.row_number()
        .over(
            partition_by=bytewise(purchases.c.customer_id),
            order_by=(purchases.c.paid_at, bytewise(purchases.c.order_id)),
        )
        .label("n"),
    ).subquery()
    buyers, repeat_buyers, orders, amount, repeat_amount = session.execute(
        select(
            _count_if(in_period.c.n == 1),  # each buyer's first purchase
            _count_if(in_period.c.n == 2),  # and second: a repeat buyer
            func.count(),
            func.sum(in_period.c.amount),
            func.sum(case((in_period.c.n >= 2, in_period.c.amount), else_=0.0)),
        )
    ).one()

    # Retention: per customer who bought in the period before (of the same length, purchases not
    # refunded by its end), whether they bought in this one; one pass over both periods' orders.
    o = OrderRow
    length = period.end - period.start
    earlier_start = period.start - length

    def kept(start, end) -> ColumnElement:
        return in_period_sql(o.paid_at, o.refunded_at, start, end)

    buyer = (
        select(
            func.max(case((kept(earlier_start, period.start), 1), else_=0)).label("before"),
            func.max(case((kept(period.start, period.end), 1), else_=0)).label("again"),
        )
        .where(o.paid_at >= _at(earlier_start), o.paid_at < _at(period.end))
        .group_by(o.customer_id)
        .subquery()
    )
    earlier_buyers, retained = session.execute(
        select(_count_if(buyer.c.before == 1), _count_if(and_(buyer.c.before == 1, buyer.c.again == 1)))
    ).one()

    # Customers a journey reached in the period, as of their first reached run there: its first
    # message, the customer's last purchase before it, and whether one came after it. Each run's
    # neighbouring purchases rise with its time (store/reached.py), so the first run's are the
    # smallest: its `last_paid_before` is NULL (never bought before) if any run's is, else the
    # least; its `next_paid_after` the least (NULL only when every run's is).
    r = ReachedRow
    messaged = (
        select(
            func.min(r.at).label("at"),
            case((func.count() > func.count(r.last_paid_before), null()), else_=func.min(r.last_paid_before)).label(
                "last_paid"
            ),
            func.min(r.next_paid_after).label("next_paid"),
        )
        .where(r.at >= _at(period.start), r.at < _at(period.end))
        .group_by(r.customer_id)
        .subquery()
    )
    silent = messaged.c.last_paid <= shifted(messaged.c.at, -timedelta(days=silent_days))
    silent_messaged, reactivated = session.execute(
        select(_count_if(silent), _count_if(and_(silent, messaged.c.next_paid < _at(period.end))))
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
