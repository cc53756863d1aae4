"""SQLAlchemy models: customers, the event log, the message ledger, suppressions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Stored as UTC; always read back as an aware UTC datetime (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class CustomerRow(Base):
    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    #: Indexed: an SMS reply is linked to its customer by the number (store/replies.py).
    phone: Mapped[str | None] = mapped_column(String(40), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    birthday: Mapped[str | None] = mapped_column(String(10))
    timezone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(10))
    region: Mapped[str | None] = mapped_column(String(2))
    tags: Mapped[list[str]] = mapped_column(default=list)
    unsubscribed: Mapped[list[str]] = mapped_column(default=list)
    blacklisted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The shop's own attributes (core.records.Customer.traits), at most 16 KB.
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    updated_at: Mapped[datetime]


class EventRow(Base):
    """The event log: an event is stored before it is acknowledged and dispatched from here."""

    __tablename__ = "events"
    __table_args__ = (
        # A goal event of an order or a customer after a time: the effect report's conversions.
        Index("ix_events_goal_order", "order_id", "type", "occurred_at"),
        Index("ix_events_goal_customer", "customer_id", "type", "occurred_at"),
        Index("ix_events_type_at", "type", "occurred_at"),
    )

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    order_id: Mapped[str | None] = mapped_column(String(200), index=True)
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: A dead letter: the dispatcher could not apply it and will not try again until it is replayed.
    failed_at: Mapped[datetime | None] = mapped_column(index=True)
    #: After a passing failure (Temporal or the database away), its customer waits until then.
    retry_at: Mapped[datetime | None]
    #: History imported (`POST /events?backfill=true`, `journeys import`): it updates the customer,
    #: orders and RFM, and starts or steers no journey.
    backfill: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: What dispatching it did of note: the journeys it was too old to start (`stale: ...`), or
    #: `backfill: started nothing`.
    note: Mapped[str | None] = mapped_column(Text)


class MessageRow(Base):
    """The message ledger: one row per send step of a journey run, written before the channel is called."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("workflow_id", "run_id", "step", name="uq_messages_step"),
        Index("ix_messages_cap", "customer_id", "category", "at"),
        Index("ix_messages_resource", "customer_id", "resource", "at"),
        Index("ix_messages_journey_at", "journey", "at"),
        # Whether a run sent before a report's period (store/effect.py).
        Index("ix_messages_run", "workflow_id", "run_id", "at"),
        # A period's SMS, for the SMS report (store/sms_report.py).
        Index("ix_messages_channel_at", "channel", "at"),
        # The latest messages to a number, for a reply from it (store/replies.py latest_messages_to).
        Index("ix_messages_address_at", "address", "at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(60))
    journey: Mapped[str] = mapped_column(String(60), index=True)
    journey_version: Mapped[str] = mapped_column(String(20))
    customer_id: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(200), index=True)
    channel: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(60))
    #: What the message hands out (definitions/resources.yaml), for the resource limits.
    resource: Mapped[str | None] = mapped_column(String(60))
    #: The cap of policy.yaml the message counts against when not its category's (a send step's
    #: `policy: {cap: NAME}`); None: its category's, if it has one.
    cap: Mapped[str | None] = mapped_column(String(60))
    #: The split group of the instance's key (definitions.schema.variant_of), for effect by variant.
    variant: Mapped[str | None] = mapped_column(String(60))
    category: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime]
    locale: Mapped[str | None] = mapped_column(String(10))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(120), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int | None] = mapped_column(Integer)
    provider_template: Mapped[str | None] = mapped_column(String(60))
    template_data: Mapped[dict[str, Any] | None]
    delivered_at: Mapped[datetime | None]
    # When the earliest provider call not yet answered began: set, the provider may have the
    # message (a timeout, a worker killed mid-request), and a retry settles that before sending.
    attempted_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class InstanceRow(Base):
    """A journey instance as it was started (by the router or a broadcast), with the split group
    its key draws: the entries, and the holdout, of the effect report."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_journey", "journey", "entered_at"),
        Index("ix_instances_ended", "journey", "ended_at"),
        #: A customer's timeline (views/history.py) reads their instances.
        Index("ix_instances_customer", "customer_id", "entered_at"),
    )

    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey: Mapped[str] = mapped_column(String(60))
    journey_version: Mapped[str] = mapped_column(String(20))
    customer_id: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(60))
    #: The entry event's time (the journey's clock).
    entered_at: Mapped[datetime]
    #: How the run ended (revision 3 runs record it): when, in the journey's clock, and why.
    ended_at: Mapped[datetime | None]
    exit_reason: Mapped[str | None] = mapped_column(String(60))


class DeferralRow(Base):
    """A send the contact policy put off, one row each time (quiet hours, a send window, a full
    cap): the reason, the detail and the moments, for the effect report and whoever asks why a
    message went late. A deferral for a cap (`cap` set) stays `open` while the message waits for
    its slot: lower-priority messages of the customer leave the slot to it. It is closed when the
    message is decided (sent, skipped) or deferred again, and when its run ends; a wait past its
    `deadline` holds nothing. The ledger has no row for the message until it is decided."""

    __tablename__ = "deferrals"
    __table_args__ = (
        UniqueConstraint("workflow_id", "run_id", "step", "at", name="uq_deferrals_attempt"),
        Index("ix_deferrals_waiting", "customer_id", "cap", "open"),
        Index("ix_deferrals_journey_at", "journey", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(60))
    journey: Mapped[str] = mapped_column(String(60))
    customer_id: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))
    variant: Mapped[str | None] = mapped_column(String(60))
    channel: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    #: The journey's time of the deferral, and the moment the message comes back.
    at: Mapped[datetime]
    resume_at: Mapped[datetime]
    #: A wait for a cap's slot: the cap, the message's priority, since when it waits (its first
    #: deferral for the cap), until when it may still go, whether it waits out the cap's `hold`.
    cap: Mapped[str | None] = mapped_column(String(60))
    priority: Mapped[int | None] = mapped_column(Integer)
    waiting_since: Mapped[datetime | None]
    deadline: Mapped[datetime | None]
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    open: Mapped[bool] = mapped_column(Boolean, default=False)


class ReachedRow(Base):
    """A journey run's first sent message: when the run reached its customer, by which step and
    channel. The effect report's conversions count from it. Kept as the ledger changes
    (store/reached.py), never written by hand."""

    __tablename__ = "reached"
    __table_args__ = (
        Index("ix_reached_journey", "journey", "at"),
        Index("ix_reached_customer", "customer_id", "at"),
        Index("ix_reached_order", "order_id", "at"),
        Index("ix_reached_converted_order", "converted_order"),
        Index(
            "ix_reached_unsettled", "journey", postgresql_where=text("NOT settled"), sqlite_where=text("NOT settled")
        ),
    )

    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey: Mapped[str] = mapped_column(String(60))
    customer_id: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(60))
    step: Mapped[str] = mapped_column(String(60))
    channel: Mapped[str | None] = mapped_column(String(20))
    at: Mapped[datetime]
    message_id: Mapped[str] = mapped_column(String(36))
    #: The goal event that converted the run by its journey's rule (the `goals` row), if one has.
    converted_event: Mapped[str | None] = mapped_column(String(200))
    converted_at: Mapped[datetime | None]
    converted_order: Mapped[str | None] = mapped_column(String(200))
    #: That order's amount (store/orders.py `amount`), kept as the order's events come.
    converted_amount: Mapped[float | None]
    #: The customer's orders' first payments just before and just after `at`, for reactivation.
    last_paid_before: Mapped[datetime | None]
    next_paid_after: Mapped[datetime | None]
    #: False while a send has made or moved the run and `settle` has not computed the above yet.
    settled: Mapped[bool] = mapped_column(Boolean, default=False)


class OrderRow(Base):
    """An order as the event log tells it (store/orders.py keeps it): when it was created and for
    how much, its first payment and refund."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_paid", "paid_at"),
        Index("ix_orders_customer_paid", "customer_id", "paid_at"),
    )

    order_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime | None]
    created_amount: Mapped[float | None]
    paid_at: Mapped[datetime | None]
    paid_amount: Mapped[float | None]
    refunded_at: Mapped[datetime | None]


