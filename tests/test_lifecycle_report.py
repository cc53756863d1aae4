"""The lifecycle report (store/lifecycle.py): a month's stage distribution and its migration matrix
(正向迁移/负向迁移) on a hand-made population whose counts can be checked by hand, on both
databases, through `GET /lifecycle/report` and `journeys lifecycle report`; computed from the orders,
so a month before the engine ran (no lifecycle rows) is right; any month the API is given answers
a report or a 422 naming it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from typer.testing import CliRunner

from core.lifecycle import STAGES
from journeys.cli import app as cli
from store import queries
from tests.helpers import at, event
from triggers.api import create_app

ZONE = "Asia/Shanghai"


def bought(customer: str, *days: str, refunded: dict[str, str] | None = None) -> list:
    """Purchases paid at noon (+08:00) on each day; `refunded` maps a day to its refund's day."""
    events = [event("customer.created", at("2025-01-01 09:00+08:00"), customer=customer, name="顾客")]
    for day in days:
        order = f"{customer}-{day}"
        events.append(event("order.created", at(f"{day} 11:00+08:00"), customer=customer, order=order, amount=99))
        events.append(event("order.paid", at(f"{day} 12:00+08:00"), customer=customer, order=order))
        if refunded and day in refunded:
            events.append(event("order.refunded", at(f"{refunded[day]} 12:00+08:00"), customer=customer, order=order))
    return events


#: March 2026 in Shanghai: each customer's stage as the month begins and at its end, by hand.
POPULATION = {
    "a": ([event("customer.created", at("2026-01-05 10:00+08:00"), customer="a")], "prospect", "prospect"),
    "b": (bought("b", "2026-03-10"), "prospect", "new_once"),  # the first purchase
    "c": (bought("c", "2026-02-20", "2026-03-05"), "new_once", "new_repeat"),
    "d": (bought("d", "2025-12-15"), "new_once", "churned"),  # 76 days old at the start, 107 at the end
    "e": (bought("e", "2025-09-01"), "sleeping", "sleeping"),  # 181 days, then 212
    "f": (bought("f", "2025-12-20", "2026-02-25"), "new_repeat", "old_once"),  # the first left the 90 days
    "g": (bought("g", "2025-11-01", "2026-03-15"), "churned", "old_once"),  # back after 4 months
    "h": (bought("h", "2026-02-10", refunded={"2026-02-10": "2026-03-03"}), "new_once", "prospect"),
    "k": (bought("k", "2025-12-10", "2026-02-01", "2026-03-20"), "new_repeat", "old_repeat"),  # sideways
}


@pytest.fixture
def population(store):
    later = [
        event("customer.created", at("2026-04-05 10:00+08:00"), customer="late"),  # known after the month
        *bought("gone", "2026-03-02"),  # erased: counted nowhere
    ]
    with store.transaction() as session:
        for events, _, _ in POPULATION.values():
            for item in events:
                queries.store_event(session, item, item.occurred_at, backfill=True)
        for item in later:
            queries.store_event(session, item, item.occurred_at, backfill=True)
    with store.transaction() as session:
        queries.erase_customer(session, "gone", at("2026-05-01 10:00+08:00"), "dpo", "CN")
    return store


def expected_matrix() -> dict[str, dict[str, int]]:
    matrix = {a: dict.fromkeys(STAGES, 0) for a in STAGES}
    for _, start, end in POPULATION.values():
        matrix[start][end] += 1
    return matrix


async def get(store, month: str, **options) -> httpx.Response:
    app = create_app(store, shop_timezone=ZONE, **options)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        return await api.get("/lifecycle/report", params={"month": month})


