"""The interpreter's step kinds that the shipped journeys don't use, end to end on the
time-skipping server: wait_for with both outcomes, if/else, split with a holdout, exit, and the
after_exit re-entry rule."""

from __future__ import annotations

import pytest

from definitions.loader import load_definitions
from journeys.simulate import Simulation
from tests.helpers import at, customer, event, write_definitions

TEMPLATES = {
    name: f'sms:\n  zh-CN: "{name} {{{{ order.order_id }}}}"\n' for name in ("vip", "thanks", "nudge", "promo", "hello")
}

FOLLOW_UP = """\
name: follow_up
category: transactional
entry: {event: order.created, key: order}
exit_on: [order.cancelled]
steps:
  - if:
      condition: "event.data.amount >= 500"
      then:
        - send: {template: vip}
        - exit: vip handled by a person
  - wait_for:
      event: order.paid
      timeout: 1h
      on_event:
        - wait: 10m
        - send: {template: thanks}
      on_timeout:
        - send: {template: nudge}
  - send: {id: after_branches, template: promo, channel: sms}
"""

SPLIT = """\
name: promo_test
category: transactional
entry: {event: order.created, key: order}
steps:
  - split:
      holdout: 0.5
      branches:
        - steps: [{send: {template: promo}}]
"""

WELCOME_BACK = """\
name: welcome_back
category: transactional
entry: {event: order.paid, key: customer, reentry: after_exit}
steps:
  - send: {template: hello}
  - wait: 1d
"""


@pytest.fixture
def custom(tmp_path):
    return lambda *journeys: load_definitions(write_definitions(tmp_path / "definitions", TEMPLATES, journeys))


async def run(definitions, store, events, until):
    begin = min(e.occurred_at for e in events)
    async with Simulation(definitions, store, begin) as sim:
        await sim.create_customer(customer(), begin)
        for item in events:
            await sim.emit(item)
        await sim.advance_to(at(until))
        return sim.records()


async def test_if_else_wait_for_and_exit(custom, sqlite_store):
    definitions = custom(FOLLOW_UP)
    records = await run(
        definitions,
        sqlite_store,
        [
            event("order.created", "2026-02-02 10:00+08:00", order="big", amount=800),
            event("order.created", "2026-02-02 10:00+08:00", order="paid", amount=50),
            event("order.paid", "2026-02-02 10:30+08:00", order="paid"),
            event("order.created", "2026-02-02 10:00+08:00", order="idle", amount=50),
            event("order.created", "2026-02-02 10:00+08:00", order="gone", amount=50),
            event("order.cancelled", "2026-02-02 10:20+08:00", order="gone"),
        ],
        until="2026-02-03 00:00+08:00",
    )
    assert [(r["at"], r["order_id"], r["step"], r["status"]) for r in records] == [
        ("2026-02-02T02:00:00Z", "big", "vip", "sent"),  # then exit: nothing after
        ("2026-02-02T02:40:00Z", "paid", "thanks", "sent"),  # paid at 10:30, +10 min
        ("2026-02-02T02:40:00Z", "paid", "after_branches", "sent"),
        ("2026-02-02T03:00:00Z", "idle", "nudge", "sent"),  # no payment within the hour
        ("2026-02-02T03:00:00Z", "idle", "after_branches", "sent"),
    ]
    assert records[0]["body"] == "【Journeys】vip big"


async def test_split_holdout_is_deterministic_per_key(custom, tmp_path):
    from store.db import Store

    definitions = custom(SPLIT)
    orders = [f"o{n}" for n in range(16)]
    groups = []
    for attempt in range(2):
        store = Store(f"sqlite:///{tmp_path}/split{attempt}.db").migrate()
        records = await run(
            definitions,
            store,
            [event("order.created", "2026-02-02 10:00+08:00", order=o) for o in orders],
            until="2026-02-02 11:00+08:00",
        )
        groups.append({r["order_id"] for r in records})
        store.dispose()
    assert groups[0] == groups[1], "the same keys get the message in every run"
    assert 0 < len(groups[0]) < len(orders), "some keys are held out, some are not"


