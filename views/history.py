"""What every journey did for a customer or an order: instances from Temporal's visibility,
messages from the ledger, newest first. The API's history endpoints and `journeys history` share it.

A customer's `timeline` is the one list the console shows (newest first): their logged events,
the starts and ends of their journey instances (the `instances` table), each message and each
update on its delivery (the provider's receipts), clicks on its short links, SMS replies, points
and tier changes. It reads the store only, so it answers without Temporal. An order's history
carries the order itself (`order`): amount, items and status from its events."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from core.amounts import amount_of
from core.records import MAX_ID_BYTES, MAX_ID_CHARS, id_problem
from instances.contract import STATUS_QUERY, JourneyStatus
from store import points as points_store
from store import queries
from store import replies as reply_store
from store import tiers as tier_store
from store.db import Store
from store.tables import InstanceRow, LinkClickRow, MessageRow, ProviderEventRow

#: What a history's query cannot quote; the rest of an id's rule is core.records.id_problem.
_UNQUOTABLE = re.compile(r"['\"\\]")

#: How long a history waits for the running instances' workers to answer their status queries (all
#: at once). Temporal holds a query until a worker takes it: with no worker polling the task queue,
#: or one too busy, an unbounded query kept `GET /orders/{id}/history` from answering at all.
STATUS_SECONDS = 2.0
#: How long a history waits for Temporal's visibility listing.
LIST_SECONDS = 10.0
#: How an RPC past its rpc_timeout fails (the client's own timeout says CANCELLED, "Timeout expired").
_LATE = (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


class InstanceView(BaseModel):
    journey: str
    workflow_id: str
    run_id: str
    status: str = Field(description="running, completed, continued_as_new, failed, terminated, ...")
    step: str | None = Field(default=None, description="The current step of a running instance.")
    next_wake_up: datetime | None = None
    started_at: datetime
    ended_at: datetime | None = None
    version: str | None = Field(default=None, description="The definition version the instance runs.")
    temporal_ui: str = Field(description="The instance's page in the Temporal Web UI.")
    note: str | None = Field(
        default=None,
        description="Why a running instance's step and next wake-up are missing (its worker did not answer in time).",
    )


class MessageView(BaseModel):
    id: str
    journey: str
    step: str
    customer_id: str
    order_id: str | None
    channel: str | None
    address: str | None
    template: str
    category: str
    status: str
    reason: str | None
    at: datetime
    subject: str | None
    body: str | None
    provider_id: str | None
    error: str | None = Field(default=None, description="The provider's error, or why a contact was passed over.")
    segments: int | None = Field(default=None, description="SMS segments billed.")
    delivered_at: datetime | None = None
    updated_at: datetime | None = Field(default=None, description="When the status last changed.")


class EventView(BaseModel):
    """A logged event as the timeline shows it: what and when, and what became of it (its data
    stays out: it may hold contact details)."""

    event_id: str
    type: str
    customer_id: str
    order_id: str | None
    occurred_at: datetime
    received_at: datetime
    dispatched_at: datetime | None = Field(description="When the router applied it (None: pending or failed).")
    failed_at: datetime | None = None
    last_error: str | None = None
    backfill: bool = Field(default=False, description="History imported: it started and steered nothing.")
    note: str | None = Field(
        default=None,
        description="What dispatching it did of note: `stale: ...` (too old for a journey's entry.max_age, so "
        "not started) or `backfill: ...`.",
    )


class OrderView(BaseModel):
    """An order as its logged events tell it (store/orders.py keeps the amounts the same way)."""

    order_id: str
    customer_id: str
    status: str = Field(description="Its latest event's type without `order.`: created, paid, shipped, ...")
    amount: float | None = Field(description="The first payment's amount, else the latest creation's.")
    items: list[dict[str, Any]] = Field(description="The latest order.created's `data.items`, as the shop sent them.")
    created_at: datetime | None = None
    paid_at: datetime | None = None
    refunded_at: datetime | None = None
    customers: list[str] = Field(description="Every customer its events name (one, unless the shop re-assigned it).")


TimelineKind = Literal[
    "event", "instance_started", "instance_ended", "message", "delivery", "click", "reply", "points", "tier"
]


class TimelineEntry(BaseModel):
    """One thing that happened to a customer, at its moment."""

    at: datetime
    kind: TimelineKind
    summary: str = Field(description="What happened, in a line: `order.paid`, `payment_reminder started`, ...")
    journey: str | None = None
    step: str | None = None
    order_id: str | None = None
    channel: str | None = None
    status: str | None = Field(None, description="A message's or an update's status; an event's dispatch state.")
    detail: str | None = Field(None, description="The reason, the error, a reply's text, a message's body (120).")
    message_id: str | None = None
    customer_time: str | None = Field(
        None,
        description="A message's moment in the customer's own zone (`2026-12-06 09:05`): quiet hours are theirs.",
    )
    customer_zone: str | None = None


_RANK = {
    "event": 0, "instance_started": 1, "points": 1, "tier": 2, "message": 3, "delivery": 4, "click": 5,
    "reply": 6, "instance_ended": 7,
}  # fmt: skip


class Timeline(BaseModel):
    customer_id: str
    timezone: str | None = Field(description="The customer's zone (customer_time's), if known.")
    entries: list[TimelineEntry] = Field(description="Newest first; at most `limit`.")


class History(BaseModel):
    customer_id: str | None = None
    order_id: str | None = None
    order: OrderView | None = Field(None, description="The order (an order's history), when its events are logged.")
    instances: list[InstanceView]
    messages: list[MessageView]
    events: list[EventView] = Field(default_factory=list, description="The logged events, newest first (200 at most).")


class BadId(ValueError):
    pass


def check_id(*, customer_id: str | None = None, order_id: str | None = None) -> tuple[str, str]:
    """The search attribute and value a history lists by, or BadId for an id no event can have."""
    key, value = ("CustomerId", customer_id) if customer_id else ("OrderId", order_id)
    if not value or _UNQUOTABLE.search(value) or id_problem(value):
        raise BadId(
            f"{key} {value!r} is empty, too long (over {MAX_ID_CHARS} characters or {MAX_ID_BYTES} bytes), "
            "or holds a quote, a backslash or a control character"
        )
    return key, value


def _message_view(row: MessageRow) -> MessageView:
    return MessageView.model_validate(row, from_attributes=True)


async def history(
    client: Client,
    store: Store,
    *,
    ui_url: str,
    customer_id: str | None = None,
    order_id: str | None = None,
) -> History:
    key, value = check_id(customer_id=customer_id, order_id=order_id)
    instances: list[InstanceView] = []
    running: list[InstanceView] = []
    async for execution in executions(client, f"{key} = '{value}'"):
        status = execution.status or WorkflowExecutionStatus.RUNNING
        view = InstanceView(
            journey=execution.id.split(":", 1)[0],
            workflow_id=execution.id,
            run_id=execution.run_id,
            status=status.name.lower(),
            started_at=execution.start_time,
            ended_at=execution.close_time,
            version=await _version(execution),
            temporal_ui=(
                f"{ui_url.rstrip('/')}/namespaces/{quote(client.namespace)}/workflows/"
                f"{quote(execution.id, safe='')}/{execution.run_id}/history"
            ),
        )
        if status == WorkflowExecutionStatus.RUNNING:
            running.append(view)
        instances.append(view)
    await asyncio.gather(*(_current_step(client, view) for view in running))
    instances.sort(key=lambda i: i.started_at, reverse=True)

    def records() -> tuple[list[MessageView], list[EventView], OrderView | None]:
        with store.transaction() as session:
            rows = queries.list_messages(session, customer_id=customer_id, order_id=order_id)
            logged = queries.logged_events(session, customer_id=customer_id, order_id=order_id)
            return (
                [_message_view(row) for row in reversed(rows)],
                [EventView.model_validate(row, from_attributes=True) for row in logged],
                order_of(session, order_id) if order_id else None,
            )

    messages, events, order = await asyncio.to_thread(records)
    return History(
        customer_id=customer_id,
        order_id=order_id,
        order=order,
        instances=instances,
        messages=messages,
        events=events,
    )


#: How far along each order event puts an order, for events logged with one time.
_ORDER_STAGE = {
    "order.created": 0, "order.paid": 1, "order.shipped": 2, "order.delivered": 3, "order.confirmed": 4,
    "order.refunded": 5, "order.closed": 5, "order.cancelled": 5,
}  # fmt: skip


def order_of(session: Session, order_id: str) -> OrderView | None:
    """The order from its logged events (None when none is logged): the amount by the rule of
    store/orders.py (the first payment's, else the latest creation's), the latest creation's
    items, and its latest event's type as its status."""
    events = queries.events_of_order(session, order_id)
    if not events:
        return None
    created = [e for e in events if e.type == "order.created"]
    paid = [e for e in events if e.type == "order.paid"]
    refunded = [e for e in events if e.type == "order.refunded"]
    amount = _amount(paid[0].data) if paid else None
    if amount is None and created:
        amount = _amount(created[-1].data)
    items = created[-1].data.get("items") if created else None
    # Events of one moment (an import, a batch) are told apart by how far along each puts the order.
    latest = max(events, key=lambda e: (e.occurred_at, _ORDER_STAGE.get(e.type, 1)))
    return OrderView(
        order_id=order_id,
        customer_id=latest.customer_id,
        status=latest.type.removeprefix("order."),
        amount=amount,
        items=[item for item in items if isinstance(item, dict)] if isinstance(items, list) else [],
        created_at=created[-1].occurred_at if created else None,
        paid_at=paid[0].occurred_at if paid else None,
        refunded_at=refunded[0].occurred_at if refunded else None,
        customers=sorted({e.customer_id for e in events}),
    )


