"""Starting the answers of SMS replies (应答设置).

The intake (the Aliyun SmsUp and Twilio inbound webhooks) logs a reply once and calls
`start_reply_answer` with its id: the `ReplyAnswer` workflow `reply:{id}` answers it, and a start
for a reply started before does nothing (the id is never reused), so the hook may run any number of
times.

If the hook never ran (the API stopped after logging the reply, Temporal was unreachable), the
`journeys-replies:<queue>` Temporal schedule, which every worker registers at start-up like the
daily jobs, runs the `ReplySweep` workflow every SWEEP_EVERY: it starts the answer of each reply
logged in the last two days, more than a minute ago, and not handled. A schedule rather than a loop
in a process: it runs once however many workers there are, and catches up after an outage.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from activities.replies import start_answer
from workflows.replies import ReplySweepWorkflow

SWEEP_EVERY = timedelta(minutes=5)

log = logging.getLogger("journeys.replies")


async def start_reply_answer(client: Client, reply_id: str, *, task_queue: str) -> None:
    """Answer the logged reply `reply_id` by the shop's rules, at most once: starting twice is a
    no-op. Temporal unreachable is logged, not raised: the reply is logged, and the sweep starts
    its answer within SWEEP_EVERY of Temporal's return (the provider's push gets its 200)."""
    try:
        await start_answer(client, reply_id, task_queue)
    except RPCError as err:
        log.error("the answer of reply %s was not started (%s): the sweep will start it", reply_id, err.message)


def reply_sweep_schedule_id(task_queue: str) -> str:
    return f"journeys-replies:{task_queue}"


def reply_sweep_schedule(task_queue: str) -> Schedule:
    """Every SWEEP_EVERY; a sweep still running when the next is due is enough."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReplySweepWorkflow.run,
            id=f"{reply_sweep_schedule_id(task_queue)}:sweep",
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=30),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=SWEEP_EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=SWEEP_EVERY * 2),
    )


async def ensure_reply_sweep_schedule(client: Client, task_queue: str) -> str:
    """Create the sweep's schedule, or bring it to SWEEP_EVERY; says what it did."""
    schedule_id = reply_sweep_schedule_id(task_queue)
    wanted = reply_sweep_schedule(task_queue)
    try:
        await client.create_schedule(schedule_id, wanted)
    except ScheduleAlreadyRunningError:

        async def update(current: ScheduleUpdateInput) -> ScheduleUpdate | None:
            if current.description.schedule.spec.intervals == wanted.spec.intervals:
                return None  # as configured: several workers starting at once change nothing
            return ScheduleUpdate(schedule=wanted)

        await client.get_schedule_handle(schedule_id).update(update)
    minutes = int(SWEEP_EVERY.total_seconds() // 60)
    return f"replies whose answer never started are swept every {minutes} minutes (schedule {schedule_id})"
