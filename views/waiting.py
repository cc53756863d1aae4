"""Where a journey's running instances wait now: per wait step (by its path in the definition,
definitions.schema `walk_steps`: `steps[2].wait_for.on_event[0]`), how many instances are there.
The console's diagram shows the count beside each wait.

Neither the store nor Temporal's visibility holds an instance's current step (the `instances`
table records starts and ends; instances of the current revision upsert no `JourneyStep`
search attribute), so this asks each running instance its `status` query, as the history does,
all at once and bounded (`LIMIT` instances, `views.history.STATUS_SECONDS` each,
`DEADLINE_SECONDS` in all: past it the counts are partial and `note` says so). The status
names a wait by its kind (`wait`, `wait_until`, `wait_for:EVENT`) and a send held by the policy
as `REASON:STEP_ID`; two waits of one kind are told apart by the sends the instance made
(`sends`): it waits at the one whose preceding sends it made and whose following sends it has
not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError

from definitions.schema import (
    IfStep,
    Journey,
    SendStep,
    SplitStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
)
from instances.contract import STATUS_QUERY, JourneyStatus
from views.history import STATUS_SECONDS, executions

#: The most running instances asked (a larger journey's counts are of its first LIMIT, and say so).
LIMIT = 2000
#: Status queries in flight at once.
CONCURRENCY = 32
#: How long the whole count may take: a journey with many instances, or no worker answering, gets
#: partial counts (and a note) rather than a page that never loads.
DEADLINE_SECONDS = 6.0


class WaitingCounts(BaseModel):
    journey: str
    running: int = Field(description="Running instances listed (at most LIMIT).")
    answered: int = Field(description="Of those, the ones whose status query answered in time.")
    steps: dict[str, int] = Field(
        description="Per step path (`steps[1].if.then[0]`): instances waiting there now (a wait, or a send the "
        "contact policy holds)."
    )
    states: dict[str, int] = Field(description="Per raw status step (`wait_for:order.paid`, `quiet_hours:remind`).")
    note: str | None = Field(None, description="Why some counts may be missing.")


@dataclass
class _Place:
    path: str
    key: str
    before: set[str] = field(default_factory=set)
    after: set[str] = field(default_factory=set)


def _sends(steps: list) -> set[str]:
    """Every send step id in `steps`, nested ones included."""
    found: set[str] = set()
    for step in steps:
        if isinstance(step, SendStep):
            found.add(step.send.step_id)
        for inner in _children(step):
            found |= _sends(inner)
    return found


def _children(step) -> list[list]:
    if isinstance(step, WaitForStep):
        return [step.wait_for.on_event, step.wait_for.on_timeout]
    if isinstance(step, IfStep):
        return [step.if_.then, step.if_.else_]
    if isinstance(step, SplitStep):
        return [b.steps for b in step.split.branches]
    return []


def places(steps: list, path: str = "steps", before: frozenset = frozenset(), after: frozenset = frozenset()):
    """Every place an instance can wait: waits by their kind, sends by `send:ID`-style keys."""
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        earlier = before | {s.send.step_id for s in steps[:i] if isinstance(s, SendStep)}
        later = after | _sends(steps[i + 1 :])
        key = None
        if isinstance(step, WaitStep):
            key = "wait"
        elif isinstance(step, WaitUntilStep):
            key = "wait_until"
        elif isinstance(step, WaitForStep):
            key = f"wait_for:{step.wait_for.event}"
        elif isinstance(step, SendStep):
            key = f"send:{step.send.step_id}"
        if key:
            inside = set().union(*(_sends(arm) for arm in _children(step)))
            yield _Place(here, key, set(earlier), set(later) | inside)
        if isinstance(step, WaitForStep):
            yield from places(step.wait_for.on_event, f"{here}.wait_for.on_event", earlier, later)
            yield from places(step.wait_for.on_timeout, f"{here}.wait_for.on_timeout", earlier, later)
        elif isinstance(step, IfStep):
            yield from places(step.if_.then, f"{here}.if.then", earlier, later)
            yield from places(step.if_.else_, f"{here}.if.else", earlier, later)
        elif isinstance(step, SplitStep):
            for b, branch in enumerate(step.split.branches):
                yield from places(branch.steps, f"{here}.split.branches[{b}].steps", earlier, later)


def place_of(journey: Journey, status: str, sends: set[str]) -> str | None:
    """The path of the step an instance in `status` waits at, given the sends it made."""
    kind, _, rest = status.partition(":")
    key = status if kind in ("wait", "wait_until", "wait_for") else f"send:{rest}" if rest else None
    if key is None:
        return None
    candidates = [p for p in places(journey.steps) if p.key == key]
    fitting = [p for p in candidates if p.before <= sends and not (p.after & sends)] or candidates
    return max(fitting, key=lambda p: len(p.before)).path if fitting else None


async def waiting_counts(client: Client, journey: Journey, version: str) -> WaitingCounts:
    """Ask every running instance of `journey` at `version` (at most LIMIT) where it is: a step's
    path means something only in the version it was drawn from, so instances still running an
    older version are not placed on this one's steps (GET /journeys counts them)."""
    name = journey.name
    listed = []
    running = f"JourneyName = '{name}' AND JourneyVersion = '{version}' AND ExecutionStatus = 'Running'"
    async for execution in executions(client, running):
        listed.append(execution)
        if len(listed) >= LIMIT:
            break
    gate = asyncio.Semaphore(CONCURRENCY)

    async def ask(execution) -> JourneyStatus | None:
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async with gate:
            try:
                return await asyncio.wait_for(
                    handle.query(
                        STATUS_QUERY, result_type=JourneyStatus, rpc_timeout=timedelta(seconds=STATUS_SECONDS)
                    ),
                    timeout=STATUS_SECONDS + 0.5,
                )
            except (TimeoutError, RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
                return None

    tasks = [asyncio.create_task(ask(e)) for e in listed]
    late = 0
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=DEADLINE_SECONDS)
        for task in pending:
            task.cancel()
        late = len(pending)
    answers = [t.result() for t in tasks if t.done() and not t.cancelled()]
    steps: dict[str, int] = {}
    states: dict[str, int] = {}
    answered = 0
    for status in answers:
        if status is None:
            continue
        answered += 1
        states[status.step] = states.get(status.step, 0) + 1
        path = place_of(journey, status.step, set(status.sends))
        if path is not None:
            steps[path] = steps.get(path, 0) + 1
    notes = []
    if len(listed) >= LIMIT:
        notes.append(f"only the first {LIMIT} running instances were asked")
    if late:
        notes.append(f"{late} were not asked within {DEADLINE_SECONDS:g} s")
    if answered + late < len(listed):
        notes.append(
            f"{len(listed) - answered - late} did not answer within {STATUS_SECONDS:g} s (is a worker polling?)"
        )
    return WaitingCounts(
        journey=name,
        running=len(listed),
        answered=answered,
        steps=steps,
        states=states,
        note="; ".join(notes) or None,
    )
