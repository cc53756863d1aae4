"""The retention run the `journeys-retention` schedule starts each day: the cut-off is fixed from
the workflow's clock, then one activity removes what is older (activities.retention)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.payloads import RetentionReport, RetentionRequest
    from activities.retention import RetentionActivities
    from instances.contract import RetentionPolicy


@workflow.defn(name="Retention")
class RetentionWorkflow:
    @workflow.run
    async def run(self, policy: RetentionPolicy) -> RetentionReport:
        before = workflow.now() - timedelta(days=policy.days)
        return await workflow.execute_activity_method(
            RetentionActivities.expire_personal_data,
            RetentionRequest(before=before),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=10)),
        )
