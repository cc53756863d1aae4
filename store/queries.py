"""The queries the engine needs, in one place."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, case, cast, delete, func, null, or_, select, update
from sqlalchemy.orm import Session

from core.contact_policy import CapWait
from core.contacts import canonical_contacts, email_forms, phone_forms, region_of
from core.records import CUSTOMER_EVENT_TYPES, Customer, Event
from core.rfm import PURCHASE_EVENT_TYPES, Purchase, purchases_from
from core.vocabulary import COUNTED_STATUSES, STATUS_RANK
from store import reached
from store.orders import note_order_events
from store.portable import upsert_insert
from store.tables import (
    CustomerRow,
    DeferralRow,
    DispatchLeaseRow,
    ErasureRow,
    EventRow,
    InstanceRow,
    LifecycleStageRow,
    LinkClickRow,
    MemberTierRow,
    MessageRow,
    PointsEntryRow,
    ProviderEventRow,
    ShortLinkRow,
    SmsReplyRow,
    SuppressionRow,
    TierChangeRow,
)

#: The loyalty programme's rows of a customer (points, tier, its change log, lifecycle stage):
#: erasure deletes them.
LOYALTY_TABLES = (PointsEntryRow, MemberTierRow, TierChangeRow, LifecycleStageRow)


def upsert_customer(session: Session, customer: Customer, at: datetime, default_region: str) -> Customer:
    """Write the customer record, its phone and email in their one stored form (core.contacts:
    E.164, national numbers read in the customer's region, else `default_region`; lower-cased; a
    contact that cannot be read as typed). Returns the record as stored."""
    customer = canonical_contacts(customer, default_region)
    row = session.get(CustomerRow, customer.customer_id) or CustomerRow(customer_id=customer.customer_id)
    for field, value in customer.model_dump(exclude={"customer_id"}).items():
        setattr(row, field, value)
    row.updated_at = at
    session.add(row)
    return customer


def customer_of(row: CustomerRow) -> Customer:
    return Customer.model_validate({c: getattr(row, c) for c in Customer.model_fields if hasattr(row, c)})


def customer_ids(session: Session) -> list[str]:
    """Every customer's id, in order."""
    return list(session.scalars(select(CustomerRow.customer_id).order_by(CustomerRow.customer_id)))


def get_customers(session: Session, customer_ids: list[str]) -> dict[str, Customer | None]:
    """Many customers by id, in one query (None for an id with no record)."""
    rows = session.scalars(select(CustomerRow).where(CustomerRow.customer_id.in_(customer_ids)))
    found = {row.customer_id: customer_of(row) for row in rows}
    return {customer_id: found.get(customer_id) for customer_id in customer_ids}


def get_customer(session: Session, customer_id: str, lock: bool = False) -> Customer | None:
    """The customer; with `lock`, the row stays locked until the transaction ends (PostgreSQL
    SELECT ... FOR UPDATE; SQLite's transactions already hold the write lock)."""
    query = select(CustomerRow).where(CustomerRow.customer_id == customer_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).first()
    return customer_of(row) if row else None


def suppression_scope(session: Session, channel: str, address: str) -> str | None:
    """How far `address` is suppressed on `channel`: by its own row, or by the salted hash an
    erasure left of it (an erased number that opted out stays opted out)."""
    row = suppression_of(session, channel, address)
    return row.scope if row else None


def suppression_of(session: Session, channel: str, address: str) -> SuppressionRow | None:
    """The row suppressing `address`: of its own row and the salted hash an erasure left of it,
    the stronger (`stronger_scope`), its own on a tie. One query for both (on every send's path)."""
    rows = session.scalars(
        select(SuppressionRow).where(
            SuppressionRow.channel == channel,
            SuppressionRow.address.in_((address, suppression_hash(channel, address))),
        )
    ).all()
    return max(rows, key=lambda row: (SCOPE_STRENGTH.get(row.scope, 0), row.address == address), default=None)


#: How far a suppression reaches: 'all' (an SMS STOP, a hard bounce) over 'marketing' (an
#: unsubscribe). Of an address's own row and an erasure's hash of it, the stronger decides, and
#: nothing but a START (or the hash's own lifting) weakens an 'all'.
SCOPE_STRENGTH = {"marketing": 1, "all": 2}


def stronger_scope(first: str | None, second: str | None) -> str | None:
    """The stronger of two suppression scopes (None: no suppression)."""
    return max((first, second), key=lambda scope: SCOPE_STRENGTH.get(scope, 0) if scope else -1)


#: The salt of erased addresses' suppression hashes. `configure_salt` sets it from JOURNEYS_SECRET.
_DEFAULT_SALT = b"journeys-suppression"
_SALT = [_DEFAULT_SALT]


def configure_salt(secret: str | None) -> None:
    """Salt erased addresses' hashes with the shop's secret (a fixed salt without one)."""
    _SALT[0] = secret.encode() if secret else _DEFAULT_SALT


