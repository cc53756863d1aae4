"""`journeys simulate --shards N`: customers split across processes, each with its own test server,
worker and store, give the records, profiles and effect report of one process, byte for byte."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.records import Customer, Event
from journeys.progress import Tally
from journeys.shards import ShardFailed, default_shards, partition, run_in_processes, shard_of

JOURNEYS = str(Path(sys.executable).parent / "journeys")
START = datetime(2026, 2, 1, tzinfo=UTC)
#: Customers spread over the world, so that the sends due at a local hour (a broadcast's 10:00, the
#: end of quiet hours at 08:00) come a few at a time. The test server's clock runs on in real time
#: while a worker handles what is due at one instant: a burst that takes it more than a second
#: records the later sends a second late, on one server or several (docs/journeys.md).
ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney", "America/Chicago"]


def shop(customers: int, seed: int = 11) -> tuple[list[Customer], list[Event]]:
    """A fortnight of a small shop: orders created, paid or not, shipped, delivered, reviewed; some
    at the same instant for different customers (played together); and one order that a second
    customer's event names too, so the two must play in one shard. Times fall on odd seconds: an
    event at the very instant a timer of the same instance fires races it (on one server as on
    several), which this test is not about."""
    rng = random.Random(seed)
    people: list[Customer] = []
    events: list[Event] = []
    # Instants shared by several customers' orders, on odd seconds.
    instants = [timedelta(minutes=rng.randint(0, 12 * 24 * 60), seconds=rng.randint(1, 59)) for _ in range(customers)]
    for n in range(customers):
        cid = f"c{n}"
        people.append(
            Customer(
                customer_id=cid,
                name=f"顾客{n}",
                phone=f"+86138{n:08d}" if n % 9 else None,
                email=f"c{n}@example.com",
                birthday=f"1990-02-{n % 28 + 1:02d}" if n % 3 == 0 else None,
                timezone=ZONES[n % len(ZONES)],
                blacklisted=n % 17 == 3,
            )
        )
        for k in range(1 + n % 2):
            oid = f"o{n}-{k}"
            created = START + rng.choice(instants)

            def emit(kind: str, at: datetime, cid: str = cid, oid: str = oid, **data) -> None:
                events.append(
                    Event(
                        event_id=f"e{len(events)}", type=kind, occurred_at=at, customer_id=cid, order_id=oid, data=data
                    )
                )

            emit("order.created", created, amount=rng.randint(50, 900))
            if rng.random() < 0.2:
                continue  # left unpaid: reminders, then the pre-close reminder
            paid = created + timedelta(minutes=rng.choice([5, 30, 240]), seconds=rng.randint(1, 59))
            emit("order.paid", paid)
            shipped = paid + timedelta(hours=rng.randint(4, 30), seconds=rng.randint(1, 59))
            emit("order.shipped", shipped, carrier="顺丰", tracking_no=f"SF{oid}")
            delivered = shipped + timedelta(hours=rng.randint(30, 60), seconds=rng.randint(1, 59))
            emit("order.delivered", delivered)
            if rng.random() < 0.4:
                emit("review.posted", delivered + timedelta(hours=rng.randint(2, 90), seconds=rng.randint(1, 59)))
    # c2's order paid ten minutes later, as the payment system reports it, under c4: its payment
    # reminder (keyed by the order) hears of it only if c2 and c4 play in one shard.
    created = START + timedelta(days=1, seconds=7)
    for event_id, kind, at, cid in (("shared-1", "order.created", created, "c2"),
                                    ("shared-2", "order.paid", created + timedelta(minutes=10), "c4")):  # fmt: skip
        events.append(Event(event_id=event_id, type=kind, occurred_at=at, customer_id=cid, order_id="o-shared"))
    rng.shuffle(events)
    return people, events


def write(path: Path, items: list) -> Path:
    path.write_text("".join(item.model_dump_json() + "\n" for item in items), encoding="utf-8")
    return path


def summary(stdout: str) -> list[str]:
    """The summary's lines, but for where each run wrote and how long it took, and the Temporal
    SDK core's own warnings, which it prints to stdout with their time (the worker's start-up)."""
    return [line for line in stdout.splitlines() if not line.startswith("wrote ") and "temporalio_sdk_core" not in line]


def test_a_sharded_month_gives_the_records_of_one_process(tmp_path):
    people, events = shop(36)
    customers, events_file = write(tmp_path / "customers.jsonl", people), write(tmp_path / "events.jsonl", events)
    from definitions.loader import PACKAGE_DIR

    folder = tmp_path / "definitions"  # a broadcast in the window: its members are in every shard
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "reachable.yaml").write_text("name: reachable\nwhere: {subscribed: sms}\n")
    (folder / "broadcasts" / "lantern_care.yaml").write_text(
        "name: lantern_care\nsegment: reachable\nsend: {template: holiday_care, resource: spring_coupon}\n"
        'schedule: {local_time: "2026-02-08T10:00"}\nholdout: 0.2\n'
    )

    def run(shards: int, *flags: str) -> tuple[subprocess.CompletedProcess, Path]:
        out = tmp_path / f"shards-{shards}"
        out.mkdir()
        result = subprocess.run(
            [
                JOURNEYS, "simulate", "--customers", str(customers), "--events", str(events_file),
                "--until", "2026-02-15T00:00:00Z", "--definitions", str(folder), "--shards", str(shards),
                "--out", str(out / "messages.jsonl"), "--profiles", str(out / "profiles.jsonl"),
                "--report", str(out / "effect.json"), *flags,
            ],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result, out

    one, alone = run(1)
    two, sharded = run(2, "--progress")
    for name in ("messages.jsonl", "profiles.jsonl", "effect.json"):
        assert (sharded / name).read_bytes() == (alone / name).read_bytes(), name
    assert summary(two.stdout) == summary(one.stdout)

    records = [json.loads(line) for line in (alone / "messages.jsonl").read_text().splitlines()]
    assert len(records) > 50
    lantern = {r["customer_id"] for r in records if r["journey"] == "lantern_care"}
    assert len({shard_of(customer, 2) for customer in lantern}) == 2  # members from both shards
    assert shard_of("c2", 2) != shard_of("c4", 2)  # so the shared order made them play together
    assert not [r for r in records if r["order_id"] == "o-shared" and r["journey"] == "payment_reminder"]
    assert any(
        line.startswith("broadcast lantern_care: started 2026-02-07T20:00:00Z") for line in two.stdout.splitlines()
    )
    assert "\r" not in two.stdout and "simulated 2026-02-" in two.stderr  # the progress line: stderr only
    assert "simulated 2026-" not in one.stderr  # not a terminal, not asked


def test_customers_sharing_an_order_play_in_one_shard():
    people = [Customer(customer_id=f"c{n}") for n in range(40)]
    events = [
        Event(event_id=f"e{n}", type="order.created", occurred_at=START, customer_id=f"c{n}", order_id=f"o{n}")
        for n in range(40)
    ] + [Event(event_id="x", type="order.paid", occurred_at=START, customer_id="c7", order_id="o30")]
    parts = partition(people, events, 4)
    assert partition(people, events, 4) == parts  # stable: a hash of the ids, not Python's hash()
    assert sorted(c.customer_id for customers, _ in parts for c in customers) == sorted(p.customer_id for p in people)
    assert all(customers or not events for customers, events in parts)
    where = {c.customer_id: i for i, (customers, _) in enumerate(parts) for c in customers}
    assert where["c7"] == where["c30"]  # c7's payment names c30's order
    for i, (_, part_events) in enumerate(parts):
        assert all(where[e.customer_id] == i for e in part_events)
        assert [e.event_id for e in part_events] == [e.event_id for e in events if where[e.customer_id] == i]
    assert len({i for i, (customers, _) in enumerate(parts) if customers}) > 1


def test_the_default_is_one_shard_a_core_with_work_enough_for_each(monkeypatch):
    monkeypatch.setattr("journeys.shards.available_cores", lambda: 8)
    assert default_shards(12) == 1  # three customers' week: one process, as before
    assert default_shards(1_200) == 2
    assert default_shards(70_000) == 8
    monkeypatch.setattr("journeys.shards.available_cores", lambda: 64)
    assert default_shards(70_000) == 16


async def fail_in_shard_two(work: int, tally: Tally) -> int:
    if work == 2:
        raise RuntimeError("the store is full")
    return work


async def test_a_failing_shard_is_named_and_stops_the_run():
    with pytest.raises(ShardFailed, match=r"(?s)shard 2 of 3 failed:.*RuntimeError: the store is full"):
        await run_in_processes(fail_in_shard_two, [1, 2, 3], [0.0] * 6)
