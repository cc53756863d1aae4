"""Points (积分体系): earning on purchases and bonus events, reversal on refunds, expiry oldest first,
and the points.earned / points.expiring notices (activities/loyalty.py calls these); and the
ledger's operations the API and the CLI share: a customer's points, a redemption, an adjustment,
an import's entries, the overview (积分总览).

The arithmetic is rules/points.py's; the rows are store/points.py's. Every source is written once
per customer (the ledger's unique key), so an event delivered twice, a retried request or a
second run of the day writes nothing twice. Before any debit of a customer (a redemption, an
adjustment, a refund's reversal, an import) the points of theirs that lapsed by then are written
as expired first, so a debit never spends points that are gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from activities.engine_events import write_engine_events
from core.amounts import order_amount, written_amount
from core.loyalty import EntryView, Loyalty, Points, engine_event
from core.orders import order_context
from core.products import item_sku, quantity_of
from core.records import ENGINE_EVENT_TYPES, Event
from definitions.loader import Definitions
from rules.points import (
    Allocation,
    Entry,
    Item,
    allocate,
    bonus_applies,
    bonus_source,
    expires_on,
    lapsing,
    lot_expiry,
    notices_due,
    purchase_points,
    upcoming,
)
from store import points as ledger
from store import queries
from store.db import Store
from store.products import products_of
from store.segments import segments_of
from store.tables import OrderRow, PointsEntryRow

if TYPE_CHECKING:
    from activities.loyalty import DailyReport

#: Customers per transaction in the daily run.
DAILY_BATCH = 500


# ---------------------------------------------------------------------------------------------
# Lots


def _entry(row: PointsEntryRow) -> Entry:
    lot = None
    if row.kind == "expire" and row.source.startswith(ledger.EXPIRE_SOURCE):
        number = row.source.removeprefix(ledger.EXPIRE_SOURCE)
        lot = int(number) if number.isdigit() else None
    return Entry(row.entry_id, row.points, row.at, row.expires_at, lot)


def lots_of(rows: list[PointsEntryRow]) -> Allocation:
    """The lots of a customer's entries (in the order recorded), with what is left of each."""
    return allocate(_entry(row) for row in rows)


def lapse_due(session: Session, customer_ids: list[str], by: datetime, zone: str) -> list[PointsEntryRow]:
    """Write an `expire` entry for what is left of each lot of these customers lapsing at or before
    `by`, oldest first (source `expire:<lot entry_id>`, counting at the lot's end); the entries
    written now. The caller holds the customers' lock."""
    new: list[ledger.NewEntry] = []
    for customer_id, rows in ledger.entries_of_customers(session, customer_ids).items():
        for lot in lapsing(lots_of(rows).lots, by):
            assert lot.expires_at is not None  # lapsing() gives lots with an end only
            new.append(
                ledger.NewEntry(
                    customer_id=customer_id,
                    kind="expire",
                    points=-lot.remaining,
                    reason=f"{lot.remaining} of the {lot.points} points of {lot.at.astimezone(ZoneInfo(zone)).date()} "
                    f"lapsed (good until {expires_on(lot.expires_at, zone)})",
                    source=f"{ledger.EXPIRE_SOURCE}{lot.entry_id}",
                    at=lot.expires_at,
                )
            )
    return ledger.append(session, new, by) if new else []


# ---------------------------------------------------------------------------------------------
# As events are logged


