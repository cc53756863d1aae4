"""Benchmark: the production path, as deployed, against raw Temporal on the same dev server.

    .venv/bin/python -m bench.production [--intake 10000] [--starts 2000] [--rate 5,20] [--seconds 30]
                                         [--scale 400] [--rss 10000,100000] [--server-memory-limit-mb MB]
                                         [--burst 1000] [--only PART,...]

Everything runs as it does for a shop: `journeys api` (intake and dispatch) and `journeys worker`
processes, a `temporal server start-dev` (in memory; for part 7 as `journeys up` runs it, its
state in a SQLite file) and PostgreSQL (JOURNEYS_TEST_DATABASE_URL,
default the local `test` database; each run works in a schema of its own, dropped afterwards).
Customers live where it is midday now, so no send waits for quiet hours, and the channels have no
rate limit (JOURNEYS_RATE_LIMITS throttles to a provider's contract; it would be measured instead).
It prints:

1. intake: events/s accepted by POST /events in batches of 100, 4 clients at once (the dispatcher
   of that API process has no Temporal to talk to, so this is the insert alone), of order.created,
   and of order.paid: a payment also earns points, evaluates the member tier and the lifecycle
   stage, and logs the engine's events that follow (the loyalty programme, docs/loyalty.md), all
   in the transaction that logs it;
2. dispatch: workflow starts/s from order.created events (2 journeys each) through the API's
   dispatcher, against signal-with-start of a minimal workflow from one process with the same
   concurrency (32); the worker processes are paused meanwhile (SIGSTOP), so each measures the
   start path alone on the same server;
3. latency: event-to-send p50/p99 for order.shipped (an immediate SMS) posted one by one at a
   fixed rate: from the POST to the ledger recording the provider's acceptance; and the floor,
   MinimalReminder started at the same rate with nothing to wait for, to its completion;
4. history: events and billable actions of one payment reminder (a timer, then a send) against
   MinimalReminder (bench/raw_journey.py), the same timer and one activity written by hand;
5. urgent sends during a burst: `--burst` order.created (two new instances each, whose first task
   only arms a timer) posted at once, then order.shipped (an immediate SMS) at 10/s with no pause
   between: the shipped notices' event-to-send p50/p99, measured without waiting for the worker to
   work through the burst first;
6. scale-out: dispatch and send throughput of a burst of order.shipped with one worker process,
   then with two, and the CPU per send of each process; next to it, the CPU per completed
   MinimalReminder with nothing to wait for (raw Temporal's minimal journey, started by
   signal-with-start at the same concurrency) of the Temporal server and the raw worker;
7. worker RSS with N waiting instances (order.created starts two that wait), on a stack of its
   own whose dev server runs as `journeys up` runs it (`--db-filename`: the in-memory server grows
   with every instance and runs out first); a watchdog samples the RSS of the server, the worker
   and the API every 2 s, prints their peaks, and stops the part if the server passes
   `--server-memory-limit-mb` (half the machine's memory by default).

`--only latency,urgent` runs some parts alone (history, latency, dispatch, urgent, scale, rss).
Where the worker's CPU goes, by function: `python -m bench.profile_worker`.

Billable actions are counted from the history as Temporal Cloud counts them: the start, each
signal, timer, activity attempt, search-attribute upsert, marker, child start and continue-as-new.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import httpx
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import Priority, WorkflowIDReusePolicy

from bench.common import MemoryLimitExceeded, MemoryWatch, Schema, meminfo_mb, rss_mb
from store.db import Store
from store.tables import EventRow, MessageRow
from tests.helpers import daytime_zone, free_port
from tests.stack import Stack, pending, sent, wait_until

RAW_QUEUE = "raw-bench"

BILLABLE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


class Shop:
    """Events for customers who live where it is midday now."""

    def __init__(self, customers: int = 200) -> None:
        self.customers = customers
        self.zone = daytime_zone(datetime.now(UTC))
        self.serial = 0

    def event(self, type: str, customer: int, order: str | None = None, when: datetime | None = None, **data) -> dict:
        self.serial += 1
        return {
            "event_id": f"bench-{self.serial}-{uuid.uuid4().hex[:6]}", "type": type,
            "occurred_at": (when or datetime.now(UTC)).isoformat(), "customer_id": f"c{customer % self.customers}",
            "order_id": order, "data": data,
        }  # fmt: skip

    def people(self) -> list[dict]:
        return [
            self.event("customer.created", n, name=f"顾客{n}", phone=f"+86138{n:08d}", timezone=self.zone)
            for n in range(self.customers)
        ]

    def orders(self, prefix: str, count: int, type: str = "order.created", **data) -> list[dict]:
        return [self.event(type, n, f"{prefix}{n}", **data) for n in range(count)]


def post_all(api: str, events: list[dict], batch: int = 100, clients: int = 4) -> float:
    """Post events in batches from `clients` threads; the seconds it took."""
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=api, timeout=120) as client:
            while True:
                with lock:
                    if not batches:
                        return
                    chunk = batches.pop()
                answer = client.post("/events", json=chunk)
                assert answer.status_code in (200, 202), answer.text

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], idle: float = 0.05, window: float = 2.0, limit: float = 600) -> float:
    """Wait until the processes are idle (under `idle` of a core over `window` seconds), so that
    what comes next is measured alone: a worker that was paused, or that was just given thousands
    of new instances, first works through their workflow tasks. The seconds it took."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(window)
        if sum(cpu_seconds(pid) for pid in pids) - before < idle * window * len(pids):
            break
    return time.perf_counter() - began