def _amount(data: dict[str, Any]) -> float | None:
    return amount_of(data.get("amount")) if data.get("amount") is not None else None


#: How many entries a timeline holds at most (the newest).
TIMELINE_LIMIT = 500


def _zone(name: str | None) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def customer_timeline(session: Session, customer_id: str, limit: int = TIMELINE_LIMIT) -> Timeline:
    """The customer's one timeline, newest first (see the module's docstring). Each source is
    read newest first up to `limit`, so the merge holds the newest `limit` of them all."""
    customer = queries.get_customer(session, customer_id)
    zone_name = customer.timezone if customer else None
    zone = _zone(zone_name)
    entries: list[TimelineEntry] = []
    for e in queries.logged_events(session, customer_id=customer_id, limit=limit):
        state = "applied" if e.dispatched_at else "failed" if e.failed_at else "pending"
        entries.append(
            TimelineEntry(
                at=e.occurred_at, kind="event", summary=e.type, order_id=e.order_id, status=state,
                detail=e.note or e.last_error,
            )
        )  # fmt: skip
    runs = session.scalars(
        select(InstanceRow)
        .where(InstanceRow.customer_id == customer_id)
        .order_by(InstanceRow.entered_at.desc())
        .limit(limit)
    )
    for run in runs:
        group = f" ({run.variant})" if run.variant else ""
        entries.append(
            TimelineEntry(
                at=run.entered_at, kind="instance_started", summary=f"{run.journey} started{group}",
                journey=run.journey, order_id=run.order_id, status="started",
            )
        )  # fmt: skip
        if run.ended_at is not None:
            entries.append(
                TimelineEntry(
                    at=run.ended_at, kind="instance_ended", summary=f"{run.journey} ended",
                    journey=run.journey, order_id=run.order_id, status="ended", detail=run.exit_reason,
                )
            )  # fmt: skip
    messages = list(
        session.scalars(
            select(MessageRow).where(MessageRow.customer_id == customer_id).order_by(MessageRow.at.desc()).limit(limit)
        )
    )
    by_id = {m.id: m for m in messages}
    updates: dict[str, list[ProviderEventRow]] = {}
    clicks: list[LinkClickRow] = []
    if by_id:
        ids = list(by_id)
        for row in session.scalars(select(ProviderEventRow).where(ProviderEventRow.message_id.in_(ids))):
            updates.setdefault(row.message_id or "", []).append(row)
        clicks = list(session.scalars(select(LinkClickRow).where(LinkClickRow.message_id.in_(ids))))
    for m in messages:
        local = m.at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if zone else None
        entries.append(
            TimelineEntry(
                at=m.at, kind="message", summary=f"{m.journey} · {m.step}", journey=m.journey, step=m.step,
                order_id=m.order_id, channel=m.channel, status=m.status,
                detail=m.reason or m.error or (m.body[:120] if m.body else None), message_id=m.id,
                customer_time=local, customer_zone=zone_name if zone else None,
            )
        )  # fmt: skip
        receipts = updates.get(m.id, [])
        for r in receipts:
            entries.append(
                TimelineEntry(
                    at=r.received_at, kind="delivery", summary=f"{m.journey} · {m.step}: {r.kind}",
                    journey=m.journey, step=m.step, channel=m.channel, status=r.kind.rpartition(":")[2].lower(),
                    detail=f"{r.provider} receipt", message_id=m.id,
                )
            )  # fmt: skip
        if m.delivered_at and not any(r.kind.rpartition(":")[2].lower() in ("delivered", "delivrd") for r in receipts):
            entries.append(
                TimelineEntry(
                    at=m.delivered_at, kind="delivery", summary=f"{m.journey} · {m.step}: delivered",
                    journey=m.journey, step=m.step, channel=m.channel, status="delivered", message_id=m.id,
                )
            )  # fmt: skip
    for c in clicks:
        m = by_id[c.message_id]
        entries.append(
            TimelineEntry(
                at=c.at, kind="click", summary=f"{m.journey} · {m.step}: link clicked", journey=m.journey,
                step=m.step, channel=m.channel, status="clicked", message_id=m.id,
            )
        )  # fmt: skip
    for r in reply_store.replies_of(session, customer_id, limit):
        entries.append(
            TimelineEntry(
                at=r.received_at, kind="reply", summary=f"reply: {r.content[:60]}", order_id=r.order_id,
                status=r.action, detail=r.error, message_id=r.message_id, channel="sms",
            )
        )  # fmt: skip
    for p in points_store.log(session, customer_id, limit=limit):
        entries.append(
            TimelineEntry(
                at=p.at, kind="points", summary=f"points {p.points:+d} ({p.kind})", order_id=p.order_id,
                status=p.kind, detail=p.reason,
            )
        )  # fmt: skip
    for t in tier_store.changes(session, customer_id, limit):
        entries.append(
            TimelineEntry(
                at=t.at, kind="tier", summary=f"tier {t.from_tier or '–'} → {t.to_tier or '–'}",
                status=t.direction, detail=t.reason,
            )
        )  # fmt: skip
    # At one moment, what followed from a thing shows above it (newest first): an event, then the
    # instance it started, its message, the message's receipts.
    entries.sort(key=lambda e: (e.at, _RANK[e.kind]), reverse=True)
    return Timeline(customer_id=customer_id, timezone=zone_name, entries=entries[:limit])