def suppression_hash(channel: str, address: str) -> str:
    digest = hmac.new(_SALT[0], f"{channel}:{address}".encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


def known_customer(session: Session, customer_id: str) -> bool:
    """Whether the store has ever heard of the customer: a record, a logged event, a message or an
    earlier erasure. Erasing anyone else would record the erasure of nobody."""
    if session.get(CustomerRow, customer_id) is not None or session.get(ErasureRow, customer_id) is not None:
        return True
    for column in (EventRow.customer_id, MessageRow.customer_id):
        if session.scalar(select(column).where(column == customer_id).limit(1)) is not None:
            return True
    return False


def erase_customer(
    session: Session, customer_id: str, at: datetime, requested_by: str, default_region: str
) -> dict[str, int]:
    """Remove a customer's personal data from the store; returns what was removed, as counts.
    Message rows stay, for effect reports, without address, body, subject or template data;
    logged events stay without their data; suppressions of the customer's addresses are kept as
    salted hashes. The erasure is recorded. A suppression is found by every form the contact may
    have been stored in (as typed by an older release, E.164 read in the customer's region and in
    the shop's), so a record written before contacts were stored in one form is erased too. The
    loyalty programme's rows (points ledger, tier, tier changes, lifecycle stage) are deleted."""
    addresses: set[tuple[str, str]] = set()
    customer = session.get(CustomerRow, customer_id)
    if customer is not None:
        if customer.phone:
            regions = [region_of(customer, default_region), default_region]  # the row has what it reads
            addresses |= {("sms", form) for form in phone_forms(customer.phone, regions)}
        if customer.email:
            addresses |= {("email", form) for form in email_forms(customer.email)}
        session.delete(customer)
    messages = list(session.scalars(select(MessageRow).where(MessageRow.customer_id == customer_id)))
    for row in messages:
        if row.channel and row.address:
            addresses.add((row.channel, row.address))
        for column in MESSAGE_PERSONAL_DATA:
            setattr(row, column, None)
        if row.status in ("sending", "unknown"):
            row.status, row.reason = "failed", "erased"
    scrubbed = session.execute(update(EventRow).where(EventRow.customer_id == customer_id).values(data={})).rowcount
    # Its runs were terminated (nothing of theirs is sent): their waits for a cap's slot end too.
    session.execute(
        update(DeferralRow)
        .where(DeferralRow.customer_id == customer_id, DeferralRow.open.is_(True))
        .values(open=False)
        .execution_options(synchronize_session=False)
    )
    loyalty = sum(
        session.execute(delete(table).where(table.customer_id == customer_id)).rowcount for table in LOYALTY_TABLES
    )
    # SMS replies (what they said, from which number), short links and their clicks (user agents).
    sms_numbers = [address for channel, address in addresses if channel == "sms"]
    replies = session.execute(
        delete(SmsReplyRow).where(or_(SmsReplyRow.customer_id == customer_id, SmsReplyRow.number.in_(sms_numbers)))
    ).rowcount
    message_ids = [row.id for row in messages]
    links = sum(
        session.execute(delete(table).where(table.message_id.in_(message_ids))).rowcount
        for table in (LinkClickRow, ShortLinkRow)
    )
    hashed = 0
    for channel, address in addresses:
        row = session.get(SuppressionRow, (channel, address))
        if row is None:
            continue
        # Into the hash's row, never weakening it (an earlier erasure's 'all' stays), in one
        # statement (two erasures sharing an address meet in one row).
        add_suppression(session, channel, suppression_hash(channel, address), row.scope, row.reason, row.created_at)
        session.delete(row)
        hashed += 1
    removed = {
        "customer_record": int(customer is not None),
        "messages_scrubbed": len(messages),
        "events_scrubbed": scrubbed,
        "suppressions_hashed": hashed,
        "loyalty_rows": loyalty,
        "sms_replies": replies,
        "links_and_clicks": links,
    }
    record = session.get(ErasureRow, customer_id) or ErasureRow(customer_id=customer_id)
    record.erased_at, record.requested_by, record.removed, record.recreated_at = at, requested_by[:200], removed, None
    session.add(record)
    return removed


#: The columns of a message row that hold personal data: the address, what was said, the
#: template's data and the provider's error text (which may quote the address). Erasure and
#: retention clear them; the rest of the row stays for effect reports.
MESSAGE_PERSONAL_DATA = ("address", "body", "subject", "template_data", "error")


def expire_personal_data(session: Session, before: datetime, batch: int = 1000) -> dict[str, int]:
    """One batch of retention: messages sent before `before` lose their personal data, provider
    webhook events received before it are deleted, and `customer.*` events logged before it that
    are done with (dispatched or dead) lose their `data` (the contact details they carried; the
    customer record keeps the current ones). Order events keep their data: RFM and effect reports
    read a year of orders. Returns the counts; call again while any reaches `batch`."""
    columns = [getattr(MessageRow, column) for column in MESSAGE_PERSONAL_DATA]
    message_ids = list(
        session.scalars(
            select(MessageRow.id)
            .where(MessageRow.at < before, or_(*(column.is_not(None) for column in columns)))
            .limit(batch)
        )
    )
    if message_ids:
        cleared = {column: null() for column in MESSAGE_PERSONAL_DATA}  # SQL NULL, not JSON null
        session.execute(update(MessageRow).where(MessageRow.id.in_(message_ids)).values(**cleared))
    provider_keys = list(
        session.execute(
            select(ProviderEventRow.provider, ProviderEventRow.event_key)
            .where(ProviderEventRow.received_at < before)
            .limit(batch)
        )
    )
    for provider, event_key in provider_keys:
        key = (ProviderEventRow.provider == provider, ProviderEventRow.event_key == event_key)
        session.execute(delete(ProviderEventRow).where(*key))
    event_ids = list(
        session.scalars(
            select(EventRow.event_id)
            .where(
                EventRow.type.in_(CUSTOMER_EVENT_TYPES),
                EventRow.received_at < before,
                or_(EventRow.dispatched_at.is_not(None), EventRow.failed_at.is_not(None)),
                cast(EventRow.data, String) != "{}",  # not scrubbed yet (json has no equality in PostgreSQL)
            )
            .limit(batch)
        )
    )
    if event_ids:
        session.execute(update(EventRow).where(EventRow.event_id.in_(event_ids)).values(data={}))
    return {"messages": len(message_ids), "provider_events": len(provider_keys), "events": len(event_ids)}


def erased_at(session: Session, customer_id: str) -> datetime | None:
    """When the customer was erased, unless a new customer.created has come since."""
    record = session.get(ErasureRow, customer_id)
    return record.erased_at if record is not None and record.recreated_at is None else None


def customer_and_erasure(
    session: Session, customer_id: str, lock: bool = False
) -> tuple[Customer | None, datetime | None]:
    """`get_customer` and `erased_at` together, in one query when the customer has a record (the
    router asks both for every event that starts a journey)."""
    erased = (
        select(ErasureRow.erased_at)
        .where(ErasureRow.customer_id == customer_id, ErasureRow.recreated_at.is_(None))
        .scalar_subquery()
    )
    query = select(CustomerRow, erased).where(CustomerRow.customer_id == customer_id)
    if lock:
        query = query.with_for_update(of=CustomerRow)
    found = session.execute(query).first()
    if found is None:  # no record: only the erasures can answer
        return None, erased_at(session, customer_id)
    return customer_of(found[0]), found[1]


def scrub_event(session: Session, event_id: str) -> None:
    """Keep a logged event's type and time, drop its data."""
    session.execute(update(EventRow).where(EventRow.event_id == event_id).values(data={}))


def recreate_customer(session: Session, customer_id: str, at: datetime) -> None:
    record = session.get(ErasureRow, customer_id)
    if record is not None:
        record.recreated_at = at


def add_suppression(session: Session, channel: str, address: str, scope: str, reason: str, at: datetime) -> None:
    """Suppress `address` on `channel` for `scope` ('all' or 'marketing'), in one statement: two
    writers of one address at once (a reply pushed twice, two clicks of an unsubscribe link) meet
    in one row instead of one failing. An 'all' (an SMS STOP, a hard bounce) is never weakened to
    'marketing' by a later unsubscribe; it stays as it was written. Only a START reply lifts it
    (`remove_suppression`)."""
    table = SuppressionRow.__table__
    session.flush()  # what this session wrote before goes first, as the ORM would order it
    statement = upsert_insert(session, table).values(
        channel=channel, address=address, scope=scope, reason=reason[:60], created_at=at
    )
    proposed = statement.excluded
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.channel, table.c.address],
            set_={"scope": proposed.scope, "reason": proposed.reason, "created_at": proposed.created_at},
            where=or_(table.c.scope != "all", proposed.scope == "all"),
        )
    )
    # A row this session read before is read again, not answered from what it held.
    held = session.identity_map.get(session.identity_key(SuppressionRow, (channel, address)))
    if held is not None:
        session.expire(held)


