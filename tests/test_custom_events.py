"""The shop's own event types, declared in `definitions/events.yaml`: the API takes them after
checking their data, journeys start, wait and exit on them, and `journeys validate` names any
type a journey uses that nobody declared."""

from __future__ import annotations

import shutil
import textwrap
from datetime import timedelta

import httpx

from definitions.loader import PACKAGE_DIR, check_definitions, load_definitions
from journeys.simulate import Simulation
from tests.helpers import at, customer, event
from tests.test_order_context import text_of
from triggers.api import create_app

BEGIN = at("2026-03-02 12:00+08:00")

EVENTS = """\
events:
  - name: cart.abandoned
    key: customer
    schema:
      type: object
      required: [cart_value]
      properties:
        cart_value: {type: number, minimum: 0}
  - name: delivery.delayed
    key: order
    schema: {type: object, required: [days], properties: {days: {type: integer, minimum: 1}}}
"""

CART_RECOVERY = """\
name: cart_recovery
category: marketing
entry: {event: cart.abandoned, key: customer, reentry: after_exit, condition: "event.data.cart_value >= 100"}
exit_on: [order.created]
goal: order.created
steps:
  - wait: 1h
  - send: {id: nudge, channel: sms, template: cart_recovery}
"""

DELAY_APOLOGY = """\
name: delay_apology
category: transactional
entry: {event: order.shipped, key: order}
steps:
  - wait_for:
      event: delivery.delayed
      timeout: 5d
      on_event:
        - send: {id: sorry, channel: sms, template: delay_apology}
"""

TEMPLATES = {
    "cart_recovery": 'sms:\n  zh-CN: "购物车里还有{{ event.data.cart_value }}元的宝贝"\n',
    "delay_apology": 'sms:\n  zh-CN: "订单{{ order.order_id }}晚到{{ order.days }}天, 抱歉"\n',
}


def folder_with(tmp_path, events: str = EVENTS, **journeys: str):
    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True)
    (folder / "events.yaml").write_text(events)
    for name, text in TEMPLATES.items():
        (folder / "templates" / f"{name}.yaml").write_text(text)
    for name, text in journeys.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


def body(event_id: str, type: str, data: dict, order_id: str | None = None) -> dict:
    found = {"event_id": event_id, "type": type, "occurred_at": "2026-03-02T12:00:00+08:00", "customer_id": "c1",
             "data": data}  # fmt: skip
    return {**found, "order_id": order_id} if order_id else found


