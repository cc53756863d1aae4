"""Starting, cancelling and following broadcasts (definitions/broadcasts/): used by the API
(`/broadcasts`) and `journeys broadcast`. The running is the Broadcast workflow's
(workflows.broadcast); progress joins its own count of started instances with the ledger's
sends and skips and the instances still waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.contact_policy import SendPolicy
from core.records import DEFAULT_TIMEZONE, Customer
from definitions.broadcasts import Broadcast
from definitions.loader import Definitions
from definitions.schema import JourneySnapshot, split_draw
from instances.contract import BroadcastInput, BroadcastProgress, broadcast_workflow_id
from rules.policy import decide
from store import queries, segments
from store.db import Store
from store.lookups import StoreLookups
from views.history import count_instances
from workflows.broadcast import BroadcastWorkflow

#: Members a dry run reads at a time (a start pages the same way).
PAGE = 500

#: How long after its scheduled moment a broadcast stays open: the spread of time zones (a local
#: time is reached last at UTC-12) and a quiet-hours deferral to the next morning.
LATE_MARGIN = timedelta(hours=36)


class BroadcastError(Exception):
    """A broadcast that does not exist, already ran, or is not running; the message says which."""


class BroadcastStatus(BaseModel):
    name: str
    title: str | None
    segment: str
    state: str = Field(description="not started, counting, starting, started, done, cancelling, cancelled")
    members: int | None = Field(description="Members of the segment when it started.")
    started: int = Field(description="Instances started (one per member).")
    waiting: int = Field(description="Instances still waiting for their time.")
    outcomes: dict[str, int] = Field(description="Ledger rows by status (and reason): sent, skipped:..., failed:...")
    workflow_id: str


def _found(definitions: Definitions, name: str):
    if name not in definitions.broadcasts:
        known = ", ".join(sorted(definitions.broadcasts)) or "none"
        raise BroadcastError(f"no broadcast {name!r}; broadcasts: {known}")
    return definitions.broadcasts[name]


def broadcast_input(
    definitions: Definitions, name: str, now: datetime, clock_offset: timedelta = timedelta(0)
) -> BroadcastInput:
    broadcast, snapshot = _found(definitions, name)
    return BroadcastInput(
        name=name,
        snapshot=snapshot,
        segment=definitions.segments[broadcast.segment],
        rfm_table=definitions.rfm,
        members_at=now,
        open_until=max(broadcast.schedule.latest + LATE_MARGIN, now),
        clock_offset=clock_offset,
    )


async def start(
    client: Client,
    definitions: Definitions,
    name: str,
    task_queue: str,
    *,
    now: datetime | None = None,
    clock_offset: timedelta = timedelta(0),
) -> str:
    """Start the broadcast (its members as of `now`, the wall clock but in simulations); its
    workflow id. A broadcast runs once: BroadcastError if it ran."""
    input = broadcast_input(definitions, name, now or datetime.now(UTC), clock_offset)
    try:
        handle = await client.start_workflow(
            BroadcastWorkflow.run,
            input,
            id=broadcast_workflow_id(name),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={"broadcast": name, "segment": input.segment.name},
        )
    except WorkflowAlreadyStartedError:
        raise BroadcastError(f"broadcast {name!r} has already been started (a broadcast runs once)") from None
    return handle.id


async def cancel(client: Client, definitions: Definitions, name: str) -> None:
    """Stop starting instances and cancel those still waiting."""
    _found(definitions, name)
    handle = client.get_workflow_handle(broadcast_workflow_id(name))
    try:
        described = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise BroadcastError(f"broadcast {name!r} has not been started") from None
        raise
    if described.status != WorkflowExecutionStatus.RUNNING:
        raise BroadcastError(f"broadcast {name!r} is no longer running ({described.status.name.lower()})")
    await handle.signal(BroadcastWorkflow.cancel)


async def status(client: Client, store: Store, definitions: Definitions, name: str) -> BroadcastStatus:
    broadcast, snapshot = _found(definitions, name)
    handle = client.get_workflow_handle(broadcast_workflow_id(name), result_type=BroadcastProgress)
    progress: BroadcastProgress | None
    try:
        described = await handle.describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            progress = await handle.query(BroadcastWorkflow.progress)
        else:
            progress = await handle.result()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        progress = None
    journey = snapshot.definition.name
    waiting = await count_instances(client, f"JourneyName = '{journey}' AND ExecutionStatus = 'Running'")
    outcomes = await asyncio.to_thread(_outcomes, store, journey)
    return BroadcastStatus(
        name=name,
        title=broadcast.title,
        segment=broadcast.segment,
        state=progress.state if progress else "not started",
        members=progress.total if progress else None,
        started=progress.started + progress.already if progress else 0,
        waiting=waiting,
        outcomes=outcomes,
        workflow_id=broadcast_workflow_id(name),
    )


def _outcomes(store: Store, journey: str) -> dict[str, int]:
    with store.transaction() as session:
        return queries.message_outcomes(session, journey)


class DryRun(BaseModel):
    """What a broadcast would do if started now, message by message, sending nothing."""

    name: str
    members: int
    held_out: int = Field(description="Members the holdout keeps out (the same ones a run would).")
    outcomes: dict[str, int] = Field(
        description="Per member the contact policy's answer at their send time: send:sms, send:email, "
        "deferred:sms (quiet hours), skip:unsubscribed, ..."
    )
    first_send: datetime | None
    last_send: datetime | None


def dry_run(store: Store, definitions: Definitions, name: str, now: datetime, *, default_region: str) -> DryRun:
    """Page through the segment as a start would, and ask the contact policy, for each member
    not held out, what it would do at their send time (their local time, or the moment; now if
    that has passed), reading national phone numbers in `default_region` as the sends would.
    Reads only."""
    broadcast, snapshot = _found(definitions, name)
    segment = definitions.segments[broadcast.segment]
    journey = snapshot.definition.name
    outcomes: dict[str, int] = {}
    members = held_out = 0
    times: list[datetime] = []
    policy = definitions.policy.for_send(broadcast.send.policy)  # the same for every member
    after = None
    while True:  # a page at a time, each in one transaction, as a start would
        with store.transaction() as session:
            page = segments.members(session, segment, now, definitions.rfm, after=after, limit=PAGE)
            ids = [m.customer_id for m in page if split_draw(journey, m.customer_id) >= broadcast.holdout]
            members, held_out = members + len(page), held_out + len(page) - len(ids)
            for customer in queries.get_customers(session, ids).values():
                key, when = _would(broadcast, snapshot, customer, session, now, default_region, policy)
                outcomes[key] = outcomes.get(key, 0) + 1
                times.append(when)
        if len(page) < PAGE:
            break
        after = page[-1].customer_id
    return DryRun(
        name=name,
        members=members,
        held_out=held_out,
        outcomes=outcomes,
        first_send=min(times) if times else None,
        last_send=max(times) if times else None,
    )


def _would(
    broadcast: Broadcast,
    snapshot: JourneySnapshot,
    customer: Customer | None,
    session,
    now: datetime,
    default_region: str,
    policy: SendPolicy,
) -> tuple[str, datetime]:
    """What the contact policy would do with the broadcast's message to `customer`, at their
    send time: (`send:sms`, `defer:sms`, `skip:unsubscribed`..., the time)."""
    schedule = broadcast.schedule
    if schedule.at is not None:
        when = schedule.at
    else:
        when = schedule.local_time.replace(tzinfo=ZoneInfo(customer.timezone if customer else DEFAULT_TIMEZONE))
    when = max(when.astimezone(UTC), now)
    who = customer.customer_id if customer else ""
    decision = decide(
        customer,
        channel=broadcast.send.channel,
        fallback=broadcast.send.fallback,
        category=broadcast.send.category or broadcast.category,
        at=when,
        deadline=None,
        lookups=StoreLookups(session, who),
        default_region=default_region,
        resource=snapshot.resources.get(broadcast.send.resource) if broadcast.send.resource else None,
        policy=policy,
    )
    # A skip says why (a resource limit or the frequency cap skips on a chosen channel); a send or a
    # deferral says on which channel.
    return f"{decision.action}:{decision.reason if decision.action == 'skip' else decision.channel}", when
