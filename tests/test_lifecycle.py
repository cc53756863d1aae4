"""The customer's lifecycle stage (客户生命周期, core/lifecycle.py) as a CRM team reads it: each
stage at each window's boundary (exactly 90, 180 and 365 days, and a second past), refunded
purchases excluded; the windows edited in rfm.yaml; segments (`lifecycle: [churned, sleeping]`)
agreeing with the rule on SQLite and PostgreSQL; `customer.lifecycle` in a journey's condition
and template through preview; and `journeys simulate --profiles` over a two-year history."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.lifecycle import STAGES, LifecycleTable, stage
from core.records import apply_customer_event
from core.rfm import DEFAULT_TABLE, Purchase, RfmTable
from definitions.loader import check_definitions, load_definitions
from store import queries
from store.segments import count_members, members
from tests.helpers import at, customer, event, summary, write_definitions
from tests.test_resources import copy_definitions
from tests.test_segments import segment
from views.preview import preview

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
JOURNEYS = str(Path(sys.executable).parent / "journeys")


def bought(*ages: timedelta, refunded: dict[int, timedelta] | None = None) -> list[Purchase]:
    """Purchases first paid `age` before T; `refunded` maps an index to the refund's age."""
    refunded = refunded or {}
    return [
        Purchase(order_id=f"o{i}", paid_at=T - age, refunded_at=(T - refunded[i]) if i in refunded else None)
        for i, age in enumerate(ages)
    ]


@pytest.mark.parametrize(
    ("purchases", "expected"),
    [
        (bought(), "prospect"),
        (bought(0 * DAY), "new_once"),
        (bought(90 * DAY), "new_once"),  # exactly 90 days ago is within 90 days
        (bought(90 * DAY + SECOND), "churned"),
        (bought(1 * DAY, 90 * DAY), "new_repeat"),
        (bought(1 * DAY, 90 * DAY + SECOND), "old_once"),  # the first is more than 90 days ago
        (bought(90 * DAY, 90 * DAY + SECOND), "old_once"),
        (bought(5 * DAY, 60 * DAY, 700 * DAY), "old_repeat"),
        (bought(180 * DAY), "churned"),
        (bought(180 * DAY + SECOND), "sleeping"),
        (bought(180 * DAY, 500 * DAY), "churned"),  # the last purchase decides
        (bought(365 * DAY), "sleeping"),
        (bought(365 * DAY + SECOND), "silent"),
        (bought(365 * DAY + SECOND, 700 * DAY), "silent"),
        (bought(-SECOND), "prospect"),  # paid after the moment read: not yet a purchase
        (bought(-SECOND, 100 * DAY), "churned"),
    ],
)
def test_each_stage_at_each_boundary(purchases, expected):
    assert stage(purchases, T) == expected


@pytest.mark.parametrize(
    ("purchases", "expected"),
    [
        (bought(10 * DAY, refunded={0: 5 * DAY}), "prospect"),  # refunded: no purchase at all
        (bought(10 * DAY, refunded={0: -DAY}), "new_once"),  # refunded after T: still held at T
        (bought(10 * DAY, refunded={0: 0 * DAY}), "prospect"),  # refunded at T exactly: taken back
        (bought(10 * DAY, 100 * DAY, refunded={0: 2 * DAY}), "churned"),
        # A refunded first purchase is no first purchase: the customer is new, not old.
        (bought(30 * DAY, 120 * DAY, refunded={1: 110 * DAY}), "new_once"),
        (bought(10 * DAY, 20 * DAY, 500 * DAY, refunded={1: 1 * DAY}), "old_once"),
        (bought(200 * DAY, 400 * DAY, refunded={0: 199 * DAY}), "silent"),
    ],
)
def test_refunded_purchases_are_excluded(purchases, expected):
    assert stage(purchases, T) == expected


def test_the_windows_are_the_shops():
    table = LifecycleTable(active_days=30, churned_days=60, sleeping_days=730)
    assert stage(bought(30 * DAY), T, table) == "new_once"
    assert stage(bought(45 * DAY), T, table) == "churned"
    assert stage(bought(60 * DAY + SECOND), T, table) == "sleeping"
    assert stage(bought(700 * DAY), T, table) == "sleeping"
    assert stage(bought(730 * DAY + SECOND), T, table) == "silent"
    with pytest.raises(ValidationError, match="must rise"):
        LifecycleTable(active_days=200, churned_days=180)