async def test_the_api_takes_declared_types_after_checking_their_data(tmp_path, store):
    definitions = load_definitions(folder_with(tmp_path, cart_recovery=CART_RECOVERY))
    app = create_app(store, definitions=definitions)
    batch = [
        body("ok", "cart.abandoned", {"cart_value": 150}),
        body("neg", "cart.abandoned", {"cart_value": -1}),
        body("none", "cart.abandoned", {}),
        body("noorder", "delivery.delayed", {"days": 2}),
        body("typo", "cart.abandonned", {"cart_value": 1}),
        body("late", "delivery.delayed", {"days": 2}, order_id="o1"),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        answer = await api.post("/events", json=batch)
    assert answer.status_code == 202
    assert answer.json()["accepted"] == ["ok", "late"]
    problems = {r["event_id"]: r["problems"] for r in answer.json()["rejected"]}
    assert problems["neg"] == [{"field": "data.cart_value", "message": "-1 is less than the minimum of 0"}]
    assert problems["none"] == [{"field": "data", "message": "'cart_value' is a required property"}]
    assert problems["noorder"] == [{"field": "order_id", "message": "order_id is required for delivery.delayed events"}]
    [typo] = problems["typo"]
    assert typo["field"] == "type" and typo["message"].startswith("'cart.abandonned' is not a known event type; known:")
    assert typo["message"].endswith("sms.replied, message.clicked, cart.abandoned, delivery.delayed")


def test_validate_names_undeclared_types_and_bad_declarations(tmp_path):
    journey = CART_RECOVERY.replace("exit_on: [order.created]", "exit_on: [order.created, cart.recovered]")
    journey = journey.replace("key: customer,", "key: order,")
    bad_events = (
        EVENTS + "  - name: order.paid\n    key: order\n  - name: x.y\n    key: customer\n    schema: {type: 7}\n"
    )
    folder = folder_with(tmp_path, bad_events, cart_recovery=journey)
    _, problems = check_definitions(folder)
    assert problems == [
        f"{folder}/events.yaml:12: events[2].name: 'order.paid': Value error, 'order.paid' is a built-in event "
        "type; declare only the shop's own",
        f"{folder}/events.yaml:16: events[3].schema: Value error, not a valid JSON Schema at type: 7 is not valid "
        "under any of the given schemas",
        f"{folder}/cart_recovery.yaml:3: entry.event: cart.abandoned carries no order_id, so it cannot reach a "
        "journey keyed by order",
        f"{folder}/cart_recovery.yaml:4: exit_on[1]: 'cart.recovered' is not a known event type (declare it in "
        "events.yaml); known: order.created, order.paid, order.cancelled, order.closed, order.shipped, "
        "order.delivered, order.confirmed, order.refunded, review.posted, customer.created, customer.updated, "
        "points.earned, points.expiring, member.tier_changed, member.card_expiring, lifecycle.changed, "
        "sms.replied, message.clicked, cart.abandoned, delivery.delayed",
    ]


def test_the_shipped_declarations_load():
    definitions = load_definitions(PACKAGE_DIR)
    assert {"cart.abandoned", "subscription.expiring"} <= set(definitions.events.declared)


async def test_journeys_start_wait_and_exit_on_declared_types_on_the_production_worker(tmp_path, store):
    definitions = load_definitions(folder_with(tmp_path, cart_recovery=CART_RECOVERY, delay_apology=DELAY_APOLOGY))
    async with Simulation(definitions, store, BEGIN) as sim:
        for n, who in enumerate(("keen", "buyer", "small"), start=1):
            await sim.create_customer(customer(who, phone=f"+8613800000{n:03d}"), BEGIN)
        await sim.emit(event("cart.abandoned", BEGIN, customer="keen", cart_value=150))
        await sim.emit(event("cart.abandoned", BEGIN, customer="buyer", cart_value=300))
        await sim.emit(event("order.created", BEGIN + timedelta(minutes=20), customer="buyer", order="b1", amount=300))
        await sim.emit(event("cart.abandoned", BEGIN, customer="small", cart_value=50))  # below the condition
        await sim.emit(event("order.shipped", BEGIN, customer="keen", order="k1"))
        await sim.emit(event("delivery.delayed", BEGIN + timedelta(days=1), customer="keen", order="k1", days=2))
        await sim.advance_to(BEGIN + timedelta(days=2))
        records = sorted((r["journey"], r["customer_id"], r["status"], text_of(r["body"])) for r in sim.records())
    assert records == [
        ("cart_recovery", "keen", "sent", "购物车里还有150元的宝贝"),
        ("delay_apology", "keen", "sent", "订单k1晚到2天, 抱歉"),
    ]


def test_a_definitions_folder_without_events_yaml_knows_the_built_in_types(tmp_path):
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "events.yaml").unlink()
    loaded, problems = check_definitions(folder)
    # The shipped coupon is redeemed by a declared event: without the declaration, that is the problem.
    assert problems == [
        f"{folder / 'resources.yaml'}:9: resources.spring_coupon.redeemed_by: 'coupon.redeemed' is not a known "
        "event type (declare it in events.yaml)",
        f"{folder / 'broadcasts' / 'spring_festival_care.yaml'}:8: send.resource: unknown resource 'spring_coupon' "
        "(declare it in resources.yaml); declared: none",
    ]
    (folder / "resources.yaml").unlink()
    shutil.rmtree(folder / "broadcasts")
    loaded, problems = check_definitions(folder)
    assert problems == [] and loaded.events.own() == []
