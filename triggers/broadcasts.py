"""Starting, cancelling and following broadcasts (definitions/broadcasts/): used by the API
(`/broadcasts`) and `journeys broadcast`. The running is the Broadcast workflow's
(workflows.broadcast); progress joins its own count of started instances with the ledger's
sends and skips and the instances still waiting.

A recurring broadcast starts as its RecurringBroadcast workflow, which starts a run at each of
its dates; a run is named `{name}@{date}` and is followed, cancelled (and, by hand, started) by
that name as a one-off broadcast is."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowQueryFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    CancelledError,
    FailureError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as WorkflowTimedOut
from temporalio.service import RPCError, RPCStatusCode

from activities.broadcast import broadcast_input as input_of
from activities.broadcast import entry_event, recurring_run_input, run_definition
from core.contact_policy import SendPolicy
from core.records import DEFAULT_TIMEZONE, Customer
from core.rfm import Purchase, RfmTable, customer_context
from definitions.broadcasts import Broadcast, journey_run, not_again, parse_run, run_name
from definitions.expressions import ExpressionError, build_context, evaluate_time, zone
from definitions.loader import Definitions
from definitions.schema import JourneySnapshot, split_draw
from instances.contract import (
    BroadcastInput,
    BroadcastProgress,
    RecurringInput,
    RecurringProgress,
    broadcast_workflow_id,
)
from rules.policy import decide
from store import queries, segments
from store.db import Store
from store.lookups import StoreLookups
from views.history import count_instances
from workflows.broadcast import BroadcastWorkflow, RecurringBroadcastWorkflow

#: Members a dry run reads at a time (a start pages the same way).
PAGE = 500


class BroadcastError(Exception):
    """A broadcast that does not exist, already ran, or is not running; the message says which."""


class UnknownBroadcast(BroadcastError):
    """No such broadcast, or no such run of one (the API's 404)."""


class BroadcastStatus(BaseModel):
    name: str
    title: str | None
    segment: str
    schedule: str = Field(description="When it runs: a time, or `every day at 10:00 (each customer's zone)`.")
    state: str = Field(
        description="not started, counting, starting, started, done, cancelling, cancelled; a recurring "
        "broadcast: not started, waiting (for its next run), done (past its end), cancelled; and for a workflow "
        "that ended without its result: failed, terminated, timed out (see `reason`); running: its workflow "
        "runs but has not answered yet"
    )
    reason: str | None = Field(
        None,
        description="Why a failed, terminated or timed-out workflow ended: its failure, or the termination's reason.",
    )
    members: int | None = Field(description="Members of the segment when it started.")
    started: int = Field(description="Instances started (one per member).")
    not_again: int = Field(
        0, description="A recurring run's members not started: an earlier run reached them within once_per."
    )
    waiting: int = Field(
        description="Instances still waiting for their time; batched: members whose send is still ahead (their "
        "zone's moment has not come, or a deferral holds them)."
    )
    path: str = Field("instances", description="batched (pages of members) or instances (one per member).")
    deferred: int = Field(0, description="Batched: members a deferral holds (quiet hours, a send window).")
    held_out: int = Field(0, description="Batched: members in the control group (holdout).")
    outcomes: dict[str, int] = Field(description="Ledger rows by status (and reason): sent, skipped:..., failed:...")
    workflow_id: str
    next_run: str | None = Field(None, description="A recurring broadcast's next run, e.g. card_expiring@2026-12-03.")
    next_at: datetime | None = Field(None, description="When that run starts (its first send anywhere).")
    runs: list[str] = Field(default_factory=list, description="A recurring broadcast's latest runs started.")
    missed: list[str] = Field(default_factory=list, description="Runs not started: the workflow woke past their time.")

    @property
    def shown_state(self) -> str:
        """The state, with the reason a workflow ended without its result: `failed (...)`."""
        return f"{self.state} ({self.reason})" if self.reason else self.state


@dataclass(frozen=True)
class Found:
    """A broadcast, a recurring one, or a recurring one's run (`base` and `day` set), with the
    journey snapshot its members run (for a recurring one itself, a template of its runs')."""

    name: str
    broadcast: Broadcast
    snapshot: JourneySnapshot
    base: Broadcast | None = None
    day: date | None = None

    @property
    def recurring(self) -> bool:
        return self.base is None and self.broadcast.schedule.recurring


def _found(definitions: Definitions, name: str) -> Found:
    run = parse_run(name)
    base_name = run[0] if run else name
    if base_name not in definitions.broadcasts:
        known = ", ".join(sorted(definitions.broadcasts)) or "none"
        raise UnknownBroadcast(f"no broadcast {base_name!r}; broadcasts: {known}")
    broadcast, snapshot = definitions.broadcasts[base_name]
    if run is None:
        return Found(name, broadcast, snapshot)
    day = run[1]
    if not broadcast.schedule.recurring:
        raise UnknownBroadcast(f"broadcast {base_name!r} is not recurring: it has no run {name!r}")
    if not broadcast.schedule.runs_on(day):
        raise UnknownBroadcast(f"broadcast {base_name!r} has no run on {day} ({broadcast.schedule.describe()})")
    one_off, run_snapshot = run_definition(broadcast, snapshot, day)
    return Found(name, one_off, run_snapshot, base=broadcast, day=day)


def broadcast_input(
    definitions: Definitions, name: str, now: datetime, clock_offset: timedelta = timedelta(0)
) -> BroadcastInput:
    """The Broadcast workflow's input for a one-off broadcast or a run, its members as of `now`."""
    found = _found(definitions, name)
    segment = definitions.segments[found.broadcast.segment]
    if found.base is not None and found.day is not None:
        return recurring_run_input(
            found.base, definitions.broadcasts[found.base.name][1], segment, definitions.rfm, found.day, now,
            clock_offset,
        )  # fmt: skip
    return input_of(name, found.broadcast, found.snapshot, segment, definitions.rfm, now, clock_offset)


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
    workflow id. A broadcast or a run runs once: BroadcastError if it ran. A recurring broadcast
    starts its schedule: its first run is the first whose time comes after `now`."""
    now = now or datetime.now(UTC)
    found = _found(definitions, name)
    if found.recurring:
        return await _start_recurring(client, definitions, found, task_queue, now, clock_offset)
    input = broadcast_input(definitions, name, now, clock_offset)
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


async def _start_recurring(
    client: Client, definitions: Definitions, found: Found, task_queue: str, now: datetime, offset: timedelta
) -> str:
    """Start the schedule. It may start again once stopped (cancelled, or to take an edited file):
    its runs are by date, so a run that started before is not started again."""
    try:
        handle = await client.start_workflow(
            RecurringBroadcastWorkflow.run,
            RecurringInput(
                name=found.name,
                broadcast=found.broadcast,
                snapshot=found.snapshot,
                segment=definitions.segments[found.broadcast.segment],
                rfm_table=definitions.rfm,
                since=now,
                clock_offset=offset,
            ),
            id=broadcast_workflow_id(found.name),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={"broadcast": found.name, "segment": found.broadcast.segment},
        )
    except WorkflowAlreadyStartedError:
        raise BroadcastError(
            f"recurring broadcast {found.name!r} is already running (cancel it first to start it again)"
        ) from None
    return handle.id


async def cancel(client: Client, definitions: Definitions, name: str) -> None:
    """Stop starting instances and cancel those still waiting; of a recurring broadcast, stop
    its schedule (a run already started goes on: cancel it by its own name)."""
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
    await handle.signal("cancel")


@dataclass(frozen=True)
class _Seen:
    """What the workflow shows: its progress (None before it started, or when it ended without
    a result), or how it ended without one (`ended`: failed, terminated, ...) and why."""

    progress: BroadcastProgress | RecurringProgress | None = None
    ended: str | None = None
    reason: str | None = None
    running: bool = False

    def state(self, progress_state: str | None) -> str:
        return self.ended or progress_state or ("running" if self.running else "not started")


async def _progress(client: Client, name: str, kind: type) -> _Seen:
    """The workflow's progress: its query while it runs, its result once it ended; how it ended
    when it failed, was terminated or timed out (no result to show); nothing before it started.

    A workflow can end between the description and the query, or not have answered its first
    task yet: then it is described again, and one still running without an answer shows
    `running`."""
    handle = client.get_workflow_handle(broadcast_workflow_id(name), result_type=kind)
    try:
        for _ in range(2):
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                return _Seen(await handle.result())
            try:
                return _Seen(await handle.query("progress", result_type=kind))
            except WorkflowQueryFailedError:
                continue
        return _Seen(running=True)
    except WorkflowFailureError as err:
        return _Seen(ended=_ended(err.cause), reason=_why(err.cause))
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return _Seen()


def _ended(cause: BaseException | None) -> str:
    if isinstance(cause, TerminatedError):
        return "terminated"
    if isinstance(cause, CancelledError):
        return "cancelled"
    if isinstance(cause, WorkflowTimedOut):
        return "timed out"
    return "failed"


def _why(cause: BaseException | None) -> str:
    """The failure's messages, outermost first (`Activity task failed: the store is down`)."""
    found: list[str] = []
    while cause is not None and len(found) < 5:
        message = cause.message if isinstance(cause, FailureError) else str(cause)
        if message and message not in found:
            found.append(message)
        cause = cause.__cause__
    return ": ".join(found) or "no reason given"


async def status(client: Client, store: Store, definitions: Definitions, name: str) -> BroadcastStatus:
    found = _found(definitions, name)
    broadcast = found.base or found.broadcast
    shown = {
        "name": name,
        "title": broadcast.title,
        "segment": broadcast.segment,
        "schedule": found.broadcast.schedule.describe(),
        "workflow_id": broadcast_workflow_id(name),
    }
    if found.recurring:
        seen = await _progress(client, name, RecurringProgress)
        recurring = seen.progress
        assert recurring is None or isinstance(recurring, RecurringProgress)
        return BroadcastStatus(
            **shown,
            state=seen.state(recurring.state if recurring else None),
            reason=seen.reason,
            members=None,
            started=0,
            waiting=0,
            outcomes={},
            next_run=recurring.next_run if recurring else None,
            next_at=recurring.next_at if recurring else None,
            runs=recurring.runs if recurring else [],
            missed=recurring.missed if recurring else [],
        )
    seen = await _progress(client, name, BroadcastProgress)
    progress = seen.progress
    assert progress is None or isinstance(progress, BroadcastProgress)
    journey = found.snapshot.definition.name
    outcomes = await asyncio.to_thread(_outcomes, store, journey)
    if progress is not None and progress.counts is not None:  # batched: the workflow counts its members
        counts = progress.counts
        ahead = 0 if progress.state in ("done", "cancelled") else (progress.total or 0)
        return BroadcastStatus(
            **shown,
            state=seen.state(progress.state),
            reason=seen.reason,
            members=progress.total,
            started=counts.decided + counts.deferred,
            not_again=counts.not_again,
            waiting=max(ahead - counts.decided - counts.not_again, 0),
            outcomes=outcomes,
            path="batched",
            deferred=counts.deferred,
            held_out=counts.held_out,
            next_at=progress.next_at,
        )
    waiting = await count_instances(client, f"JourneyName = '{journey}' AND ExecutionStatus = 'Running'")
    return BroadcastStatus(
        **shown,
        state=seen.state(progress.state if progress else None),
        reason=seen.reason,
        members=progress.total if progress else None,
        started=progress.started + progress.already if progress else 0,
        not_again=progress.not_again if progress else 0,
        waiting=waiting,
        outcomes=outcomes,
    )


async def runs(client: Client, store: Store, definitions: Definitions, name: str) -> list[BroadcastStatus]:
    """A recurring broadcast's runs, by date, each with its progress: those whose instances the
    store has, and the latest its schedule started (an empty one too)."""
    found = _found(definitions, name)
    if not found.recurring:
        raise BroadcastError(f"broadcast {name!r} is not recurring: it has no runs (journeys broadcast status {name})")
    schedule = (await _progress(client, name, RecurringProgress)).progress
    assert schedule is None or isinstance(schedule, RecurringProgress)
    days = {run[1] for run in map(parse_run, schedule.runs if schedule else []) if run}
    for journey in await asyncio.to_thread(_run_journeys, store, name):
        if (run := journey_run(journey, [found.broadcast])) is not None:
            days.add(run[1])
    return [await status(client, store, definitions, run_name(name, day)) for day in sorted(days)]


def _run_journeys(store: Store, name: str) -> list[str]:
    with store.transaction() as session:
        return queries.run_journeys(session, f"{name}_")


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
    Reads only. A recurring broadcast's is its next run's (the first to start after `now`); a
    run's leaves out the members an earlier run reached within its once_per, as the run would."""
    found = _found(definitions, name)
    if found.recurring:
        found = _found(definitions, _next_run(found.broadcast, now))
    broadcast, snapshot = found.broadcast, found.snapshot
    reach = not_again(found.base, found.day) if found.base and found.day else []
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
            reached = queries.reached_by_runs(session, [m.customer_id for m in page], reach)
            if reached:
                outcomes["not_again:once_per"] = outcomes.get("not_again:once_per", 0) + len(reached)
            fresh = [m.customer_id for m in page if m.customer_id not in reached]
            ids = [customer_id for customer_id in fresh if split_draw(journey, customer_id) >= broadcast.holdout]
            members, held_out = members + len(page), held_out + len(fresh) - len(ids)
            # The send step's deadline is the customer's own (an expression of their context).
            purchases = queries.purchases_of_customers(session, ids, now) if broadcast.send.deadline else {}
            for customer_id, customer in queries.get_customers(session, ids).items():
                member = _Member(customer_id, customer, purchases.get(customer_id, []), definitions.rfm)
                key, when = _would(broadcast, snapshot, member, session, now, default_region, policy)
                outcomes[key] = outcomes.get(key, 0) + 1
                times.append(when)
        if len(page) < PAGE:
            break
        after = page[-1].customer_id
    return DryRun(
        name=found.name,
        members=members,
        held_out=held_out,
        outcomes=outcomes,
        first_send=min(times) if times else None,
        last_send=max(times) if times else None,
    )


def _next_run(broadcast: Broadcast, now: datetime) -> str:
    """The name of a recurring broadcast's first run to start after `now`."""
    ahead = broadcast.schedule.runs_between(now, now + timedelta(days=400))
    if not ahead:
        raise BroadcastError(f"broadcast {broadcast.name!r} has no run ahead ({broadcast.schedule.describe()})")
    return run_name(broadcast.name, ahead[0])


@dataclass(frozen=True)
class _Member:
    """A member as their instance would start: the record (None: none in the store) and the
    purchases its customer context is read from."""

    customer_id: str
    customer: Customer | None
    purchases: list[Purchase]
    rfm_table: RfmTable


def _deadline(
    broadcast: Broadcast, journey: str, member: _Member, started: datetime, when: datetime
) -> datetime | None:
    """The send step's `deadline` as the member's instance evaluates it at its send step
    (workflows/journey.py `_send`): at `when`, in the customer's zone, with the entry event of a
    broadcast started at `started`, no order, and the customer as of then. ExpressionError as the
    instance would meet it."""
    if not broadcast.send.deadline:
        return None
    customer = member.customer
    tz = zone(customer.timezone if customer else DEFAULT_TIMEZONE)
    entry = entry_event(journey, member.customer_id, started).model_dump(mode="json")
    context = build_context(
        tz=tz,
        now=when,
        event=entry,
        entry=entry,
        order={},
        customer=customer_context(customer, member.purchases, member.rfm_table, when),
        vars={},
    )
    return evaluate_time(broadcast.send.deadline, context, tz)


def _would(
    broadcast: Broadcast,
    snapshot: JourneySnapshot,
    member: _Member,
    session,
    now: datetime,
    default_region: str,
    policy: SendPolicy,
) -> tuple[str, datetime]:
    """What the contact policy would do with the broadcast's message to the member, at their
    send time, with the send step's deadline (a full cap waits for a slot before it): (`send:sms`,
    `defer:sms`, `skip:unsubscribed`, `exit:expression_error`..., the time)."""
    customer = member.customer
    schedule = broadcast.schedule
    if schedule.at is not None:
        when = schedule.at
    else:
        when = schedule.local_time.replace(tzinfo=ZoneInfo(customer.timezone if customer else DEFAULT_TIMEZONE))
    when = max(when.astimezone(UTC), now)
    try:
        deadline = _deadline(broadcast, snapshot.definition.name, member, now, when)
    except ExpressionError:  # the instance would end there, its message unsent
        return "exit:expression_error", when
    who = customer.customer_id if customer else ""
    decision = decide(
        customer,
        channel=broadcast.send.channel,
        fallback=broadcast.send.fallback,
        category=broadcast.send.category or broadcast.category,
        at=when,
        deadline=deadline,
        lookups=StoreLookups(session, who),
        default_region=default_region,
        resource=snapshot.resources.get(broadcast.send.resource) if broadcast.send.resource else None,
        policy=policy,
    )
    # A skip says why (a resource limit or the frequency cap skips on a chosen channel); a send or a
    # deferral says on which channel.
    return f"{decision.action}:{decision.reason if decision.action == 'skip' else decision.channel}", when