def billable(history) -> int:
    count = 0
    for event in history.events:
        if event.event_type in BILLABLE or event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            count += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            count += max(0, event.activity_task_started_event_attributes.attempt - 1)  # retries
    return count


# ------------------------------------------------------------------------------------------------


def intake(count: int, kind: str = "order.created") -> float:
    """Events/s of `kind` into an API process whose dispatcher has no Temporal to talk to: the
    insert alone (and for order.paid, the loyalty programme with it)."""
    schema = Schema()
    stack = Stack(Path(tempfile.mkdtemp(prefix="journeys-intake-")), schema.url)
    stack.extra_env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    try:
        stack.start_api(probe="/healthz")
        shop = Shop()
        post_all(stack.api, shop.orders("warm", 500, kind, amount=199))  # warm up connections and code paths
        seconds = post_all(stack.api, shop.orders("o", count, kind, amount=199))
        assert pending(schema.store) >= count + 500  # and the engine's events some journey starts on
        return count / seconds
    finally:
        stack.stop()
        schema.drop()


async def raw_starts(
    address: str, count: int, concurrency: int = 32, *, wait_seconds: float = 900.0, to_completion: bool = False
) -> float:
    """Starts/s of `count` MinimalReminder by signal-with-start, `concurrency` at a time, each
    waiting `wait_seconds` before its one activity; with `to_completion`, until each has ended."""
    client = await Client.connect(address)
    gate = asyncio.Semaphore(concurrency)

    async def start(n: int) -> None:
        async with gate:
            handle = await client.start_workflow(
                "MinimalReminder", wait_seconds, id=f"raw-{uuid.uuid4().hex}-{n}", task_queue=RAW_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                start_signal="event", start_signal_args=[{"type": "order.created", "n": n}],
            )  # fmt: skip
        if to_completion:
            await handle.result()

    began = time.perf_counter()
    await asyncio.gather(*(start(n) for n in range(count)))
    return count / (time.perf_counter() - began)


