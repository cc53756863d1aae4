"""What an operator sees after a full order lifecycle: events posted to the API, dispatched to a
real dev server, run by a worker; then the history endpoints, /journeys and `journeys history`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from core.temporal import binary
from journeys.worker import run_worker
from store import queries
from tests.helpers import DEV_SERVER_STARTUP, daytime_zone, free_port
from triggers.api import create_app
from triggers.dispatcher import Dispatcher


async def eventually(check, seconds: float = 30):
    for _ in range(int(seconds * 10)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("timed out waiting")


async def test_history_after_an_order_lifecycle(definitions, sqlite_store):
    port = free_port()
    address = f"127.0.0.1:{port}"
    settings = Settings(temporal_address=address, database_url=sqlite_store.url, task_queue="history-test")
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        port=port,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    ):
        client = await Client.connect(address, data_converter=pydantic_data_converter)

        async def temporal() -> Client:
            return client

        dispatcher = Dispatcher(sqlite_store, definitions, temporal, "history-test", default_region="CN")
        app = create_app(sqlite_store, temporal=temporal, definitions=definitions, on_accepted=dispatcher.wake.set)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_worker(settings, stop)), asyncio.create_task(dispatcher.run(stop))]
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
                now = datetime.now(UTC).replace(microsecond=0)

                def ev(n, type, order=None, **data):
                    return {
                        "event_id": f"h{n}", "type": type, "occurred_at": (now + timedelta(seconds=n)).isoformat(),
                        "customer_id": "c1", "order_id": order, "data": data,
                    }  # fmt: skip

                person = {"name": "王芳", "phone": "+8613800000001", "timezone": daytime_zone(now)}
                batch = [
                    ev(0, "customer.created", **person),
                    ev(1, "order.created", "o1", amount=99),
                    ev(2, "order.paid", "o1"),
                    ev(3, "order.shipped", "o1", carrier="顺丰", tracking_no="SF1"),
                    ev(4, "order.delivered", "o1"),
                ]
                assert (await api.post("/events", json=batch)).status_code == 202

                async def order_history():
                    found = (await api.get("/orders/o1/history")).json()
                    states = {i["journey"]: i["status"] for i in found["instances"]}
                    done = states == {
                        "payment_reminder": "completed", "pre_close_reminder": "completed",
                        "shipped_notice": "completed", "delivered_care": "completed", "review_request": "running",
                        "revisit_28d": "running",  # keyed by customer, started by this order's delivery
                    } and len(found["messages"]) == 2  # fmt: skip
                    # The step comes from a status query, which a loaded worker may not answer in time.
                    steps = {i["journey"]: i.get("step") for i in found["instances"]}
                    return found if done and steps.get("review_request") == "wait" else None

                found = await eventually(order_history)
                instances = {i["journey"]: i for i in found["instances"]}
                assert instances["payment_reminder"]["status"] == "completed"  # exited on order.paid
                assert instances["shipped_notice"]["status"] == "completed"
                review = instances["review_request"]
                assert (review["status"], review["step"]) == ("running", "wait")
                assert datetime.fromisoformat(review["next_wake_up"]) == now + timedelta(seconds=4, days=3)
                assert review["version"] == definitions["review_request"].version
                assert review["temporal_ui"] == (
                    f"http://127.0.0.1:8233/namespaces/default/workflows/review_request%3Ao1/{review['run_id']}/history"
                )
                started = [i["started_at"] for i in found["instances"]]
                assert started == sorted(started, reverse=True)  # newest first
                # Both went out at once (their events came a second apart, in one batch): newest first.
                sent = {m["journey"]: m for m in found["messages"]}
                assert {(j, m["status"]) for j, m in sent.items()} == {
                    ("delivered_care", "sent"),
                    ("shipped_notice", "sent"),
                }
                moments = [m["at"] for m in found["messages"]]
                assert moments == sorted(moments, reverse=True)
                assert "顺丰单号SF1" in sent["shipped_notice"]["body"]

                # A late payment for the finished reminder starts nothing.
                assert (await api.post("/events", json=ev(9, "order.paid", "o1"))).status_code == 202

                async def dispatched():
                    with sqlite_store.transaction() as session:
                        return queries.count_pending(session) == 0

                await eventually(dispatched)
                again = (await api.get("/orders/o1/history")).json()
                assert len([i for i in again["instances"] if i["journey"] == "payment_reminder"]) == 1

                customer = (await api.get("/customers/c1/history")).json()
                by_journey = {i["journey"]: i for i in customer["instances"]}
                assert by_journey["revisit_28d"]["status"] == "running"
                assert "birthday_greeting" not in by_journey  # no birthday: the entry condition fails, nothing starts

                journeys = {j["name"]: j for j in (await api.get("/journeys")).json()}
                assert journeys["review_request"]["running"] == 1
                assert journeys["review_request"]["running_this_version"] == 1
                assert journeys["payment_reminder"]["running"] == 0
                assert (await api.get("/orders/o'1/history")).status_code == 422

            env = {**os.environ, "TEMPORAL_ADDRESS": address, "DATABASE_URL": sqlite_store.url}
            command = [str(Path(sys.executable).parent / "journeys"), "history", "--order", "o1"]
            printed = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, env=env)
            assert printed.returncode == 0, printed.stderr
            assert "order o1: 6 journey instances, 2 messages" in printed.stdout
            assert "review_request:o1  running at wait, next wake-up" in printed.stdout
            assert "delivered_care/delivered  sms to +8613800000001  sent, 1 segment" in printed.stdout
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=40)
