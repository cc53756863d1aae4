"""The `reached` read model: each journey run's first sent message and its conversion, kept as
the ledger and the event log change, so the effect report sums indexed rows instead of ranking
every message of a period and looking up goal events run by run.

The conversion rule (the one place it is applied):
- a run converts when its first goal event for the run's key (its order, or its customer)
  occurs strictly after the run's first sent message and at most `within` after it; once per
  run; of two goal events at the same instant, the one with the smaller event id;
- revenue (store/effect.py) counts for purchase goals (order.created, order.paid) only: the
  converting order's amount (store/orders.py `amount`: core/amounts.py's rule for an amount and
  an order's amount), kept on the run as `converted_amount`.

How the rows stay true:
- every write to a message row goes through the ORM (the send path, the webhooks' status
  updates, reconciliation of sends in doubt), so one listener on every session sees each message
  that is sent, or moves from `sending`/`unknown` to a sent status, upserts its run's row (keeping
  the earliest message, ties by id) and computes the run's conversion from the events logged;
- `store_events` (store/queries.py) hands each newly logged goal event to `note_goal_events`,
  which converts the runs it is the first goal event for, and each order whose amount may have
  changed to `note_amounts`;
- each journey's rule is the `goals` row the effect report last recorded from its definitions
  (`sync_goals`); when a rule is new or changed, that journey's conversions are computed again;
- each run also holds the customer's purchases around its first message (`last_paid_before`,
  `next_paid_after`: first payments from the `orders` read model) for reactivation; a send sets
  them, and a new or earlier first payment (`note_payments`) sets them again for that customer;
- on PostgreSQL every writer first takes a transaction lock on the customer (`lock_customers`),
  so a goal event or a payment and a first send for the same customer committed at the same
  moment cannot miss each other (SQLite serialises writers anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import and_, delete, event, func, inspect, or_, select, text, tuple_, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement

from core.records import Event
from core.vocabulary import SENT_STATUSES
from store.orders import amount
from store.portable import shifted, upsert_insert
from store.tables import EventRow, GoalRow, MessageRow, OrderRow, ReachedRow

_SENT = frozenset(str(status) for status in SENT_STATUSES)
#: Goal event types whose order has an amount: only these earn revenue.
PURCHASE_GOALS = ("order.created", "order.paid")
#: The first key of the advisory locks this module takes on PostgreSQL (the second is the customer).
_LOCK_SPACE = 74_110


@dataclass(frozen=True)
class GoalRule:
    """A journey's goal: the event, how long after the first sent message it counts, and whose
    event it must be (the run's order or its customer)."""

    event: str
    within: timedelta
    key: Literal["order", "customer"]

    @property
    def earns(self) -> bool:
        return self.event in PURCHASE_GOALS


def lock_customers(session: Session, customer_ids: Iterable[str]) -> None:
    """Serialise, per customer, the writers of the read models (PostgreSQL; until commit): one
    statement, the locks taken in the order of their keys so two writers cannot deadlock."""
    if session.bind.dialect.name != "postgresql":
        return
    customers = sorted(set(customer_ids))
    if not customers:
        return
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock(:space, k) FROM "
            "(SELECT DISTINCT hashtext(c) AS k FROM unnest(CAST(:customers AS text[])) AS c ORDER BY k) AS keys"
        ),
        {"space": _LOCK_SPACE, "customers": customers},
    )


# ---------------------------------------------------------------------------------------------
# Sends


def _newly_sent(session: Session) -> list[MessageRow]:
    """Messages in this flush that are sent and were not before it."""
    found = []
    for row in session.new:
        if isinstance(row, MessageRow) and row.status in _SENT:
            found.append(row)
    for row in session.dirty:
        if isinstance(row, MessageRow) and row.status in _SENT:
            history = inspect(row).attrs.status.history
            if history.has_changes() and not any(before in _SENT for before in history.deleted):
                found.append(row)
    return found


