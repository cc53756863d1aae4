"""The daily `journeys-loyalty:<queue>` Temporal schedule, registered by every worker at start-up:
points lapse, cards are re-evaluated, lifecycle stages are evaluated and the notices due are
written (workflows.loyalty, activities.loyalty)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow

from activities.loyalty import loyalty_schedule_id
from core.config import Settings
from journeys.retention import daily_schedule, ensure_daily_schedule
from workflows.loyalty import LoyaltyDailyWorkflow

#: Each day at 05:00 UTC (13:00 in China), after retention's 03:00 and the cycles' 04:00.
AT = timedelta(hours=5)


def loyalty_schedule(settings: Settings) -> Schedule:
    return daily_schedule(
        ScheduleActionStartWorkflow(
            LoyaltyDailyWorkflow.run,
            id=loyalty_schedule_id(settings.task_queue),
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=6),
        ),
        AT,
    )


async def ensure_loyalty_schedule(client: Client, settings: Settings) -> str:
    """Create the schedule, or bring it to its times; says what it did."""
    schedule_id = loyalty_schedule_id(settings.task_queue)
    await ensure_daily_schedule(client, schedule_id, loyalty_schedule(settings), lambda held: True)
    return f"points, tiers and lifecycle stages evaluated daily at 05:00 UTC (schedule {schedule_id})"