def dispatch(stack: Stack, store: Store, shop: Shop, starts: int, workers: list[int]) -> tuple[float, float]:
    """Starts/s of each, with every worker process paused (SIGSTOP) so that neither measurement
    pays for the other's workflow tasks: the start path alone, on the same server."""
    assert pending(store) == 0
    events = shop.orders(f"d{uuid.uuid4().hex[:4]}-", starts // 2)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        began = time.perf_counter()
        post_all(stack.api, events)
        wait_until(lambda: pending(store) == 0, 1800, "dispatch", interval=0.05)
        ours = starts / (time.perf_counter() - began)
        raw = asyncio.run(raw_starts(stack.address, starts))
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    return ours, raw


class Waits(NamedTuple):
    """Event-to-send of a run of order.shipped, and the parts of it: until dispatch (the log to
    the start) and until the interpreter ran the send step (the start's first workflow task)."""

    sends: int
    sent: tuple[float, float]  # p50, p99
    dispatched: tuple[float, float]
    at_step: tuple[float, float]

    def describe(self) -> str:
        (p50, p99), (d50, d99), (s50, s99) = self.sent, self.dispatched, self.at_step
        return (
            f"p50 {p50:.3f} s, p99 {p99:.3f} s (dispatched by p50 {d50:.3f} s, p99 {d99:.3f} s; "
            f"at the send step by p50 {s50:.3f} s, p99 {s99:.3f} s)"
        )


def latency(stack: Stack, store: Store, shop: Shop, rate: float, seconds: float) -> Waits:
    """Order.shipped posted one by one at `rate` for `seconds`, each until its SMS is sent."""
    count = int(rate * seconds)
    prefix = f"l{uuid.uuid4().hex[:4]}-"
    posted: dict[str, datetime] = {}
    with httpx.Client(base_url=stack.api, timeout=60) as client:
        began = time.perf_counter()
        for n in range(count):
            due = began + n / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            event = shop.event("order.shipped", n, f"{prefix}{n}", carrier="顺丰", tracking_no=f"SF{n}")
            posted[event["order_id"]] = datetime.now(UTC)
            assert client.post("/events", json=event).status_code == 202

    def all_sent():
        with store.transaction() as session:
            rows = session.execute(
                select(MessageRow.order_id, MessageRow.updated_at, MessageRow.at).where(
                    MessageRow.journey == "shipped_notice", MessageRow.status == "sent",
                    MessageRow.order_id.startswith(prefix),
                )
            ).all()  # fmt: skip
        return rows if len(rows) == count else None

    rows = wait_until(all_sent, 1800, "the latency run's sends")
    waits = [(sent_at - posted[order]).total_seconds() for order, sent_at, _ in rows]
    # Until the interpreter ran the send step (its workflow task's time); after it, the decision and the channel.
    to_step = [(step_at - posted[order]).total_seconds() for order, _, step_at in rows]
    with store.transaction() as session:
        dispatched = session.execute(
            select(EventRow.received_at, EventRow.dispatched_at).where(
                EventRow.type == "order.shipped", EventRow.order_id.startswith(prefix)
            )
        ).all()
    # The part of the wait before the start reached Temporal: the API's log and its dispatcher.
    in_dispatch = [(done - received).total_seconds() for received, done in dispatched]
    return Waits(count, percentiles(waits), percentiles(in_dispatch), percentiles(to_step))


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def raw_latency(address: str, rate: float, seconds: float, priority: int | None = None) -> tuple[float, float]:
    """The floor: signal-with-start of MinimalReminder with nothing to wait for (its one activity
    at once), at the same rate, with the task `priority` key if given; the p50 and p99 from the
    start call to the workflow's completion."""
    client = await Client.connect(address)
    count = int(rate * seconds)
    began = time.perf_counter()
    waits: list[float] = []

    async def one(n: int) -> None:
        await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
        sent = time.perf_counter()
        handle = await client.start_workflow(
            "MinimalReminder", 0.0, id=f"raw-latency-{uuid.uuid4().hex}", task_queue=RAW_QUEUE,
            start_signal="event", start_signal_args=[{"type": "order.shipped"}],
            priority=Priority(priority_key=priority) if priority else Priority.default,
        )  # fmt: skip
        await handle.result()
        waits.append(time.perf_counter() - sent)

    await asyncio.gather(*(one(n) for n in range(count)))
    return percentiles(waits)


async def history_costs(stack: Stack, shop: Shop) -> tuple[tuple[int, int], tuple[int, int]]:
    """One payment reminder due 5 s from now, and the hand-written MinimalReminder with a 5 s timer."""
    client = await Client.connect(stack.address)
    order = f"h{uuid.uuid4().hex[:6]}"
    created = datetime.now(UTC) - timedelta(minutes=15) + timedelta(seconds=5)
    async with httpx.AsyncClient(base_url=stack.api, timeout=30) as api:
        answer = await api.post("/events", json=shop.event("order.created", 0, order, when=created, amount=99))
        assert answer.status_code == 202, answer.text
    ours: WorkflowHandle = client.get_workflow_handle(f"payment_reminder:{order}")
    for _ in range(600):
        try:
            await ours.result()
            break
        except Exception:  # not started yet
            await asyncio.sleep(0.1)
    raw = await client.start_workflow(
        "MinimalReminder", 5.0, id=f"raw-history-{order}", task_queue=RAW_QUEUE,
        start_signal="event", start_signal_args=[{"type": "order.created"}],
    )  # fmt: skip
    await raw.result()
    ours_history, raw_history = await ours.fetch_history(), await raw.fetch_history()
    return (len(ours_history.events), billable(ours_history)), (len(raw_history.events), billable(raw_history))


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by the PostgreSQL server's processes (the postmaster and its
    backends), where they run on this machine."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
    return total


