"""The `reached` read model, and its one owner: each journey run's first sent message and its
conversion, kept as the ledger and the event log change, so the effect report sums indexed rows
instead of ranking every message of a period and looking up goal events run by run.

The conversion rule (the one place it is applied):
- a run converts when its first goal event for the run's key (its order, or its customer)
  occurs strictly after the run's first sent message and at most `within` after it; once per
  run; of two goal events at the same instant, the one with the smaller event id;
- revenue (store/effect.py) counts for purchase goals (order.created, order.paid) only: the
  converting order's amount (store/orders.py `amount`: core/amounts.py's rule for an amount and
  an order's amount), kept on the run as `converted_amount`.

The write points. Only the functions below write `reached` and `goals`, each called by name
where its change happens; nothing listens process-wide (a session the Store did not make may
insert a sent message, and no `reached` row follows):
- send, `note_sends`: `Store.transaction` (store/db.py) calls it just before it commits, for
  the messages the transaction inserted already sent (the send activity inserts a message
  `sending` and moves it on by `advance_status`, below; ledger rows written whole, as tests
  write them, come here). The Store's own sessions collect those rows flush by flush
  (`track_sends`, which the Store registers on its session factory: bookkeeping only, no SQL),
  so they are written at this one point, whatever flushed them;
- status update, `note_status`: `advance_status` (store/queries.py), the one way a message's
  status moves forward, calls it. A message that becomes sent there (the send activity's
  `_record_sent` in activities/journey.py, a provider's report in triggers/webhooks.py, which
  also settles a send in doubt) makes or moves its run at once.
  Both go through `note_sent`: a run keeps its earliest sent message (ties by id) and is left
  unsettled, in one statement and without a lock, off the expensive part;
- goal event, `note_events`: `store_events` (store/queries.py) hands over the events it logged
  now with the orders whose amount or first payment they changed (store/orders.py): newly
  logged goal events convert the runs they are the first goal event for, a converted order's
  new amount follows it to its runs, and a customer's new or earlier first payment sets their
  runs' neighbouring purchases again;
- settle, `settle` and `settle_all`: the conversions and neighbouring purchases of the runs
  sends made or moved, computed from the events logged. The API process's background loop
  settles every few seconds (triggers/serve.py);
- goals, `sync_goals`: records each journey's rule from its definitions; a new or changed rule
  computes that journey's conversions again;
- `refresh`, which is `sync_goals` then `settle_all`: the effect report (views/effect.py) asks
  for it before it reads, because a report must count the sends made since the background loop
  last settled (and `journeys report` runs with no API process at all); the API calls it once
  as it starts.

Each run also holds the customer's purchases around its first message (`last_paid_before`,
`next_paid_after`: first payments from the `orders` read model), for reactivation.

Locks, on PostgreSQL (SQLite serialises writers anyway): the writers that compute conversions
and purchases (goal events, settling) first take a transaction lock on each customer they write
for (`lock_customers`), so a goal event or a payment and the settling of a first send for the
same customer committed at the same moment cannot miss each other; a settler first takes the
settling lock (`_SETTLE_LOCK`), so one settles at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import and_, delete, event, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased, object_session, sessionmaker
from sqlalchemy.sql.expression import ColumnElement, Executable

from core.records import Event
from core.vocabulary import SENT_STATUSES
from store.orders import amount
from store.portable import dialect_insert, shifted, upsert_insert
from store.tables import EventRow, GoalRow, MessageRow, OrderRow, ReachedRow

_SENT = frozenset(str(status) for status in SENT_STATUSES)
#: Goal event types whose order has an amount: only these earn revenue.
PURCHASE_GOALS = ("order.created", "order.paid")
#: The first key of the customers' advisory locks on PostgreSQL (the second is the customer's hash).
_LOCK_SPACE = 74_110
#: The key of the settling lock on PostgreSQL: one settler at a time. A single 64-bit key, which
#: PostgreSQL keeps apart from the two-key locks of the customers, so no customer id can meet it.
_SETTLE_LOCK = 74_110_000_001
#: Where a Store session keeps the messages it inserted already sent, until `note_sends`.
_INSERTED = "reached.inserted"


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


def _lock_settling(session: Session) -> None:
    """Wait for any other settler, until commit (PostgreSQL; SQLite serialises writers)."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SETTLE_LOCK})


# ---------------------------------------------------------------------------------------------
# Sends and status updates


def track_sends(sessions: sessionmaker) -> None:
    """Have the sessions of this factory (a Store's, and no others) collect, flush by flush, the
    messages they insert already sent, for `note_sends`: bookkeeping only, no SQL."""
    event.listen(sessions, "after_flush", _collect_sends)


def _collect_sends(session: Session, _context) -> None:
    # After a flush `session.new` still holds the rows this flush inserted.
    sent = [row for row in session.new if isinstance(row, MessageRow) and row.status in _SENT]
    if sent:
        session.info.setdefault(_INSERTED, []).extend(sent)