class GoalRow(Base):
    """The conversion rule each journey's `reached` rows are kept by: the rule of the definitions
    the effect report last ran with (store/reached.py)."""

    __tablename__ = "goals"

    journey: Mapped[str] = mapped_column(String(60), primary_key=True)
    event: Mapped[str] = mapped_column(String(40))
    within_seconds: Mapped[float]
    key: Mapped[str] = mapped_column(String(10))


class SuppressionRow(Base):
    """An address that must not get messages: `scope` 'all' (SMS STOP, hard bounce) or 'marketing'."""

    __tablename__ = "suppressions"

    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    scope: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[datetime]


class ProviderEventRow(Base):
    """A provider webhook event already applied, by the provider's own id for it (SendGrid's
    `sg_event_id`, Twilio's idempotency token): a delivery of it again is dropped."""

    __tablename__ = "provider_events"
    #: A customer's timeline reads each message's delivery updates.
    __table_args__ = (Index("ix_provider_events_message", "message_id"),)

    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    event_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str | None] = mapped_column(String(36))
    received_at: Mapped[datetime]


class DispatchLeaseRow(Base):
    """A dispatcher's claim on one customer's pending events, so several API processes never
    dispatch one customer's events at once (which would break their order)."""

    __tablename__ = "dispatch_leases"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class ErasureRow(Base):
    """A customer erased on request: who asked, when, and what was removed (counts, never data).
    Events arriving later for the id are dropped, unless a new `customer.created` comes after."""

    __tablename__ = "erasures"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    erased_at: Mapped[datetime]
    requested_by: Mapped[str] = mapped_column(String(200))
    removed: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recreated_at: Mapped[datetime | None]


