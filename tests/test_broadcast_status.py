"""A broadcast's (or a run's) workflow that failed, was terminated or timed out has no result to
show: its status says how it ended and why, in the API and `journeys broadcast status`, instead
of an HTTP 500 or a traceback."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import timedelta

import httpx
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from definitions.loader import load_definitions
from instances.contract import broadcast_workflow_id
from tests.helpers import free_port, local_temporal, shipped_definitions_with
from tests.test_up import JOURNEYS, with_checkout
from triggers.api import create_app

QUEUE = "broadcast-status-test"


@workflow.defn(name="BroadcastThatFails")
class BroadcastThatFails:
    """Ends as a broadcast whose segment could not be read ends: failed, with the error."""

    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("segment 'lapsing_valuable' could not be read: 数据库不可用", non_retryable=True)


@workflow.defn(name="BroadcastThatWaits")
class BroadcastThatWaits:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(days=30))


async def test_a_failed_or_terminated_broadcast_shows_how_it_ended(sqlite_store, tmp_path):
    folder = shipped_definitions_with(
        tmp_path / "definitions",
        {
            "templates/daily_care.yaml": 'sms:\n  zh-CN: "{{ customer.name }}，您好"\n',
            "broadcasts/daily_care.yaml": "name: daily_care\nsegment: lapsing_valuable\n"
            "send: {channel: sms, template: daily_care}\n"
            'schedule: {every: day, time: "10:00", zone: Asia/Shanghai}\n',
            "broadcasts/silent.yaml": "name: silent\nsegment: lapsing_valuable\n"
            "send: {channel: sms, template: daily_care}\n"
            'schedule: {local_time: "2027-02-06T10:00"}\n',
        },
    )
    definitions = load_definitions(folder)
    port = free_port()
    address = f"127.0.0.1:{port}"
    async with await local_temporal(port):
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        async with Worker(
            client,
            task_queue=QUEUE,
            workflows=[BroadcastThatFails, BroadcastThatWaits],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            await client.start_workflow(
                BroadcastThatFails.run, id=broadcast_workflow_id("spring_festival_care"), task_queue=QUEUE
            )
            for name in ("daily_care", "daily_care@2026-12-03"):
                handle = await client.start_workflow(
                    BroadcastThatWaits.run, id=broadcast_workflow_id(name), task_queue=QUEUE
                )
                await handle.terminate(reason="停止: stopped by hand")
            await client.start_workflow(BroadcastThatWaits.run, id=broadcast_workflow_id("silent"), task_queue=QUEUE)

            async def temporal() -> Client:
                return client

            app = create_app(sqlite_store, temporal=temporal, definitions=definitions)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
                deadline = time.monotonic() + 60  # the failing workflow's first task, on a loaded machine
                while time.monotonic() < deadline:
                    spring = await api.get("/broadcasts/spring_festival_care")
                    if spring.status_code != 200 or spring.json()["state"] not in ("not started", "running"):
                        break
                    await asyncio.sleep(0.05)
                silent = await api.get("/broadcasts/silent")
                run = await api.get("/broadcasts/daily_care@2026-12-03")
                recurring = await api.get("/broadcasts/daily_care")
                listed = await api.get("/broadcasts")
                runs = await api.get("/broadcasts/daily_care/runs")
            env = {
                **with_checkout(None),
                "DATABASE_URL": sqlite_store.url,
                "TEMPORAL_ADDRESS": address,
                "JOURNEYS_DEFINITIONS": str(folder),
            }
            cli = [
                subprocess.run([*JOURNEYS, "broadcast", "status", name], env=env, capture_output=True, text=True,
                               timeout=120)
                for name in ("spring_festival_care", "daily_care@2026-12-03", "daily_care")
            ]  # fmt: skip
    assert spring.status_code == 200, spring.text
    assert spring.json()["state"] == "failed"
    assert "segment 'lapsing_valuable' could not be read: 数据库不可用" in spring.json()["reason"]
    assert silent.status_code == 200, silent.text
    assert silent.json()["state"] == "running"  # it runs, and has no progress to answer with
    assert run.status_code == 200, run.text
    assert (run.json()["state"], run.json()["reason"]) == ("terminated", "停止: stopped by hand")
    assert recurring.status_code == 200, recurring.text
    assert (recurring.json()["state"], recurring.json()["reason"]) == ("terminated", "停止: stopped by hand")
    assert listed.status_code == 200, listed.text
    assert {b["name"]: b["state"] for b in listed.json()} == {
        "spring_festival_care": "failed",
        "daily_care": "terminated",
        "silent": "running",
        "member_statement": "not started",  # shipped, never started here
    }
    assert runs.status_code == 200, runs.text
    assert all(answer.returncode == 0 for answer in cli), [answer.stderr for answer in cli]
    assert cli[0].stdout.startswith("spring_festival_care  failed (")
    assert "数据库不可用" in cli[0].stdout.splitlines()[0]
    assert cli[1].stdout.startswith("daily_care@2026-12-03  terminated (停止: stopped by hand)  segment")
    assert cli[2].stdout.startswith("daily_care  terminated (停止: stopped by hand)  segment")
