"""A broadcast (批量发送): one workflow pages through its segment (membership as of its start)
and starts, for each member, an instance of the broadcast's journey (definitions.broadcasts):
wait until the time, then the send step, through the same policy and ledger as every journey.

- Each instance's workflow id is `{broadcast}:{customer}` and may never be reused, so a customer
  gets at most one instance per broadcast, also when a page is dealt with twice (a worker lost
  mid-page, or a restart).
- Instances are started a page at a time by an activity (they are not children: their endings
  do not reach this history); after `pages_per_run` pages the workflow continues as new with its
  cursor, so its history stays bounded at any size. They wait for their own time on the
  server, not in a worker's memory.
- After the last page it stays open until the schedule's latest moment in any zone has passed,
  so it can still be followed and cancelled.
- `cancel` stops the paging and cancels every instance still waiting.
- A recurring broadcast's run leaves out the members an earlier run reached within its once_per
  (counted as `not_again`).

A recurring broadcast is one RecurringBroadcast workflow (`broadcast:{name}`): it sleeps on a
durable timer until its next run starts (definitions.broadcasts: the schedule's time on the date,
reached first at UTC+14 for each customer's zone), has an activity start that run as a Broadcast
workflow of its own (`broadcast:{name}@{date}`, an id never reused, so a run starts once however
often it is asked for: a retry, a worker restart, a start by hand), then continues as new with
the date done, so its history stays a run long. The run's instances then wait for each
customer's local time as a one-off broadcast's do. A run whose start is more than LATE_MARGIN
behind when the workflow wakes (the workers were down for days) is listed as missed, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.broadcast import BroadcastActivities
    from activities.broadcast_pages import BroadcastPageActivities, send_spec
    from activities.payloads import (
        CloseRequest,
        MemberPage,
        PageRequest,
        PageResult,
        PlanRequest,
        RunRequest,
        SendPage,
        StartInstances,
    )
    from definitions.broadcasts import LATE_MARGIN, run_name
    from instances.contract import (
        BROADCAST_WORKFLOW,
        BatchCounts,
        BroadcastInput,
        BroadcastProgress,
        RecurringInput,
        RecurringProgress,
        SendGroup,
    )

#: A batched broadcast's pages dealt with at once (each by its own activity, on the worker's threads).
PARALLEL_PAGES = 4

ACTIVITY = {
    "start_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}


@workflow.defn(name=BROADCAST_WORKFLOW)
class BroadcastWorkflow:
    @workflow.init
    def __init__(self, input: BroadcastInput) -> None:
        self.input = input
        self.state = "counting" if input.total is None else "starting"
        self.total = input.total
        self.after = input.after
        self.started = input.started
        self.already = input.already
        self.cancel_requested = input.cancelled
        self.cancelled_instances = 0
        self.not_again = input.not_again_count
        # The batched path: the send moments still ahead, what was decided, the ledger's run id.
        self.groups: list[SendGroup] = [group.model_copy() for group in input.groups or []]
        self.counts: BatchCounts = input.counts

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        self.cancel_requested = True

    @workflow.query(name="progress")
    def progress(self) -> BroadcastProgress:
        return BroadcastProgress(
            name=self.input.name,
            state=self.state,
            total=self.total,
            started=self.started,
            already=self.already,
            after=self.after,
            cancelled_instances=self.cancelled_instances,
            not_again=self.counts.not_again if self.input.batched else self.not_again,
            path="batched" if self.input.batched else "instances",
            counts=self.counts if self.input.batched else None,
            next_at=self.groups[0].at if self.input.batched and self.groups else None,
        )

    def _page(self, after: str | None) -> PageRequest:
        return PageRequest(
            segment=self.input.segment,
            rfm_table=self.input.rfm_table,
            at=self.input.members_at,
            after=after,
            limit=self.input.page,
        )

    @workflow.run
    async def run(self, input: BroadcastInput) -> BroadcastProgress:
        if input.batched:
            return await self._run_batched(input)
        if self.total is None:
            self.total = await workflow.execute_activity_method(
                BroadcastActivities.broadcast_size, self._page(None), **ACTIVITY
            )
            self.state = "starting"
        pages = 0
        while not self.cancel_requested and self.state == "starting":
            ids = await workflow.execute_activity_method(
                BroadcastActivities.broadcast_page, self._page(self.after), **ACTIVITY
            )
            if self.cancel_requested:
                break
            await self._start_instances(ids)
            if ids:
                self.after = ids[-1]
            if len(ids) < input.page:
                self.state = "started"
                break
            pages += 1
            if pages >= input.pages_per_run:
                workflow.continue_as_new(
                    input.model_copy(
                        update={
                            "total": self.total,
                            "after": self.after,
                            "started": self.started,
                            "already": self.already,
                            "cancelled": self.cancel_requested,
                            "not_again_count": self.not_again,
                        }
                    )
                )
        if self.state == "started" and not self.cancel_requested and input.open_until is not None:
            left = input.open_until - self.now()
            if left > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self.cancel_requested, timeout=left)
        if self.cancel_requested:
            self.state = "cancelling"
            self.cancelled_instances = await workflow.execute_activity_method(
                BroadcastActivities.cancel_broadcast_instances,
                input.snapshot.definition.name,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
            )
            self.state = "cancelled"
        else:
            self.state = "done"
        return self.progress()

    def now(self) -> datetime:
        """The broadcast's clock: the server's, less the offset a simulation gives it."""
        return workflow.now() - self.input.clock_offset

    # ------------------------------------------------------------------------------ batched

    async def _run_batched(self, input: BroadcastInput) -> BroadcastProgress:
        """One send moment after another (definitions.broadcasts.broadcast_path): wait for it on
        one timer, then page through the members due at it, each page decided and sent by one
        activity. Members a page defers (quiet hours in their zone, a closed send window) come
        back as a moment of their own, with their zone. Continues as new every pages_per_run
        pages, with the moments left and the counts, so the history stays bounded."""
        run_key = input.run_key or workflow.info().first_execution_run_id
        step = send_spec(input.snapshot).step_id
        if self.total is None:
            self.total = await workflow.execute_activity_method(
                BroadcastActivities.broadcast_size, self._page(None), **ACTIVITY
            )
        if input.groups is None:
            self.state = "planning"
            plan = PlanRequest(
                snapshot=input.snapshot, segment=input.segment, rfm_table=input.rfm_table, at=input.members_at
            )
            planned = await workflow.execute_activity_method(BroadcastPageActivities.plan_broadcast, plan, **ACTIVITY)
            # ... and after the last, a sweep for anyone still due (a member who moved zone since).
            last = max((group.at for group in planned), default=input.members_at)
            self.groups = [*planned, SendGroup(at=last, zones=[], sweep=True)]
        pages = 0
        while self.groups and not self.cancel_requested:
            group = self.groups[0]
            left = group.at - self.now()
            if left > timedelta(0):
                self.state = "waiting"
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self.cancel_requested, timeout=left)
                if self.cancel_requested:
                    break
            self.state = "sending"
            if group.resumed and not group.begun:  # its members wait no longer: they are dealt with now
                self.counts = self.counts.model_copy(update={"deferred": self.counts.deferred - group.members})
            group.begun = True
            # The next pages of the group (PARALLEL_PAGES of them), dealt with at once: one
            # page's database work overlaps another's Python, on the worker's threads.
            at = self.now()  # the moment itself when its timer has just fired (the page reads take time)
            batches: list[list[str]] = []
            after, exhausted = group.after, False
            while len(batches) < PARALLEL_PAGES and not exhausted:
                ids = await workflow.execute_activity_method(
                    BroadcastPageActivities.broadcast_member_page,
                    MemberPage(
                        segment=input.segment,
                        rfm_table=input.rfm_table,
                        members_at=input.members_at,
                        zones=None if group.sweep else group.zones,
                        after=after,
                        limit=input.page,
                        journey=input.snapshot.definition.name,
                        run_id=run_key,
                        step=step,
                        due=group.at,
                    ),
                    **ACTIVITY,
                )
                exhausted = len(ids) < input.page
                if ids:
                    batches.append(ids)
                    after = ids[-1]
            results: list[PageResult] = await asyncio.gather(
                *(self._send_page(input, group, ids, run_key, at) for ids in batches)
            )
            for result in results:
                self._count(result)
            group.after = after
            if exhausted:
                self.groups = [other for other in self.groups if other is not group]
            pages += len(batches)
            if pages >= input.pages_per_run and self.groups and not self.cancel_requested:
                workflow.continue_as_new(self._carried(input, run_key))
        if self.cancel_requested:
            self.state = "cancelling"
            self.cancelled_instances = await workflow.execute_activity_method(
                BroadcastPageActivities.close_broadcast_members,
                CloseRequest(journey=input.snapshot.definition.name, run_id=run_key, at=self.now()),
                **ACTIVITY,
            )
            self.groups = []
            self.counts = self.counts.model_copy(update={"deferred": 0})  # they end `cancelled`
            self.state = "cancelled"
        else:
            self.state = "done"
            self.counts = self.counts.model_copy(update={"deferred": 0})  # every moment dealt with
        return self.progress()

    async def _send_page(
        self, input: BroadcastInput, group: SendGroup, ids: list[str], run_key: str, at: datetime
    ) -> PageResult:
        return await workflow.execute_activity_method(
            BroadcastPageActivities.send_broadcast_page,
            SendPage(
                snapshot=input.snapshot,
                broadcast=input.name,
                customer_ids=ids,
                run_id=run_key,
                at=at,
                due=group.at,
                entered_at=input.members_at,
                rfm_table=input.rfm_table,
                not_again=input.not_again,
                first_pass=not group.resumed and not group.sweep,
            ),
            # A rate-limited channel sends a page a second's worth at a time: long, but it
            # heartbeats after each bulk call, so a lost worker's page is taken up again soon.
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )

    def _count(self, result: PageResult) -> None:
        """A page's outcome into the counts; its deferred members into the moments ahead (merged
        with a moment already there, of the same kind)."""
        deferred = sum(group.members for group in result.deferred)
        counts = result.counts.model_copy(update={"deferred": deferred})
        self.counts = self.counts.plus(counts)
        self.started = self.counts.decided
        for new in result.deferred:
            same = next((g for g in self.groups if g.at == new.at and g.resumed and not g.begun), None)
            if same is None:
                self.groups.append(new)
            else:
                same.zones = sorted({*same.zones, *new.zones})
                same.members += new.members
        # The sweep stays last: after the latest moment any deferral brought.
        for sweep in self.groups:
            if sweep.sweep and not sweep.begun:
                sweep.at = max(group.at for group in self.groups)
        self.groups.sort(key=lambda group: (group.at, group.sweep))

    def _carried(self, input: BroadcastInput, run_key: str) -> BroadcastInput:
        return input.model_copy(
            update={
                "total": self.total,
                "started": self.started,
                "cancelled": self.cancel_requested,
                "groups": self.groups,
                "counts": self.counts,
                "run_key": run_key,
            }
        )

    async def _start_instances(self, customer_ids: list[str]) -> None:
        """One instance per member of the page, started by an activity (not as children, so
        this history does not grow with their endings); an instance that already exists (the
        page was dealt with before) is counted, not started again."""
        if not customer_ids:
            return
        done = await workflow.execute_activity_method(
            BroadcastActivities.start_broadcast_instances,
            StartInstances(
                snapshot=self.input.snapshot,
                customer_ids=customer_ids,
                rfm_table=self.input.rfm_table,
                at=self.now(),
                task_queue=workflow.info().task_queue,
                broadcast=self.input.name,
                clock_offset=self.input.clock_offset,
                not_again=self.input.not_again,
            ),
            **ACTIVITY,
        )
        self.started += done.started
        self.already += done.already
        self.not_again += done.not_again


#: The runs a RecurringBroadcast workflow lists (the store lists every run that started anyone).
RECENT_RUNS = 100


@workflow.defn(name="RecurringBroadcast")
class RecurringBroadcastWorkflow:
    @workflow.init
    def __init__(self, input: RecurringInput) -> None:
        self.input = input
        self.schedule = input.broadcast.schedule
        self.state = "waiting"
        self.cancel_requested = input.cancelled
        self.next_run: date | None = None
        self.next_at: datetime | None = None

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        """No more runs; a run already started goes on (cancel it by its own name)."""
        self.cancel_requested = True

    @workflow.query(name="progress")
    def progress(self) -> RecurringProgress:
        return RecurringProgress(
            name=self.input.name,
            state=self.state,
            next_run=run_name(self.input.name, self.next_run) if self.next_run else None,
            next_at=self.next_at,
            runs=self.input.runs,
            already=self.input.already,
            missed=self.input.missed,
        )

    @workflow.run
    async def run(self, input: RecurringInput) -> RecurringProgress:
        after = input.after or (input.since - timedelta(days=2)).date()
        day = self.schedule.next_run(after)
        while day is not None and self.schedule.run_starts(day) < input.since:  # before the schedule began
            day = self.schedule.next_run(day)
        if day is None or self.cancel_requested:
            self.state = "cancelled" if self.cancel_requested else "done"
            return self.progress()
        self.next_run, self.next_at = day, self.schedule.run_starts(day)
        left = self.next_at - self.now()
        if left > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.cancel_requested, timeout=left)
        if self.cancel_requested:
            self.state = "cancelled"
            return self.progress()
        runs, already, missed = list(input.runs), input.already, list(input.missed)
        if self.now() > self.schedule.run_schedule(day).latest + LATE_MARGIN:
            missed = [*missed, run_name(input.name, day)][-RECENT_RUNS:]
            workflow.logger.warning("broadcast %s: run %s missed (woke too late)", input.name, day)
        else:
            started = await workflow.execute_activity_method(
                BroadcastActivities.start_broadcast_run,
                RunRequest(recurring=input, day=day, at=self.now()),
                **ACTIVITY,
            )
            runs = [*runs, run_name(input.name, day)][-RECENT_RUNS:]
            already += 0 if started else 1
        workflow.continue_as_new(
            input.model_copy(
                update={
                    "after": day,
                    "runs": runs,
                    "already": already,
                    "missed": missed,
                    "cancelled": self.cancel_requested,
                }
            )
        )

    def now(self) -> datetime:
        return workflow.now() - self.input.clock_offset