def test_rfm_yaml_carries_the_windows_and_names_a_bad_line(tmp_path):
    folder = copy_definitions(tmp_path)
    text = (folder / "rfm.yaml").read_text()
    assert "lifecycle:" in text  # the shipped file shows the defaults
    (folder / "rfm.yaml").write_text(text.replace("churned_days: 180", "churned_days: 60"))
    _, problems = check_definitions(folder)
    [line] = [p for p in problems if "rfm.yaml" in p]
    number = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("lifecycle:"))
    assert line.startswith(f"{folder / 'rfm.yaml'}:{number}: lifecycle") and "must rise" in line
    (folder / "rfm.yaml").write_text(text.replace("churned_days: 180", "churned_days: 200"))
    assert check_definitions(folder)[1] == []
    assert load_definitions(folder).rfm.lifecycle.churned_days == 200
    (folder / "segments" / "odd.yaml").write_text("name: odd\nwhere: {lifecycle: [churned, lapsed]}\n")
    [problem] = check_definitions(folder)[1]
    assert "segments/odd.yaml" in problem and "lapsed" in problem


# ---------------------------------------------------------------------------------------------
# Segments in SQL, on both databases

#: Ages in days: each window's boundary, a second either side, and ages between.
AGES = [0, 1, 45, 90, 90 + 1 / 86400, 89.99999, 120, 180, 180 + 1 / 86400, 250, 365, 365 + 1 / 86400, 364.9, 500, 720]


def add_customer(session, customer_id: str) -> None:
    created = event("customer.created", T - timedelta(days=900), customer=customer_id, name="顾客")
    queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")


def seed_population(store, customers: int = 80) -> None:
    """Customers with 0 to 5 orders: paid at boundary ages, some refunded before or after T, some
    never paid, some paid twice (the first payment counts)."""
    rng = random.Random(27)
    with store.transaction() as session:
        for n in range(customers):
            customer_id = f"c{n:03d}"
            add_customer(session, customer_id)
            for k in range(rng.choice([0, 1, 1, 2, 2, 3, 5])):
                order = f"{customer_id}-o{k}"
                paid_at = T - timedelta(days=rng.choice(AGES))
                items = [event("order.created", paid_at - timedelta(hours=2), customer=customer_id, order=order,
                               amount=rng.choice([0, 99, "129.00"]))]  # fmt: skip
                if rng.random() < 0.9:
                    items.append(event("order.paid", paid_at, customer=customer_id, order=order))
                    if rng.random() < 0.1:
                        items.append(event("order.paid", paid_at + 3 * DAY, customer=customer_id, order=order))
                if rng.random() < 0.2:
                    refund_at = paid_at + timedelta(days=rng.choice([0.5, 30, 400]))
                    items.append(event("order.refunded", refund_at, customer=customer_id, order=order, amount=99))
                for item in items:
                    queries.store_event(session, item, item.occurred_at)


def test_segments_agree_with_the_rule_for_every_customer(store):
    seed_population(store)
    with store.transaction() as session:
        expected = {
            f"c{n:03d}": stage(queries.purchases_of(session, f"c{n:03d}", T), T, DEFAULT_TABLE.lifecycle)
            for n in range(80)
        }
        found: dict[str, list[str]] = {}
        for name in STAGES:
            for member in members(session, segment({"lifecycle": name}), T, DEFAULT_TABLE, limit=10_000):
                found.setdefault(member.customer_id, []).append(name)
        lapsed = count_members(session, segment({"lifecycle": ["churned", "sleeping"]}), T, DEFAULT_TABLE)
        not_lapsed = count_members(session, segment({"not": {"lifecycle": ["churned", "sleeping"]}}), T, DEFAULT_TABLE)
    assert {customer_id: [name] for customer_id, name in expected.items()} == found  # one stage each, the rule's
    assert set(expected.values()) == set(STAGES)  # the population covers every stage
    assert lapsed == sum(1 for name in expected.values() if name in ("churned", "sleeping"))
    assert lapsed + not_lapsed == 80


def test_a_segment_reads_the_shops_windows(store):
    with store.transaction() as session:
        add_customer(session, "a")
        for item in (event("order.paid", T - 45 * DAY, customer="a", order="a1"),):
            queries.store_event(session, item, item.occurred_at)
        table = RfmTable(lifecycle=LifecycleTable(active_days=30, churned_days=60, sleeping_days=90))
        churned = segment({"lifecycle": "churned"})
        assert count_members(session, churned, T, table) == 1
        assert count_members(session, churned, T, DEFAULT_TABLE) == 0  # 45 days is within 90: new_once


# ---------------------------------------------------------------------------------------------
# customer.lifecycle in a journey, through preview