def remove_suppression(session: Session, channel: str, address: str, *, scope: str | None = None) -> bool:
    """Lift the suppression of `address`, its own row and the hash an erasure left of it (an SMS
    START reply: the number's holder asks for messages again); with `scope`, only a suppression of
    that scope (a SendGrid resubscribe to the marketing group lifts an unsubscribe, never a hard
    bounce). False when there was none to lift."""
    session.flush()  # the ORM's pending writes first
    query = delete(SuppressionRow).where(
        SuppressionRow.channel == channel,
        SuppressionRow.address.in_((address, suppression_hash(channel, address))),
    )
    if scope is not None:
        query = query.where(SuppressionRow.scope == scope)
    removed = session.execute(query.execution_options(synchronize_session="fetch")).rowcount
    return removed > 0


def message_for_provider(session: Session, message_id: str | None, provider_id: str | None) -> MessageRow | None:
    """The ledger row a provider callback is about: by our id where the callback carries it, else
    by the provider's id for the message."""
    if message_id:
        row = session.get(MessageRow, message_id)
        if row is not None:
            return row
    if provider_id:
        return session.scalars(select(MessageRow).where(MessageRow.provider_id == provider_id)).first()
    return None


def advance_status(
    row: MessageRow, status: str, at: datetime, *, reason: str | None = None, error: str | None = None
) -> bool:
    """Move a message forward to `status` (never back); False when the status is not news. The
    one way a message's status moves forward: a message that becomes sent makes or moves its run
    in the `reached` read model here (store/reached.py `note_status`)."""
    if row.status not in STATUS_RANK or STATUS_RANK[status] <= STATUS_RANK[row.status]:
        return False
    before = row.status
    row.status, row.updated_at = status, at
    row.attempted_at = None  # the provider has reported on it: nothing is in doubt any more
    if status == "delivered":
        row.delivered_at = at
    if reason is not None:
        row.reason = reason
    if error is not None:
        row.error = error[:2000]
    reached.note_status(row, before)
    return True


