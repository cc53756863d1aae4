"""Nothing accepted is lost: events taken while Temporal is down stay in the log and reach their
journeys, each once and in order, when it comes back (a real dev server on a fixed port)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from core.temporal import binary
from journeys.worker import run_worker
from store import queries
from store.tables import EventRow
from tests.helpers import DEV_SERVER_STARTUP, customer, event, free_port
from triggers.dispatcher import Dispatcher
from triggers.router import Router


async def wait_until(check, seconds: float = 30) -> None:
    for _ in range(int(seconds * 10)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


def pending(store) -> int:
    with store.transaction() as session:
        return queries.count_pending(session)


async def test_events_taken_while_temporal_is_down_are_dispatched_when_it_is_back(definitions, sqlite_store):
    port = free_port()
    address = f"127.0.0.1:{port}"

    async def connect() -> Client:
        return await Client.connect(address, data_converter=pydantic_data_converter)

    now = datetime.now(UTC)
    with sqlite_store.transaction() as session:
        queries.upsert_customer(session, customer(), now, "CN")
        for item in [
            event("order.created", now, order="o1", event_id="e1"),
            event("order.paid", now + timedelta(seconds=1), order="o1", event_id="e2"),
            event("order.created", now + timedelta(seconds=2), order="o2", event_id="e3"),
        ]:
            queries.store_event(session, item, now)

    dispatcher = Dispatcher(sqlite_store, definitions, connect, "dispatch-test", max_backoff=0.5, default_region="CN")
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(1.5)  # Temporal is down: several attempts, nothing lost, nothing done
        assert pending(sqlite_store) == 3
        with sqlite_store.transaction() as session:
            first = session.get(EventRow, "e1")
            assert first.attempts == 0 or first.last_error  # a failed connect never closes an event
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"),
            dev_server_startup_timeout=DEV_SERVER_STARTUP,
            port=port,
            data_converter=pydantic_data_converter,
            dev_server_extra_args=["--log-level", "error"],
        ) as env:
            settings = Settings(temporal_address=address, database_url=sqlite_store.url, task_queue="dispatch-test")
            worker_stop = asyncio.Event()
            worker = asyncio.create_task(run_worker(settings, worker_stop))
            dispatcher.wake.set()
            await wait_until(lambda: pending(sqlite_store) == 0)
            reminder = await env.client.get_workflow_handle("payment_reminder:o1").describe()
            second = await env.client.get_workflow_handle("payment_reminder:o2").describe()
            assert reminder.search_attributes["OrderId"] == ["o1"]
            assert second.search_attributes["OrderId"] == ["o2"]
            # e2 (paid) reached o1's instances after e1 started them: the reminder exited at once
            result = await asyncio.wait_for(env.client.get_workflow_handle("payment_reminder:o1").result(), 30)
            assert result["outcome"] == "exit on order.paid"
            with sqlite_store.transaction() as session:
                rows = {r.event_id: r for r in session.query(EventRow)}
            assert all(r.dispatched_at is not None for r in rows.values())
            worker_stop.set()
            await asyncio.wait_for(worker, timeout=40)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)


async def test_a_temporal_restart_loses_nothing(definitions, sqlite_store):
    """Temporal goes away while the API keeps taking events; they go out once it is back."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    clients: list[Client] = []

    async def connect() -> Client:  # one client for the process, as the API has
        if not clients:
            clients.append(await Client.connect(address, data_converter=pydantic_data_converter))
        return clients[0]

    def log(*items):
        with sqlite_store.transaction() as session:
            for item in items:
                queries.store_event(session, item, datetime.now(UTC))

    now = datetime.now(UTC)
    dispatcher = Dispatcher(sqlite_store, definitions, connect, "restart-test", max_backoff=0.5, default_region="CN")
    stop = asyncio.Event()
    server = dict(
        dev_server_existing_path=binary("temporal"),
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        port=port,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    running = None
    try:
        async with await WorkflowEnvironment.start_local(**server):
            running = asyncio.create_task(dispatcher.run(stop))
            log(event("order.shipped", now, order="before", event_id="r1"))
            dispatcher.wake.set()
            await wait_until(lambda: pending(sqlite_store) == 0)
        # the server is gone: events keep coming
        log(*(event("order.shipped", now, order=f"during{n}", event_id=f"r{n + 2}") for n in range(3)))
        dispatcher.wake.set()
        await asyncio.sleep(1)
        assert pending(sqlite_store) == 3
        async with await WorkflowEnvironment.start_local(**server) as env:
            dispatcher.wake.set()
            await wait_until(lambda: pending(sqlite_store) == 0, seconds=60)
            with sqlite_store.transaction() as session:
                assert [r.last_error for r in session.query(EventRow) if r.last_error and r.dispatched_at] == []
            for n in range(3):
                described = await env.client.get_workflow_handle(f"shipped_notice:during{n}").describe()
                assert described.search_attributes["OrderId"] == [f"during{n}"]
    finally:
        stop.set()
        if running is not None:
            await asyncio.wait_for(running, timeout=30)


async def test_two_dispatchers_share_the_log_without_reordering(definitions, pg_store):
    """Two API processes' dispatchers drain one PostgreSQL log at once: every event goes out
    once, and each customer's events in the order they occurred."""
    routed: list[tuple[str, str, datetime]] = []

    class RecordingRouter(Router):
        async def route(self, event, mark=True, backfill=False):
            routed.append((event.customer_id, event.event_id, event.occurred_at))
            await asyncio.sleep(0.01)  # widen the window for a race
            return await super().route(event, mark, backfill)

    now = datetime.now(UTC)
    with pg_store.transaction() as session:
        for c in range(6):
            for n in range(5):
                item = event("order.shipped", now + timedelta(seconds=n), customer=f"c{c}", order=f"o{c}-{n}")
                queries.store_event(session, item, now)
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=binary("temporal-test-server")
    ) as env:

        async def connect() -> Client:
            return env.client

        dispatchers = [Dispatcher(pg_store, definitions, connect, "share-test", default_region="CN") for _ in range(2)]
        for dispatcher in dispatchers:
            dispatcher.router = RecordingRouter(env.client, definitions, pg_store, "share-test", default_region="CN")
        for _ in range(20):
            await asyncio.gather(*(d.dispatch_pending() for d in dispatchers))
            if pending(pg_store) == 0:
                break
    assert pending(pg_store) == 0
    assert len(routed) == 30 and len({event_id for _, event_id, _ in routed}) == 30
    for c in range(6):
        times = [when for customer_id, _, when in routed if customer_id == f"c{c}"]
        assert times == sorted(times), f"c{c} dispatched out of order"


