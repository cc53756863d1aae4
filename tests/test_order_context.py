"""The `order` a journey sees is the whole order: the data of every event of it so far, merged in
event-time order, with derived fields (status, the stage times, the amount). One function builds
it (core.orders.order_context), for the router's entry conditions, the workflow's conditions,
vars and templates, and `journeys preview` alike; these tests run them on the production worker
(sandboxed) and check that all three agree."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta

import pytest

from core.orders import MAX_EVENT_DATA_BYTES, MAX_ORDER_EVENTS, order_context, order_history
from definitions.loader import load_definitions
from journeys.simulate import Simulation
from tests.helpers import at, customer, event
from views.preview import preview

BEGIN = at("2026-03-02 10:00+08:00")

VIP_CARE = """\
name: vip_care_7d
title: 购买7天后关怀 (大额订单)
category: marketing
entry: {event: order.delivered, key: order, reentry: once}
exit_on: [order.refunded]
goal: order.created
steps:
  - wait: 7d
  - if:
      condition: "(order.amount or 0) >= 500"
      then:
        - send: {id: care, channel: sms, fallback: email, template: vip_care_7d}
"""

VIP_CARE_BY_ENTRY = """\
name: vip_care_entry
category: marketing
entry: {event: order.delivered, key: order, reentry: once, condition: "(order.amount or 0) >= 500"}
steps:
  - wait: 7d
  - send: {id: care, channel: sms, template: vip_care_7d}
"""

TEMPLATE = """\
sms:
  zh-CN: "{{ order.order_id }}: {{ order.amount }} {{ order.carrier or '-' }}"
email:
  zh-CN: {subject: "感谢惠顾", body: "<p>{{ order.order_id }}</p>"}
"""


def definitions_from(tmp_path, templates: dict[str, str] | None = None, **journeys: str):
    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in {"vip_care_7d": TEMPLATE, **(templates or {})}.items():
        (folder / "templates" / f"{name}.yaml").write_text(text)
    for name, text in journeys.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return load_definitions(folder)


def order_events(order: str, amount: float, start=BEGIN) -> list:
    """An order's life: created with its amount, paid (no amount given), shipped, delivered."""
    return [
        event("order.created", start, order=order, event_id=f"{order}-c", amount=amount, items=[{"sku": "tea"}]),
        event("order.paid", start + timedelta(minutes=5), order=order, event_id=f"{order}-p"),
        event("order.shipped", start + timedelta(days=1), order=order, event_id=f"{order}-s", carrier="顺丰"),
        event("order.delivered", start + timedelta(days=3), order=order, event_id=f"{order}-d"),
    ]


def text_of(sms: str) -> str:
    """An SMS's own text, without the shop's 【signature】 and a marketing opt-out line."""
    return sms.split("】", 1)[1].removesuffix(" 退订回T")


# ------------------------------------------------------------------ the function


def test_the_order_merges_every_event_in_event_time_order_with_derived_fields():
    created = event("order.created", BEGIN, order="o1", event_id="c", amount=799, coupon="NEW10", note="gift")
    paid = event("order.paid", BEGIN + timedelta(minutes=3), order="o1", event_id="p", amount=759, coupon=None)
    shipped = event("order.shipped", BEGIN + timedelta(days=1), order="o1", event_id="s", carrier="顺丰")
    review = event("review.posted", BEGIN + timedelta(days=5), order="o1", event_id="r", rating=5)
    other = event("order.created", BEGIN, order="o2", event_id="x", amount=1)
    context = order_context("o1", [review, shipped, other, paid, created])  # any order in, time order used
    assert context == {
        "amount": 759,  # paid
        "note": "gift",
        "carrier": "顺丰",
        "rating": 5,
        "order_id": "o1",
        "status": "shipped",  # a review does not change it
        "created_at": "2026-03-02T02:00:00+00:00",
        "paid_at": "2026-03-02T02:03:00+00:00",
        "shipped_at": "2026-03-03T02:00:00+00:00",
    }  # coupon: deleted by the payment's null
    assert order_context("o1", [created])["amount"] == 799  # not paid yet: the created amount
    assert order_context(None, [created]) == {}  # a customer event: no order


def test_an_instance_starts_with_a_bounded_history():
    many = [event("order.shipped", BEGIN + timedelta(minutes=n), order="o1", event_id=f"e{n}") for n in range(80)]
    huge = event("order.created", BEGIN - timedelta(days=1), order="o1", event_id="big", amount=5, blob="x" * 50_000)
    entry = event("order.delivered", BEGIN + timedelta(days=2), order="o1", event_id="d")
    kept = order_history([huge, *many, entry], until=entry)
    assert len(kept) == MAX_ORDER_EVENTS and kept[-1].event_id == "e79"
    [trimmed] = order_history([huge], until=entry)
    assert trimmed.data == {"_trimmed": True, "amount": 5}
    assert len(str(trimmed.data)) < MAX_EVENT_DATA_BYTES
    assert order_history([*many, entry], until=many[10]) == many[:10]  # up to its entry event only


# ------------------------------------------------------------------ journeys on the production worker


async def run(definitions, store, amounts: dict[str, float], days: int = 12) -> list[dict]:
    async with Simulation(definitions, store, BEGIN) as sim:
        await sim.create_customer(customer(), BEGIN)
        for order, amount in amounts.items():
            for item in order_events(order, amount):
                await sim.emit(item)
        await sim.advance_to(BEGIN + timedelta(days=days))
        return sim.records()


