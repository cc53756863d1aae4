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
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.broadcast import BroadcastActivities
    from activities.payloads import PageRequest, StartInstances
    from instances.contract import BroadcastInput, BroadcastProgress

ACTIVITY = {
    "start_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}


@workflow.defn(name="Broadcast")
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
            ),
            **ACTIVITY,
        )
        self.started += done.started
        self.already += done.already