class _Earning:
    """One batch of logged events earning under one programme; caches what it asks per customer."""

    def __init__(self, session: Session, definitions: Definitions, config: Points, now: datetime):
        self.session = session
        self.definitions = definitions
        self.loyalty: Loyalty = definitions.loyalty
        self.config = config
        self.now = now
        self.caused: list[Event] = []
        #: Entries decided but not yet written: the batch's are appended in one statement (`flush`).
        self.pending: list[ledger.NewEntry] = []
        #: The rows of the orders the batch pays, read together (the read model holds the batch).
        self.orders: dict[str, OrderRow] = {}

    def _segments(self, customer_id: str, names: list[str], at: datetime) -> set[str]:
        known = [self.definitions.segments[name] for name in names if name in self.definitions.segments]
        if not known:
            return set()
        return set(segments_of(self.session, customer_id, known, at, self.definitions.rfm))

    def blacklisted(self, customer_id: str, at: datetime) -> bool:
        """积分黑名单: the customer is listed, or is in a listed segment at `at`."""
        listed = self.loyalty.blacklists.points
        if customer_id in listed.customers:
            return True
        return bool(listed.segments) and bool(self._segments(customer_id, listed.segments, at))

    def _items(self, order_id: str) -> list[Item]:
        """The order's lines with their catalogue category and price × quantity (the item's own
        `price`, else the catalogue's; None when neither is known)."""
        items = order_context(order_id, queries.events_of_order(self.session, order_id)).get("items")
        if not isinstance(items, list):
            return []
        catalogue = products_of(self.session, filter(None, map(item_sku, items)))
        lines = []
        for item in items:
            sku = item_sku(item)
            product = catalogue.get(sku) if sku else None
            price = written_amount(item.get("price")) if isinstance(item, dict) else None
            if price is None and product is not None:
                price = product.price
            amount = None if price is None else float(price) * quantity_of(item)
            lines.append(Item(category=product.category if product else None, amount=amount))
        return lines

    def _write(self, entry: ledger.NewEntry) -> None:
        """Add one entry to the batch's (written by `flush`)."""
        self.pending.append(entry)

    def flush(self) -> None:
        """Append the pending entries in one statement; a points.earned event for each positive one
        written now, with the balance right after it (the balance now, less the batch's later
        entries of the customer)."""
        entries, self.pending = self.pending, []
        rows = ledger.append(self.session, entries, self.now)
        if not any(row.kind == "earn" for row in rows):
            return
        running = ledger.balances(self.session, {row.customer_id for row in rows})
        after: dict[int, int] = {}
        for row in reversed(rows):  # in the order recorded
            after[row.entry_id] = running[row.customer_id]
            running[row.customer_id] -= row.points
        for row in rows:
            if row.kind != "earn":
                continue
            data = {
                "points": row.points,
                "balance": after[row.entry_id],
                "reason": row.reason,
                "source": row.source,
            } | ({"order_id": row.order_id} if row.order_id else {})
            self.caused.append(engine_event("points.earned", row.customer_id, row.source, row.at, data))

    def purchase(self, event: Event) -> None:
        """Earn for the order `event` pays (or confirms): its amount by core/amounts.py's rule."""
        order_id = event.order_id
        assert order_id is not None
        order = self.orders.get(order_id) or self.session.get(OrderRow, order_id)
        if order is None or order.refunded_at is not None:
            return  # refunded before it counted: nothing to earn
        if self.blacklisted(event.customer_id, event.occurred_at):
            return
        paid_at = order.paid_at or event.occurred_at
        amount = order_amount(order.paid_amount, order.created_amount)
        multipliers = self.config.multipliers
        segment_names = [m.segment for m in multipliers if m.segment is not None]
        segments = self._segments(event.customer_id, segment_names, paid_at) if segment_names else set()
        by_category = any(m.category is not None for m in multipliers)
        items = self._items(order_id) if by_category else []
        earned = purchase_points(amount, self.config.earning, multipliers, paid_at, segments, items)
        if earned.points <= 0:
            return
        reason = f"order {order_id}: {amount:g} paid" + (
            f" ({', '.join(earned.multipliers)})" if earned.multipliers else ""
        )
        self._write(
            ledger.NewEntry(
                customer_id=event.customer_id,
                kind="earn",
                points=earned.points,
                reason=reason,
                source=f"earn:order:{order_id}",
                at=event.occurred_at,
                expires_at=lot_expiry(event.occurred_at, self.config.expiry, self.loyalty.zone),
                event_id=event.event_id,
                order_id=order_id,
            )
        )

    def refund(self, event: Event) -> None:
        """Take back what the order earned (a `reverse` entry), even past the balance."""
        order_id = event.order_id
        assert order_id is not None
        self.flush()  # what this batch earned counts: a payment and its refund may come together
        source = f"earn:order:{order_id}"
        rows = ledger.entries_of_order(self.session, event.customer_id, order_id, kind="earn")
        earned = sum(row.points for row in rows if row.source == source)  # its purchase's, not a review's bonus
        if not earned:
            return
        lapse_due(self.session, [event.customer_id], self.now, self.loyalty.zone)
        self._write(
            ledger.NewEntry(
                customer_id=event.customer_id,
                kind="reverse",
                points=-earned,
                reason=f"order {order_id} refunded",
                source=f"reverse:order:{order_id}",
                at=event.occurred_at,
                event_id=event.event_id,
                order_id=order_id,
            )
        )

    def bonuses(self, event: Event) -> None:
        matching = [bonus for bonus in self.config.bonuses if bonus_applies(bonus, event.type, event.data)]
        if not matching or self.blacklisted(event.customer_id, event.occurred_at):
            return
        for bonus in matching:
            self._write(
                ledger.NewEntry(
                    customer_id=event.customer_id,
                    kind="earn",
                    points=bonus.points,
                    reason=bonus.title or bonus.name,
                    source=bonus_source(bonus, event.event_id, event.order_id, event.occurred_at, self.loyalty.zone),
                    at=event.occurred_at,
                    expires_at=lot_expiry(event.occurred_at, self.config.expiry, self.loyalty.zone),
                    event_id=event.event_id,
                    order_id=event.order_id,
                )
            )


