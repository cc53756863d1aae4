"""The SQL of a batched broadcast (activities/broadcast_pages.py): a page of members read, locked
and decided with a handful of set-based queries, its rows written in one statement per table,
and its sends recorded in one.

A member's message is keyed as an instance's would be: the ledger row `(workflow_id, run_id,
step)` with workflow_id `{journey}:{customer}` (the id an instance of the broadcast's journey
would have) and run_id the Broadcast workflow's first run. So a member has one row per
broadcast whichever attempt of whichever page writes it, and the effect report reads a batched
broadcast as it reads one run through instances: an instance row per member reached (ended at
the decision, `holdout` for the control group; open while a deferral holds it), ledger rows,
deferral rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from core.contact_policy import CapWait
from core.records import Customer
from core.vocabulary import COUNTED_STATUSES
from store import queries, reached
from store.portable import upsert_insert
from store.tables import CustomerRow, DeferralRow, EventRow, InstanceRow, MessageRow, SuppressionRow


def message_key(prefix: str, customer_id: str) -> str:
    """The ledger's workflow_id of a member's message: `{journey}:{customer}`."""
    return f"{prefix}{customer_id}"


def decided(prefix: str, run_id: str, step: str, due: datetime) -> Any:
    """A condition on CustomerRow.customer_id: the member needs nothing at `due`. Their message was
    decided (an ended instance row: sent, skipped, failed, held out), or a deferral holds it past
    `due`. A member deferred until `due` or earlier is due again."""
    key = literal(prefix) + CustomerRow.customer_id
    ended = exists().where(
        InstanceRow.workflow_id == key, InstanceRow.run_id == run_id, InstanceRow.ended_at.is_not(None)
    )
    held = exists().where(
        DeferralRow.workflow_id == key,
        DeferralRow.run_id == run_id,
        DeferralRow.step == step,
        DeferralRow.resume_at > due,
    )
    return or_(ended, held)


def lock_customers(session: Session, customer_ids: list[str]) -> dict[str, Customer | None]:
    """The page's customers, their rows locked until commit, in id order (PostgreSQL SELECT ... FOR
    UPDATE; SQLite's transaction holds the write lock): a send to one of them from a journey is
    decided before or after the page, never beside it, so caps hold across both paths."""
    rows = session.scalars(
        select(CustomerRow)
        .where(CustomerRow.customer_id.in_(customer_ids))
        .order_by(CustomerRow.customer_id)
        .with_for_update()
    )
    found = {row.customer_id: queries.customer_of(row) for row in rows}
    return {customer_id: found.get(customer_id) for customer_id in customer_ids}


def still_due(
    session: Session, customer_ids: list[str], prefix: str, run_id: str, step: str, due: datetime
) -> list[str]:
    """Of `customer_ids`, those still due, read under their locks (an earlier attempt of the page
    may have decided some: a worker lost mid-page whose transaction committed)."""
    done = set(
        session.scalars(
            select(CustomerRow.customer_id).where(
                CustomerRow.customer_id.in_(customer_ids), decided(prefix, run_id, step, due)
            )
        )
    )
    return [customer_id for customer_id in customer_ids if customer_id not in done]


def suppression_scopes(session: Session, wanted: Collection[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`queries.suppression_scope` for many (channel, address) pairs, in one query: the stronger of
    the address's own row and the salted hash an erasure left of it."""
    if not wanted:
        return {}
    hashed = {(channel, queries.suppression_hash(channel, address)): (channel, address) for channel, address in wanted}
    channels = {channel for channel, _ in wanted}
    addresses = {address for _, address in wanted} | {address for _, address in hashed}
    own: dict[tuple[str, str], str] = {}
    erased: dict[tuple[str, str], str] = {}
    rows = session.execute(
        select(SuppressionRow.channel, SuppressionRow.address, SuppressionRow.scope).where(
            SuppressionRow.channel.in_(channels), SuppressionRow.address.in_(addresses)
        )
    )
    for channel, address, scope in rows:
        if (channel, address) in wanted:
            own[(channel, address)] = scope
        if (channel, address) in hashed:
            erased[hashed[(channel, address)]] = scope
    # Of the address's own row and its erasure's hash, the stronger (queries.suppression_of).
    return {key: queries.stronger_scope(own.get(key), erased.get(key)) for key in own.keys() | erased.keys()}


