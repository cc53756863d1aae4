"""Segments, evaluated in the database on SQLite and PostgreSQL: the SQL form of RFM agrees with
core.rfm for every customer of a shop full of boundary cases, and each kind of test selects the
customers a marketer expects."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.audience import Segment
from core.records import apply_customer_event
from core.rfm import DEFAULT_TABLE, score
from definitions.loader import PACKAGE_DIR, check_definitions
from store import queries
from store.db import Store
from store.segments import count_members, members, segments_of
from tests.helpers import event

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
JOURNEYS = str(Path(sys.executable).parent / "journeys")
DAYS = [0, 1, 29.999, 30, 30.001, 89, 90, 90.5, 120, 121, 210, 211, 364.9, 365, 366, 500]
AMOUNTS = [0, 0.01, 150, 299, 299.99, 300, 499, 500, 999, 1000, 1999, 2000, "12.50", "n/a", None,
           # not amounts by core/amounts.py's rule, in Python and in SQL alike
           1e308, -500, "-5", " 12", "1e3", "１２", "1.2.3", "一百二十九元", "12元", True, "2500"]  # fmt: skip


def segment(where: dict, name: str = "s") -> Segment:
    return Segment.model_validate({"name": name, "where": where})


def add_customer(session, customer_id: str, **data) -> None:
    created = event("customer.created", T - timedelta(days=900), customer=customer_id, **data)
    queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")


def seed_shop(store, customers: int = 60) -> None:
    """Customers with 0 to 8 orders each: paid at boundary ages, some paid with their own amount,
    some refunded before or after T, some never paid, some paid twice."""
    rng = random.Random(11)
    with store.transaction() as session:
        for n in range(customers):
            customer_id = f"c{n:03d}"
            add_customer(session, customer_id, phone=f"+86138{n:08d}")
            for k in range(rng.randrange(0, 9)):
                order = f"{customer_id}-o{k}"
                paid_at = T - timedelta(days=rng.choice(DAYS))
                amount = rng.choice(AMOUNTS)
                created_data = {} if amount is None else {"amount": amount}
                items = [event("order.created", paid_at - timedelta(hours=1), customer=customer_id, order=order,
                               **created_data)]  # fmt: skip
                kind = rng.random()
                if kind < 0.85:
                    paid_data = {"amount": rng.choice(AMOUNTS[:12] + AMOUNTS[15:])} if rng.random() < 0.3 else {}
                    items.append(event("order.paid", paid_at, customer=customer_id, order=order, **paid_data))
                    if rng.random() < 0.1:  # a second payment: the first counts
                        items.append(event("order.paid", paid_at + timedelta(days=3), customer=customer_id,
                                           order=order, amount=5))  # fmt: skip
                if rng.random() < 0.15:
                    refund_at = paid_at + timedelta(days=rng.choice([1, 20, 400]))
                    items.append(event("order.refunded", refund_at, customer=customer_id, order=order))
                for item in items:
                    queries.store_event(session, item, item.occurred_at)


def test_the_databases_rfm_agrees_with_core_rfm_for_every_customer(store):
    seed_shop(store)
    everyone = segment({"rfm": "score", "at_least": 0})
    with store.transaction() as session:
        found = {m.customer_id: m for m in members(session, everyone, T, DEFAULT_TABLE, limit=10_000)}
        expected = {
            customer_id: score(queries.purchases_of(session, customer_id, T), T)
            for customer_id in (f"c{n:03d}" for n in range(60))
        }
        counted = count_members(session, everyone, T, DEFAULT_TABLE)
    assert counted == len(found) == 60
    mismatches = {
        customer_id: ((m.r, m.f, m.m, m.score, m.tier), (e.r, e.f, e.m, e.score, e.tier))
        for customer_id, e in expected.items()
        if (m := found[customer_id]) and (m.r, m.f, m.m, m.score, m.tier) != (e.r, e.f, e.m, e.score, e.tier)
    }
    assert mismatches == {}
    assert len({e.tier for e in expected.values()}) >= 4  # the shop covers most tiers
    assert {e.r for e in expected.values()} >= {0, 1, 2, 3, 4, 5}


def fill_shop(store, now: datetime = T) -> None:
    """Four customers; their purchases are `now` minus 10, 40, 100 and 200 days."""
    with store.transaction() as session:
        add_customer(session, "gold", phone="+8613800000001", member_level="gold", points=1500, tags=["vip"])
        add_customer(session, "gold_quiet", phone="+8613800000002", member_level="gold", points=90,
                     unsubscribed=["sms"])  # fmt: skip
        add_customer(session, "silver", email="s@example.com", member_level="silver", points="1200")
        add_customer(session, "nobody", phone="+8613800000004", blacklisted=True)
        for customer_id, days, amount in [("gold", 10, 2500), ("gold", 40, 100), ("silver", 100, 300),
                                          ("gold_quiet", 200, 50)]:  # fmt: skip
            order = f"{customer_id}-{days}"
            for item in (
                event("order.created", now - timedelta(days=days), customer=customer_id, order=order, amount=amount),
                event("order.paid", now - timedelta(days=days), customer=customer_id, order=order),
            ):
                queries.store_event(session, item, item.occurred_at)


@pytest.fixture
def shop(store):
    fill_shop(store)
    return store


@pytest.fixture
def shop_file(tmp_path):
    """The shop in a SQLite file, and a definitions folder with two segments."""
    url = f"sqlite:///{tmp_path}/journeys.db"
    store = Store(url).migrate()
    fill_shop(store, datetime.now(UTC))  # the CLI reads segments as of now
    store.dispose()
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__", "segments", "broadcasts"))
    (folder / "segments").mkdir()
    (folder / "segments" / "gold.yaml").write_text(
        "name: gold\ntitle: 金卡会员\nwhere: {trait: member_level, is: gold}\n"
    )
    (folder / "segments" / "reachable.yaml").write_text("name: reachable\nwhere: {subscribed: sms}\n")
    return url, folder


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"trait": "member_level", "is": "gold"}, ["gold", "gold_quiet"]),
        ({"trait": "member_level", "in": ["gold", "silver"]}, ["gold", "gold_quiet", "silver"]),
        ({"trait": "points", "at_least": 1000}, ["gold", "silver"]),  # "1200" counts as a number
        ({"trait": "points", "exists": False}, ["nobody"]),
        ({"tag": "vip"}, ["gold"]),
        ({"subscribed": "sms"}, ["gold"]),  # gold_quiet unsubscribed, nobody blacklisted, silver has no phone
        ({"subscribed": "email"}, ["silver"]),
        ({"rfm": "tier", "in": ["champion", "loyal"]}, ["gold"]),  # R5 F2 M5: 5 + 6 + 20 = 31
        ({"rfm": "m", "at_least": 5}, ["gold"]),  # 2,600 in the year
        ({"rfm": "f", "is": 2}, ["gold"]),
        ({"rfm": "tier", "is": "none"}, ["nobody"]),
        ({"last_purchase_within_days": 30}, ["gold"]),
        ({"no_purchase_for_days": 90}, ["gold_quiet", "nobody", "silver"]),
        ({"orders_in_last_days": 60, "at_least": 2}, ["gold"]),
        ({"orders_in_last_days": 365, "at_most": 0}, ["nobody"]),
        ({"spent_in_year": {"at_least": 300, "at_most": 2000}}, ["silver"]),
        ({"locale": "zh-CN"}, ["gold", "gold_quiet", "nobody", "silver"]),
        ({"all": [{"trait": "member_level", "is": "gold"}, {"subscribed": "sms"}]}, ["gold"]),
        ({"any": [{"tag": "vip"}, {"subscribed": "email"}]}, ["gold", "silver"]),
        ({"not": {"trait": "member_level", "is": "gold"}}, ["nobody", "silver"]),
    ],
)
def test_each_kind_of_test_selects_whom_a_marketer_expects(shop, where, expected):
    chosen = segment(where)
    with shop.transaction() as session:
        listed = [m.customer_id for m in members(session, chosen, T, DEFAULT_TABLE)]
        counted = count_members(session, chosen, T, DEFAULT_TABLE)
    assert listed == expected and counted == len(expected)


def test_pages_follow_one_another_and_a_profile_names_its_segments(shop):
    everyone = segment({"rfm": "score", "at_least": 0})
    gold = segment({"trait": "member_level", "is": "gold"}, name="gold_members")
    vip = segment({"tag": "vip"}, name="vips")
    with shop.transaction() as session:
        first = members(session, everyone, T, DEFAULT_TABLE, limit=3)
        rest = members(session, everyone, T, DEFAULT_TABLE, after=first[-1].customer_id, limit=3)
        named = segments_of(session, "gold_quiet", [gold, vip], T, DEFAULT_TABLE)
    assert [m.customer_id for m in first + rest] == ["gold", "gold_quiet", "nobody", "silver"]
    assert named == ["gold_members"]


def test_segment_files_are_checked_with_their_line(tmp_path):
    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True)
    (folder / "segments").mkdir()
    (folder / "x.yaml").write_text("name: x\ncategory: marketing\nentry: {event: order.paid, key: order}\n"
                                   "steps:\n  - wait: 1d\n")  # fmt: skip
    files = {
        "good": "name: good\nwhere: {rfm: tier, in: [champion, loyal]}\n",
        "typo": "name: typo\nwhere:\n  all:\n    - {rfm: tier, is: champoin}\n",
        "other": "name: not_other\nwhere: {tag: vip}\n",
        "odd": "name: odd\nwhere: {trait: member-level, is: gold}\n",
    }
    for name, text in files.items():
        (folder / "segments" / f"{name}.yaml").write_text(textwrap.dedent(text))
    loaded, problems = check_definitions(folder)
    assert list(loaded.segments) == ["good"]
    where = folder / "segments"
    assert problems[0].startswith(f"{where}/odd.yaml:2: where")
    assert problems[1] == f"{where}/other.yaml:1: name: 'not_other' must be the file's name, 'other'"
    assert problems[2] == (
        f"{where}/typo.yaml:2: where: unknown RFM tier 'champoin'; tiers: champion, loyal, potential, occasional, none"
    )


def test_the_cli_counts_and_lists_a_segment(tmp_path, shop_file):
    url, folder = shop_file
    env = {**os.environ, "DATABASE_URL": url, "JOURNEYS_DEFINITIONS": str(folder)}

    def run(*args):
        return subprocess.run([JOURNEYS, "segment", *args], env=env, capture_output=True, text=True, timeout=60)

    assert run("count", "gold").stdout == "gold  2  (金卡会员)\n"
    assert run("count").stdout == "gold  2  (金卡会员)\nreachable  1\n"
    assert run("list", "gold").stdout.splitlines() == [
        "gold  loyal  score 31  R5 F2 M5",
        "gold_quiet  occasional  score 9  R2 F1 M1",
    ]
    listed = run("list", "gold", "--csv").stdout.splitlines()
    assert listed[0] == "customer_id,r,f,m,score,tier" and [line.split(",")[0] for line in listed[1:]] == [
        "gold", "gold_quiet"
    ]  # fmt: skip
    first = run("list", "gold", "--json", "--limit", "1").stdout.splitlines()
    assert [json.loads(line) for line in first] == [
        {"customer_id": "gold", "r": 5, "f": 2, "m": 5, "score": 31, "tier": "loyal"}
    ]
    missing = run("count", "golden")
    assert missing.returncode == 2 and missing.stderr.strip() == "no segment 'golden'; segments: gold, reachable"


async def test_the_api_counts_and_pages_a_segment(store, tmp_path):
    import httpx

    from definitions.loader import load_definitions
    from triggers.api import create_app

    fill_shop(store, datetime.now(UTC))
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__", "segments", "broadcasts"))
    (folder / "segments").mkdir()
    (folder / "segments" / "gold.yaml").write_text("name: gold\nwhere: {trait: member_level, is: gold}\n")
    app = create_app(store, definitions=load_definitions(folder), api_keys=["read:k-read", "ingest:k-ingest"])
    read = {"Authorization": "Bearer k-read"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        listed = (await api.get("/segments", headers=read)).json()
        first = (await api.get("/segments/gold/members", params={"limit": 1}, headers=read)).json()
        after = first["next_after"]
        second = (await api.get("/segments/gold/members", params={"limit": 1, "after": after}, headers=read)).json()
        missing = await api.get("/segments/golden", headers=read)
        bad = await api.get("/segments/gold/members", params={"after": "a\x00b"}, headers=read)
        refused = await api.get("/segments/gold", headers={"Authorization": "Bearer k-ingest"})
        profile = (await api.get("/customers/gold_quiet", headers=read)).json()
    assert [(s["name"], s["count"]) for s in listed] == [("gold", 2)]
    assert [m["customer_id"] for m in first["members"]] == ["gold"] and after == "gold"
    assert [m["customer_id"] for m in second["members"]] == ["gold_quiet"] and second["next_after"] == "gold_quiet"
    assert first["members"][0] == {"customer_id": "gold", "r": 5, "f": 2, "m": 5, "score": 31, "tier": "loyal"}
    assert missing.status_code == 404 and missing.json()["detail"] == "no segment 'golden'; segments: gold"
    assert bad.status_code == 422
    assert refused.status_code == 403
    assert profile["segments"] == ["gold"]
