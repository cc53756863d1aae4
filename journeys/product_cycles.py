"""The daily `journeys-product-cycles:<queue>` Temporal schedule, registered by every worker at
start-up: it relearns every SKU's repurchase cycle from the order history
(workflows.product_cycles), with JOURNEYS_REPURCHASE_MIN_PAIRS as the pairs a cycle needs."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow

from activities.product_cycles import CyclesPolicy, product_cycles_schedule_id
from core.config import Settings
from journeys.retention import EVERY, daily_schedule, ensure_daily_schedule
from workflows.product_cycles import ProductCyclesWorkflow

__all__ = ["EVERY", "ensure_product_cycles_schedule", "product_cycles_schedule"]

#: Each day at 04:00 UTC, after retention's 03:00.
AT = timedelta(hours=4)


def product_cycles_schedule(settings: Settings) -> Schedule:
    return daily_schedule(
        ScheduleActionStartWorkflow(
            ProductCyclesWorkflow.run,
            CyclesPolicy(min_pairs=settings.repurchase_min_pairs),
            id=product_cycles_schedule_id(settings.task_queue),
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=2),
        ),
        AT,
    )


async def ensure_product_cycles_schedule(client: Client, settings: Settings) -> str:
    """Create the schedule, or bring it to the configured pairs; a restart with the same setting
    leaves it as it is. Says what it did."""
    schedule_id = product_cycles_schedule_id(settings.task_queue)
    await ensure_daily_schedule(
        client,
        schedule_id,
        product_cycles_schedule(settings),
        lambda held: held.min_pairs == settings.repurchase_min_pairs,
    )
    return (
        f"repurchase cycles relearned daily at 04:00 UTC on at least {settings.repurchase_min_pairs} pairs "
        f"(schedule {schedule_id})"
    )