def seen_provider_event(
    session: Session, provider: str, key: str, kind: str, message_id: str | None, at: datetime
) -> bool:
    """Record a provider event by its id; True when it was recorded before (a duplicate delivery,
    also one applied at this moment by a concurrent request: one statement, which inserts or not)."""
    table = ProviderEventRow.__table__
    session.flush()  # what this session wrote before (the message it is about) goes first
    inserted = session.execute(
        upsert_insert(session, table)
        .values(provider=provider, event_key=key[:200], kind=kind, message_id=message_id, received_at=at)
        .on_conflict_do_nothing(index_elements=[table.c.provider, table.c.event_key])
    )
    return inserted.rowcount == 0


def capped_at(
    session: Session, customer_id: str, cap: str, category: str | None, since: datetime
) -> list[tuple[datetime, str | None]]:
    """When, and on which channel, the messages sent (or being sent) to a customer after `since`
    that count against `cap` were sent, oldest first, on every channel: a full cap's windows free
    as they age out. Those count that were recorded against the cap, and those of the cap's
    `category` recorded against none (every row from before named caps). The customer's rows come
    from ix_messages_cap (customer_id, category, at): a customer has few, and a category's own
    rows are one range of it."""
    counts = MessageRow.cap == cap
    if category is not None:
        counts = or_(and_(MessageRow.category == category, MessageRow.cap.is_(None)), counts)
    query = select(MessageRow.at, MessageRow.channel).where(
        MessageRow.customer_id == customer_id,
        counts,
        MessageRow.status.in_(COUNTED_STATUSES),
        MessageRow.at > since,
    )
    return [(at, channel) for at, channel in session.execute(query.order_by(MessageRow.at))]


def cap_waits(
    session: Session, customer_id: str, cap: str, exclude: tuple[str, str, str] | None = None
) -> list[CapWait]:
    """The customer's messages waiting for a slot of `cap` (open deferrals for it), but the
    message `exclude` (workflow_id, run_id, step): the one asking."""
    d = DeferralRow
    query = select(d).where(d.customer_id == customer_id, d.cap == cap, d.open.is_(True))
    if exclude is not None:
        query = query.where(or_(d.workflow_id != exclude[0], d.run_id != exclude[1], d.step != exclude[2]))
    return [wait_of(row) for row in session.scalars(query)]


def waiting_messages(session: Session, customer_id: str, at: datetime) -> list[DeferralRow]:
    """The customer's messages waiting for a cap's slot at `at` (open, not past their deadline),
    in the order they would take a slot: higher priority first, then the longer waiting."""
    d = DeferralRow
    query = (
        select(d)
        .where(d.customer_id == customer_id, d.open.is_(True), or_(d.deadline.is_(None), d.deadline > at))
        .order_by(d.priority.desc(), d.waiting_since, d.id)
    )
    return list(session.scalars(query))


def open_wait(session: Session, workflow_id: str, run_id: str, step: str) -> CapWait | None:
    """The message's own wait for a cap's slot, if it is waiting."""
    d = DeferralRow
    row = session.scalars(
        select(d).where(d.workflow_id == workflow_id, d.run_id == run_id, d.step == step, d.open.is_(True))
    ).first()
    return wait_of(row) if row else None


def wait_of(row: DeferralRow) -> CapWait:
    return CapWait(
        priority=row.priority or 0,
        waiting_since=row.waiting_since or row.at,
        resume_at=row.resume_at,
        deadline=row.deadline or row.resume_at,
        held=row.held,
        cap=row.cap,
    )


