"""loyalty.yaml as a marketer edits it: the shipped file loads, its JSON Schema (for editors) is
current, and every mistake is named at its file and line by `journeys validate`; the engine's own
events are known to journeys but refused from outside."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import jsonschema
import pytest
import yaml

from core.loyalty import NO_LOYALTY
from definitions.loader import PACKAGE_DIR, DefinitionsError, check_definitions, load_loyalty, loyalty_json_schema
from tests.test_up import JOURNEYS, with_checkout
from triggers.api import create_app


def test_the_shipped_programme_is_the_practices_table():
    loyalty = load_loyalty(PACKAGE_DIR)
    assert loyalty.points is not None and loyalty.tiers is not None
    assert [(t.name, t.title, t.min.orders, t.min.spend) for t in loyalty.tiers.levels] == [
        ("normal", "普通会员", 1, 3000),
        ("senior", "高级会员", 3, 10000),
        ("vip", "VIP会员", 5, 20000),
    ]
    assert (loyalty.tiers.window_days, loyalty.tiers.validity_days, loyalty.tiers.downgrade) == (365, 365, "one_level")
    assert loyalty.tiers.notice_days == [7, 1]
    assert loyalty.points.expiry.end_of_next_year and loyalty.points.expiry.notice_days == [30]


def test_the_loyalty_schema_file_is_current_and_checks_the_shipped_file():
    on_disk = json.loads((PACKAGE_DIR / "loyalty.schema.json").read_text())
    assert on_disk == loyalty_json_schema(), "run: .venv/bin/journeys schema loyalty > definitions/loyalty.schema.json"
    text = (PACKAGE_DIR / "loyalty.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=loyalty.schema.json")
    jsonschema.validate(yaml.safe_load(text), on_disk)


BAD = """\
zone: Asia/Beijing
points:
  earning: {points: 1, per: 0, counted_at: shipped}
  bonuses:
    - {name: review, event: review.postd, points: 20}
    - {name: card, event: points.earned, points: 5}
    - {name: cart, event: cart.abandoned, points: 5, once_per: order}
  multipliers:
    - {name: double_11, factor: 2, start: "2026-11-12T00:00:00+08:00", end: "2026-11-01T00:00:00+08:00"}
    - {name: vip_days, factor: 3, start: "2026-11-01T00:00:00+08:00", end: "2026-11-12T00:00:00+08:00", segment: vips}
  expiry: {rolling_days: 365, end_of_next_year: true}
tiers:
  levels:
    - {name: gold, min: {orders: 1}}
    - {name: gold, min: {orders: 3}}
blacklists:
  members: {segments: [nobody]}
"""


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


def test_validate_names_each_mistake_at_its_line(folder):
    path = folder / "loyalty.yaml"
    path.write_text(BAD)
    _, problems = check_definitions(folder)
    mine = [p.removeprefix(f"{path}:") for p in problems if str(path) in p]
    # pydantic's problems first (the model refuses the file whole), each at its line.
    assert mine == [
        "3: points.earning.per: 0: Input should be greater than 0",
        "3: points.earning.counted_at: 'shipped' is not one of paid, confirmed",
        "9: points.multipliers[0]: Value error, multiplier 'double_11': end must be after start",
        "11: points.expiry: Value error, expiry: give rolling_days or end_of_next_year, not both",
        "12: tiers: Value error, tiers: a level is named twice: gold, gold",
    ]
    path.write_text(BAD.split("  earning")[0].replace("points:\n", "") + GOOD_REST)
    _, problems = check_definitions(folder)
    assert [p.removeprefix(f"{path}:") for p in problems if str(path) in p] == [
        "1: zone: unknown time zone 'Asia/Beijing' (an IANA name: Asia/Shanghai)",
        "4: points.bonuses[0].event: 'review.postd' is not a known event type; known: order.created, order.paid, "
        "order.cancelled, order.closed, order.shipped, order.delivered, order.confirmed, order.refunded, "
        "review.posted, customer.created, customer.updated, points.earned, points.expiring, member.tier_changed, "
        "member.card_expiring, lifecycle.changed, sms.replied, message.clicked, cart.abandoned, coupon.redeemed, subscription.expiring",
        "5: points.bonuses[1].event: 'points.earned' is the engine's own; it earns nothing",
        "6: points.bonuses[2].once_per: cart.abandoned events name no order",
        "8: points.multipliers[0].segment: no segment 'vips'; segments: lapsing_valuable, members",
        "10: blacklists.members.segments[0]: no segment 'nobody'; segments: lapsing_valuable, members",
    ]
    with pytest.raises(DefinitionsError) as raised:
        load_loyalty(folder)
    assert len(raised.value.problems) == 6


GOOD_REST = """\
points:
  bonuses:
    - {name: review, event: review.postd, points: 20}
    - {name: card, event: points.earned, points: 5}
    - {name: cart, event: cart.abandoned, points: 5, once_per: order}
  multipliers:
    - {name: vip_days, factor: 3, start: "2026-11-01T00:00:00+08:00", end: "2026-11-12T00:00:00+08:00", segment: vips}
blacklists:
  members: {segments: [nobody]}
"""


def test_without_the_file_nobody_earns_or_holds_a_tier(folder):
    (folder / "loyalty.yaml").unlink()
    loaded, problems = check_definitions(folder)
    assert problems == [] and loaded.loyalty == NO_LOYALTY
    assert loaded.loyalty.points is None and loaded.loyalty.tiers is None


def test_journeys_validate_and_schema_on_the_command_line(folder):
    (folder / "loyalty.yaml").write_text("tiers:\n  levels: []\n")
    env = with_checkout({"JOURNEYS_DEFINITIONS": str(folder)})
    checked = subprocess.run([*JOURNEYS, "validate", str(folder)], env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode != 0
    assert (
        f"{folder / 'loyalty.yaml'}:2: tiers.levels: List should have at least 1 item"
        in checked.stdout + checked.stderr
    )
    schema = subprocess.run([*JOURNEYS, "schema", "loyalty"], env=env, capture_output=True, text=True, timeout=120)
    assert schema.returncode == 0 and json.loads(schema.stdout) == loyalty_json_schema()


async def test_the_api_refuses_the_engines_own_events_from_outside(store):
    app = create_app(store)
    batch = [
        {"event_id": "forged", "type": "member.tier_changed", "customer_id": "c1",
         "occurred_at": "2026-03-02T10:00:00+08:00", "data": {"from": None, "to": "vip", "direction": "up", "reason": "x"}},
        {"event_id": "ok", "type": "order.created", "customer_id": "c1", "order_id": "o1",
         "occurred_at": "2026-03-02T10:00:00+08:00", "data": {"amount": 10}},
    ]  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        answer = await api.post("/events", json=batch)
    assert answer.status_code == 202
    assert answer.json()["accepted"] == ["ok"]
    assert answer.json()["rejected"] == [
        {
            "index": 0,
            "event_id": "forged",
            "problems": [{"field": "type", "message": "member.tier_changed events are written by the engine only"}],
        }
    ]