def capped_at(
    session: Session, customer_ids: list[str], cap: str, category: str | None, since: datetime
) -> dict[str, list[tuple[datetime, str | None]]]:
    """`queries.capped_at` for a page of customers, in one query."""
    counts = MessageRow.cap == cap
    if category is not None:
        counts = or_(and_(MessageRow.category == category, MessageRow.cap.is_(None)), counts)
    found: dict[str, list[tuple[datetime, str | None]]] = defaultdict(list)
    rows = session.execute(
        select(MessageRow.customer_id, MessageRow.at, MessageRow.channel)
        .where(
            MessageRow.customer_id.in_(customer_ids),
            counts,
            MessageRow.status.in_(COUNTED_STATUSES),
            MessageRow.at > since,
        )
        .order_by(MessageRow.customer_id, MessageRow.at)
    )
    for customer_id, at, channel in rows:
        found[customer_id].append((at, channel))
    return found


def cap_waits(session: Session, customer_ids: list[str], cap: str) -> dict[str, list[CapWait]]:
    """`queries.cap_waits` for a page of customers, in one query."""
    found: dict[str, list[CapWait]] = defaultdict(list)
    d = DeferralRow
    for row in session.scalars(select(d).where(d.customer_id.in_(customer_ids), d.cap == cap, d.open.is_(True))):
        found[row.customer_id].append(queries.wait_of(row))
    return found


def resource_issued(session: Session, customer_ids: list[str], resource: str) -> dict[str, list[datetime]]:
    """`queries.resource_issued` for a page of customers, in one query."""
    found: dict[str, list[datetime]] = defaultdict(list)
    rows = session.execute(
        select(MessageRow.customer_id, MessageRow.at)
        .where(
            MessageRow.customer_id.in_(customer_ids),
            MessageRow.resource == resource,
            MessageRow.status.in_(COUNTED_STATUSES),
        )
        .order_by(MessageRow.at)
    )
    for customer_id, at in rows:
        found[customer_id].append(at)
    return found


def resource_redeemed(
    session: Session, customer_ids: list[str], event_type: str, resource: str
) -> dict[str, list[datetime]]:
    """`queries.resource_redeemed` for a page of customers, in one query."""
    found: dict[str, list[datetime]] = defaultdict(list)
    rows = session.execute(
        select(EventRow.customer_id, EventRow.occurred_at, EventRow.data)
        .where(EventRow.customer_id.in_(customer_ids), EventRow.type == event_type)
        .order_by(EventRow.occurred_at)
    )
    for customer_id, occurred, data in rows:
        if isinstance(data, dict) and data.get("resource") == resource:
            found[customer_id].append(occurred)
    return found


def reopened(session: Session, prefix: str, run_id: str, customer_ids: list[str]) -> set[str]:
    """Of `customer_ids`, those with an instance row already (open: a deferral held them)."""
    keys = [message_key(prefix, customer_id) for customer_id in customer_ids]
    found = session.scalars(
        select(InstanceRow.workflow_id).where(InstanceRow.workflow_id.in_(keys), InstanceRow.run_id == run_id)
    )
    return {workflow_id[len(prefix) :] for workflow_id in found}


def write_page(
    session: Session, *, messages: list[dict], instances: list[dict], ended: list[dict], deferrals: list[dict]
) -> None:
    """The page's rows, one statement per table (SQLAlchemy sends a list of rows as multi-row
    INSERTs): ledger rows (before any provider is called), new instance rows, the ends of
    instance rows an earlier deferral opened, deferral rows. A plain INSERT for the new rows: an
    upsert of every row cost PostgreSQL about three times as much."""
    if messages:
        session.execute(MessageRow.__table__.insert(), messages)
    if instances:
        session.execute(InstanceRow.__table__.insert(), instances)
    if ended:
        table = InstanceRow.__table__
        session.execute(
            update(table)
            .where(table.c.workflow_id == bindparam("key"), table.c.run_id == bindparam("run"))
            .values(ended_at=bindparam("ended"), exit_reason=bindparam("reason")),
            [
                {
                    "key": row["workflow_id"],
                    "run": row["run_id"],
                    "ended": row["ended_at"],
                    "reason": row["exit_reason"],
                }
                for row in ended
            ],
        )
    if deferrals:
        statement = upsert_insert(session, DeferralRow.__table__)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["workflow_id", "run_id", "step", "at"],
                set_={"resume_at": statement.excluded.resume_at, "detail": statement.excluded.detail},
            ),
            deferrals,
        )


class PageState:
    """What the store holds for a page's members after it was dealt with, by customer id."""

    def __init__(self) -> None:
        self.message: dict[str, tuple[str, str | None]] = {}  # status, reason
        self.ended: dict[str, str | None] = {}  # exit reason of an ended instance row
        self.waiting: dict[str, tuple[datetime, str]] = {}  # a deferred member: until when, their zone


