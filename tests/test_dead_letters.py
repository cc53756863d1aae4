"""Events the dispatcher cannot apply never block anyone. A permanent error (data the router
cannot apply) makes the event a dead letter with its error, listed by `journeys events --failed`
and `GET /events/failed` and put back by `--replay` / `POST /events/replay` after a fix; a passing
error holds only its own customer for a while. 520 customers whose events fail, all older than
everyone else, delay a valid event by at most a pass or two (none, when it is urgent), on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.temporal import binary
from store import queries
from store.tables import EventRow
from tests.helpers import event
from triggers.api import create_app
from triggers.dispatcher import Dispatcher, customer_backoff
from triggers.router import Router

STUCK = 520


def log(store, *events) -> None:
    with store.transaction() as session:
        for item in events:
            queries.store_event(session, item, datetime.now(UTC))


def row(store, event_id: str) -> EventRow:
    with store.transaction() as session:
        return session.get(EventRow, event_id)


@contextlib.asynccontextmanager
async def dispatcher_on_test_server(store, definitions, router: type[Router] = Router):
    """A dispatcher over `store`, routing through `router` to a time-skipping test server."""
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=binary("temporal-test-server")
    ) as env:

        async def connect():
            return env.client

        dispatcher = Dispatcher(store, definitions, connect, "dead-letters", default_region="CN")
        dispatcher.router = router(env.client, definitions, store, "dead-letters", default_region="CN")
        yield dispatcher


async def drain(dispatcher: Dispatcher, store, wanted: str, passes: int = 3) -> int:
    """Run dispatch passes until `wanted` is dispatched; how many it took."""
    for n in range(1, passes + 1):
        await dispatcher.dispatch_pending()
        if row(store, wanted).dispatched_at is not None:
            return n
    raise AssertionError(f"{wanted} was not dispatched in {passes} passes")


async def test_unappliable_events_become_dead_letters_and_block_nobody(definitions, store):
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    # customer.updated logged without the API's checks (an older version, a direct insert): the
    # router cannot apply a time zone on Mars.
    log(
        store,
        *[
            event(
                "customer.updated",
                long_ago + timedelta(seconds=n),
                customer=f"mars{n}",
                event_id=f"bad{n}",
                timezone="Mars/Phobos",
            )
            for n in range(STUCK)
        ],  # fmt: skip
        event("order.shipped", datetime.now(UTC), customer="c1", order="o1", event_id="good", carrier="顺丰"),
        event("order.shipped", datetime.now(UTC), customer="mars0", order="o2", event_id="after-bad"),
    )
    async with dispatcher_on_test_server(store, definitions) as dispatcher:
        passes = await drain(dispatcher, store, "good")
        await dispatcher.dispatch_pending()  # the rest of the 520 (a pass takes 500 customers)
    assert passes == 1  # a shipping notice is urgent: its customers go ahead of 520 older ones
    assert row(store, "after-bad").dispatched_at is not None  # a dead letter does not hold its own customer
    bad = row(store, "bad7")
    assert bad.failed_at is not None and bad.dispatched_at is None
    assert "Mars/Phobos" in bad.last_error and "timezone" in bad.last_error
    with store.transaction() as session:
        assert queries.count_pending(session) == 0
        assert len(queries.failed_events(session, 1000)) == STUCK

    # The operator's view, and a replay (here the data is still bad: it fails again, on the record).
    env = {**os.environ, "DATABASE_URL": store.url}
    journeys = str(Path(sys.executable).parent / "journeys")
    listed = subprocess.run([journeys, "events", "--failed", "--limit", "3"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("3 failed events") and "FAILED" in listed.stdout and "Mars/Phobos" in listed.stdout
    replayed = subprocess.run(
        [journeys, "events", "--replay", "bad1", "--replay", "bad2"], env=env, capture_output=True, text=True
    )
    assert replayed.stdout.startswith("2 dead letters back in the queue"), replayed.stdout + replayed.stderr
    with store.transaction() as session:
        assert queries.count_pending(session) == 2
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(store)), base_url="http://j") as api:
        failed = (await api.get("/events/failed", params={"limit": 5})).json()
        assert len(failed) == 5 and failed[0]["failed_at"] and "Mars/Phobos" in failed[0]["last_error"]
        answer = await api.post("/events/replay", json={"all_failed": True})
        assert answer.status_code == 200 and len(answer.json()["replayed"]) == STUCK - 2
    with store.transaction() as session:
        assert queries.count_pending(session) == STUCK


async def test_a_passing_failure_holds_only_its_own_customer(definitions, store):
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    log(
        store,
        *[
            event(
                "order.shipped", long_ago + timedelta(seconds=n), customer=f"stuck{n}", order=f"s{n}", event_id=f"s{n}"
            )
            for n in range(STUCK)
        ],  # fmt: skip
        event("order.shipped", datetime.now(UTC), customer="c1", order="o1", event_id="good"),
    )

    class FlakyStore(Router):
        async def route(self, item, mark=True, backfill=False):
            if item.customer_id.startswith("stuck"):
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
            return await super().route(item, mark, backfill)

    started = datetime.now(UTC)
    async with dispatcher_on_test_server(store, definitions, FlakyStore) as dispatcher:
        passes = await drain(dispatcher, store, "good")
    assert passes <= 2
    stuck = row(store, "s3")
    assert stuck.dispatched_at is None and stuck.failed_at is None  # still pending: it may pass
    # Held for the backoff after its failure (which came after `started`); not compared with the
    # clock now, which a loaded machine may have moved past a short backoff.
    assert stuck.attempts >= 1
    assert stuck.retry_at is not None and stuck.retry_at >= started + customer_backoff(stuck.attempts)
    assert "OperationalError" in stuck.last_error
    with store.transaction() as session:
        assert queries.count_pending(session) == STUCK
        assert list(session.scalars(select(EventRow.event_id).where(EventRow.failed_at.is_not(None)))) == []


def test_customers_due_a_retry_never_crowd_out_the_others(store):
    """On a loaded machine a pass over 500 failing customers outlasts their 1 s backoff: they are
    due again at the next pass. They get a tenth of the places; the rest go to customers waiting
    for their first try, and the other way round a flood of new customers leaves retries room."""
    now = datetime.now(UTC)
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    shipped = [
        event("order.shipped", long_ago, customer=f"stuck{n}", order=f"s{n}", event_id=f"s{n}") for n in range(STUCK)
    ]
    log(store, *shipped, event("order.shipped", now, customer="c1", order="o1", event_id="good"))
    with store.transaction() as session:
        for n in range(STUCK):
            session.get(EventRow, f"s{n}").retry_at = now - timedelta(seconds=1)  # failed once, due again
    with store.transaction() as session:
        picked = queries.customers_with_pending_events(session, 500, now)
    assert "c1" in picked and len(picked) == 500

    log(store, *[event("order.shipped", now, customer=f"new{n}", order=f"n{n}", event_id=f"n{n}") for n in range(600)])
    with store.transaction() as session:
        picked = queries.customers_with_pending_events(session, 500, now)
    assert sum(c.startswith("stuck") for c in picked) == 50 and "c1" in picked


def test_customers_with_an_urgent_event_go_first_and_busy_ones_are_left_out(store):
    """The dispatcher takes up customers with an event that starts a journey sending at once (a
    shipping notice) before older ones, and never one it is dispatching already."""
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    log(
        store,
        *[event("order.created", long_ago + timedelta(seconds=n), customer=f"old{n}", order=f"b{n}", event_id=f"b{n}")
          for n in range(5)],
        event("order.created", now, customer="late", order="l1", event_id="l1"),
        event("order.shipped", now, customer="late", order="l0", event_id="l0"),
        event("order.shipped", now + timedelta(seconds=1), customer="later", order="l2", event_id="l2"),
    )  # fmt: skip
    urgent = frozenset({"order.shipped", "order.delivered"})
    with store.transaction() as session:
        assert queries.customers_with_pending_events(session, 3, now) == ["old0", "old1", "old2"]
        assert queries.customers_with_pending_events(session, 3, now, urgent=urgent) == ["late", "later", "old0"]
        picked = queries.customers_with_pending_events(session, 3, now, urgent=urgent, busy={"late", "old0"})
        assert picked == ["later", "old1", "old2"]


def test_the_urgent_events_are_those_starting_a_journey_that_sends_at_once(definitions, store):
    async def connect():  # never called
        raise AssertionError

    dispatcher = Dispatcher(store, definitions, connect, "q", default_region="CN")
    assert dispatcher.urgent == {
        "order.shipped",  # 发货提醒
        "order.delivered",  # 签收关怀
        "member.tier_changed",  # 升级提醒
        "points.expiring",  # 积分到期提醒
        "member.card_expiring",  # 会员卡到期关怀
        "lifecycle.changed",  # winback_sleeping
    }


async def test_on_stop_the_customers_being_dispatched_finish_their_events(definitions, store):
    """Stopping the API stops the dispatcher: a customer it is working on finishes its events and
    marks them, so none is dispatched twice after a restart."""
    now = datetime.now(UTC)
    log(store, *[event("order.shipped", now, customer="c1", order=f"o{n}", event_id=f"e{n}") for n in range(3)])
    routing = asyncio.Event()

    class Slow(Router):
        async def route(self, item, mark=True, backfill=False):
            routing.set()
            await asyncio.sleep(0.2)
            return await super().route(item, mark, backfill)

    async with dispatcher_on_test_server(store, definitions, Slow) as dispatcher:
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        await asyncio.wait_for(routing.wait(), 30)  # c1's first event is being routed
        stop.set()
        await asyncio.wait_for(running, 60)
    assert [row(store, f"e{n}").dispatched_at is not None for n in range(3)] == [True, True, True]