def note_reached(session: Session, rows: list[MessageRow]) -> None:
    """Upsert the runs of these sent messages, keeping each run's earliest (at, id). A new or
    moved run is left unsettled: its conversion and neighbouring purchases are computed by
    `settle`, off the send path (one statement here, no lock)."""
    if not rows:
        return
    firsts: dict[tuple[str, str], MessageRow] = {}
    for row in rows:
        key = (row.workflow_id, row.run_id)
        if key not in firsts or (row.at, row.id) < (firsts[key].at, firsts[key].id):
            firsts[key] = row
    statement = upsert_insert(session, ReachedRow.__table__)  # one cached statement for many rows
    rows_of_runs = [
        {
            "workflow_id": row.workflow_id,
            "run_id": row.run_id,
            "journey": row.journey,
            "customer_id": row.customer_id,
            "order_id": row.order_id,
            "variant": row.variant,
            "step": row.step,
            "channel": row.channel,
            "at": row.at,
            "message_id": row.id,
            "settled": False,
        }
        for row in firsts.values()
    ]
    new, old = statement.excluded, ReachedRow.__table__.c
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[old.workflow_id, old.run_id],
            set_={
                "step": new.step,
                "channel": new.channel,
                "at": new.at,
                "message_id": new.message_id,
                "settled": False,
            },
            where=or_(new.at < old.at, and_(new.at == old.at, new.message_id < old.message_id)),
        ),
        rows_of_runs,
    )


def settle(session: Session, limit: int = 2000) -> int:
    """Compute the conversions and neighbouring purchases of up to `limit` unsettled runs (new
    or moved by a send); how many it settled. The runs are claimed first, in this transaction,
    so a send that moves one meanwhile leaves it unsettled again for the next call."""
    r = ReachedRow
    lock_customers(session, ["settle"])  # one settler at a time on PostgreSQL
    claimed = session.execute(
        select(r.journey, r.workflow_id, r.run_id, r.customer_id).where(~r.settled).limit(limit)
    ).all()
    if not claimed:
        return 0
    lock_customers(session, (customer for *_, customer in claimed))
    runs = [(w, run) for _, w, run, _ in claimed]
    session.execute(
        update(r).where(tuple_(r.workflow_id, r.run_id).in_(runs)).values(settled=True),
        execution_options={"synchronize_session": False},
    )
    by_journey: dict[str, list[tuple[str, str]]] = {}
    for journey, workflow_id, run_id, _ in claimed:
        by_journey.setdefault(journey, []).append((workflow_id, run_id))
    rules = _rules(session, list(by_journey))
    for journey, mine in by_journey.items():
        _convert(session, journey, rules.get(journey), mine)
    _neighbours(session, runs=runs)
    return len(claimed)


def settle_all(store) -> int:
    """Settle every unsettled run, a batch per transaction; how many."""
    total = 0
    while True:
        with store.transaction() as session:
            done = settle(session)
        total += done
        if not done:
            return total


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context) -> None:
    # After the flush the message rows are in the database; `new`, `dirty` and the attributes'
    # history still describe what this flush wrote.
    note_reached(session, _newly_sent(session))


# ---------------------------------------------------------------------------------------------
# Conversions


def _rules(session: Session, journeys: list[str] | None = None) -> dict[str, GoalRule]:
    query = select(GoalRow)
    if journeys is not None:
        query = query.where(GoalRow.journey.in_(journeys))
    return {
        row.journey: GoalRule(row.event, timedelta(seconds=row.within_seconds), row.key)  # type: ignore[arg-type]
        for row in session.scalars(query)
    }