async def test_an_instance_of_the_earlier_version_still_exits_on_what_a_publication_dropped(sqlite_store):
    """A payment reminder started on v1 (exit_on: order.paid); v2 is published without that exit.
    The payment must still end the v1 instance: else it reminds a customer who already paid."""
    from definitions.loader import PACKAGE_DIR
    from store import definition_changes
    from triggers.live import LiveDefinitions, describe_files

    port = free_port()
    address = f"127.0.0.1:{port}"

    async def connect() -> Client:
        return await Client.connect(address, data_converter=pydantic_data_converter)

    def log(*items):
        with sqlite_store.transaction() as session:
            for item in items:
                queries.store_event(session, item, datetime.now(UTC))

    live = LiveDefinitions(sqlite_store, PACKAGE_DIR)
    now = datetime.now(UTC)
    with sqlite_store.transaction() as session:
        queries.upsert_customer(session, customer(), now, "CN")
    dispatcher = Dispatcher(sqlite_store, live, connect, "versions-test", max_backoff=0.5, default_region="CN")
    stop = asyncio.Event()
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        port=port,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    ) as env:
        settings = Settings(temporal_address=address, database_url=sqlite_store.url, task_queue="versions-test")
        worker_stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, worker_stop))
        running = asyncio.create_task(dispatcher.run(stop))
        try:
            log(event("order.created", now, order="o1", event_id="e1"))
            dispatcher.wake.set()
            await wait_until(lambda: pending(sqlite_store) == 0)
            handle = env.client.get_workflow_handle("payment_reminder:o1")
            assert (await handle.describe()).status.name == "RUNNING"

            v1 = (PACKAGE_DIR / "payment_reminder.yaml").read_text(encoding="utf-8")
            v2 = v1.replace("exit_on: [order.paid, order.cancelled,", "exit_on: [order.cancelled,")
            assert v2 != v1
            with sqlite_store.transaction() as session:
                files, change_hash = describe_files({"payment_reminder.yaml": v2})
                change = definition_changes.create(session, files, change_hash, "alice", now)
                definition_changes.submit(session, change.id, "alice", now)
                definition_changes.approve(session, change.id, "bob", now)
            assert live.refresh() is True
            assert "order.paid" not in live.current["payment_reminder"].definition.exit_on

            log(event("order.paid", now + timedelta(seconds=1), order="o1", event_id="e2"))
            dispatcher.wake.set()
            await wait_until(lambda: pending(sqlite_store) == 0)
            result = await asyncio.wait_for(handle.result(), 30)
            assert result["outcome"] == "exit on order.paid"
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=10)
            worker_stop.set()
            await asyncio.wait_for(worker, timeout=40)


