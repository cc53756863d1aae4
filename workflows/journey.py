"""The interpreter: one workflow that runs any journey definition.

An instance runs the definition snapshot it was started with, so editing YAML never changes a
running instance nor its replay. Events arrive as the `event` signal and are deduplicated by
`event_id`; an exit event ends the instance at once, also during a wait or a quiet-hours deferral.

Time: the journey's clock is `workflow.now()` less `clock_offset` (zero except in simulations,
which replay past events on a test server whose clock starts today). Waits are measured from the
journey's own cursor (the entry event's time, then each wait's end), so a late-dispatched event
keeps its schedule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.journey import JourneyActivities
    from activities.payloads import ExitRecord, FailureRecord, SendOutcome, SendRequest
    from core.orders import MAX_ORDER_EVENTS, order_context
    from core.records import DEFAULT_TIMEZONE, Customer, Event
    from core.rfm import Purchase, customer_context, fold
    from core.vocabulary import CUSTOMER_ID, JOURNEY_NAME, JOURNEY_STEP, ORDER_ID, Reason
    from definitions.expressions import (
        ExpressionError,
        build_context,
        evaluate,
        evaluate_time,
        message_context,
        zone,
    )
    from definitions.schema import (
        HOLDOUT,
        ExitStep,
        IfStep,
        RepeatStep,
        SendStep,
        SplitStep,
        Step,
        WaitForStep,
        WaitStep,
        WaitUntilStep,
        parse_duration,
        split_draw,
    )
    from instances.contract import (
        CHANNEL_QUEUES_PATCH,
        EVENT_SIGNAL,
        JOURNEY_WORKFLOW,
        MAX_REMEMBERED_EVENT_IDS,
        REVISION,
        STATUS_QUERY,
        JourneyInput,
        JourneyResult,
        JourneyStatus,
        channel_queue,
    )

ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


async def decide_and_deliver(request: SendRequest, task_queue: str) -> SendOutcome:
    """One send decided under the policy (`send_message`) and, when it is left `ready` for a
    rate-limited channel, delivered from that channel's own queue: how every workflow sends (a
    journey's send step, a reply's answer)."""
    outcome: SendOutcome = await workflow.execute_activity_method(
        JourneyActivities.decide_message,
        request,
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=ACTIVITY_RETRY,
    )
    if outcome.status == "ready":
        outcome = await workflow.execute_activity_method(
            JourneyActivities.deliver_message,
            outcome.message_id,
            task_queue=channel_queue(task_queue, outcome.channel),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )
    return outcome


def exit_reason(outcome: str) -> str:
    """A run's outcome as the effect report groups it: completed, exit:EVENT, holdout,
    entry_condition, time_passed, expression_error or exit_step."""
    if outcome.startswith("exit on "):
        return "exit:" + outcome.removeprefix("exit on ")
    if outcome.startswith("expression_error"):
        return "expression_error"
    known = {"completed": "completed", HOLDOUT: HOLDOUT, "entry condition false": "entry_condition"}
    return known.get(outcome, "time_passed" if outcome.startswith("wait_until") else "exit_step")


class _Exited(Exception):
    def __init__(self, reason: str):
        self.reason = reason


class _Restart(Exception):
    """The journey starts over (re-entry 'restart', or a `repeat` step)."""


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    @workflow.init
    def __init__(self, input: JourneyInput) -> None:
        self.input = input
        self.definition = input.snapshot.definition
        self.seen: list[str] = [*input.seen_event_ids, input.entry_event.event_id]
        self.exit_event: Event | None = None
        self.restart_event: Event | None = None
        self.received: list[Event] = []
        entry = input.entry_event
        # The order this run is about: the entry event's (none for a customer event). Revision 2
        # sees the whole order; older runs replay with the context they were recorded with.
        self.whole_order = input.revision >= 2
        self.order_events: list[Event] = [*input.order_history, entry] if entry.order_id else []
        self.order: dict[str, Any] = (
            order_context(entry.order_id, self.order_events, input.products)
            if self.whole_order
            else {**entry.data, "order_id": entry.order_id}
        )
        self.step = "start"
        self.wake: datetime | None = None
        self.sends: dict[str, str] = {}
        self.customer: Customer | None = None
        # The customer's orders for customer.rfm, read at each evaluation's moment (R decays).
        self.purchases: dict[str, Purchase] = {p.order_id: p.model_copy() for p in input.purchases}
        self.tz = zone(DEFAULT_TIMEZONE)  # the customer's, once loaded
        self.vars: dict[str, Any] = {}  # the definition's vars, once evaluated
        self.where = "entry"  # what is being evaluated, for the record when an expression fails
        self.template: str | None = None  # ... and the template of the send step it belongs to
        # A send of this run waited for a cap's slot: its end closes any wait still open.
        self.waited_for_cap = False
        # Revision 4: inside a wait_for's on_event branch, `event` is the event that ended the wait.
        self.awaited: Event | None = None
        for event in input.prior_events:
            self.on_event(event)

    # ---------------------------------------------------------------- signals and queries

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, event: Event) -> None:
        if event.event_id in self.seen:
            return
        self.seen.append(event.event_id)
        definition = self.definition
        order_id = self.input.entry_event.order_id
        if event.customer_id == self.input.entry_event.customer_id:
            fold(self.purchases, event.type, event.order_id, event.occurred_at, event.data)
        if self.whole_order and order_id and event.order_id == order_id:
            self.order_events.append(event)
            self.order = order_context(order_id, self.order_events, self.input.products)
        if event.type in definition.exit_on:
            self.exit_event = self.exit_event or event
        elif event.type in definition.entry.events:
            if definition.entry.reentry == "restart":
                self.restart_event = event
        else:
            if not self.whole_order and definition.entry.key == "order" and event.order_id == self.input.key:
                self.order.update(event.data)
            self.received.append(event)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> JourneyStatus:
        entry = self.input.entry_event
        return JourneyStatus(
            journey=self.definition.name,
            version=self.input.snapshot.version,
            key=self.input.key,
            customer_id=entry.customer_id,
            order_id=entry.order_id,
            step=self.step,
            next_wake_up=self.wake,
            sends=dict(self.sends),
        )

    # ---------------------------------------------------------------- the run

    @workflow.run
    async def run(self, input: JourneyInput) -> JourneyResult:
        # The search attributes (journey, customer, order, version) come with the start: the router
        # sets them, and a continued run inherits them. No upserts: each is an event in the history
        # and a billed action on Temporal Cloud. The current step is in the `status` query.
        entry = input.entry_event
        if input.revision < 1:  # an instance started before that: replay what it did
            pairs = [JOURNEY_NAME.value_set(self.definition.name), CUSTOMER_ID.value_set(entry.customer_id)]
            if entry.order_id:
                pairs.append(ORDER_ID.value_set(entry.order_id))
            workflow.upsert_search_attributes(pairs)
        self.started = input.started_at or entry.occurred_at
        self.cursor = self.started
        try:
            self._check()
            if input.customer_given:
                self.customer = input.customer
            else:  # a repeat: the record may have changed since the router saw it
                self.customer = await workflow.execute_activity_method(
                    JourneyActivities.load_customer,
                    entry.customer_id,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=ACTIVITY_RETRY,
                )
            self.tz = zone(self.customer.timezone if self.customer else DEFAULT_TIMEZONE)
            condition = self.definition.entry.condition
            if condition and not self._evaluate(condition, "entry.condition"):
                raise _Exited("entry condition false")
            for name, source in self.definition.vars.items():
                self.vars[name] = self._evaluate(source, f"vars.{name}")
            await self._run_steps(self.definition.steps)
            outcome = "completed"
        except _Exited as done:
            outcome = done.reason
        except ExpressionError as err:
            outcome = await self._expression_failed(err)
        except _Restart:
            self._set_step("restarting")
            await self._record_exit("restarted")
            restart = self.restart_event
            workflow.continue_as_new(
                input.model_copy(
                    update={
                        "entry_event": restart or entry,
                        "prior_events": [],
                        "order_history": self._history_for(restart or entry),
                        "customer": None,
                        "customer_given": False,
                        "purchases": list(self.purchases.values()),
                        "started_at": None if restart else self.now(),
                        "seen_event_ids": self.seen[-MAX_REMEMBERED_EVENT_IDS:],
                        "revision": REVISION,  # a new history: the search attributes carry over
                    }
                )
            )
        self._set_step("done")
        await self._record_exit(exit_reason(outcome))
        return JourneyResult(outcome=outcome, sends=self.sends)

    async def _record_exit(self, reason: str) -> None:
        """How this run ended, on its instance row (revision 3 on: older histories replay without)."""
        if self.input.revision < 3:
            return
        entry, info = self.input.entry_event, workflow.info()
        await workflow.execute_local_activity_method(
            JourneyActivities.record_exit,
            ExitRecord(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                journey=self.definition.name,
                journey_version=self.input.snapshot.version,
                customer_id=entry.customer_id,
                order_id=entry.order_id,
                variant=self.definition.variant_of(self.input.key),
                entered_at=self.started,
                ended_at=self.now(),
                reason=reason,
                waited_for_cap=self.waited_for_cap,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )

    def _history_for(self, entry: Event) -> list[Event]:
        """What the next run knows of `entry`'s order: the events of it this run saw."""
        same = [e for e in self.order_events if e.order_id == entry.order_id and e.event_id != entry.event_id]
        return same[-MAX_ORDER_EVENTS:] if entry.order_id else []

    async def _run_steps(self, steps: list[Step], path: str = "steps") -> None:
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            self._check()
            match step:
                case WaitStep():
                    self._set_step("wait")
                    self.cursor = self.cursor + parse_duration(step.wait)
                    await self._sleep_until(self.cursor)
                case WaitUntilStep():
                    await self._wait_until(step, f"{here}.wait_until")
                case WaitForStep():
                    await self._wait_for(step, f"{here}.wait_for")
                case SendStep():
                    await self._send(step)
                case IfStep():
                    if self._evaluate(step.if_.condition, f"{here}.if.condition"):
                        await self._run_steps(step.if_.then, f"{here}.if.then")
                    else:
                        await self._run_steps(step.if_.else_, f"{here}.if.else")
                case SplitStep():
                    await self._split(step, f"{here}.split")
                case ExitStep():
                    raise _Exited(step.exit or "exit step")
                case RepeatStep():
                    raise _Restart()
                case _:  # a step kind this interpreter does not know: fail the task, never skip it
                    assert_never(step)
        self._check()

    async def _wait_until(self, step: WaitUntilStep, path: str) -> None:
        self._set_step("wait_until")
        spec = step.wait_until
        self._at(f"{path}.at")
        target = evaluate_time(spec.at, self._context(), self.tz)
        if spec.offset:
            target = target + parse_duration(spec.offset)
        if target <= self.started:
            raise _Exited("wait_until is not after the journey's start")
        self.cursor = max(self.cursor, target)
        await self._sleep_until(target)

    async def _wait_for(self, step: WaitForStep, path: str) -> None:
        """Wait for an event that occurred since this step began (in the journey's clock, so a
        late-dispatched or already-known event counts), or for the timeout from that moment."""
        spec = step.wait_for
        self._set_step(f"wait_for:{spec.event}")
        began = self.cursor
        deadline = began + parse_duration(spec.timeout)

        def arrived() -> Event | None:
            return next((e for e in self.received if e.type == spec.event and e.occurred_at >= began), None)

        await self._sleep_until(deadline, also=lambda: arrived() is not None)
        event = arrived()
        if event is not None and event.occurred_at <= deadline:
            self.cursor = max(began, event.occurred_at)
            outer, self.awaited = self.awaited, event
            try:
                await self._run_steps(spec.on_event, f"{path}.on_event")
            finally:
                self.awaited = outer
        else:
            self.cursor = deadline
            await self._run_steps(spec.on_timeout, f"{path}.on_timeout")

    async def _send(self, step: SendStep) -> None:
        spec = step.send
        self._set_step(f"send:{spec.step_id}")
        context = self._context()
        self._at(spec.step_id, spec.template)
        deadline = evaluate_time(spec.deadline, context, self.tz) if spec.deadline else None
        info = workflow.info()
        # Histories from before channel queues deliver inside send_message (decide_message); new runs deliver on
        # the channel's own (rate-limited) task queue.
        on_channel_queue = self.input.revision >= 1 or workflow.patched(CHANNEL_QUEUES_PATCH)
        category = spec.category or self.definition.category
        # Revision 4: the message is meant for the end of the waits before it (the cursor); sent
        # more than max_lateness after that (a back-dated order, a long outage), it is stale.
        lateness = {"planned_at": self.cursor, "max_lateness": spec.lateness(category)} if self.revision4 else {}
        # ... and an exit event already logged for this instance skips it, signalled yet or not:
        # for a once-per-order journey whatever its time (clocks of other systems skew), else
        # since this run began.
        entry = self.definition.entry
        exits = (
            {
                "exit_on": self.definition.exit_on,
                "exit_key": entry.key,
                "exit_since": None if entry.key == "order" and entry.reentry == "once" else self.started,
            }
            if self.revision4 and self.definition.exit_on
            else {}
        )
        policy = spec.policy_over(self.definition.policy)
        waiting = False  # its last deferral was a wait for a cap's slot: the activity looks its wait up
        while True:
            request = SendRequest(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                journey=self.definition.name,
                journey_version=self.input.snapshot.version,
                step=spec.step_id,
                customer_id=self.input.entry_event.customer_id,
                order_id=self.input.entry_event.order_id,
                category=category,
                channel=spec.channel,
                fallback=spec.fallback,
                template_name=spec.template,
                template=self.input.snapshot.templates[spec.template],
                # RFM and the lifecycle stage (revision 5) as of the send, the segments of the entry
                # event (revision 6); the activity adds the record and the loyalty facts as the
                # store has them then.
                context=message_context(
                    context,
                    customer={k: v for k, v in context["customer"].items() if k in ("rfm", "lifecycle", "segments")},
                    entry=self.revision4,
                ),
                at=self.now(),
                deadline=deadline,
                resource=self.input.snapshot.resources[spec.resource] if spec.resource else None,
                variant=self.definition.variant_of(self.input.key),
                policy=policy,
                deliver=not on_channel_queue,
                waiting=waiting,
                **lateness,
                **exits,
            )
            outcome = await decide_and_deliver(request, info.task_queue)
            if outcome.status != "deferred":
                break
            # Quiet hours (wait for the morning), a closed send window, a full cap (wait for a slot):
            # an exit event meanwhile ends the journey, unrecorded. The status names the reason
            # (revision 0 put the step in a search attribute, as `quiet_hours:` whatever held it).
            waiting = outcome.reason == Reason.FREQUENCY_CAP
            self.waited_for_cap = self.waited_for_cap or waiting
            held_by = outcome.reason if self.input.revision >= 1 and outcome.reason else "quiet_hours"
            self._set_step(f"{held_by}:{spec.step_id}")
            await self._sleep_until(outcome.defer_until)
            self.cursor = max(self.cursor, outcome.defer_until)
            if lateness:  # the policy moved it: it is planned for the morning now
                lateness["planned_at"] = self.cursor
            self._set_step(f"send:{spec.step_id}")
        self.sends[spec.step_id] = outcome.status + (f":{outcome.reason}" if outcome.reason else "")

    async def _split(self, step: SplitStep, path: str) -> None:
        spec = step.split
        self._set_step("split")
        chosen = spec.choose(split_draw(self.definition.name, self.input.key))  # the same group on re-entry
        if chosen is None:
            raise _Exited(HOLDOUT)
        if chosen < 0:
            return
        await self._run_steps(spec.branches[chosen].steps, f"{path}.branches[{chosen}].steps")

    # ---------------------------------------------------------------- helpers

    def now(self) -> datetime:
        """The journey's clock."""
        return workflow.now() - self.input.clock_offset

    def _interrupted(self) -> bool:
        return self.exit_event is not None or self.restart_event is not None

    def _check(self) -> None:
        if self.exit_event is not None:
            raise _Exited(f"exit on {self.exit_event.type}")
        if self.restart_event is not None:
            raise _Restart()

    async def _sleep_until(self, target: datetime, also: Callable[[], bool] = lambda: False) -> None:
        """Wait until `target` in the journey's clock, or until `also` holds; an exit or restart
        event ends the wait at once."""
        self.wake = target
        remaining = target - self.now()
        if remaining > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._interrupted() or also(), timeout=remaining)
        self.wake = None
        self._check()

    def _set_step(self, step: str) -> None:
        if step != self.step and self.input.revision < 1:
            workflow.upsert_search_attributes([JOURNEY_STEP.value_set(step)])
        self.step = step

    def _at(self, where: str, template: str | None = None) -> None:
        self.where, self.template = where, template

    def _evaluate(self, source: str, where: str) -> Any:
        self._at(where)
        return evaluate(source, self._context())

    async def _expression_failed(self, err: ExpressionError) -> str:
        """An expression failed on this instance's data: the run ends, and says so where operators
        look (a `failed` ledger row with reason expression_error, and an ERROR in the worker log)."""
        entry, info = self.input.entry_event, workflow.info()
        workflow.logger.error(
            "journey %s for %s %s stopped at %s: %s",
            self.definition.name,
            self.definition.entry.key,
            self.input.key,
            self.where,
            err,
        )
        await workflow.execute_activity_method(
            JourneyActivities.record_failure,
            FailureRecord(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                journey=self.definition.name,
                journey_version=self.input.snapshot.version,
                step=self.where[:60],
                customer_id=entry.customer_id,
                order_id=entry.order_id,
                category=self.definition.category,
                template=self.template,
                error=str(err),
                at=self.now(),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )
        return f"expression_error at {self.where}: {err}"

    @property
    def revision4(self) -> bool:
        return self.input.revision >= 4

    def _context(self) -> dict[str, Any]:
        entry = self.input.entry_event.model_dump(mode="json")
        awaited = self.awaited if self.revision4 else None
        return build_context(
            tz=self.tz,
            now=self.now(),
            event=awaited.model_dump(mode="json") if awaited else entry,
            entry=entry if self.revision4 else None,
            order=self.order,
            customer=self._customer_seen(),
            vars=self.vars,
        )

    def _customer_seen(self) -> dict[str, Any]:
        """The customer as expressions read them: the record, RFM and (revision 5) the stage as of
        now, and (revision 6) the loyalty facts and the segments as the starter read them at the
        entry event."""
        seen = customer_context(
            self.customer, self.purchases.values(), self.input.rfm_table, self.now(), lifecycle=self.input.revision >= 5
        )
        if seen and self.input.revision >= 6:
            if self.input.loyalty is not None:
                seen |= self.input.loyalty
            if self.input.segments is not None:
                seen["segments"] = self.input.segments
        return seen
