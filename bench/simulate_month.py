"""Benchmark: a month of a shop's events through `journeys simulate`, against raw Temporal.

    .venv/bin/python -m bench.simulate_month [--customers 300] [--seed 7] [--shards 1,2] [--no-raw] [--progress]

Generates a deterministic month (orders created around the clock, most paid, some cancelled or
left to close, shipments, deliveries, reviews, refunds, repurchases, birthdays), plays it through
the real engine on the time-skipping test server, then plays the same dispatches against a bare
workflow (one timer and one no-op activity per instance, no policy, no store) on a fresh server of
the same kind. Prints both and their ratio; the ratio, not the absolute time, is the figure to
watch on a given machine.

`--shards 1,2` plays the same month once per shard count (`journeys simulate --shards`: customers
split across processes, each with its own test server and worker), checks that every run wrote
the records of the first, and prints each run's time, its ratio to raw Temporal (which runs
unsharded, in one process, once) and its speed-up over the 1-shard run when there is one: the
whole speed-up, and that divided by the shards (1.0 would be perfect scaling). The runs follow
one another on the same machine, so whatever else runs there meanwhile is in the figures; the
load average before and after is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.common import peak_rss_mb
from bench.raw_journey import RawJourney, raw_send
from core.records import Customer, Event
from core.temporal import binary
from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.shards import available_cores
from journeys.simulate import simulate
from journeys.worker import workflow_runner
from triggers.router import plan

START = datetime(2026, 2, 1, tzinfo=UTC)
UNTIL = datetime(2026, 3, 1, tzinfo=UTC)


def shop_month(customers: int, seed: int) -> tuple[list[Customer], list[Event]]:
    rng = random.Random(seed)
    people, events = [], []
    counter = iter(range(1, 10**9))

    def emit(kind: str, when: datetime, who: str, order: str | None = None, **data) -> None:
        events.append(
            Event(event_id=f"b{next(counter)}", type=kind, occurred_at=when, customer_id=who, order_id=order, data=data)
        )

    for n in range(customers):
        cid = f"c{n}"
        birthday = f"19{rng.randint(60, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        people.append(
            Customer(
                customer_id=cid,
                name=f"顾客{n}",
                phone=f"+86138{n:08d}" if rng.random() > 0.05 else None,
                email=f"c{n}@example.com" if rng.random() > 0.3 else None,
                birthday=birthday if rng.random() > 0.2 else None,
                locale="en" if rng.random() < 0.1 else "zh-CN",
                blacklisted=rng.random() < 0.02,
                unsubscribed=["sms"] if rng.random() < 0.05 else [],
            )
        )
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            oid = f"o{next(counter)}"
            created = START + timedelta(minutes=rng.randint(0, 27 * 24 * 60))
            emit("order.created", created, cid, oid, amount=rng.randint(20, 900))
            fate = rng.random()
            if fate < 0.1:
                emit("order.cancelled", created + timedelta(minutes=rng.randint(1, 600)), cid, oid)
                continue
            if fate < 0.18:
                emit("order.closed", created + timedelta(hours=72), cid, oid)
                continue
            paid = created + timedelta(minutes=rng.choice([3, 8, 20, 45, 180, 1500]))
            emit("order.paid", paid, cid, oid)
            shipped = paid + timedelta(hours=rng.randint(4, 30))
            emit("order.shipped", shipped, cid, oid, carrier="顺丰", tracking_no=f"SF{oid}")
            delivered = shipped + timedelta(hours=rng.randint(30, 80))
            emit("order.delivered", delivered, cid, oid)
            if rng.random() < 0.3:
                emit("review.posted", delivered + timedelta(hours=rng.randint(2, 120)), cid, oid)
            if rng.random() < 0.05:
                emit("order.refunded", delivered + timedelta(days=rng.randint(1, 6)), cid, oid)
    rng.shuffle(events)  # any order: the simulator plays them by occurred_at
    return people, events


async def raw_temporal(definitions, people, events) -> tuple[float, int]:
    ordered = sorted(events, key=lambda e: e.occurred_at)
    created = [
        Event(event_id=f"cc{p.customer_id}", type="customer.created", occurred_at=START, customer_id=p.customer_id)
        for p in people
    ]
    began = time.perf_counter()
    starts = 0
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=binary("temporal-test-server")
    )
    try:
        offset = (await env.get_current_time()) - START
        with ThreadPoolExecutor(8) as executor:
            async with Worker(
                env.client,
                task_queue="raw",
                workflows=[RawJourney],
                activities=[raw_send],
                activity_executor=executor,
                workflow_runner=workflow_runner(),  # sandboxed, as journeys simulate runs
            ):
                for event in created + ordered:
                    behind = event.occurred_at - ((await env.get_current_time()) - offset)
                    if behind > timedelta(0):
                        await env.sleep(behind)
                    for dispatch in plan(event, definitions):
                        payload = event.model_dump(mode="json")
                        if dispatch.action == "start":
                            starts += 1
                            await env.client.start_workflow(
                                "RawJourney", payload, id=dispatch.workflow_id, task_queue="raw",
                                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                                start_signal="event", start_signal_args=[payload],
                            )  # fmt: skip
                        else:
                            with contextlib.suppress(Exception):  # not running: dropped, as the router does
                                await env.client.get_workflow_handle(dispatch.workflow_id).signal("event", payload)
                await env.sleep(UNTIL - ((await env.get_current_time()) - offset))
    finally:
        await env.shutdown()
    return time.perf_counter() - began, starts


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--shards", default="1", help="shard counts to run the month with, one run each: 1 or 1,2 (default 1)"
    )
    parser.add_argument("--no-raw", action="store_true", help="skip raw Temporal (long at 10,000 customers)")
    parser.add_argument("--progress", action="store_true", help="the progress line on stderr even when not a terminal")
    args = parser.parse_args()
    shard_counts = [int(n) for n in args.shards.split(",")]
    definitions = load_definitions(PACKAGE_DIR)
    people, events = shop_month(args.customers, args.seed)
    kinds = Counter(e.type for e in events)
    print(f"shop month: {len(people)} customers, {len(events)} events ({kinds['order.created']} orders)")
    print(f"cores available: {available_cores()}, load average before: {_load()}")

    runs: dict[int, float] = {}
    first: list[str] | None = None
    for shards in shard_counts:
        began = time.perf_counter()
        report = await simulate(
            definitions, people, events, UNTIL, shards=shards,
            progress=sys.stderr if args.progress or sys.stderr.isatty() else None,
        )  # fmt: skip
        runs[shards] = time.perf_counter() - began
        written = [json.dumps(record, ensure_ascii=False) for record in report.messages]
        same = "" if first is None else ", " + _compared(written, first)
        first = first if first is not None else written
        statuses = Counter(r["status"] + (f":{r['reason']}" if r["reason"] else "") for r in report.messages)
        print(
            f"journeys simulate, {shards} shard{'s' if shards > 1 else ''}: {runs[shards]:.1f} s wall, "
            f"{len(events) / runs[shards]:.0f} events/s, {len(report.messages)} records{same} {dict(statuses)}"
        )
        if shards == shard_counts[0]:
            for line in report.summary_lines()[1:]:
                print("  " + line)

    raw_seconds = None
    if not args.no_raw:
        raw_seconds, starts = await raw_temporal(definitions, people, events)
        print(
            f"raw Temporal, same server kind, same dispatches, one process: {raw_seconds:.1f} s wall "
            f"({starts} workflow starts)"
        )
    for shards, seconds in runs.items():
        line = f"{shards} shard{'s' if shards > 1 else ''}:"
        if raw_seconds is not None:
            line += f" ratio journeys/raw {seconds / raw_seconds:.2f}"
        if 1 in runs and shards > 1:
            speedup = runs[1] / seconds
            line += f", speed-up over 1 shard {speedup:.2f}x, {speedup / shards:.2f}x per shard"
        print(line)
    print(f"load average after: {_load()}")
    print(
        f"peak RSS: {peak_rss_mb():.0f} MiB this process, "
        f"{peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MiB the largest child (a shard or a test server)"
    )


def _compared(written: list[str], first: list[str]) -> str:
    """Whether a run wrote the first run's records, byte for byte; if not, how many records each
    has that the other lacks, and how many of those differ only in `at` (the test server's clock
    runs on in real time while a worker handles a burst: docs/journeys.md)."""
    if written == first:
        return "byte for byte the records of the first run"
    extra, missing = Counter(written) - Counter(first), Counter(first) - Counter(written)

    def timeless(lines: Counter) -> Counter:
        return Counter(json.dumps({**json.loads(line), "at": None}, ensure_ascii=False) for line in lines.elements())

    only_at = sum((timeless(extra) & timeless(missing)).values())
    return (
        f"RECORDS DIFFER from the first run: {extra.total()} records not in it, {missing.total()} of it missing, "
        f"{only_at} of these pairs differing only in `at`"
    )


def _load() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg())


if __name__ == "__main__":
    asyncio.run(main())