def cpu_by_part(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack."""
    parts = {name: cpu_seconds(process.pid) for name, process in stack.processes.items() if process.poll() is None}
    parts["postgres"] = postgres_cpu_seconds()
    return parts


def burst(stack: Stack, store: Store, shop: Shop, count: int) -> tuple[float, float, dict[str, float]]:
    """Post `count` order.shipped at once: (dispatched/s, sent/s until each is done, CPU
    milliseconds per send of each part of the stack)."""
    before = sent(store, "shipped_notice")
    events = shop.orders(f"s{uuid.uuid4().hex[:4]}-", count, "order.shipped", carrier="顺丰", tracking_no="SF")
    cpu = cpu_by_part(stack)
    began = time.perf_counter()
    post_all(stack.api, events)
    wait_until(lambda: pending(store) == 0, 1800, "the burst's dispatch", interval=0.05)
    dispatched = count / (time.perf_counter() - began)
    wait_until(lambda: sent(store, "shipped_notice") >= before + count, 1800, "the burst's sends", interval=0.05)
    sends = count / (time.perf_counter() - began)
    used = {part: (seconds - cpu.get(part, 0.0)) * 1000 / count for part, seconds in cpu_by_part(stack).items()}
    return dispatched, sends, used


def urgent_during_burst(
    stack: Stack, store: Store, shop: Shop, orders: int, rate: float = 10, seconds: float = 10
) -> tuple[Waits, float]:
    """`orders` order.created posted at once (two instances each, arming timers), then order.shipped
    at `rate` for `seconds` with no pause: the shipped notices' latency figures, and how long the
    worker took to work through everything afterwards."""
    post_all(stack.api, shop.orders(f"b{uuid.uuid4().hex[:4]}-", orders))
    figures = latency(stack, store, shop, rate, seconds)
    return figures, settle([stack.processes["worker0"].pid])


async def raw_urgent_during_burst(
    address: str, starts: int, rate: float = 10, seconds: float = 10
) -> tuple[float, float]:
    """Raw Temporal in the same case: `starts` MinimalReminder that wait (timer-only first tasks)
    started at once with the default priority, and meanwhile ones with nothing to wait for at
    `rate` with priority 1 (the engine's shipping notices'): the urgent ones' p50 and p99."""
    _, waits = await asyncio.gather(raw_starts(address, starts), raw_latency(address, rate, seconds, priority=1))
    return waits


def raw_cpu(stack: Stack, raw_worker: int, count: int) -> dict[str, float]:
    """CPU milliseconds per completed raw minimal journey, of the Temporal server and the raw worker."""
    pids = {"temporal": stack.processes["temporal"].pid, "raw worker": raw_worker}
    before = {part: cpu_seconds(pid) for part, pid in pids.items()}
    asyncio.run(raw_starts(stack.address, count, wait_seconds=0.0, to_completion=True))
    return {part: (cpu_seconds(pid) - before[part]) * 1000 / count for part, pid in pids.items()}


def describe_cpu(used: dict[str, float]) -> str:
    parts = ", ".join(f"{part} {ms:.0f}" for part, ms in sorted(used.items(), key=lambda item: -item[1]))
    return f"{parts}; total {sum(used.values()):.0f}"


class Reading(NamedTuple):
    """The stack's memory once a number of instances wait."""

    instances: int
    worker_mb: float
    server_mb: float
    api_mb: float
    server_db_mb: float  # the dev server's SQLite file and its write-ahead log, on disk
    seconds: float  # from the first post for this target until the worker was idle again

    def describe(self) -> str:
        return (
            f"worker RSS with {self.instances} waiting instances: {self.worker_mb:.0f} MB "
            f"(Temporal server {self.server_mb:,.0f} MB, its database {self.server_db_mb:,.0f} MB on disk; "
            f"API {self.api_mb:.0f} MB; reached in {self.seconds:.0f} s)"
        )


def waiting_rss(stack: Stack, store: Store, shop: Shop, targets: list[int], watch: MemoryWatch) -> list[Reading]:
    """Grow to each target of waiting instances and read the stack's memory there, once the worker
    has run every new instance's first task. The orders occur three hours from now, so that no
    instance's timer fires during the run (a payment reminder's would 15 minutes after its
    order) and every instance counted still waits. `watch` stops the run if the server grows
    past its limit."""
    out: list[Reading] = []
    worker = stack.processes["worker0"].pid
    made = asyncio.run(_running(stack.address))
    print(f"  {made} waiting instances: worker RSS {rss_mb(worker):.0f} MB", flush=True)
    for target in targets:
        began = time.perf_counter()
        orders = max(0, (target - made + 1) // 2)
        prefix = f"w{uuid.uuid4().hex[:4]}-"
        when = datetime.now(UTC) + timedelta(hours=3)
        for start in range(0, orders, 5000):
            events = [
                shop.event("order.created", n, f"{prefix}{start}-{n}", when=when)
                for n in range(min(5000, orders - start))
            ]
            post_all(stack.api, events)
            wait_until(lambda: watch.check() or pending(store) < 5000, 3600, "dispatch to catch up", interval=0.5)
            print(f"  {start + len(events)} of {orders} orders posted, {watch.describe_last()}", flush=True)
        wait_until(lambda: watch.check() or pending(store) == 0, 3600, "the waiting instances", interval=0.5)
        while settle([worker], limit=30) >= 30:  # the worker still starts the new instances
            watch.check()
            print(f"  the worker catches up: {watch.describe_last()}", flush=True)
        watch.check()
        made = asyncio.run(_running(stack.address))
        assert stack.server_db is not None
        database = sum(path.stat().st_size for path in stack.server_db.parent.glob(f"{stack.server_db.name}*"))
        out.append(
            Reading(
                made, rss_mb(worker), rss_mb(stack.processes["temporal"].pid), rss_mb(stack.processes["api"].pid),
                database / 2**20, time.perf_counter() - began,
            )
        )  # fmt: skip
        print(out[-1].describe(), flush=True)
    return out


def waiting_memory(targets: list[int], server_limit_mb: float) -> list[Reading]:
    """Part 7 on a stack of its own: the Temporal dev server as `journeys up` runs it (its state in
    a SQLite file, tests.stack.Stack(as_up=True)), whose memory, unlike the in-memory server's,
    does not grow with every instance; a watchdog samples the server's, the worker's and the API's
    RSS every 2 s and stops the run if the server passes `server_limit_mb`."""
    schema = Schema()
    directory = Path(tempfile.mkdtemp(prefix="journeys-rss-"))
    stack = Stack(directory, schema.url, as_up=True, extra_env={"JOURNEYS_RATE_LIMITS": "sms=0,email=0,webhook=0"})
    shop = Shop()
    began = time.perf_counter()
    try:
        stack.start()
        print(f"rss: the Temporal server as `journeys up` runs it, its state in {stack.server_db}", flush=True)
        with MemoryWatch(
            lambda: {name: p.pid for name, p in stack.processes.items()}, "temporal", server_limit_mb
        ) as watch:
            try:
                stack.post(shop.people())
                wait_until(lambda: pending(schema.store) == 0, 300, "the customers")
                return waiting_rss(stack, schema.store, shop, targets, watch)
            finally:
                print(
                    f"rss: peak RSS over {time.perf_counter() - began:.0f} s, sampled every {watch.interval:.0f} s: "
                    f"{watch.describe_peaks()} (the server's limit {server_limit_mb:,.0f} MB)",
                    flush=True,
                )
    finally:
        stack.stop()
        schema.drop()
        for state in directory.glob("temporal.db*"):  # gigabytes at 100,000 instances; the logs stay
            state.unlink()


async def _running(address: str) -> int:
    client = await Client.connect(address)
    return (await client.count_workflows("ExecutionStatus = 'Running' AND JourneyName IS NOT NULL")).count


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {sys.version.split()[0]}"


PARTS = ("history", "latency", "dispatch", "urgent", "scale", "rss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intake", type=int, default=10_000, help="events for the intake figure (0: skip it)")
    parser.add_argument("--starts", type=int, default=2_000, help="workflow starts for the dispatch figure")
    parser.add_argument("--rate", default="5,20", help="events/s for the latency figures")
    parser.add_argument("--seconds", type=float, default=30, help="how long the latency run posts")
    parser.add_argument("--burst", type=int, default=1_000, help="order.created posted at once before the urgent sends")
    parser.add_argument("--scale", type=int, default=400, help="order.shipped per scale-out burst")
    parser.add_argument("--rss", default="10000,100000", help="waiting instances at which to read worker RSS")
    parser.add_argument(
        "--server-memory-limit-mb", type=float, default=meminfo_mb("MemTotal") / 2,
        help="stop the rss part when the Temporal server's RSS passes this (default: half the machine's memory)",
    )  # fmt: skip
    parser.add_argument("--only", default=",".join(PARTS), help=f"the parts to run, of {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    if unknown := parts - set(PARTS):
        parser.error(f"--only: no part {', '.join(sorted(unknown))} (the parts: {', '.join(PARTS)})")
    print(f"machine: {machine()}", flush=True)

    if args.intake:
        events_per_second = intake(args.intake)
        print(f"intake: {events_per_second:.0f} events/s (batches of 100, 4 clients, PostgreSQL)", flush=True)
        paid = intake(args.intake, "order.paid")
        ratio = paid / events_per_second
        print(f"intake of order.paid (points, tier, stage with each): {paid:.0f} events/s ({ratio:.2f}x)", flush=True)

    targets = [int(n) for n in args.rss.split(",") if n.strip() and int(n) > 0] if "rss" in parts else []
    if targets:
        try:
            waiting_memory(targets, args.server_memory_limit_mb)
        except MemoryLimitExceeded as stopped:
            print(f"rss: {stopped}; the stack was stopped", flush=True)
    if not parts - {"rss"}:
        return

    schema = Schema()
    directory = Path(tempfile.mkdtemp(prefix="journeys-bench-"))
    shop = Shop()
    # No per-channel rate limits: they throttle to a provider's contract, and would be measured instead.
    stack = Stack(directory, schema.url, workers=1, extra_env={"JOURNEYS_RATE_LIMITS": "sms=0,email=0,webhook=0"})
    raw_worker = None
    try:
        stack.start()
        raw_worker = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_worker", stack.address, RAW_QUEUE],
            stdout=(directory / "raw.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.post(shop.people())
        wait_until(lambda: pending(schema.store) == 0, 300, "the customers")

        if "history" in parts:
            (ours_events, ours_actions), (raw_events, raw_actions) = asyncio.run(history_costs(stack, shop))
            print(
                f"history per payment reminder: {ours_events} events, {ours_actions} billable actions; "
                f"hand-written minimal: {raw_events} events, {raw_actions} actions "
                f"(+{ours_actions - raw_actions} actions)",
                flush=True,
            )

        for rate in [float(r) for r in args.rate.split(",") if r.strip()] if "latency" in parts else []:
            waits = latency(stack, schema.store, shop, rate, args.seconds)
            raw50, raw99 = asyncio.run(raw_latency(stack.address, rate, args.seconds))
            print(
                f"event-to-send at {rate:.0f} events/s ({waits.sends} sends): {waits.describe()}; "
                f"raw start-to-activity p50 {raw50:.3f} s, p99 {raw99:.3f} s",
                flush=True,
            )

        if "dispatch" in parts:
            workers = [stack.processes["worker0"].pid, raw_worker.pid]
            ours, raw = dispatch(stack, schema.store, shop, args.starts, workers)
            print(
                f"dispatch: {ours:.0f} workflow starts/s; raw signal-with-start {raw:.0f}/s; ratio {ours / raw:.2f}",
                flush=True,
            )
            # The paused worker has the dispatch run's new instances to start: let it finish first.
            caught_up = settle([stack.processes["worker0"].pid])
            print(f"  the worker started the dispatch run's instances in {caught_up:.0f} s", flush=True)

        if "urgent" in parts:
            waits, after = urgent_during_burst(stack, schema.store, shop, args.burst)
            print(
                f"urgent sends during a burst ({args.burst} order.created at once, {2 * args.burst} new "
                f"instances, then {waits.sends} order.shipped at 10/s): {waits.describe()}; "
                f"the worker was done with the burst {after:.0f} s after the last send",
                flush=True,
            )
            raw50, raw99 = asyncio.run(raw_urgent_during_burst(stack.address, 2 * args.burst))
            settle([raw_worker.pid])
            print(
                f"  raw, the same case ({2 * args.burst} waiting MinimalReminder started at once, then "
                f"immediate ones at 10/s with priority 1): p50 {raw50:.3f} s, p99 {raw99:.3f} s",
                flush=True,
            )

        if "scale" in parts:
            one = burst(stack, schema.store, shop, args.scale)
            raw = raw_cpu(stack, raw_worker.pid, args.scale)
            stack.workers = 2
            stack.start_worker(1)
            settle([stack.processes["worker0"].pid, stack.processes["worker1"].pid])
            two = burst(stack, schema.store, shop, args.scale)
            ours_total, raw_total = sum(one[2].values()), sum(raw.values())
            print(
                f"scale-out ({args.scale} order.shipped at once): "
                f"one worker {one[0]:.0f} dispatched/s, {one[1]:.0f} sent/s; "
                f"two workers {two[0]:.0f} dispatched/s, {two[1]:.0f} sent/s ({two[1] / one[1]:.2f}x sends)\n"
                f"  CPU ms per send, one worker: {describe_cpu(one[2])} (of {os.cpu_count()} cores)\n"
                f"  CPU ms per send, two workers: {describe_cpu(two[2])}\n"
                f"  CPU ms per raw minimal journey (MinimalReminder, nothing to wait for): {describe_cpu(raw)}; "
                f"ratio {ours_total / raw_total:.2f}",
                flush=True,
            )
            stack.stop_worker(1)
            stack.workers = 1
    finally:
        if raw_worker is not None:
            raw_worker.terminate()
            raw_worker.wait(30)
        stack.stop()
        schema.drop()


if __name__ == "__main__":
    main()
