"""Workflows that drive activities in tests, kept in a module of their own so they run in
Temporal's sandbox (journeys.worker.workflow_runner) as the journey workflow does."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from instances.contract import channel_queue


@workflow.defn
class DeliverAll:
    """Deliver each (channel, message id) on its channel's queue of `task_queue`, all at once."""

    @workflow.run
    async def run(self, task_queue: str, deliveries: list[list[str]]) -> list[str]:
        outcomes = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "deliver_message",
                    message_id,
                    task_queue=channel_queue(task_queue, channel),
                    start_to_close_timeout=timedelta(seconds=30),
                )
                for channel, message_id in deliveries
            )
        )
        return [outcome["status"] for outcome in outcomes]