async def _version(execution: WorkflowExecution) -> str | None:
    return (await execution.memo()).get("journey_version") if execution.raw_info.memo.fields else None


async def _current_step(client: Client, view: InstanceView) -> None:
    """Fill in a running instance's step and next wake-up from its status query, waiting at most
    STATUS_SECONDS; past that, or if it closed meanwhile, the listing stays and `note` says why."""
    handle = client.get_workflow_handle(view.workflow_id, run_id=view.run_id)
    try:
        current = await asyncio.wait_for(
            handle.query(STATUS_QUERY, result_type=JourneyStatus, rpc_timeout=timedelta(seconds=STATUS_SECONDS)),
            timeout=STATUS_SECONDS + 0.5,
        )
    except (TimeoutError, RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
        late = isinstance(err, TimeoutError) or (isinstance(err, RPCError) and err.status in _LATE)
        view.note = (
            f"its worker did not answer within {STATUS_SECONDS:g} s (is a worker polling its task queue?): "
            "step and next wake-up unknown"
            if late
            else f"its status could not be read: {err}"
        )
        return
    view.step, view.next_wake_up = current.step, current.next_wake_up


def _unknown_attribute(err: RPCError) -> bool:
    return err.status == RPCStatusCode.INVALID_ARGUMENT and "search attribute" in str(err)


async def executions(client: Client, query: str):
    """The executions a visibility query finds. A server that does not know the search attribute
    yet (none registered before the first start) holds no instance with it: nothing to list."""
    try:
        async for execution in client.list_workflows(query, rpc_timeout=timedelta(seconds=LIST_SECONDS)):
            yield execution
    except RPCError as err:
        if not _unknown_attribute(err):
            raise


async def count_instances(client: Client, query: str) -> int:
    """How many executions a visibility query finds (0 where the server knows no such attribute yet)."""
    try:
        return (await client.count_workflows(query)).count
    except RPCError as err:
        if not _unknown_attribute(err):
            raise
        return 0


def timeline(h: History) -> list[str]:
    """The history as lines a person reads: instances, then messages, newest first."""
    who = f"customer {h.customer_id}" if h.customer_id else f"order {h.order_id}"
    lines = [f"{who}: {len(h.instances)} journey instances, {len(h.messages)} messages"]
    for i in h.instances:
        state = (
            i.status
            if i.status != "running"
            else f"running at {i.step}" + (f", next wake-up {i.next_wake_up.isoformat()}" if i.next_wake_up else "")
        )
        ended = f", ended {i.ended_at.isoformat()}" if i.ended_at else ""
        lines.append(f"  {i.started_at.isoformat()}  {i.workflow_id}  {state}{ended}  (version {i.version})")
        lines.append(f"      {i.temporal_ui}")
        if i.note:
            lines.append(f"      ! {i.note}")
    for m in h.messages:
        outcome = m.status + (f" ({m.reason})" if m.reason else "")
        if m.delivered_at:
            outcome += f" at {m.delivered_at.isoformat()}"
        to = f" to {m.address}" if m.address else ""
        segments = f", {m.segments} segment{'s' if m.segments != 1 else ''}" if m.segments else ""
        lines.append(f"  {m.at.isoformat()}  {m.journey}/{m.step}  {m.channel or '-'}{to}  {outcome}{segments}")
        if m.error:
            lines.append(f"      ! {m.error}")
        if m.body:
            lines.append(f"      {m.body[:120]}")
    for e in h.events:
        if e.note:  # what an event did not start, and why (stale, history)
            lines.append(f"  {e.occurred_at.isoformat()}  event {e.type} {e.event_id}: {e.note}")
    return lines