def first_goal_event(rule: GoalRule, order_id, customer_id, after) -> ColumnElement:
    """The id of the first goal event for the key strictly after `after` and at most `within`
    after it (else NULL): a scalar subquery correlated to the caller's row, one look-up on the
    key's index (events' ix_events_goal_order or ix_events_goal_customer)."""
    goal = aliased(EventRow)
    key = goal.order_id == order_id if rule.key == "order" else goal.customer_id == customer_id
    return (
        select(goal.event_id)
        .where(goal.type == rule.event, key, goal.occurred_at > after, goal.occurred_at <= shifted(after, rule.within))
        .order_by(goal.occurred_at, goal.event_id)
        .limit(1)
        .scalar_subquery()
    )


def _convert(session: Session, journey: str, rule: GoalRule | None, runs: list[tuple[str, str]] | None) -> None:
    """Compute the conversions of these runs of the journey (all its runs with `runs` None) from
    the events logged: the first goal event for the key in (at, at + within]."""
    r = ReachedRow
    unsynchronised = {"synchronize_session": False}  # no ORM objects of `reached` are held
    where = [r.journey == journey]
    if runs is not None:
        if not runs:
            return
        where.append(tuple_(r.workflow_id, r.run_id).in_(runs))
    cleared = {"converted_event": None, "converted_at": None, "converted_order": None, "converted_amount": None}
    if runs is not None and rule is None:
        return  # a journey without a goal has no conversions to move (sync_goals cleared any)
    if runs is None:
        # Every run of the journey: only rows that change are written. The converted ones are
        # cleared, then the runs with a goal event in their window take it (a million runs cost a
        # join, not a million writes).
        session.execute(
            update(r).where(*where, r.converted_event.is_not(None)).values(**cleared),
            execution_options=unsynchronised,
        )
    if rule is None:
        return
    if runs is None:  # every run of the journey: the goal events joined to the runs, first per run
        goal = aliased(EventRow)
        key = goal.order_id == r.order_id if rule.key == "order" else goal.customer_id == r.customer_id
        ranked = (
            select(
                r.workflow_id,
                r.run_id,
                goal.event_id,
                goal.occurred_at,
                goal.order_id,
                func.row_number()
                .over(partition_by=(r.workflow_id, r.run_id), order_by=(goal.occurred_at, goal.event_id))
                .label("n"),
            )
            .join(goal, and_(key, goal.type == rule.event))
            .where(*where, goal.occurred_at > r.at, goal.occurred_at <= shifted(r.at, rule.within))
            .subquery()
        )
        firsts = (
            select(ranked, amount(OrderRow).label("amount"))
            .outerjoin(OrderRow, OrderRow.order_id == ranked.c.order_id)
            .where(ranked.c.n == 1)
            .subquery()
        )
        session.execute(  # one write per converted run
            update(r)
            .where(r.workflow_id == firsts.c.workflow_id, r.run_id == firsts.c.run_id)
            .values(
                converted_event=firsts.c.event_id,
                converted_at=firsts.c.occurred_at,
                converted_order=firsts.c.order_id,
                converted_amount=firsts.c.amount,
            ),
            execution_options=unsynchronised,
        )
        return
    # A few runs (a send, goal events): each takes its first goal event, or none.
    first = first_goal_event(rule, r.order_id, r.customer_id, r.at)
    session.execute(
        update(r).where(*where).values(**(cleared | {"converted_event": first})), execution_options=unsynchronised
    )
    chosen = aliased(EventRow)
    session.execute(
        update(r)
        .where(*where, r.converted_event.is_not(None))
        .values(
            converted_at=select(chosen.occurred_at).where(chosen.event_id == r.converted_event).scalar_subquery(),
            converted_order=select(chosen.order_id).where(chosen.event_id == r.converted_event).scalar_subquery(),
            converted_amount=order_amount(  # correlated to the run two levels up
                select(chosen.order_id).where(chosen.event_id == r.converted_event).correlate(r).scalar_subquery()
            ),
        ),
        execution_options=unsynchronised,
    )


# ---------------------------------------------------------------------------------------------
# The customer's purchases around a run (for reactivation)