async def test_after_exit_starts_again_once_the_instance_ended(custom, sqlite_store):
    definitions = custom(WELCOME_BACK)
    records = await run(
        definitions,
        sqlite_store,
        [
            event("order.paid", "2026-02-02 10:00+08:00", order="o1"),
            event("order.paid", "2026-02-02 15:00+08:00", order="o2"),  # instance still running: ignored
            event("order.paid", "2026-02-04 10:00+08:00", order="o3"),  # ended a day after o1: starts anew
        ],
        until="2026-02-06 00:00+08:00",
    )
    assert [(r["at"], r["order_id"]) for r in records] == [
        ("2026-02-02T02:00:00Z", "o1"),
        ("2026-02-04T02:00:00Z", "o3"),
    ]


async def test_running_instances_keep_their_definition_version(custom, sqlite_store, tmp_path):
    """Editing a journey changes new instances only: a running one finishes on its own snapshot."""
    reminder = "name: nudge\ncategory: transactional\nentry: {event: order.created, key: order}\nsteps:\n  - wait: 1h\n  - send: {template: nudge}\n"
    old = custom(reminder)
    (tmp_path / "definitions" / "templates" / "nudge.yaml").write_text(
        'sms:\n  zh-CN: "new wording {{ order.order_id }}"\n'
    )
    new = load_definitions(tmp_path / "definitions")
    assert old["nudge"].version != new["nudge"].version
    begin = at("2026-02-02 10:00+08:00")
    async with Simulation(old, sqlite_store, begin) as sim:
        await sim.create_customer(customer(), begin)
        await sim.emit(event("order.created", begin, order="before"))
        sim.router.definitions = new  # a deploy while "before" is waiting
        await sim.emit(event("order.created", "2026-02-02 10:30+08:00", order="after"))
        await sim.advance_to(at("2026-02-02 12:00+08:00"))
        records = sim.records()
    assert [(r["order_id"], r["body"]) for r in records] == [
        ("before", "【Journeys】nudge before"),
        ("after", "【Journeys】new wording after"),
    ]


FIRST_BIG_ORDER = """\
name: first_big_order
category: transactional
entry: {event: order.paid, key: customer, condition: "event.data.amount >= 500"}
steps:
  - send: {template: vip}
"""


async def test_entry_condition_is_checked_before_an_instance_starts(custom, sqlite_store):
    """A once-per-customer journey whose condition fails on the first event still starts on a later
    one that meets it: a failed condition uses up nothing."""
    definitions = custom(FIRST_BIG_ORDER)
    records = await run(
        definitions,
        sqlite_store,
        [
            event("order.paid", "2026-02-02 10:00+08:00", order="small", amount=80),
            event("order.paid", "2026-02-03 10:00+08:00", order="big", amount=800),
            event("order.paid", "2026-02-04 10:00+08:00", order="bigger", amount=900),  # once: no second
        ],
        until="2026-02-05 00:00+08:00",
    )
    assert [(r["order_id"], r["at"]) for r in records] == [("big", "2026-02-03T02:00:00Z")]


async def test_removing_a_birthday_cancels_the_greeting(definitions, sqlite_store):
    begin = at("2026-03-01 12:00+08:00")
    async with Simulation(definitions, sqlite_store, begin) as sim:
        await sim.create_customer(customer(birthday="1990-06-10"), begin)
        gone = customer(birthday=None).model_dump(mode="json", exclude={"customer_id"})
        results = await sim.emit(event("customer.updated", "2026-04-01 12:00+08:00", **gone))
        assert [(r.dispatch.journey, r.outcome) for r in results] == [("birthday_greeting", "signalled")]
        await sim.advance_to(at("2026-07-01 00:00+08:00"))
        assert sim.records() == []