async def test_a_publication_swapped_in_while_an_event_is_routed_does_not_change_what_that_route_reads(
    definitions, sqlite_store, monkeypatch
):
    """Customers are dispatched at once on one router. A task that starts after a publication was
    swapped in must not change the definitions another task's route reads after its awaits (a
    journey gone between two reads dead-letters the event; else it starts on another version)."""
    from definitions.loader import PACKAGE_DIR, load_definitions
    from triggers.live import LiveDefinitions

    now = datetime.now(UTC)
    with sqlite_store.transaction() as session:
        for who in ("c1", "c2"):
            queries.upsert_customer(session, customer(who, phone=f"+861380000000{who[-1]}"), now, "CN")
            queries.store_event(session, event("order.created", now, customer=who, order=f"o-{who}"), now)
    live = LiveDefinitions.fixed(definitions)

    async def no_temporal() -> Client:
        raise AssertionError("routing here reads the definitions only")

    dispatcher = Dispatcher(sqlite_store, live, no_temporal, "swap-test", default_region="CN")
    dispatcher.router = Router(None, definitions, sqlite_store, "swap-test", default_region="CN")  # type: ignore[arg-type]
    read: dict[str, tuple[object, object]] = {}
    mid_route = asyncio.Event()

    async def route(self, event, mark=True, backfill=False):  # what a route reads before and after an await
        before = self.definitions
        if event.customer_id == "c1":
            await mid_route.wait()
        read[event.customer_id] = (before, self.definitions)
        return []

    monkeypatch.setattr(Router, "route", route)
    first = asyncio.create_task(dispatcher._dispatch_customer("c1"))
    await wait_until(lambda: "c1" not in read and pending(sqlite_store) == 2, 5)
    await asyncio.sleep(0.2)  # c1's route is at its await
    published = load_definitions(PACKAGE_DIR)  # a publication swapped in meanwhile
    live.current = published
    assert await dispatcher._dispatch_customer("c2") == (1, False)
    mid_route.set()
    assert await first == (1, False)
    assert read["c1"][0] is read["c1"][1] is definitions  # one version for the whole route
    assert read["c2"][1] is published  # a task started after the swap runs the new one


async def test_a_customer_waiting_for_a_slot_when_temporal_went_away_is_left_for_after_the_pause(
    definitions, sqlite_store
):
    """A customer taken up just before Temporal became unreachable (the router dropped) waits for
    the pause: nothing claimed, nothing marked failed, still pending for the next look."""
    from triggers.live import LiveDefinitions

    now = datetime.now(UTC)
    with sqlite_store.transaction() as session:
        queries.upsert_customer(session, customer("c1"), now, "CN")
        queries.store_event(session, event("order.created", now, customer="c1", order="o-1"), now)

    async def no_temporal() -> Client:
        raise AssertionError("not connected again here")

    dispatcher = Dispatcher(sqlite_store, LiveDefinitions.fixed(definitions), no_temporal, "gone", default_region="CN")
    assert dispatcher.router is None
    assert await dispatcher._dispatch_customer("c1") == (0, True)
    assert pending(sqlite_store) == 1
    with sqlite_store.transaction() as session:
        row = session.scalars(select(EventRow)).one()
    assert row.failed_at is None and row.attempts == 0