def note_events(session: Session, events: list[Event], definitions: Definitions, now: datetime) -> list[Event]:
    """Earn for the purchases and bonus events among `events` (just logged), reverse for refunds;
    returns the points.earned events to log. The orders read model already holds these events (the
    API's transaction folds them in first) and the customers are locked by it. Without
    `points` in loyalty.yaml, nothing."""
    config = definitions.loyalty.points
    if config is None:
        return []
    earning = _Earning(session, definitions, config, now)
    counted = "order.paid" if config.earning.counted_at == "paid" else "order.confirmed"
    paying = {event.order_id for event in events if event.type == counted and event.order_id}
    if paying:  # their rows in one query, not one each
        earning.orders = {
            row.order_id: row for row in session.scalars(select(OrderRow).where(OrderRow.order_id.in_(paying)))
        }
    for event in events:
        if event.type in ENGINE_EVENT_TYPES:
            continue
        if event.type == counted and event.order_id:
            earning.purchase(event)
        elif event.type == "order.refunded" and event.order_id:
            earning.refund(event)
        earning.bonuses(event)
    earning.flush()
    return earning.caused


# ---------------------------------------------------------------------------------------------
# Once a day


def daily(store: Store, definitions: Definitions, at: datetime, report: DailyReport) -> Iterator[Event]:
    """Lapse what expired by `at` (oldest first); yield the points.expiring notices due. Each batch of customers is one
    transaction that writes its changes and its events (queries.store_events) together."""
    loyalty = definitions.loyalty
    if loyalty.points is None:
        return
    notice_days = loyalty.points.expiry.notice_days
    horizon = at + timedelta(days=max(notice_days, default=0))
    after: str | None = None
    while True:
        with store.transaction() as session:
            batch = ledger.customers_due(session, horizon, after=after, limit=DAILY_BATCH)
            if not batch:
                return
            ledger.lock(session, batch)
            expired = lapse_due(session, batch, at, loyalty.zone)
            notices = _notices(session, batch, at, loyalty)
            written = write_engine_events(session, notices, definitions, at)
        report.expired_points += -sum(row.points for row in expired)
        yield from (event for event in notices if event.event_id in written)
        after = batch[-1]


