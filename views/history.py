"""What every journey did for a customer or an order: instances from Temporal's visibility,
messages from the ledger, newest first. The API's history endpoints and `journeys history` share it."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from urllib.parse import quote

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from core.records import MAX_ID_BYTES, MAX_ID_CHARS, id_problem
from instances.contract import STATUS_QUERY, JourneyStatus
from store import queries
from store.db import Store
from store.tables import MessageRow

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


class History(BaseModel):
    customer_id: str | None = None
    order_id: str | None = None
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

    def records() -> tuple[list[MessageView], list[EventView]]:
        with store.transaction() as session:
            rows = queries.list_messages(session, customer_id=customer_id, order_id=order_id)
            logged = queries.logged_events(session, customer_id=customer_id, order_id=order_id)
            return (
                [_message_view(row) for row in reversed(rows)],
                [EventView.model_validate(row, from_attributes=True) for row in logged],
            )

    messages, events = await asyncio.to_thread(records)
    return History(customer_id=customer_id, order_id=order_id, instances=instances, messages=messages, events=events)


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
