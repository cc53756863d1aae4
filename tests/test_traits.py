"""Customer traits: the shop's own attributes, kept with the record. `customer.created` sets the
whole record, `customer.updated` merges what it names (a null deletes), conditions and templates
read `customer.traits.x` on the production worker, and the API refuses traits the store cannot
keep, naming them."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import httpx
import pytest
from pydantic import ValidationError

from core.records import MAX_TRAITS_BYTES, Customer, apply_customer_event
from definitions.loader import load_definitions
from journeys.simulate import Simulation
from store import queries
from tests.helpers import at, event
from tests.test_order_context import text_of
from triggers.api import create_app

BEGIN = at("2026-03-02 10:00+08:00")

GOLD_WELCOME = """\
name: gold_welcome
category: marketing
entry: {event: customer.updated, key: customer, reentry: once, condition: "customer.traits.member_level == 'gold'"}
steps:
  - if:
      condition: "(customer.traits.points or 0) >= 1000"
      then:
        - send: {id: welcome, channel: sms, template: gold_welcome}
"""

TEMPLATE = """\
sms:
  zh-CN: "{{ customer.name }} {{ customer.traits.member_level }} {{ customer.traits.points }}"
"""


def updated(customer_id: str = "c1", **data) -> object:
    return event("customer.updated", BEGIN, customer=customer_id, **data)


def test_created_sets_the_whole_record_and_updated_merges_what_it_names():
    created = apply_customer_event(
        None,
        event("customer.created", BEGIN, name="王芳", phone="+8613800000001", member_level="silver", points=10),
    )
    assert created.traits == {"member_level": "silver", "points": 10}
    assert (created.name, created.phone, created.tags) == ("王芳", "+8613800000001", [])

    merged = apply_customer_event(created, updated(points=1200, traits={"store": "上海一店"}, tags=["vip"]))
    assert merged.traits == {"member_level": "silver", "points": 1200, "store": "上海一店"}
    assert (merged.name, merged.phone, merged.tags) == ("王芳", "+8613800000001", ["vip"])  # untouched

    cleared = apply_customer_event(merged, updated(phone=None, store=None, traits={"points": None}))
    assert cleared.phone is None and cleared.name == "王芳"
    assert cleared.traits == {"member_level": "silver"}

    again = apply_customer_event(cleared, event("customer.created", BEGIN, name="王芳"))
    assert again.traits == {} and again.tags == []  # a new record: nothing carried over


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"member-level": "gold"}, "trait name 'member-level' must start with a letter or _"),
        ({"traits": {"1st": True}}, "trait name '1st'"),
        ({"traits": ["gold"]}, "traits"),
        ({"notes": "x" * MAX_TRAITS_BYTES}, f"at most {MAX_TRAITS_BYTES}"),
    ],
)
def test_traits_the_store_cannot_keep_are_refused_naming_them(data, problem):
    with pytest.raises(ValidationError) as raised:
        apply_customer_event(None, updated(**data))
    assert problem in str(raised.value)


async def test_the_api_answers_422_naming_the_trait(store):
    app = create_app(store)
    body = {
        "event_id": "u1",
        "type": "customer.updated",
        "occurred_at": "2026-03-02T10:00:00+08:00",
        "customer_id": "c1",
        "data": {"member-level": "gold"},
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        answer = await api.post("/events", json=body)
        good = await api.post("/events", json={**body, "event_id": "u2", "data": {"member_level": "gold"}})
    assert answer.status_code == 422
    [problem] = answer.json()["rejected"][0]["problems"]
    assert problem["field"] == "data.traits" and "member-level" in problem["message"]
    assert good.status_code == 202


async def test_conditions_and_templates_read_traits_on_the_production_worker(tmp_path, store):
    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "gold_welcome.yaml").write_text(TEMPLATE)
    (folder / "gold_welcome.yaml").write_text(textwrap.dedent(GOLD_WELCOME))
    definitions = load_definitions(folder)
    async with Simulation(definitions, store, BEGIN) as sim:
        for customer_id in ("c1", "c2", "c3"):
            await sim.emit(
                event("customer.created", BEGIN, customer=customer_id, name=f"客户{customer_id}",
                      phone=f"+861380000000{customer_id[-1]}", member_level="silver", points=1500)
            )  # fmt: skip
        later = BEGIN + timedelta(hours=3)  # 13:00 in Shanghai: outside quiet hours
        await sim.emit(event("customer.updated", later, customer="c1", member_level="gold"))  # points kept
        await sim.emit(event("customer.updated", later, customer="c2", member_level="gold", points=None))
        await sim.emit(event("customer.updated", later, customer="c3", traits={"points": 2000}))  # still silver
        await sim.advance_to(later + timedelta(minutes=5))
        records = sim.records()
        with sim.store.transaction() as session:
            kept = queries.get_customer(session, "c1")
    assert [(r["customer_id"], text_of(r["body"])) for r in records] == [("c1", "客户c1 gold 1500")]
    assert isinstance(kept, Customer) and kept.traits == {"member_level": "gold", "points": 1500}
