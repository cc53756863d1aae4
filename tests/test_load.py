"""The production worker under load, as it is deployed: `journeys api` and `journeys worker` as their
own processes, a Temporal dev server and PostgreSQL. 500 orders start both payment reminders
(1,000 instances), then 200 of them ship. Every shipped notice goes out exactly once, every
reminder is left waiting, and the worker's log holds no deadlock, failed eviction or journey ended
by an error. Nothing here asserts how fast: the waits are bounds against hanging."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from instances.contract import JourneyStatus
from store.tables import InstanceRow, MessageRow
from tests.helpers import daytime_zone
from tests.stack import WORKER_LOG_ALARMS, Stack, api_event, pending, sent, wait_until
from workflows.journey import JourneyWorkflow

ORDERS, SHIPPED, CUSTOMERS = 500, 200, 100


def shop_events(now: datetime) -> tuple[list[dict], list[dict], list[dict]]:
    zone = daytime_zone(now)
    event = partial(api_event, now)

    customers = [
        event(f"cust-{n}", "customer.created", f"c{n}", name=f"顾客{n}", phone=f"+86138{n:08d}", timezone=zone)
        for n in range(CUSTOMERS)
    ]
    orders = [event(f"created-{n}", "order.created", f"c{n % CUSTOMERS}", f"o{n}", amount=99) for n in range(ORDERS)]
    shipped = [
        event(f"shipped-{n}", "order.shipped", f"c{n % CUSTOMERS}", f"o{n}", carrier="顺丰", tracking_no=f"SF{n}")
        for n in range(SHIPPED)
    ]
    return customers, orders, shipped


async def statuses(address: str, workflow_ids: list[str]) -> list[JourneyStatus]:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    gate = asyncio.Semaphore(20)

    async def one(workflow_id: str) -> JourneyStatus:
        async with gate:
            return await client.get_workflow_handle(workflow_id).query(JourneyWorkflow.status)

    return await asyncio.gather(*(one(w) for w in workflow_ids))


async def count(address: str, query: str) -> int:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    return (await client.count_workflows(query)).count


def test_500_orders_and_200_shipments_through_the_production_worker(pg_store, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    customers, orders, shipped = shop_events(now)
    with Stack(tmp_path, pg_store.url) as stack:
        stack.post(customers)
        stack.post(orders)
        stack.post(shipped)

        wait_until(lambda: sent(pg_store, "shipped_notice") >= SHIPPED, 600, f"{SHIPPED} shipped notices")
        wait_until(lambda: pending(pg_store) == 0, 300, "every event to be dispatched")

        # Every payment reminder waits: the first for its 15 minutes, the last until 2 h before closing.
        first = asyncio.run(statuses(stack.address, [f"payment_reminder:o{n}" for n in range(ORDERS)]))
        last = asyncio.run(statuses(stack.address, [f"pre_close_reminder:o{n}" for n in range(ORDERS)]))
        assert Counter(s.step for s in first) == {"wait": ORDERS}
        assert {s.next_wake_up for s in first} == {now + timedelta(minutes=15)}
        assert Counter(s.step for s in last) == {"wait_until": ORDERS}
        assert {s.next_wake_up for s in last} == {now + timedelta(hours=70)}
        ended = asyncio.run(
            count(
                stack.address,
                "JourneyName IN ('payment_reminder', 'pre_close_reminder') AND ExecutionStatus != 'Running'",
            )
        )
        assert ended == 0

        # The drain on SIGTERM: within the 30 s graceful timeout (and a margin for a loaded machine).
        drained = stack.stop_worker(0)
        assert drained < 45, f"the worker took {drained:.1f} s to stop"
        log = stack.worker_logs()

    # Exactly once, in the ledger and at the channel.
    with pg_store.transaction() as session:
        rows = list(session.scalars(select(MessageRow).where(MessageRow.journey == "shipped_notice")))
        # Each start recorded once by the API's dispatcher, for the effect report.
        entered = Counter(session.scalars(select(InstanceRow.journey)))
    assert entered == {"payment_reminder": ORDERS, "pre_close_reminder": ORDERS, "shipped_notice": SHIPPED}
    assert Counter(r.status for r in rows) == {"sent": SHIPPED}
    assert sorted(r.order_id for r in rows) == sorted(f"o{n}" for n in range(SHIPPED))
    delivered = [json.loads(line) for line in stack.outbox.read_text().splitlines()]
    assert Counter(m["journey"] for m in delivered) == {"shipped_notice": SHIPPED}
    assert len({m["message_id"] for m in delivered}) == SHIPPED
    assert all("顺丰单号SF" in m["body"] for m in delivered)

    alarms = {alarm: log.count(alarm) for alarm in WORKER_LOG_ALARMS if alarm in log}
    assert not alarms, f"worker log alarms {alarms}:\n{log[-5000:]}"