def test_a_journeys_condition_and_template_read_the_stage_through_preview(store, tmp_path):
    folder = copy_definitions(tmp_path)
    journey = folder / "revisit_28d.yaml"
    journey.write_text(
        journey.read_text().replace(
            "steps:\n", "vars:\n  lapsed: \"customer.lifecycle in ['churned', 'sleeping']\"\nsteps:\n"
        )
    )
    template = folder / "templates" / "revisit_28d.yaml"
    template.write_text(
        template.read_text().replace(
            "上次的宝贝用得怎么样？店里上了新品",
            "{{ '好久不见！' if vars.lapsed else '' }}({{ customer.lifecycle }})店里上了新品",
        )
    )
    definitions = load_definitions(folder)
    with store.transaction() as session:
        queries.upsert_customer(session, customer(), T, "CN")
        for item in (
            event("order.created", T - 400 * DAY, order="o1", amount=99),
            event("order.paid", T - 400 * DAY, order="o1"),
            event("order.created", T - 120 * DAY, order="o2", amount=129),
            event("order.paid", T - 120 * DAY, order="o2"),
            event("order.created", T - 20 * DAY, order="o3", amount=59),
            event("order.paid", T - 20 * DAY, order="o3"),
            event("order.refunded", T - 19 * DAY, order="o3", amount=59),
        ):
            queries.store_event(session, item, item.occurred_at)

    def body(now: datetime) -> str:
        found = preview(definitions, store, journey="revisit_28d", step="revisit", customer_id="c1",
                        shop_name="小店", default_region="CN", now=now)  # fmt: skip
        return found.channels[0].body

    # o3 was refunded: the last purchase is o2, 120 days before T.
    assert "好久不见！(churned)店里上了新品" in body(T)
    assert "好久不见！(sleeping)店里上了新品" in body(T + 61 * DAY)  # 181 days
    assert "(silent)店里上了新品" in body(T + 246 * DAY) and "好久不见" not in body(T + 246 * DAY)
    assert "(old_once)店里上了新品" in body(T - 100 * DAY)  # o2 20 days old, o1 300 days old


# ---------------------------------------------------------------------------------------------
# journeys simulate --profiles over a two-year history


def _ages(rng: random.Random, name: str) -> list[timedelta]:
    """Purchase ages that make a customer `name` by construction (the table in the issue), with
    each boundary among the choices."""
    recent = [0 * DAY, 1 * DAY, 30 * DAY, 89 * DAY, 90 * DAY]
    older = [90 * DAY + SECOND, 120 * DAY, 300 * DAY, 400 * DAY, 700 * DAY]
    if name == "prospect":
        return []
    if name == "new_once":
        return [rng.choice(recent)]
    if name == "new_repeat":
        return rng.sample(recent, rng.randint(2, 4))
    if name == "old_once":
        return [rng.choice(recent), *rng.sample(older, rng.randint(1, 3))]
    if name == "old_repeat":
        return [*rng.sample(recent, rng.randint(2, 3)), *rng.sample(older, rng.randint(1, 3))]
    last = {"churned": [90 * DAY + SECOND, 150 * DAY, 180 * DAY], "sleeping": [180 * DAY + SECOND, 300 * DAY, 365 * DAY],
            "silent": [365 * DAY + SECOND, 500 * DAY, 720 * DAY]}[name]  # fmt: skip
    first = rng.choice(last)
    return [
        first,
        *[first + timedelta(days=rng.randint(1, max(1, 730 - first.days))) for _ in range(rng.randint(0, 2))],
    ]


CARE = """\
name: care
category: transactional
entry: {event: order.delivered, key: order}
steps:
  - send: {template: care}
"""