def record_deferral(session: Session, deferral: dict[str, Any], earlier: CapWait | None = None) -> None:
    """Put down a deferral (DeferralRow's fields), closing the message's `earlier` wait (which the
    caller read under the customer's lock); a wait for the same cap keeps the moment the message
    began waiting. A retry of the same decision (the same message and `at`) writes the same row
    again: one upsert on the row's (workflow, run, step, at)."""
    if deferral.get("cap") is not None:
        since = earlier.waiting_since if earlier is not None and earlier.cap == deferral["cap"] else None
        deferral = {**deferral, "waiting_since": since or deferral["at"], "open": True}
    if earlier is not None:
        close_waits(session, deferral["workflow_id"], deferral["run_id"], deferral["step"])
    table = DeferralRow.__table__
    statement = upsert_insert(session, table).values(deferral)
    key = ("workflow_id", "run_id", "step", "at")
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c[name] for name in key],
            set_={name: statement.excluded[name] for name in deferral if name not in key},
        )
    )


def close_waits(session: Session, workflow_id: str, run_id: str, step: str | None = None) -> None:
    """The message (or every message of the run) no longer waits for a cap's slot: it was decided,
    or its run ended."""
    d = DeferralRow
    query = update(d).where(d.workflow_id == workflow_id, d.run_id == run_id, d.open.is_(True))
    if step is not None:
        query = query.where(d.step == step)
    session.execute(query.values(open=False).execution_options(synchronize_session=False))


def resource_issued(session: Session, customer_id: str, resource: str) -> list[datetime]:
    """When `resource` was issued to a customer: its messages sent or possibly sent, oldest first."""
    return list(
        session.scalars(
            select(MessageRow.at)
            .where(
                MessageRow.customer_id == customer_id,
                MessageRow.resource == resource,
                MessageRow.status.in_(COUNTED_STATUSES),
            )
            .order_by(MessageRow.at)
        )
    )


def resource_redeemed(session: Session, customer_id: str, event_type: str, resource: str) -> list[datetime]:
    """When a customer's `event_type` events redeemed `resource` (their `data.resource` names it),
    oldest first. A customer's events of one type are few; their data is read here, on both databases."""
    rows = session.execute(
        select(EventRow.occurred_at, EventRow.data)
        .where(EventRow.customer_id == customer_id, EventRow.type == event_type)
        .order_by(EventRow.occurred_at)
    )
    return [occurred for occurred, data in rows if isinstance(data, dict) and data.get("resource") == resource]


def record_instances(session: Session, rows: list[InstanceRow]) -> None:
    """Record started instances; one already there (a signal-with-start that reached a running
    instance, a page of a broadcast dealt with twice) is kept as it was."""
    if not rows:
        return
    table = InstanceRow.__table__
    values = [{column.name: getattr(row, column.key) for column in table.columns} for row in rows]
    # The rows as parameters of one statement (SQLAlchemy batches them into multi-row INSERTs),
    # not as literal VALUES: a statement with the rows written in is new SQL for every batch,
    # compiled anew each time (a sixth of the API's CPU while dispatching).
    session.execute(upsert_insert(session, table).on_conflict_do_nothing(), values)


def record_exit(session: Session, record: dict[str, Any]) -> None:
    """A run's end and its reason on its instance row, written with the row if the run was not
    recorded when it started (a restarted run, or one started before instances were recorded)."""
    ended = {"ended_at": record["ended_at"], "exit_reason": record["reason"][:60]}
    written = session.execute(
        update(InstanceRow)
        .where(InstanceRow.workflow_id == record["workflow_id"], InstanceRow.run_id == record["run_id"])
        .values(ended)
        .execution_options(synchronize_session=False)
    )
    if written.rowcount == 0:  # one statement for the usual case, on every run's end
        started = {k: v for k, v in record.items() if k not in ("ended_at", "reason", "waited_for_cap")}
        session.add(InstanceRow(**started, **ended))
    if record.get("waited_for_cap", True):  # a message of the run still waiting for a slot holds it no longer
        close_waits(session, record["workflow_id"], record["run_id"])


def channel_of(session: Session, message_id: str) -> str | None:
    """The channel a ledger row goes out on (None: no such row, or nothing to send)."""
    return session.scalar(select(MessageRow.channel).where(MessageRow.id == message_id))


def find_ledger_row(session: Session, workflow_id: str, run_id: str, step: str) -> MessageRow | None:
    return session.scalars(
        select(MessageRow).where(
            MessageRow.workflow_id == workflow_id, MessageRow.run_id == run_id, MessageRow.step == step
        )
    ).first()


def message_outcomes(session: Session, journey: str) -> dict[str, int]:
    """A journey's (or broadcast's) ledger rows counted by `status` or `status:reason`
    (`sent`, `skipped:quiet_hours`, `failed:template_error`)."""
    rows = session.execute(
        select(MessageRow.status, MessageRow.reason, func.count())
        .where(MessageRow.journey == journey)
        .group_by(MessageRow.status, MessageRow.reason)
    )
    counts: dict[str, int] = {}
    for status, reason, count in rows:
        key = status if status in ("sent", "delivered", "sending") or not reason else f"{status}:{reason}"
        counts[key] = counts.get(key, 0) + count
    return counts