def page_state(session: Session, prefix: str, run_id: str, step: str, customer_ids: list[str]) -> PageState:
    """The page's ledger rows, instance rows and latest deferrals: the page's outcome as a retry
    finds it too (an earlier attempt's rows counted once)."""
    keys = [message_key(prefix, customer_id) for customer_id in customer_ids]
    cut = len(prefix)
    state = PageState()
    for workflow_id, status, reason in session.execute(
        select(MessageRow.workflow_id, MessageRow.status, MessageRow.reason).where(
            MessageRow.workflow_id.in_(keys), MessageRow.run_id == run_id, MessageRow.step == step
        )
    ):
        state.message[workflow_id[cut:]] = (status, reason)
    open_rows: list[str] = []
    for workflow_id, ended_at, exit_reason in session.execute(
        select(InstanceRow.workflow_id, InstanceRow.ended_at, InstanceRow.exit_reason).where(
            InstanceRow.workflow_id.in_(keys), InstanceRow.run_id == run_id
        )
    ):
        if ended_at is None:
            open_rows.append(workflow_id)
        else:
            state.ended[workflow_id[cut:]] = exit_reason
    if open_rows:
        for workflow_id, resume_at in session.execute(
            select(DeferralRow.workflow_id, func.max(DeferralRow.resume_at))
            .where(DeferralRow.workflow_id.in_(open_rows), DeferralRow.run_id == run_id, DeferralRow.step == step)
            .group_by(DeferralRow.workflow_id)
        ):
            state.waiting[workflow_id[cut:]] = (resume_at, "")
        zones = session.execute(
            select(CustomerRow.customer_id, CustomerRow.timezone).where(
                CustomerRow.customer_id.in_(list(state.waiting))
            )
        )
        for customer_id, zone in zones:
            state.waiting[customer_id] = (state.waiting[customer_id][0], zone)
    return state


def sending(session: Session, prefix: str, run_id: str, step: str, customer_ids: list[str]) -> list[MessageRow]:
    """The page's messages decided and not yet answered by their provider (`sending`)."""
    keys = [message_key(prefix, customer_id) for customer_id in customer_ids]
    return list(
        session.scalars(
            select(MessageRow).where(
                MessageRow.workflow_id.in_(keys),
                MessageRow.run_id == run_id,
                MessageRow.step == step,
                MessageRow.status == "sending",
            )
        )
    )


def claim(session: Session, message_ids: list[str], at: datetime) -> set[str]:
    """Begin the provider calls for these messages: mark them begun at `at`, in one statement,
    only those still `sending` that no call has begun (a lost answer then leaves them in doubt).
    The ids claimed: the caller hands over these and no others, so two attempts of a page never
    hand one message over twice."""
    if not message_ids:
        return set()
    claimed = session.execute(
        update(MessageRow)
        .where(MessageRow.id.in_(message_ids), MessageRow.status == "sending", MessageRow.attempted_at.is_(None))
        .values(attempted_at=at, updated_at=at)
        .returning(MessageRow.id)
        .execution_options(synchronize_session=False)
    )
    return set(claimed.scalars())


def record_sent(session: Session, rows: Iterable[MessageRow], provider_ids: dict[str, str], at: datetime) -> None:
    """The provider took these messages: one UPDATE for them all, only rows still `sending` (a
    status callback may have come first and moved one further), and their runs in the `reached`
    read model (what `queries.advance_status` does for one)."""
    rows = [row for row in rows if row.id in provider_ids]
    if not rows:
        return
    table = MessageRow.__table__
    session.execute(
        update(table)
        .where(table.c.id == bindparam("message_id"), table.c.status == "sending")
        .values(status="sent", provider_id=bindparam("provider_id"), attempted_at=None, updated_at=at),
        [{"message_id": row.id, "provider_id": provider_ids[row.id]} for row in rows],
    )
    reached.note_sent(session, rows)


def close_waiting(session: Session, journey: str, run_id: str, at: datetime) -> int:
    """End the open instance rows of a cancelled batched broadcast (members still deferred):
    `cancelled` at `at`. How many were open."""
    closed = session.execute(
        update(InstanceRow)
        .where(InstanceRow.journey == journey, InstanceRow.run_id == run_id, InstanceRow.ended_at.is_(None))
        .values(ended_at=at, exit_reason="cancelled")
        .execution_options(synchronize_session=False)
    )
    return closed.rowcount or 0