def test_simulate_profiles_give_each_customers_stage_over_two_years(tmp_path):
    rng = random.Random(7)
    expected: dict[str, str] = {}
    customers, events = [], []
    for name in STAGES:
        for k in range(3):
            customer_id = f"{name}-{k}"
            expected[customer_id] = name
            customers.append({"customer_id": customer_id, "name": "张伟", "timezone": "Asia/Shanghai"})
            for n, age in enumerate(_ages(rng, name)):
                order, paid = f"{customer_id}-o{n}", T - age
                events.append({"event_id": f"{order}-c", "type": "order.created", "customer_id": customer_id,
                               "order_id": order, "occurred_at": (paid - 600 * SECOND).isoformat(),
                               "data": {"amount": "129.00"}})  # fmt: skip
                events.append({"event_id": f"{order}-p", "type": "order.paid", "customer_id": customer_id,
                               "order_id": order, "occurred_at": paid.isoformat()})  # fmt: skip
            # Noise that changes no stage: an order never paid, and one paid and refunded (2 to 700 days ago).
            noise, paid = f"{customer_id}-x", T - timedelta(days=rng.randint(2, 700))
            events.append({"event_id": f"{noise}-c", "type": "order.created", "customer_id": customer_id,
                           "order_id": f"{noise}0", "occurred_at": (T - 3 * DAY).isoformat()})  # fmt: skip
            events.append({"event_id": f"{noise}-p", "type": "order.paid", "customer_id": customer_id,
                           "order_id": f"{noise}1", "occurred_at": paid.isoformat()})  # fmt: skip
            events.append({"event_id": f"{noise}-r", "type": "order.refunded", "customer_id": customer_id,
                           "order_id": f"{noise}1", "occurred_at": (paid + DAY).isoformat(),
                           "data": {"amount": 10}})  # fmt: skip
    # A journey the history never starts (it holds no delivery): the profiles are the point.
    folder = write_definitions(tmp_path / "definitions", {"care": 'sms:\n  zh-CN: "签收了"\n'}, [CARE])
    (folder / "segments").mkdir(parents=True)
    (folder / "segments" / "lapsed.yaml").write_text("name: lapsed\nwhere: {lifecycle: [churned, sleeping]}\n")
    (tmp_path / "customers.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in customers))
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
    profiles = tmp_path / "profiles.jsonl"
    result = subprocess.run(
        [JOURNEYS, "simulate", "--customers", str(tmp_path / "customers.jsonl"), "--events",
         str(tmp_path / "events.jsonl"), "--until", T.isoformat(), "--out", str(tmp_path / "m.jsonl"),
         "--definitions", str(folder), "--profiles", str(profiles)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = {row["customer_id"]: row for row in map(json.loads, profiles.read_text().splitlines())}
    assert {customer_id: row["lifecycle"] for customer_id, row in found.items()} == expected
    assert {customer_id for customer_id, row in found.items() if row["segments"] == ["lapsed"]} == {
        customer_id for customer_id, name in expected.items() if name in ("churned", "sleeping")
    }


# ---------------------------------------------------------------------------------------------
# customer.lifecycle in a running journey, end to end on the time-skipping server

LAPSE_WATCH = """\
name: lapse_watch
category: transactional
entry: {event: order.paid, key: order, condition: "customer.lifecycle in ['old_once', 'old_repeat']"}
steps:
  - wait: 100d
  - if:
      condition: "customer.lifecycle == 'churned'"
      then:
        - send: {template: lapse_churned}
      else:
        - send: {template: lapse_other}
"""
LAPSE_TEMPLATES = {
    "lapse_churned": 'sms:\n  zh-CN: "好久不见，{{ customer.name }}（{{ customer.lifecycle }}）"\n',
    "lapse_other": 'sms:\n  zh-CN: "{{ customer.lifecycle }}"\n',
}


async def test_entry_and_step_conditions_read_the_stage_in_a_running_journey(sqlite_store, tmp_path):
    """The router reads the stage for the entry condition; the instance reads it again 100 days
    later from the purchases it started with: an old customer's second purchase starts the watch,
    and with no purchase since they are churned. A first purchase, or one after a refunded one,
    is a new customer's: nothing starts."""
    from journeys.simulate import Simulation

    definitions = load_definitions(write_definitions(tmp_path / "definitions", LAPSE_TEMPLATES, [LAPSE_WATCH]))
    people = [customer("old"), customer("fresh", phone="+8613800000002"), customer("undone", phone="+8613800000003")]
    history = [
        event("order.paid", "2025-01-01 12:00+08:00", customer="old", order="old-1"),
        event("order.paid", "2025-01-01 12:00+08:00", customer="undone", order="undone-1"),
        event("order.refunded", "2025-01-05 12:00+08:00", customer="undone", order="undone-1", amount=10),
    ]
    now = [
        event("order.paid", "2026-02-01 12:00+08:00", customer=person.customer_id, order=f"{person.customer_id}-2")
        for person in people
    ]
    async with Simulation(definitions, sqlite_store, at("2026-02-01 00:00+08:00")) as sim:
        for person in people:
            await sim.create_customer(person, at("2024-12-01 00:00+08:00"))
        for item in history:
            await sim.emit(item, backfill=True)
        for item in now:
            await sim.emit(item)
        await sim.advance_to(at("2026-05-20 00:00+08:00"))
        records = sim.records()
    assert summary(records) == [("2026-05-12T04:00:00Z", "lapse_watch", "old-2", "sms", "sent", None)]
    assert records[0]["body"] == "【Journeys】好久不见，王芳（churned）"