@pytest.mark.parametrize("journey", ["vip_care_7d", "vip_care_entry"])
async def test_a_journey_starting_at_delivery_sees_the_amount_given_at_creation(journey, tmp_path, sqlite_store):
    """The issue's marketer journey: 购买7天后关怀 for orders of 500 or more. `order.delivered`
    carries no amount; the order created with 499, 500 and 799 sends for exactly the last two,
    by a condition in the steps and by an entry condition alike."""
    text = {"vip_care_7d": VIP_CARE, "vip_care_entry": VIP_CARE_BY_ENTRY}[journey]
    definitions = definitions_from(tmp_path, **{journey: text})
    records = await run(definitions, sqlite_store, {"o499": 499, "o500": 500, "o799": 799})
    sent = sorted((r["order_id"], r["status"], text_of(r["body"])) for r in records if r["journey"] == journey)
    assert sent == [("o500", "sent", "o500: 500 顺丰"), ("o799", "sent", "o799: 799 顺丰")]
    due = BEGIN + timedelta(days=3 + 7)  # delivered, then 7 days
    assert {datetime.fromisoformat(r["at"]) for r in records if r["journey"] == journey} == {due}


STAGES = ["order.created", "order.paid", "order.shipped", "order.delivered"]


def echo_journey(stage: str, expected: dict) -> str:
    """A journey starting at `stage` whose entry condition holds only if the router sees exactly
    `expected`, and whose message prints what the workflow sees."""
    checks = " and ".join(
        f"order.{name} == {value!r}" if value is not None else f"(order.{name} | default(none)) is none"
        for name, value in expected.items()
    )
    return f"""\
name: echo_{stage.split(".")[1]}
category: transactional
entry: {{event: {stage}, key: order, condition: "{checks}"}}
steps:
  - send: {{id: echo, channel: sms, template: echo}}
"""


FIELDS = ("status", "amount", "carrier", "created_at", "paid_at", "shipped_at", "delivered_at")
ECHO = (
    'sms:\n  zh-CN: "'
    + "|".join(f"{{{{ order.{f} | default('-') }}}}" for f in FIELDS)
    + '|{{ order.items[0].sku }}"\n'
)


async def test_preview_the_workflow_and_the_router_agree_at_every_stage(tmp_path, sqlite_store):
    events = order_events("o1", 88)
    expected = {stage: order_context("o1", events[: n + 1]) for n, stage in enumerate(STAGES)}
    journeys = {}
    for stage in STAGES:
        fields = expected[stage]
        journeys[f"echo_{stage.split('.')[1]}"] = echo_journey(
            stage, {"status": fields["status"], "amount": fields["amount"], "carrier": fields.get("carrier")}
        )
    definitions = definitions_from(tmp_path, {"echo": ECHO}, **journeys)

    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await sim.create_customer(customer(), BEGIN)
        shown = {}
        for n, stage in enumerate(STAGES):
            await sim.emit(events[n])
            await sim.advance_to(events[n].occurred_at + timedelta(minutes=1))
            name = f"echo_{stage.split('.')[1]}"
            shown[stage] = preview(
                definitions,
                sim.store,
                journey=name,
                step="echo",
                customer_id="c1",
                order_id="o1",
                shop_name="Journeys",
                default_region="CN",
            )
        records = {r["journey"]: r for r in sim.records()}

    for stage in STAGES:
        fields = expected[stage]
        want = "|".join(str(fields.get(name, "-")) for name in FIELDS) + "|tea"
        name = f"echo_{stage.split('.')[1]}"
        assert records[name]["status"] == "sent", (stage, records.get(name))  # the router's condition held
        assert text_of(records[name]["body"]) == want, stage  # the workflow's order
        [sms] = [c for c in shown[stage].channels if c.channel == "sms"]
        # Preview reads the log now: at each stage the order as far as it has gone.
        assert text_of(sms.body) == want, stage


def test_a_starting_instance_gets_the_orders_later_logged_events_and_its_history(sqlite_store, definitions):
    """A payment logged before the order's creation was dispatched reaches both payment
    reminders as a prior event; the shipment before is history, not a prior event."""
    from store import queries
    from triggers.router import Router, plan

    earlier = event("order.shipped", BEGIN - timedelta(hours=1), order="o1", event_id="s", carrier="顺丰")
    created = event("order.created", BEGIN, order="o1", event_id="c", amount=99)
    paid = event("order.paid", BEGIN + timedelta(minutes=3), order="o1", event_id="p")
    other = event("order.paid", BEGIN + timedelta(minutes=3), order="o2", event_id="x")
    with sqlite_store.transaction() as session:
        for item in (earlier, created, paid, other):
            queries.store_event(session, item, BEGIN)
    router = Router(None, definitions, sqlite_store, "q", default_region="CN")  # type: ignore[arg-type]
    starts = [d for d in plan(created, definitions) if d.action == "start"]
    _customer, prior, history, _purchases, _products = router._prepare(created, starts)
    assert {journey: [e.event_id for e in events] for journey, events in prior.items()} == {
        "payment_reminder": ["p"],
        "pre_close_reminder": ["p"],
    }
    assert [e.event_id for e in history] == ["s"]
