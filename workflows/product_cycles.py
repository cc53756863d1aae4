"""The run the `journeys-product-cycles` schedule starts each day: the moment is fixed from the
workflow's clock, then one activity relearns every SKU's repurchase cycle (activities.product_cycles)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.product_cycles import CyclesPolicy, CyclesReport, CyclesRequest, ProductCycleActivities


@workflow.defn(name="ProductCycles")
class ProductCyclesWorkflow:
    @workflow.run
    async def run(self, policy: CyclesPolicy) -> CyclesReport:
        return await workflow.execute_activity_method(
            ProductCycleActivities.relearn_product_cycles,
            CyclesRequest(at=workflow.now(), min_pairs=policy.min_pairs),
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=10)),
        )