def _notices(session: Session, customer_ids: list[str], at: datetime, loyalty: Loyalty) -> list[Event]:
    assert loyalty.points is not None
    found = []
    for customer_id, rows in ledger.entries_of_customers(session, customer_ids).items():
        due = notices_due(lots_of(rows).lots, at, loyalty.points.expiry.notice_days, loyalty.zone)
        held = sum(row.points for row in rows)
        for notice in due:
            data = {
                "points": notice.points,
                "expires_on": notice.expires_on.isoformat(),
                "days": notice.days,
                "balance": held,
            }
            about = f"{notice.expires_on.isoformat()}:{notice.days}"
            found.append(engine_event("points.expiring", customer_id, about, at, data))
    return found


# ---------------------------------------------------------------------------------------------
# What the API and the CLI do with the ledger


class Expiring(BaseModel):
    expires_on: date = Field(description="The last day these points are good for (in loyalty.yaml's zone).")
    points: int


class CustomerPoints(BaseModel):
    """A customer's points: the balance (the ledger's sum), what lapses when, and the log."""

    customer_id: str
    balance: int
    expiring: list[Expiring] = Field(description="What is left of the lots that lapse, by day, soonest first.")
    entries: list[EntryView] = Field(description="The log (积分日志), the latest recorded first.")
    next_before: int | None = Field(None, description="Pass as `before` for the next page; null on the last.")


def entry_view(row: PointsEntryRow) -> EntryView:
    return EntryView.model_validate(row, from_attributes=True)


def customer_points(
    session: Session, customer_id: str, zone: str, *, limit: int = 50, before: int | None = None
) -> CustomerPoints:
    """The customer's points as `GET /customers/{id}/points` and `journeys points show` give them."""
    rows = ledger.entries(session, customer_id)
    ever = datetime.min.replace(tzinfo=UTC)  # lots past their end not lapsed yet (the daily run's) too
    expiring = [Expiring(expires_on=e.expires_on, points=e.points) for e in upcoming(lots_of(rows).lots, ever, zone)]
    page = ledger.log(session, customer_id, limit=limit + 1, before=before)
    more = len(page) > limit
    page = page[:limit]
    return CustomerPoints(
        customer_id=customer_id,
        balance=sum(row.points for row in rows),
        expiring=expiring,
        entries=[entry_view(row) for row in page],
        next_before=page[-1].entry_id if more and page else None,
    )


class Booked(BaseModel):
    """A redemption's or an adjustment's entry and the balance right after it."""

    customer_id: str
    entry_id: int
    kind: str
    points: int
    balance: int = Field(description="The balance right after this entry.")
    request_id: str
    order_id: str | None = None
    reason: str
    at: datetime
    duplicate: bool = Field(False, description="The request id was used before: this is the first request's result.")


class NotEnoughPoints(Exception):
    """A redemption past the balance."""


class RequestReused(Exception):
    """A request id used before for another customer's request or other points."""


def _booked(session: Session, row: PointsEntryRow, request_id: str, duplicate: bool) -> Booked:
    return Booked(
        customer_id=row.customer_id,
        entry_id=row.entry_id,
        kind=row.kind,
        points=row.points,
        balance=ledger.balance_through(session, row.customer_id, row.entry_id),
        request_id=request_id,
        order_id=row.order_id,
        reason=row.reason,
        at=row.at,
        duplicate=duplicate,
    )