def reached_by_runs(session: Session, customer_ids: Collection[str], journeys: Collection[str]) -> set[str]:
    """Of `customer_ids`, those an earlier run of a recurring broadcast reached: an instance of
    one of `journeys` (the runs' within its once_per) whose message was not skipped or failed.
    Held out counts as reached (the control group stays one for the window), and so does a send
    still waiting for its time."""
    if not customer_ids or not journeys:
        return set()
    got_nothing = select(MessageRow.workflow_id).where(
        MessageRow.journey.in_(journeys), MessageRow.status.in_(("skipped", "failed"))
    )
    return set(
        session.scalars(
            select(InstanceRow.customer_id)
            .where(
                InstanceRow.journey.in_(journeys),
                InstanceRow.customer_id.in_(customer_ids),
                InstanceRow.workflow_id.not_in(got_nothing),
            )
            .distinct()
        )
    )


def run_journeys(session: Session, journey_prefix: str) -> list[str]:
    """The journeys with instances whose name starts with `journey_prefix` (a recurring
    broadcast's runs: `card_expiring_`), by name; the caller keeps those that are runs'."""
    escaped = journey_prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return list(
        session.scalars(
            select(InstanceRow.journey)
            .where(InstanceRow.journey.like(escaped + "%", escape="\\"))
            .distinct()
            .order_by(InstanceRow.journey)
        )
    )


def list_messages(
    session: Session,
    *,
    customer_id: str | None = None,
    order_id: str | None = None,
    until: datetime | None = None,
) -> list[MessageRow]:
    query = select(MessageRow)
    if customer_id:
        query = query.where(MessageRow.customer_id == customer_id)
    if order_id:
        query = query.where(MessageRow.order_id == order_id)
    if until:
        query = query.where(MessageRow.at <= until)
    return list(
        session.scalars(
            query.order_by(
                MessageRow.at,
                MessageRow.journey,
                MessageRow.customer_id,
                MessageRow.order_id,
                MessageRow.step,
                MessageRow.id,
            )
        )
    )


def store_event(session: Session, event: Event, received_at: datetime, *, backfill: bool = False) -> bool:
    """Write an event to the log; False when its event_id is already there (a duplicate)."""
    return bool(store_events(session, [event], received_at, backfill=backfill))


def store_events(
    session: Session,
    events: list[Event],
    received_at: datetime,
    *,
    backfill: bool = False,
    dispatched_at: datetime | None = None,
    note: str | None = None,
) -> set[str]:
    """Write a batch of events to the log in one statement; the ids written now (the others were
    already there, or came twice in the batch: duplicates). Safe against concurrent writers: a
    conflicting id is skipped by the database, never an error. `backfill` events are history: the
    router applies them to the customer and starts or steers nothing. An import (store/imports.py)
    writes history that has nothing left to route already dispatched (`dispatched_at`, with the
    router's `note`)."""
    if not events:
        return set()
    table = EventRow.__table__
    rows = [
        {
            "event_id": event.event_id,
            "type": event.type,
            "customer_id": event.customer_id,
            "order_id": event.order_id,
            "occurred_at": event.occurred_at,
            "data": event.data,
            "received_at": received_at,
            "attempts": 0,
            "backfill": backfill,
            "dispatched_at": dispatched_at,
            "note": note,
        }
        for event in events
    ]
    # One cached statement, executed for many rows (SQLAlchemy batches them into multi-row VALUES).
    statement = upsert_insert(session, table).on_conflict_do_nothing(index_elements=[table.c.event_id])
    written = set(session.scalars(statement.returning(table.c.event_id), rows))
    note_logged(session, events, written)
    return written


def first_written(events: list[Event], written: set[str]) -> list[Event]:
    """The first event of each id `store_events` wrote now (`written`): what the log holds."""
    new: dict[str, Event] = {}
    for event in events:
        if event.event_id in written:
            new.setdefault(event.event_id, event)
    return list(new.values())


def note_logged(session: Session, events: list[Event], written: set[str]) -> None:
    """The read models after `events` were offered to the log and those of `written` (ids) were
    logged now: `store_events` calls it, and so does an import's bulk copy (store/imports.py)."""
    written_now = first_written(events, written)
    reached.lock_customers(session, (event.customer_id for event in written_now))  # the read models' writers
    orders, paid = note_order_events(session, written_now)
    reached.note_events(session, written_now, orders, paid)


def events_for_key_since(
    session: Session, *, key_field: str, key: str, types: list[str], since: datetime, exclude_id: str
) -> list[Event]:
    """Logged events for one order or customer of the given types at or after `since`, oldest first:
    what an instance starting now must know about (an order paid before its creation event arrived)."""
    column = EventRow.order_id if key_field == "order" else EventRow.customer_id
    rows = session.scalars(
        select(EventRow)
        .where(column == key, EventRow.type.in_(types), EventRow.occurred_at >= since, EventRow.event_id != exclude_id)
        .order_by(EventRow.occurred_at)
    )
    return [_event_of(row) for row in rows]