def note_sends(session: Session) -> None:
    """The send point: the runs of the messages this transaction inserted already sent. The
    Store's transaction calls it just before it commits (store/db.py `Store.transaction`)."""
    session.flush()  # what is still pending is collected too
    note_sent(session, session.info.pop(_INSERTED, []))


def note_status(row: MessageRow, before: str) -> None:
    """The status update point: `row` moved from status `before` to its status now (store/queries.py
    `advance_status`). A message that becomes sent makes or moves its run at once; a row in no
    session yet is noted when a Store transaction inserts it (`note_sends`)."""
    session = object_session(row)
    if session is not None and row.status in _SENT and before not in _SENT:
        note_sent(session, [row])


def note_sent(session: Session, rows: list[MessageRow]) -> None:
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
    session.execute(_first_sent_upsert(session.bind.dialect.name), rows_of_runs)


@functools.cache
def _first_sent_upsert(dialect: str) -> Executable:
    """`note_sent`'s statement, built once per dialect and shared (statements are immutable):
    it is on every send's path, and building it (`excluded` is an alias that copies every column
    of the table) took CPU on each send."""
    statement = dialect_insert(dialect, ReachedRow.__table__)
    new, old = statement.excluded, ReachedRow.__table__.c
    return statement.on_conflict_do_update(
        index_elements=[old.workflow_id, old.run_id],
        set_={
            "step": new.step,
            "channel": new.channel,
            "at": new.at,
            "message_id": new.message_id,
            "settled": False,
        },
        where=or_(new.at < old.at, and_(new.at == old.at, new.message_id < old.message_id)),
    )


# ---------------------------------------------------------------------------------------------
# Settling, and the report's refresh


def runs_in(runs: list[tuple[str, str]]) -> ColumnElement:
    """ReachedRow's runs among `runs` (workflow_id, run_id). Not a row-value IN: PostgreSQL plans
    `(a, b) IN ((..), ..)` as one OR branch a pair, and a settle's 2,000 pairs took it 0.7 s to plan
    (executing took 9 ms). Two scalar lists instead, each one array comparison: the workflow ids
    (the primary key's first column, so an index scan) and the pairs joined by a separator."""
    r = ReachedRow
    keys = [f"{workflow_id}{_PAIR}{run_id}" for workflow_id, run_id in runs]
    return and_(
        r.workflow_id.in_(sorted({workflow_id for workflow_id, _ in runs})),
        (r.workflow_id + _PAIR + r.run_id).in_(keys),
    )


#: Between a run's workflow id and run id in `runs_in`'s keys: a character neither holds.
_PAIR = "\x1f"


def settle(session: Session, limit: int = 2000) -> int:
    """Compute the conversions and neighbouring purchases of up to `limit` unsettled runs (new
    or moved by a send); how many it settled. The runs are claimed first, in this transaction,
    so a send that moves one meanwhile leaves it unsettled again for the next call."""
    r = ReachedRow
    _lock_settling(session)
    claimed = session.execute(
        select(r.journey, r.workflow_id, r.run_id, r.customer_id).where(~r.settled).limit(limit)
    ).all()
    if not claimed:
        return 0
    lock_customers(session, (customer for *_, customer in claimed))
    runs = [(w, run) for _, w, run, _ in claimed]
    session.execute(
        update(r).where(runs_in(runs)).values(settled=True),
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


def refresh(store, rules: dict[str, GoalRule | None]) -> list[str]:
    """Bring the read model up to date for a report: record the journeys' goal rules
    (`sync_goals`), then settle every run the sends made or moved since the last settling. The
    journeys whose rule was new or changed (their conversions were computed again)."""
    with store.transaction() as session:
        changed = sync_goals(session, rules)
    settle_all(store)
    return changed


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
        where.append(runs_in(runs))
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
        where = runs_in(runs)
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


# ---------------------------------------------------------------------------------------------
# Goal events, and the orders they change


def note_events(session: Session, events: list[Event], orders: Iterable[str], paid: Iterable[str]) -> None:
    """The goal event point: `store_events` (store/queries.py) logged `events` just now, which
    changed the rows of `orders` and the first payments of the customers `paid` (store/orders.py
    `note_order_events`). The caller holds the customers' locks (`lock_customers`)."""
    _amounts(session, orders)
    _payments(session, paid)
    _goal_events(session, events)


def _amounts(session: Session, order_ids: Iterable[str]) -> None:
    """Some orders' amounts may have changed: the runs they converted take them again."""
    orders = sorted(set(order_ids))
    if orders:
        r = ReachedRow
        session.execute(
            update(r).where(r.converted_order.in_(orders)).values(converted_amount=order_amount(r.converted_order)),
            execution_options={"synchronize_session": False},
        )


def _payments(session: Session, customer_ids: Iterable[str]) -> None:
    """The first payment of some of these customers' orders is new or moved: their runs'
    neighbouring purchases again (a customer has few runs; an index look-up or two each)."""
    _neighbours(session, customers=sorted(set(customer_ids)))


def _goal_events(session: Session, events: list[Event]) -> None:
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


# ---------------------------------------------------------------------------------------------
# Goals


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