def _neighbours(
    session: Session, *, runs: list[tuple[str, str]] | None = None, customers: list[str] | None = None
) -> None:
    """Set `last_paid_before` and `next_paid_after` (the customer's orders' first payments just
    before and after the run's first message, from `orders`) on these runs, or on every run of
    these customers."""
    r, o = ReachedRow, OrderRow
    if runs:
        where = tuple_(r.workflow_id, r.run_id).in_(runs)
    elif customers:
        where = r.customer_id.in_(customers)
    else:
        return
    before = select(func.max(o.paid_at)).where(o.customer_id == r.customer_id, o.paid_at < r.at).scalar_subquery()
    after = select(func.min(o.paid_at)).where(o.customer_id == r.customer_id, o.paid_at > r.at).scalar_subquery()
    session.execute(
        update(r).where(where).values(last_paid_before=before, next_paid_after=after),
        execution_options={"synchronize_session": False},
    )


def order_amount(order_id) -> ColumnElement:
    """The amount of an order (NULL for none) from the `orders` read model: a scalar subquery
    (core/amounts.py `order_amount`, in SQL)."""
    return select(amount(OrderRow)).where(OrderRow.order_id == order_id).scalar_subquery()


def note_amounts(session: Session, order_ids: Iterable[str]) -> None:
    """Some orders' amounts may have changed: the runs they converted take them again."""
    orders = sorted(set(order_ids))
    if orders:
        r = ReachedRow
        session.execute(
            update(r).where(r.converted_order.in_(orders)).values(converted_amount=order_amount(r.converted_order)),
            execution_options={"synchronize_session": False},
        )


def note_payments(session: Session, customer_ids: Iterable[str]) -> None:
    """The first payment of some of these customers' orders is new or moved: their runs'
    neighbouring purchases again (a customer has few runs; an index look-up or two each)."""
    _neighbours(session, customers=sorted(set(customer_ids)))


def note_goal_events(session: Session, events: list[Event]) -> None:
    """Convert the runs newly logged goal events may be the first goal event for. One query per
    journey finds the candidates (same key, first sent message in the `within` before one of the
    events, not already converted earlier); the few it finds are computed again by the rule
    (`_convert`), which sees the new events."""
    if not events:
        return
    rules = _rules(session)
    r = ReachedRow
    for journey, rule in rules.items():
        mine = [e for e in events if e.type == rule.event and (e.order_id if rule.key == "order" else e.customer_id)]
        if not mine:
            continue
        column = r.order_id if rule.key == "order" else r.customer_id
        keys = sorted({e.order_id if rule.key == "order" else e.customer_id for e in mine})
        first, last = min(e.occurred_at for e in mine), max(e.occurred_at for e in mine)
        candidates = session.execute(
            select(r.workflow_id, r.run_id).where(
                r.journey == journey,
                column.in_(keys),
                r.at < last,
                r.at >= first - rule.within,
                or_(r.converted_at.is_(None), r.converted_at >= first),
            )
        ).all()
        if candidates:
            _convert(session, journey, rule, [(w, run) for w, run in candidates])


def sync_goals(session: Session, rules: dict[str, GoalRule | None]) -> list[str]:
    """Record each journey's rule; the journeys whose rule is new or changed get their
    conversions computed again (returned). A journey without a goal has none."""
    known = _rules(session, list(rules))
    changed = [journey for journey, rule in rules.items() if known.get(journey) != rule]
    for journey in changed:
        rule = rules[journey]
        if rule is None:
            session.execute(delete(GoalRow).where(GoalRow.journey == journey))
            continue
        values = {"event": rule.event, "within_seconds": rule.within.total_seconds(), "key": rule.key}
        statement = upsert_insert(session, GoalRow.__table__).values(journey=journey, **values)
        session.execute(statement.on_conflict_do_update(index_elements=["journey"], set_=values))
    for journey in changed:
        _convert(session, journey, rules[journey], None)
    return changed