def first_logged(
    session: Session, *, key_field: str, key: str, types: list[str], since: datetime | None = None
) -> Event | None:
    """The earliest logged event of these types for one order or customer (at or after `since`,
    if given), whether or not it was dispatched yet: one indexed look-up."""
    column = EventRow.order_id if key_field == "order" else EventRow.customer_id
    query = select(EventRow).where(column == key, EventRow.type.in_(types))
    if since is not None:
        query = query.where(EventRow.occurred_at >= since)
    row = session.scalars(query.order_by(EventRow.occurred_at).limit(1)).first()
    return _event_of(row) if row is not None else None


def logged_events(
    session: Session, *, customer_id: str | None = None, order_id: str | None = None, limit: int = 200
) -> list[EventRow]:
    """A customer's or an order's logged events, newest first (at most `limit`)."""
    column, key = (EventRow.customer_id, customer_id) if customer_id else (EventRow.order_id, order_id)
    query = select(EventRow).where(column == key).order_by(EventRow.occurred_at.desc()).limit(limit)
    return list(session.scalars(query))


def orders_of_customer(session: Session, customer_id: str, limit: int = 5) -> list[str]:
    """The customer's orders in the event log, the one with the latest event first."""
    latest = func.max(EventRow.occurred_at)
    query = (
        select(EventRow.order_id)
        .where(EventRow.customer_id == customer_id, EventRow.order_id.is_not(None))
        .group_by(EventRow.order_id)
        .order_by(latest.desc(), EventRow.order_id)
        .limit(limit)
    )
    return list(session.scalars(query))


def events_of_order(session: Session, order_id: str) -> list[Event]:
    """Every logged event of an order, oldest first."""
    rows = session.scalars(select(EventRow).where(EventRow.order_id == order_id).order_by(EventRow.occurred_at))
    return [_event_of(row) for row in rows]


def purchases_of(session: Session, customer_id: str, at: datetime) -> list[Purchase]:
    """The customer's orders paid at or before `at`, as RFM (its year, core.rfm) and the lifecycle
    stage (every purchase: a silent customer's is older than a year, core.lifecycle) read them:
    from their created, paid and refunded events up to `at`. One query."""
    return purchases_of_customers(session, [customer_id], at)[customer_id]


def purchases_of_customers(session: Session, customer_ids: list[str], at: datetime) -> dict[str, list[Purchase]]:
    """`purchases_of` for many customers (a page of a broadcast or a simulation), in one query."""
    paid_by_then = (
        select(EventRow.customer_id, EventRow.order_id)
        .where(EventRow.customer_id.in_(customer_ids), EventRow.type == "order.paid", EventRow.occurred_at <= at)
        .distinct()
        .subquery()
    )
    rows = session.execute(
        select(EventRow.customer_id, EventRow.type, EventRow.order_id, EventRow.occurred_at, EventRow.data)
        .join(
            paid_by_then,
            (EventRow.customer_id == paid_by_then.c.customer_id) & (EventRow.order_id == paid_by_then.c.order_id),
        )
        .where(EventRow.type.in_(PURCHASE_EVENT_TYPES), EventRow.occurred_at <= at)
    )
    events: dict[str, list] = {customer_id: [] for customer_id in customer_ids}
    for row in rows:
        events[row.customer_id].append(row)
    return {customer_id: purchases_from(found) for customer_id, found in events.items()}


def _event_of(row: EventRow) -> Event:
    return Event(
        event_id=row.event_id,
        type=row.type,
        occurred_at=row.occurred_at,
        customer_id=row.customer_id,
        order_id=row.order_id,
        data=row.data,
    )


def _pending():
    return EventRow.dispatched_at.is_(None) & EventRow.failed_at.is_(None)


def pending_events(session: Session, limit: int) -> list[EventRow]:
    """Events waiting for dispatch (with their last error and next retry, if any), oldest first."""
    return list(session.scalars(select(EventRow).where(_pending()).order_by(EventRow.received_at).limit(limit)))


def latest_events(session: Session, limit: int, *, pending: bool = False) -> list[EventRow]:
    """The events received last, newest first; with `pending`, only those waiting for dispatch."""
    query = select(EventRow).order_by(EventRow.received_at.desc()).limit(limit)
    return list(session.scalars(query.where(_pending()) if pending else query))


def mark_all_dispatched(
    session: Session, event_ids: list[str], at: datetime, notes: dict[str, str] | None = None
) -> None:
    """Close a customer's dispatched events in one statement, and put down what dispatching some
    of them did of note (`notes`, by event id: few events have one)."""
    if event_ids:
        session.execute(
            update(EventRow)
            .where(EventRow.event_id.in_(event_ids))
            .values(dispatched_at=at, attempts=EventRow.attempts + 1, last_error=None, retry_at=None)
        )
    for event_id, note in (notes or {}).items():
        session.execute(update(EventRow).where(EventRow.event_id == event_id).values(note=note[:2000]))


