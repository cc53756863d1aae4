"""The run the `journeys-loyalty` schedule starts each day: the moment is fixed from the workflow's
clock, then one activity lapses points, re-evaluates ended cards, evaluates lifecycle stages and
writes the notices due (activities.loyalty)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.loyalty import DailyReport, DailyRequest, LoyaltyActivities


@workflow.defn(name="LoyaltyDaily")
class LoyaltyDailyWorkflow:
    @workflow.run
    async def run(self) -> DailyReport:
        return await workflow.execute_activity_method(
            LoyaltyActivities.run_loyalty_daily,
            DailyRequest(at=workflow.now()),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=None,
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=10)),
        )