class ProductRow(Base):
    """The product catalogue (core/products.py `Product`): one row per SKU, written by
    `POST /products` and `journeys products import`."""

    __tablename__ = "products"
    __table_args__ = (Index("ix_products_category", "category"),)

    sku: Mapped[str] = mapped_column(String(100), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    price: Mapped[float | None]
    tags: Mapped[list[str]] = mapped_column(default=list)
    cycle_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class ProductCycleRow(Base):
    """A SKU's repurchase cycle learned from the order history (core.products.learn_cycles),
    replaced whole by each daily run; `usable` when it rests on at least the run's `min_pairs`."""

    __tablename__ = "product_cycles"

    sku: Mapped[str] = mapped_column(String(100), primary_key=True)
    median_days: Mapped[float]
    pairs: Mapped[int] = mapped_column(Integer)
    customers: Mapped[int] = mapped_column(Integer)
    min_pairs: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime]


class ImportRow(Base):
    """An import of an order export (`POST /imports`, triggers/imports.py): its file and format,
    how far it has got (updated after each batch of orders, so any API process can answer
    `GET /imports/{id}`), what it did (counts) and the rows it skipped (the first 1,000 problems,
    `file:line: column: problem`)."""

    __tablename__ = "imports"

    import_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    file: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(20))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    #: running, done (every row read; skipped rows are in `problems`), failed (stopped: `error`).
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    problems: Mapped[list[str]] = mapped_column(default=list)
    problem_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class PointsEntryRow(Base):
    """The points ledger (积分日志, store/points.py): append-only; a balance is the sum of a
    customer's entries. Each entry names its source (the event, request or file row that caused
    it), once per customer: a source delivered twice moves the balance once. Positive entries
    are lots that lapse at `expires_at`; what is spent or lapses takes the oldest lots first."""

    __tablename__ = "points_ledger"
    __table_args__ = (
        UniqueConstraint("customer_id", "source", name="uq_points_ledger_source"),
        Index("ix_points_ledger_customer_at", "customer_id", "at"),
        Index("ix_points_ledger_expires", "expires_at"),
    )

    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    #: earn, redeem, expire, adjust, import, reverse (core/loyalty.py ENTRY_KINDS).
    kind: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(300))
    event_id: Mapped[str | None] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(200))
    #: When it counts (the purchase's payment, the request's time).
    at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class MemberTierRow(Base):
    """A customer's member tier (store/tiers.py): since when, and until when the card is valid."""

    __tablename__ = "member_tiers"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tier: Mapped[str] = mapped_column(String(60))
    since: Mapped[datetime]
    until: Mapped[datetime] = mapped_column(index=True)
    #: Set by an operator (`POST /customers/{id}/tier`): purchases do not move it before `until`.
    overridden: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class TierChangeRow(Base):
    """The tiers' change log (变更日志): from, to, why and when, once per source."""

    __tablename__ = "tier_changes"
    __table_args__ = (
        UniqueConstraint("customer_id", "source", name="uq_tier_changes_source"),
        Index("ix_tier_changes_at", "at"),
    )

    change_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    from_tier: Mapped[str | None] = mapped_column(String(60))
    to_tier: Mapped[str | None] = mapped_column(String(60))
    #: up, down, renew (the card renewed at the same tier), override.
    direction: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text)
    #: Who: `engine`, or the operator's key name.
    by: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime]


class LifecycleStageRow(Base):
    """Each customer's lifecycle stage as last written to the log (`lifecycle.changed`), so a move
    is written once: by the purchase that caused it, or by the daily evaluation."""

    __tablename__ = "lifecycle_stages"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), index=True)
    since: Mapped[datetime]
    evaluated_at: Mapped[datetime]