def customers_with_pending_events(
    session: Session,
    limit: int,
    now: datetime,
    *,
    urgent: frozenset[str] = frozenset(),
    busy: Collection[str] = (),
) -> list[str]:
    """Customers whose events wait for dispatch: those with an `urgent` event type waiting first
    (an event that starts a journey sending at once), then the longest-waiting. A customer held
    back after a passing failure waits out its `retry_at` without taking a place; once due it
    takes one of a tenth of the places kept for retries, so any number of failing customers never
    crowds out the others (nor do the others starve the retries). `busy` customers (being
    dispatched now) are left out."""
    oldest = func.min(EventRow.occurred_at)
    held = func.max(EventRow.retry_at)
    waiting = select(EventRow.customer_id).where(_pending()).group_by(EventRow.customer_id)
    if busy:
        waiting = waiting.where(EventRow.customer_id.not_in(list(busy)))
    retries = list(
        session.scalars(
            waiting.having(held.is_not(None) & (held <= now)).order_by(held, EventRow.customer_id).limit(limit)
        )
    )
    first = [func.max(case((EventRow.type.in_(sorted(urgent)), 1), else_=0)).desc()] if urgent else []
    fresh = list(
        session.scalars(waiting.having(held.is_(None)).order_by(*first, oldest, EventRow.customer_id).limit(limit))
    )
    kept = max(1, limit // 10)
    retried = retries[: max(kept, limit - len(fresh))]
    return (retried + fresh)[:limit]


def count_pending(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(EventRow).where(_pending()))


def record_dispatch_failure(
    session: Session,
    event_id: str,
    error: str,
    at: datetime,
    *,
    permanent: bool,
    backoff: Callable[[int], timedelta] = lambda _attempts: timedelta(0),
) -> None:
    """Note a failed dispatch. A permanent error makes the event a dead letter (`failed_at`);
    a passing one leaves it pending, its customer held for `backoff(attempts so far)`."""
    row = session.get(EventRow, event_id)
    if row is None:
        return
    row.attempts, row.last_error = row.attempts + 1, error[:2000]
    if permanent:
        row.failed_at, row.retry_at = at, None
    else:
        row.retry_at = at + backoff(row.attempts)


def failed_events(session: Session, limit: int) -> list[EventRow]:
    """Dead letters, newest first."""
    return list(
        session.scalars(
            select(EventRow).where(EventRow.failed_at.is_not(None)).order_by(EventRow.failed_at.desc()).limit(limit)
        )
    )


def replay_events(session: Session, event_ids: list[str] | None) -> list[str]:
    """Put dead letters (the given ones, or all with None) back in the queue; the ids replayed."""
    query = select(EventRow.event_id).where(EventRow.failed_at.is_not(None))
    if event_ids is not None:
        query = query.where(EventRow.event_id.in_(event_ids))
    ids = list(session.scalars(query))
    if ids:
        session.execute(update(EventRow).where(EventRow.event_id.in_(ids)).values(failed_at=None, retry_at=None))
    return ids


def claim_customer(session: Session, customer_id: str, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Take (or extend) the dispatch lease on a customer; False while another owner holds it."""
    table = DispatchLeaseRow.__table__
    statement = (
        upsert_insert(session, table)
        .values(customer_id=customer_id, owner=owner, expires_at=now + ttl)
        .on_conflict_do_update(
            index_elements=[table.c.customer_id],
            set_={"owner": owner, "expires_at": now + ttl},
            where=(table.c.owner == owner) | (table.c.expires_at < now),
        )
        .returning(table.c.owner)
    )
    return session.execute(statement).scalar() == owner


def release_customer(session: Session, customer_id: str, owner: str) -> None:
    session.execute(
        delete(DispatchLeaseRow).where(DispatchLeaseRow.customer_id == customer_id, DispatchLeaseRow.owner == owner)
    )


def pending_events_of(session: Session, customer_id: str) -> list[tuple[Event, bool]]:
    """A customer's events waiting for dispatch, in the order they are applied, each with whether
    it is history (backfill)."""
    rows = session.scalars(
        select(EventRow)
        .where(_pending(), EventRow.customer_id == customer_id)
        .order_by(EventRow.occurred_at, EventRow.received_at, EventRow.event_id)
    )
    return [(_event_of(row), row.backfill) for row in rows]


def find_customers(
    session: Session, *, ids: list[str], phones: list[str], email: str | None, limit: int = 20
) -> list[CustomerRow]:
    """Customers whose id, phone (as stored) or email (case-insensitive) is one of these."""
    conditions = [CustomerRow.customer_id.in_(ids)] if ids else []
    if phones:
        conditions.append(CustomerRow.phone.in_(phones))
    if email:
        conditions.append(func.lower(CustomerRow.email) == email.lower())
    if not conditions:
        return []
    return list(
        session.scalars(select(CustomerRow).where(or_(*conditions)).order_by(CustomerRow.customer_id).limit(limit))
    )
