"""A customer's profile, as support and marketers read it: `GET /customers/{id}` (behind a key
allowed to read profiles) and `journeys customer ID`, with traits, tags, RFM as of now and what
holds their messages back."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from core.records import apply_customer_event
from definitions.loader import PACKAGE_DIR, load_definitions
from store import queries, tiers
from store.db import Store
from store.tables import PointsEntryRow
from tests.helpers import event
from triggers.api import create_app

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
JOURNEYS = str(Path(sys.executable).parent / "journeys")


def seed(store: Store) -> None:
    created = event("customer.created", NOW - timedelta(days=100), customer="c1", name="王芳",
                    phone="13800000001", email="Wang.Fang@Example.com", tags=["vip"], member_level="gold")  # fmt: skip
    events = [
        event("order.created", NOW - timedelta(days=50), order="o1", amount=1200),
        event("order.paid", NOW - timedelta(days=50), order="o1"),
        event("order.created", NOW - timedelta(days=40), order="o2", amount=900),
        event("order.paid", NOW - timedelta(days=40), order="o2"),
        event("order.refunded", NOW - timedelta(days=35), order="o2"),
    ]
    with store.transaction() as session:
        queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")
        for item in events:
            queries.store_event(session, item, item.occurred_at)
        queries.add_suppression(session, "email", "wang.fang@example.com", "marketing", "unsubscribe link", NOW)
        tiers.set_tier(
            session, "c1", "senior", since=SINCE, until=SINCE + timedelta(days=365), overridden=False, now=NOW
        )
        session.add(PointsEntryRow(customer_id="c1", kind="earn", points=1200, reason="order o1", source="earn:o1",
                                   at=NOW - timedelta(days=50), recorded_at=NOW))  # fmt: skip


async def test_the_profile_says_who_the_customer_is_and_what_holds_messages_back(store):
    seed(store)
    shipped = load_definitions(PACKAGE_DIR)  # loyalty.yaml names the tiers' titles
    app = create_app(store, definitions=shipped, api_keys=["support:read:k-read", "shop:ingest:k-ingest"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        found = await api.get("/customers/c1", headers={"Authorization": "Bearer k-read"})
        missing = await api.get("/customers/nobody", headers={"Authorization": "Bearer k-read"})
        refused = await api.get("/customers/c1", headers={"Authorization": "Bearer k-ingest"})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["record"]["name"] == "王芳" and body["record"]["phone"] == "+8613800000001"  # stored in E.164
    assert body["traits"] == {"member_level": "gold"} and body["tags"] == ["vip"]
    # One purchase counts (o2 was refunded): 50 days ago, 1,200.
    rfm = body["rfm"]
    assert (rfm["r"], rfm["f"], rfm["m"], rfm["score"], rfm["purchases"], rfm["amount"]) == (4, 1, 4, 23, 1, 1200)
    assert rfm["tier"] == "potential"
    # The lifecycle stage by the same purchases: the first (o1) 50 days ago, the only one held.
    assert body["lifecycle"] == "new_once"
    # The member tier and its card, and the points balance (the ledger's sum).
    assert body["tier"] == {"name": "senior", "title": "高级会员", "since": "2026-03-02T02:00:00Z",
                            "until": "2027-03-02T02:00:00Z"}  # fmt: skip
    assert body["points"] == 1200
    # Every paid order with its amount, the latest payment first; the refund shows on its order.
    assert [(p["order_id"], p["amount"], p["refunded_at"] is not None) for p in body["purchases"]] == [
        ("o2", 900.0, True),
        ("o1", 1200.0, False),
    ]
    assert body["suppressions"] == [
        {"channel": "email", "address": "wang.fang@example.com", "scope": "marketing",
         "reason": "unsubscribe link", "since": body["suppressions"][0]["since"]}
    ]  # fmt: skip
    assert missing.status_code == 404 and missing.json()["detail"] == "no customer 'nobody'"
    assert refused.status_code == 403 and "may not read customer profiles" in refused.json()["detail"]


def test_journeys_customer_id_prints_the_profile(tmp_path):
    url = f"sqlite:///{tmp_path}/journeys.db"
    store = Store(url).migrate()
    seed(store)
    store.dispose()
    env = {**os.environ, "DATABASE_URL": url}
    shown = subprocess.run([JOURNEYS, "customer", "c1"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "customer c1  王芳  +8613800000001  wang.fang@example.com  (Asia/Shanghai, zh-CN)"
    assert lines[1] == "  rfm        potential  score 23  R4 F1 M4  (1 purchases, 1200 in the year)"
    assert lines[2] == "  lifecycle  new_once  1次购买新客"
    assert lines[3] == "  member     senior 高级会员, card until 2027-03-02; 1200 points"
    assert '  traits     {"member_level": "gold"}' in lines
    assert "  held back  email wang.fang@example.com suppressed (marketing: unsubscribe link)" in lines
    missing = subprocess.run([JOURNEYS, "customer", "nobody"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.strip() == "no customer 'nobody'"
    helped = subprocess.run([JOURNEYS, "customer", "erase", "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "Erase a customer" in helped.stdout  # the subcommand still works