class SmsReplyRow(Base):
    """An SMS a customer sent back (回复记录): Aliyun's SmsUp or Twilio's inbound message, once per
    provider key; linked to the customer by number and to the message it most likely answers (the
    latest SMS to that number before it), and what the shop's reply rules did with it."""

    __tablename__ = "sms_replies"
    __table_args__ = (
        UniqueConstraint("provider", "provider_key", name="uq_sms_replies_key"),
        Index("ix_sms_replies_customer", "customer_id", "received_at"),
        Index("ix_sms_replies_received", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    #: Aliyun's sequence_id, Twilio's MessageSid: a reply pushed twice is kept once.
    provider_key: Mapped[str] = mapped_column(String(200))
    number: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    order_id: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    sign_name: Mapped[str | None] = mapped_column(String(60))
    dest_code: Mapped[str | None] = mapped_column(String(40))
    received_at: Mapped[datetime]
    #: What the reply rules decided (core.replies: unsubscribe, answer, webhook, ignore), once handled.
    action: Mapped[str | None] = mapped_column(String(20))
    #: The ledger row of the answer or confirmation sent back, if any.
    answer_id: Mapped[str | None] = mapped_column(String(36))
    handled_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class ShortLinkRow(Base):
    """A tracked short link (短链) of one message: `{{ link(url) }}` in its template. The code is
    random and unguessable; it stops redirecting at `expires_at` (the retention period)."""

    __tablename__ = "short_links"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class LinkClickRow(Base):
    """One click on a short link (each request one row): when, and by what user agent."""

    __tablename__ = "link_clicks"
    __table_args__ = (Index("ix_link_clicks_message", "message_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), index=True)
    message_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(index=True)
    user_agent: Mapped[str | None] = mapped_column(String(400))


class ChannelRateRow(Base):
    """A channel's send budget (store/rates.py): a token bucket every worker and both send paths
    (one message, a page of messages) draw from, so the channel's rate limit holds in messages,
    not in activities, however many workers send. Times are epoch seconds in a Double (SQLAlchemy's
    type for `float`: an epoch time keeps its microseconds), not datetimes: the bucket counts in
    seconds."""

    __tablename__ = "channel_rates"

    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    #: Tokens left at `at`: whole ones are messages that may go now; never above one second's worth.
    tokens: Mapped[float]
    #: When `tokens` was last refilled, epoch seconds; never moves back (a worker's clock behind).
    at: Mapped[float]


class DefinitionChangeRow(Base):
    """A change of definitions (docs/publishing.md): one or more files, written as a draft,
    submitted for review, then published or rejected. What runs is the base directory with every
    published change's files laid over it in `seq` order."""

    __tablename__ = "definition_changes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    #: draft, in_review, published or rejected.
    state: Mapped[str] = mapped_column(String(20), index=True)
    #: The API key's name that wrote it (or, through `journeys publish`, the commit's author).
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    #: The reviewer's comment (required on a reject).
    comment: Mapped[str | None] = mapped_column(Text)
    #: definitions.drafts.content_hash of its files.
    hash: Mapped[str] = mapped_column(String(12))
    #: Publication order (1, 2, ...): the latest published change of a file wins; a process polls
    #: the largest to know when to load again.
    seq: Mapped[int | None] = mapped_column(Integer, unique=True)


class DefinitionFileRow(Base):
    """One file of a change, by its path inside the definitions directory."""

    __tablename__ = "definition_files"
    __table_args__ = (Index("ix_definition_files_kind_name", "kind", "name"),)

    change_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    path: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(12))


class DefinitionAuditRow(Base):
    """What happened to a change, one row each: created, edited, submitted, dry_run, approved,
    rejected; who, when, the change's hash then, the comment and a dry run's figures."""

    __tablename__ = "definition_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(20))
    who: Mapped[str] = mapped_column(String(200))
    change_id: Mapped[str] = mapped_column(String(36), index=True)
    hash: Mapped[str] = mapped_column(String(12))
    comment: Mapped[str | None] = mapped_column(Text)
    figures: Mapped[dict[str, Any] | None]


class DryRunRow(Base):
    """A dry run (docs/publishing.md): a set of files simulated against the shop's own events of
    the last `days` days, beside what runs now, in a process of its own; progress and the result
    are written here for the console to poll."""

    __tablename__ = "dry_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    change_id: Mapped[str | None] = mapped_column(String(36), index=True)
    #: The files simulated, {path: text}, as they were when it was asked for.
    files: Mapped[dict[str, Any]]
    days: Mapped[int]
    #: queued, running, done or failed.
    state: Mapped[str] = mapped_column(String(12))
    progress: Mapped[float] = mapped_column(default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: docs/publishing.md's `result`, when done.
    result: Mapped[dict[str, Any] | None]
    #: The process running it: a dry run whose process is gone is failed, not left running.
    pid: Mapped[int | None]