def _book(
    session: Session, entry: ledger.NewEntry, request_id: str, zone: str, now: datetime, *, within_balance: bool
) -> Booked:
    """Write a request's entry once per request id, under the customer's lock; a repeat answers the
    first request's result. `within_balance`: refuse a debit past the balance (after lapsing)."""
    ledger.lock(session, [entry.customer_id])
    held = ledger.find(session, entry.customer_id, entry.source)
    if held is not None:
        if held.points != entry.points or held.order_id != entry.order_id:
            raise RequestReused(
                f"request_id {request_id!r} was already used for {held.kind} {held.points:+d} points of customer "
                f"{held.customer_id!r} (entry {held.entry_id}); use a new request_id for another request"
            )
        return _booked(session, held, request_id, duplicate=True)
    if entry.points < 0:
        lapse_due(session, [entry.customer_id], now, zone)
    if within_balance:
        held_points = ledger.balance(session, entry.customer_id)
        if -entry.points > held_points:
            raise NotEnoughPoints(
                f"customer {entry.customer_id!r} has {held_points} points; {-entry.points} cannot be redeemed"
            )
    (row,) = ledger.append(session, [entry], now)
    return _booked(session, row, request_id, duplicate=False)


def redeem(
    session: Session,
    customer_id: str,
    points: int,
    request_id: str,
    now: datetime,
    zone: str,
    *,
    order_id: str | None = None,
    reason: str | None = None,
) -> Booked:
    """Spend `points` (more than 0) of the customer's, the oldest first; NotEnoughPoints past the
    balance, RequestReused for a request id used for something else."""
    entry = ledger.NewEntry(
        customer_id=customer_id,
        kind="redeem",
        points=-points,
        reason=reason or (f"redeemed for order {order_id}" if order_id else "redeemed"),
        source=f"redeem:{request_id}",
        at=now,
        order_id=order_id,
    )
    return _book(session, entry, request_id, zone, now, within_balance=True)


def adjust(
    session: Session, customer_id: str, points: int, reason: str, request_id: str, now: datetime, loyalty: Loyalty
) -> Booked:
    """An operator's correction: `points` added (a lot, lapsing as earned points do) or taken (the
    oldest first; it may take the balance below zero)."""
    expiry = lot_expiry(now, loyalty.points.expiry, loyalty.zone) if loyalty.points and points > 0 else None
    entry = ledger.NewEntry(
        customer_id=customer_id,
        kind="adjust",
        points=points,
        reason=reason,
        source=f"adjust:{request_id}",
        at=now,
        expires_at=expiry,
    )
    return _book(session, entry, request_id, loyalty.zone, now, within_balance=False)


def write_imported(session: Session, entries: list[ledger.NewEntry], now: datetime, zone: str) -> list[PointsEntryRow]:
    """An import's entries (kind `import`, each once by its source), under their customers' lock,
    after what lapsed by `now` is written; no points.earned events (an import is history)."""
    customers = sorted({entry.customer_id for entry in entries})
    ledger.lock(session, customers)
    lapse_due(session, customers, now, zone)
    return ledger.append(session, entries, now)


class Overview(BaseModel):
    """积分总览: the points each kind moved in the period (positive numbers; adjusted and imported
    are net, so signed), and what is outstanding now with its liability at the shop's point value."""

    since: datetime | None
    until: datetime | None
    issued: int = Field(description="Earned on purchases and bonus events.")
    redeemed: int
    expired: int
    adjusted: int = Field(description="Operators' adjustments, net (signed).")
    imported: int = Field(description="Imported, net (signed).")
    reversed: int = Field(description="Taken back by refunds.")
    outstanding: int = Field(description="The ledger's sum now: every customer's balance added up.")
    holders: int = Field(description="Customers with more than 0 points now.")
    point_value: float
    liability: float = Field(description="outstanding × point_value (yuan).")


def overview(session: Session, loyalty: Loyalty, since: datetime | None, until: datetime | None) -> Overview:
    found = ledger.totals(session, since, until)
    kinds = found.by_kind
    value = loyalty.points.point_value if loyalty.points else 0.0
    return Overview(
        since=since,
        until=until,
        issued=kinds["earn"],
        redeemed=-kinds["redeem"],
        expired=-kinds["expire"],
        adjusted=kinds["adjust"],
        imported=kinds["import"],
        reversed=-kinds["reverse"],
        outstanding=found.outstanding,
        holders=found.customers,
        point_value=value,
        liability=round(found.outstanding * value, 2),
    )