async def test_the_months_distribution_and_matrix_by_hand(population):
    answer = await get(population, "2026-03")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["month"] == "2026-03" and found["zone"] == ZONE
    assert found["start"].startswith("2026-02-28T16:00:00") and found["end"].startswith("2026-03-31T16:00:00")
    assert found["customers"] == 9
    ends = {row["stage"]: (row["title"], row["start"], row["end"]) for row in found["stages"]}
    assert ends == {
        "prospect": ("潜在客户", 2, 2),
        "new_once": ("1次购买新客", 3, 1),
        "new_repeat": ("重复购买新客", 2, 1),
        "old_once": ("1次购买老客", 0, 2),
        "old_repeat": ("重复购买老客", 0, 1),
        "churned": ("流失客户", 1, 1),
        "sleeping": ("睡眠客户", 1, 1),
        "silent": ("沉默客户", 0, 0),
    }
    assert found["matrix"] == expected_matrix()
    assert found["matrix"]["new_once"] == {**dict.fromkeys(STAGES, 0), "new_repeat": 1, "churned": 1, "prospect": 1}
    assert (found["forward"], found["backward"], found["sideways"], found["unchanged"]) == (3, 3, 1, 2)
    assert {(m["from"], m["to"], m["direction"], m["count"]) for m in found["migrations"]} == {
        ("prospect", "new_once", "forward", 1),
        ("new_once", "new_repeat", "forward", 1),
        ("churned", "old_once", "forward", 1),
        ("new_once", "churned", "backward", 1),
        ("new_repeat", "old_once", "backward", 1),
        ("new_once", "prospect", "backward", 1),
        ("new_repeat", "old_repeat", "sideways", 1),
    }


async def test_the_month_before_counts_the_start_of_this_one(population):
    """February's end is March's start: the same stages (a customer known then)."""
    february = (await get(population, "2026-02")).json()
    march = (await get(population, "2026-03")).json()
    assert [row["end"] for row in february["stages"]] == [row["start"] for row in march["stages"]]


async def test_bad_months_are_422_naming_them(population):
    for month, words in [
        ("2026-13", "13 is not a month"),
        ("2026-00", "0 is not a month"),
        ("2026/03", "'2026/03' is not a month like 2026-11"),
        ("三月", "'三月' is not a month like"),
        ("", "'' is not a month like"),
        ("2026-03\x00", "is not a month like"),
        ("1969-12", "'1969-12' is before 1970"),
        ("0001-01", "before 1970"),
        ("9999-12", "'9999-12' has not begun"),
    ]:
        answer = await get(population, month)
        assert answer.status_code == 422, (month, answer.text)
        assert words in answer.json()["detail"], (month, answer.json())
    app = create_app(population)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        absent = await api.get("/lifecycle/report")
    assert absent.status_code == 422 and absent.json()["detail"][0]["loc"] == ["query", "month"]


async def test_full_width_digits_and_the_current_month(population):
    wide = await get(population, "２０２６-０３")
    assert wide.status_code == 200 and wide.json()["matrix"] == expected_matrix()
    now = datetime.now(ZoneInfo(ZONE))
    current = await get(population, f"{now.year:04d}-{now.month:02d}")
    assert current.status_code == 200, current.text
    assert datetime.fromisoformat(current.json()["end"]) <= datetime.now(UTC) + timedelta(seconds=1)


async def test_the_report_needs_a_key_that_reads_segments(population):
    app = create_app(population, api_keys=["shop:ingest:k-ingest", "support:read:k-read"], shop_timezone=ZONE)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        ingest = await api.get("/lifecycle/report?month=2026-03", headers={"Authorization": "Bearer k-ingest"})
        read = await api.get("/lifecycle/report?month=2026-03", headers={"Authorization": "Bearer k-read"})
    assert ingest.status_code == 403 and read.status_code == 200


def test_the_cli_prints_the_report(population, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", population.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("JOURNEYS_SHOP_TIMEZONE", ZONE)
    as_json = CliRunner().invoke(cli, ["lifecycle", "report", "--month", "2026-03", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["matrix"] == expected_matrix()
    text = CliRunner().invoke(cli, ["lifecycle", "report", "--month", "2026-03"])
    assert text.exit_code == 0, text.output
    assert "正向迁移 forward: 3   负向迁移 backward: 3   sideways: 1   unchanged: 2" in text.output
    assert "churned (流失客户) -> old_once (1次购买老客): 1  forward" in text.output
    bad = CliRunner().invoke(cli, ["lifecycle", "report", "--month", "2026-13"])
    assert bad.exit_code == 2 and "--month: month '2026-13': 13 is not a month" in bad.output
