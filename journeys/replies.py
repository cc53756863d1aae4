"""The `journeys-replies:<queue>` Temporal schedule, registered by every worker at start-up: every
SWEEP_EVERY the `ReplySweep` workflow starts the answer of each reply logged in the last two days,
more than a minute ago, and not handled (the API's hook never ran: it stopped after logging the
reply, or Temporal was unreachable; triggers/replies.py). A schedule rather than a loop in a
process: it runs once however many workers there are, and catches up after an outage."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from journeys.retention import ensure_daily_schedule
from workflows.replies import ReplySweepWorkflow

SWEEP_EVERY = timedelta(minutes=5)


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
    await ensure_daily_schedule(client, schedule_id, reply_sweep_schedule(task_queue), lambda held: True)
    minutes = int(SWEEP_EVERY.total_seconds() // 60)
    return f"replies whose answer never started are swept every {minutes} minutes (schedule {schedule_id})"
