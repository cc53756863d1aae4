"""Member tiers through the real API (an upgrade at once as order events are posted, the event
logged once however often they come; the override with who and why; the report; no 500 for any
input) and the daily run through the production worker on the time-skipping server, its
member.card_expiring notices written once across a worker restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.loyalty import note_logged
from channels import build_channels
from core.config import Settings
from core.records import Event
from core.temporal import binary
from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.simulate import simulation_runtime
from journeys.worker import activity_threads, build_workers
from store import queries
from store import tiers as tier_store
from store.db import Store
from store.tables import EventRow
from triggers.api import create_app
from workflows.loyalty import LoyaltyDailyWorkflow

KEYS = ["shop:ingest:k-ingest", "ops-wang:operator:k-operator"]


@pytest.fixture(scope="module")
def shipped():
    return load_definitions(PACKAGE_DIR)  # loyalty.yaml: the practice's table (normal, senior, vip)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys")


def orders(customer: str, count: int, amount: int, when: datetime) -> list[dict]:
    batch = []
    for n in range(count):
        for kind in ("order.created", "order.paid"):
            batch.append({
                "event_id": f"{customer}-{n}-{kind}", "type": kind, "occurred_at": when.isoformat(),
                "customer_id": customer, "order_id": f"{customer}-o{n}", "data": {"amount": amount},
            })  # fmt: skip
    return batch


def logged(store, kind: str) -> list[EventRow]:
    with store.transaction() as session:
        return list(session.scalars(select(EventRow).where(EventRow.type == kind).order_by(EventRow.event_id)))


async def test_a_purchase_upgrades_at_once_and_the_event_is_logged_once(store, shipped):
    app = create_app(store, definitions=shipped, api_keys=KEYS)
    ingest = {"Authorization": "Bearer k-ingest"}
    when = datetime.now(UTC) - timedelta(hours=1)  # within the window, whatever the hour
    async with client_for(app) as api:
        first = await api.post("/events", json=orders("c1", 3, 4000, when), headers=ingest)
        assert first.status_code == 202
        again = await api.post("/events", json=orders("c1", 3, 4000, when), headers=ingest)
        assert again.status_code == 200 and again.json()["accepted"] == []  # all duplicates
        shown = await api.get("/customers/c1/tier", headers={"Authorization": "Bearer k-operator"})
    [changed] = logged(store, "member.tier_changed")
    assert changed.customer_id == "c1" and changed.data["to"] == "senior" and changed.data["from"] is None
    assert (
        changed.data["reason"] == "3 orders, 12000.00 spent, 12000 points earned in 365 days: reach 高级会员 (senior)"
    )
    view = shown.json()
    assert (view["tier"], view["title"], view["overridden"], view["qualifies"]) == (
        "senior",
        "高级会员",
        False,
        "senior",
    )
    assert (view["measures"]["orders"], view["measures"]["spend"]) == (3, 12000.0)
    assert [(c["from"], c["to"], c["direction"], c["by"]) for c in view["changes"]] == [
        (None, "senior", "up", "engine")
    ]


async def test_an_operator_sets_a_tier_with_a_reason_and_is_named(store, shipped):
    app = create_app(store, definitions=shipped, api_keys=KEYS)
    operator = {"Authorization": "Bearer k-operator"}
    async with client_for(app) as api:
        await api.post(
            "/events", json=orders("c2", 1, 3000, datetime.now(UTC)), headers={"Authorization": "Bearer k-ingest"}
        )
        set_ = await api.post(
            "/customers/c2/tier", json={"tier": "vip", "until": "2030-01-01", "reason": "大客户补偿"}, headers=operator
        )
        assert set_.status_code == 200, set_.text
        view = set_.json()
        assert (view["tier"], view["overridden"], view["until"]) == ("vip", True, "2029-12-31T16:00:00Z")
        assert [(c["direction"], c["by"], c["reason"]) for c in view["changes"]][0] == (
            "override",
            "ops-wang",
            "大客户补偿",
        )
        unknown = await api.post("/customers/c2/tier", json={"tier": "gold", "reason": "x"}, headers=operator)
        assert unknown.status_code == 422
        assert unknown.json()["detail"] == "unknown tier 'gold'; the tiers are normal, senior, vip"
        removed = await api.post("/customers/c2/tier", json={"tier": None, "reason": "测试账号"}, headers=operator)
        assert removed.json()["tier"] is None
        nobody = await api.post("/customers/nobody/tier", json={"tier": "vip", "reason": "x"}, headers=operator)
        assert nobody.status_code == 404 and nobody.json()["detail"] == "no customer 'nobody'"
    moves = {(e.data["from"], e.data["to"], e.data["direction"]) for e in logged(store, "member.tier_changed")}
    assert moves == {(None, "normal", "up"), ("normal", "vip", "up"), ("vip", None, "down")}


async def test_without_keys_the_override_is_by_anonymous(store, shipped):
    app = create_app(store, definitions=shipped)
    async with client_for(app) as api:
        await api.post("/events", json=orders("c3", 1, 10, datetime.now(UTC)))
        answer = await api.post("/customers/c3/tier", json={"tier": "normal", "reason": "试用"})
    assert answer.json()["changes"][0]["by"] == "anonymous"


@pytest.mark.parametrize(
    "body",
    [
        {"tier": "vip", "reason": ""},
        {"tier": "vip", "reason": "   "},
        {"tier": "vip", "reason": "a\x00b"},
        {"tier": "vip", "reason": "\ud800"},
        {"tier": "\ud800", "reason": "x"},
        {"tier": "ｖｉｐ", "reason": "x"},
        {"tier": "vip", "reason": "x", "until": "2020-01-01"},
        {"tier": "vip", "reason": "x", "until": "2026-13-01"},
        {"tier": "vip", "reason": "x", "until": "9999-12-31"},
        {"tier": "vip", "reason": "x", "until": "2030-01-01T10:00:00"},
        {"tier": 7, "reason": "x"},
        {"reason": "x"},
        {"tier": "vip"},
        {"tier": "vip", "reason": "x", "extra": 1},
    ],
)
async def test_no_input_is_a_500(sqlite_store, shipped, body):
    app = create_app(sqlite_store, definitions=shipped)
    async with client_for(app) as api:
        await api.post("/events", json=orders("c4", 1, 10, datetime.now(UTC)))
        # ASCII JSON: a lone surrogate goes as its \\u escape, as a client may send it
        answer = await api.post(
            "/customers/c4/tier", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]


async def test_the_report_and_its_refusals(sqlite_store, shipped):
    app = create_app(sqlite_store, definitions=shipped)
    now = datetime.now(UTC)
    async with client_for(app) as api:
        await api.post("/events", json=orders("c5", 1, 5000, now - timedelta(minutes=5)))
        current = await api.get("/tiers/report")
        assert current.status_code == 200
        report = current.json()
        assert report["now"]["counts"] == {"normal": 1, "senior": 0, "vip": 0, "none": 0}
        assert report["at_end"] is None and report["upward"] == 1
        assert report["matrix"] == [{"from": None, "to": "normal", "count": 1}]
        past = (await api.get("/tiers/report", params={"month": "2020-01"})).json()
        assert past["at_end"]["counts"]["normal"] == 0 and past["matrix"] == []
        for month in ("2026-13", "abc", "0000-01", "9999-12", "2026-03-01", "\x00", "2999-01"):
            refused = await api.get("/tiers/report", params={"month": month})
            assert refused.status_code == 422, (month, refused.text)
        unknown = await api.get("/customers/nobody/tier")
        assert unknown.status_code == 404
    bare = create_app(sqlite_store)  # no loyalty.yaml: no tiers
    async with client_for(bare) as api:
        answer = await api.get("/customers/c5/tier")
    assert answer.status_code == 404 and "no member tiers are configured" in answer.json()["detail"]


# ------------------------------------------------------------------ the daily run on a worker


async def test_card_expiring_notices_once_across_a_worker_restart(sqlite_store):
    settings = Settings.embedded(task_queue="journeys-tiers-test", rate_limits={})
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=binary("temporal-test-server"),
        runtime=simulation_runtime(),
    )
    executor = ThreadPoolExecutor(activity_threads(settings))
    try:
        start = await env.get_current_time()
        until = start + timedelta(days=3)  # within 7 days, not within 1
        with sqlite_store.transaction() as session:
            tier_store.set_tier(session, "c1", "vip", since=start, until=until, overridden=False, now=start)

        async def run(run_id: str):
            workers = build_workers(env.client, settings, sqlite_store, executor, build_channels(None))
            for worker in workers:
                await worker.__aenter__()
            try:
                with env.auto_time_skipping_disabled():  # the clock moves only when the test says
                    return await env.client.execute_workflow(
                        LoyaltyDailyWorkflow.run, id=run_id, task_queue=settings.task_queue
                    )
            finally:
                for worker in reversed(workers):
                    await worker.__aexit__(None, None, None)

        first = await run("loyalty-1")
        assert first.at - start < timedelta(minutes=5)
        assert first.events.get("member.card_expiring") == 1
        second = await run("loyalty-2")  # a new worker, the workflow started again
        assert second.events.get("member.card_expiring") is None
        await env.sleep(timedelta(days=2, hours=12))  # now within a day of the card's end
        third = await run("loyalty-3")
        assert timedelta(days=2, hours=12) <= third.at - start < timedelta(days=2, hours=13)
        assert third.events.get("member.card_expiring") == 1
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        await env.shutdown()
    notices = logged(sqlite_store, "member.card_expiring")
    assert sorted(row.data["days"] for row in notices) == [1, 7]
    assert {row.data["tier"] for row in notices} == {"vip"}


# ------------------------------------------------------------------ the CLI

JOURNEYS = str(Path(sys.executable).parent / "journeys")


def test_journeys_tier_show_set_and_report(tmp_path, shipped):
    url = f"sqlite:///{tmp_path}/journeys.db"
    store = Store(url).migrate()
    now = datetime.now(UTC)
    with store.transaction() as session:
        batch = [Event.model_validate(item) for item in orders("c1", 1, 5000, now - timedelta(minutes=5))]
        queries.store_events(session, batch, now)
        note_logged(session, batch, shipped, now)  # as the API does: normal at once
    store.dispose()
    env = {**os.environ, "DATABASE_URL": url}

    def journeys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([JOURNEYS, "tier", *args], env=env, capture_output=True, text=True, timeout=60)

    shown = journeys("show", "c1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "customer c1  normal 普通会员"
    assert lines[2] == "  window     1 orders, 5000.00 spent, 5000 points earned in 365 days; qualifies for normal"
    assert lines[4].endswith(
        "up       - -> normal  by engine: 1 orders, 5000.00 spent, 5000 points earned in 365 days: reach 普通会员 (normal)"
    )
    set_ = journeys("set", "c1", "vip", "--reason", "大客户", "--until", "2030-01-01", "--by", "ops-li")
    assert set_.returncode == 0, set_.stderr
    assert set_.stdout.strip() == "customer c1: vip until 2029-12-31 16:00 UTC (up: member.tier_changed written)"
    unknown = journeys("set", "c1", "gold", "--reason", "x")
    assert (
        unknown.returncode == 2 and unknown.stderr.strip() == "unknown tier 'gold'; the tiers are normal, senior, vip"
    )
    as_json = json.loads(journeys("show", "c1", "--json").stdout)
    assert [(c["direction"], c["by"], c["reason"]) for c in as_json["changes"]][0] == ("override", "ops-li", "大客户")
    month = now.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    report = json.loads(journeys("report", "--month", month, "--json").stdout)
    assert report["now"]["counts"] == {"normal": 0, "senior": 0, "vip": 1, "none": 0}
    assert (report["upward"], report["matrix"]) == (2, [{"from": None, "to": "normal", "count": 1},
                                                        {"from": "normal", "to": "vip", "count": 1}])  # fmt: skip
    bad = journeys("report", "--month", "2026-13")
    assert bad.returncode == 2 and bad.stderr.strip() == "'2026-13' is not a month: give YYYY-MM (2026-11)"


async def test_odd_customer_ids_are_answered_not_failed(sqlite_store, shipped):
    app = create_app(sqlite_store, definitions=shipped)
    async with client_for(app) as api:
        await api.post("/events", json=orders("顾客１", 1, 3000, datetime.now(UTC)))
        for path, wanted in [
            ("/customers/%E9%A1%BE%E5%AE%A2%EF%BC%91/tier", 200),  # 顾客１, full-width digit and all
            ("/customers/a%00b/tier", 422),
            ("/customers/" + "x" * 300 + "/tier", 422),
            ("/customers/%ED%A0%80/tier", 404),  # not UTF-8: read with replacement characters, nobody
            ("/customers/nobody/tier", 404),
        ]:
            shown = await api.get(path)
            assert shown.status_code == wanted, (path, shown.text)
            changed = await api.post(path, json={"tier": "vip", "reason": "x"})
            assert changed.status_code == wanted, (path, changed.text)
    assert logged(sqlite_store, "member.tier_changed")[-1].customer_id == "顾客１"
