"""Points through the real API app and the CLI: an order event delivered twice earns once,
`GET /customers/{id}/points` shows the ledger's sum, redemptions are refused past the balance,
once per request id and never overdraw under concurrent requests (PostgreSQL), adjustments and
the overview; bad input is a 422 naming the field, never a 500."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import func, select

from core.loyalty import Loyalty
from definitions.loader import Definitions
from store.tables import EventRow, PointsEntryRow
from triggers.api import create_app

LOYALTY = Loyalty.model_validate(
    {"points": {"earning": {"points": 1, "per": 1}, "expiry": {"end_of_next_year": True}, "point_value": 0.01}}
)


def client_of(store) -> httpx.AsyncClient:
    app = create_app(store, definitions=Definitions(loyalty=LOYALTY))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys.test")


def paid(event_id: str, order_id: str, amount, customer: str = "c1", when: str = "2026-11-01T10:00:00+08:00") -> dict:
    return {"event_id": event_id, "type": "order.paid", "occurred_at": when, "customer_id": customer,
            "order_id": order_id, "data": {"amount": amount}}  # fmt: skip


async def shown_balance(api: httpx.AsyncClient, store, customer: str = "c1") -> int:
    """What GET /customers/{id}/points shows, after checking it is the ledger's sum."""
    answer = await api.get(f"/customers/{customer}/points")
    assert answer.status_code == 200, answer.text
    with store.transaction() as session:
        summed = session.scalar(
            select(func.coalesce(func.sum(PointsEntryRow.points), 0)).where(PointsEntryRow.customer_id == customer)
        )
    assert answer.json()["balance"] == summed
    return summed


async def test_an_event_delivered_twice_earns_once(store):
    async with client_of(store) as api:
        first = await api.post("/events", json=paid("e1", "o1", 199))
        again = await api.post("/events", json=paid("e1", "o1", 199))
        other_copy = await api.post("/events", json=paid("e2", "o1", 199))  # a second payment event of the order
        assert (first.status_code, again.status_code, other_copy.status_code) == (202, 200, 202)
        shown = (await api.get("/customers/c1/points")).json()
        assert shown["balance"] == 199 and await shown_balance(api, store) == 199
        assert shown["expiring"] == [{"expires_on": "2027-12-31", "points": 199}]
        assert [(e["kind"], e["points"], e["source"]) for e in shown["entries"]] == [("earn", 199, "earn:order:o1")]
    with store.transaction() as session:
        earned = session.scalars(select(EventRow.event_id).where(EventRow.type == "points.earned")).all()
    assert earned == ["points.earned:c1:earn:order:o1"]


async def test_the_engines_events_are_refused_from_outside(store):
    async with client_of(store) as api:
        forged = {"event_id": "x", "type": "points.earned", "occurred_at": "2026-11-01T10:00:00+08:00",
                  "customer_id": "c1", "data": {"points": 1, "balance": 1, "reason": "x", "source": "x"}}  # fmt: skip
        answer = await api.post("/events", json=forged)
        assert answer.status_code == 422 and "written by the engine only" in answer.text


async def test_redemption_refused_past_the_balance_and_idempotent_per_request_id(store):
    async with client_of(store) as api:
        await api.post("/events", json=paid("e1", "o1", 100))
        spend = {"customer_id": "c1", "points": 60, "request_id": "pay-o2", "order_id": "o2"}
        first = await api.post("/points/redeem", json=spend)
        assert first.status_code == 201 and first.json()["balance"] == 40 and first.json()["duplicate"] is False
        repeat = await api.post("/points/redeem", json=spend)
        assert repeat.status_code == 200 and repeat.json() == first.json() | {"duplicate": True}
        past = await api.post("/points/redeem", json={"customer_id": "c1", "points": 41, "request_id": "pay-o3"})
        assert past.status_code == 409
        assert past.json()["detail"] == "customer 'c1' has 40 points; 41 cannot be redeemed"
        reused = await api.post("/points/redeem", json=spend | {"points": 10})
        assert reused.status_code == 409 and "request_id 'pay-o2' was already used" in reused.json()["detail"]
        unknown = await api.post("/points/redeem", json={"customer_id": "nobody", "points": 1, "request_id": "r"})
        assert unknown.status_code == 404 and unknown.json()["detail"] == "no customer 'nobody'"
        assert await shown_balance(api, store) == 40


async def test_a_refund_after_spending_takes_the_balance_below_zero(store):
    async with client_of(store) as api:
        await api.post("/events", json=paid("e1", "o1", 100))
        await api.post("/points/redeem", json={"customer_id": "c1", "points": 100, "request_id": "r1"})
        refund = {"event_id": "e2", "type": "order.refunded", "occurred_at": "2026-11-03T10:00:00+08:00",
                  "customer_id": "c1", "order_id": "o1", "data": {"amount": 100}}  # fmt: skip
        assert (await api.post("/events", json=refund)).status_code == 202
        assert await shown_balance(api, store) == -100
        refused = await api.post("/points/redeem", json={"customer_id": "c1", "points": 1, "request_id": "r2"})
        assert refused.status_code == 409 and "has -100 points" in refused.json()["detail"]


def test_concurrent_redemptions_never_overdraw(pg_store):
    async def scenario():
        async with client_of(pg_store) as api:
            await api.post("/events", json=paid("e1", "o1", 100))
            answers = await asyncio.gather(
                *(
                    api.post("/points/redeem", json={"customer_id": "c1", "points": 30, "request_id": f"r{i}"})
                    for i in range(10)
                )
            )
            codes = sorted(answer.status_code for answer in answers)
            assert codes == [201] * 3 + [409] * 7
            assert await shown_balance(api, pg_store) == 10

    asyncio.run(scenario())


async def test_adjustments_need_a_reason_and_move_the_balance_once_per_request(store):
    async with client_of(store) as api:
        await api.post("/events", json=paid("e1", "o1", 100))
        add = {"customer_id": "c1", "points": 50, "reason": "客服补偿", "request_id": "adj-1"}
        first = await api.post("/points/adjust", json=add)
        assert first.status_code == 201 and first.json()["balance"] == 150
        assert (await api.post("/points/adjust", json=add)).json()["duplicate"] is True
        take = await api.post("/points/adjust", json=add | {"points": -170, "request_id": "adj-2"})
        assert take.status_code == 201 and take.json()["balance"] == -20  # an operator may go below zero
        shown = (await api.get("/customers/c1/points")).json()
        assert shown["expiring"] == []  # the lots are spent
        assert [e["kind"] for e in shown["entries"]] == ["adjust", "adjust", "earn"]
        assert await shown_balance(api, store) == -20


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/points/adjust", {"customer_id": "c1", "points": 0, "reason": "x", "request_id": "a"}, "points"),
        ("/points/adjust", {"customer_id": "c1", "points": "5", "reason": "x", "request_id": "a"}, "points"),
        ("/points/adjust", {"customer_id": "c1", "points": 5.5, "reason": "x", "request_id": "a"}, "points"),
        ("/points/adjust", {"customer_id": "c1", "points": 5, "request_id": "a"}, "reason"),
        ("/points/adjust", {"customer_id": "c1", "points": 5, "reason": "  ", "request_id": "a"}, "reason"),
        ("/points/adjust", {"customer_id": "c1", "points": 2**40, "reason": "x", "request_id": "a"}, "points"),
        ("/points/redeem", {"customer_id": "c1", "points": -5, "request_id": "a"}, "points"),
        ("/points/redeem", {"customer_id": "c1", "points": 5, "request_id": "a", "reason": "\ud800"}, "reason"),
        ("/points/adjust", {"customer_id": "c1", "points": 5, "reason": "a\nb", "request_id": "a"}, "reason"),
        ("/points/redeem", {"customer_id": "c1", "points": 5}, "request_id"),
        ("/points/redeem", {"customer_id": "", "points": 5, "request_id": "a"}, "customer_id"),
        ("/points/redeem", {"customer_id": "c\x001", "points": 5, "request_id": "a"}, "customer_id"),
        ("/points/redeem", {"customer_id": "c1", "points": 5, "request_id": "a", "extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(store, path, body, field):
    async with client_of(store) as api:
        sent = json.dumps(body)  # ASCII: a lone surrogate goes as the escape \ud800
        answer = await api.post(path, content=sent, headers={"content-type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert field in [str(part) for problem in answer.json()["detail"] for part in problem["loc"]]


async def test_reads_answer_422_or_404_never_500(store):
    async with client_of(store) as api:
        assert (await api.get("/customers/nobody/points")).status_code == 404
        assert (await api.get("/customers/c1/points?limit=0")).status_code == 422
        assert (await api.get("/customers/c1/points?before=abc")).status_code == 422
        naive = await api.get("/points/overview", params={"since": "2026-11-01T00:00:00"})
        assert naive.status_code == 422 and naive.json()["detail"][0]["loc"] == ["query", "since"]
        far = await api.get("/points/overview", params={"since": "0001-01-01T00:00:00+05:00"})
        assert far.status_code == 422 and far.json()["detail"][0]["loc"] == ["query", "since"]
        backwards = await api.get(
            "/points/overview", params={"since": "2026-11-02T00:00:00+08:00", "until": "2026-11-01T00:00:00+08:00"}
        )
        assert backwards.status_code == 422 and backwards.json()["detail"][0]["loc"] == ["query", "until"]
        garbage = await api.post("/points/redeem", content=b"\xff\xfe", headers={"content-type": "application/json"})
        assert garbage.status_code == 422


async def test_the_log_pages_newest_first(store):
    async with client_of(store) as api:
        for number in range(5):
            await api.post("/events", json=paid(f"e{number}", f"o{number}", 10 + number))
        first = (await api.get("/customers/c1/points", params={"limit": 2})).json()
        assert [e["points"] for e in first["entries"]] == [14, 13] and first["next_before"] is not None
        rest = (await api.get("/customers/c1/points", params={"limit": 3, "before": first["next_before"]})).json()
        assert [e["points"] for e in rest["entries"]] == [12, 11, 10] and rest["next_before"] is None
        assert rest["balance"] == 60 == await shown_balance(api, store)


async def test_the_overview_gives_the_liability_at_the_point_value(store):
    async with client_of(store) as api:
        await api.post("/events", json=paid("e1", "o1", 1000))
        await api.post("/events", json=paid("e2", "o2", 500, customer="c2"))
        await api.post("/points/redeem", json={"customer_id": "c1", "points": 300, "request_id": "r1"})
        answer = (await api.get("/points/overview")).json()
        assert (answer["issued"], answer["redeemed"], answer["outstanding"], answer["holders"]) == (1500, 300, 1200, 2)
        assert answer["liability"] == 12.0
        november = (
            await api.get(
                "/points/overview",
                params={"since": "2026-11-01T00:00:00+08:00", "until": "2026-11-02T00:00:00+08:00"},
            )
        ).json()
        assert (november["issued"], november["redeemed"]) == (1500, 0)  # the redemption is now, not in that day
        assert await shown_balance(api, store) + await shown_balance(api, store, "c2") == answer["outstanding"]


def test_the_points_commands(sqlite_store, tmp_path, monkeypatch):
    """`journeys points show|adjust|redeem|overview` and `journeys import points` on the store the settings name
    (the shipped loyalty.yaml: 1 point per yuan, lapsing at the end of the next year)."""
    from typer.testing import CliRunner

    from journeys.cli import app

    monkeypatch.setenv("DATABASE_URL", sqlite_store.url)
    monkeypatch.setenv("JOURNEYS_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    path = tmp_path / "points.csv"
    path.write_bytes("customer_id,points,reason,id\nc1,３００,迁移,m-1\nc2,x,坏,\n".encode("gbk"))
    imported = runner.invoke(app, ["import", "points", str(path)])
    assert imported.exit_code == 1  # a bad line is reported
    assert f"{path}:3: points: 'x' is not a whole number of points" in imported.output
    assert f"{path}: 1 entries written, 0 already imported, 1 problem (lines skipped)" in imported.output
    again = runner.invoke(app, ["import", "points", str(path)])
    assert "0 entries written, 1 already imported" in again.output
    adjusted = runner.invoke(app, ["points", "adjust", "c1", "--reason", "补偿", "--request-id", "a1", "--", "-50"])
    assert adjusted.exit_code == 0, adjusted.output
    assert "customer c1: -50 points, balance 250; request id a1" in adjusted.output
    shown = runner.invoke(app, ["points", "show", "c1", "--json"])
    found = json.loads(shown.output)
    assert found["balance"] == 250 and [e["kind"] for e in found["entries"]] == ["adjust", "import"]
    text = runner.invoke(app, ["points", "show", "c1"]).output
    assert text.startswith("customer c1: 250 points")
    redeem = ["points", "redeem", "c1", "100", "--request-id", "r-1", "--order", "o9"]
    spent = runner.invoke(app, redeem)
    assert spent.exit_code == 0, spent.output
    assert "customer c1: -100 points, balance 150; request id r-1" in spent.output
    assert "already done: nothing changed" in runner.invoke(app, redeem).output
    refused = runner.invoke(app, ["points", "redeem", "c1", "151", "--request-id", "r-2"])
    assert refused.exit_code == 1 and "customer 'c1' has 150 points; 151 cannot be redeemed" in refused.output
    overview = json.loads(runner.invoke(app, ["points", "overview", "--json"]).output)
    assert (overview["imported"], overview["adjusted"], overview["outstanding"]) == (300, -50, 150)
    assert overview["redeemed"] == 100
    missing = runner.invoke(app, ["points", "show", "nobody"])
    assert missing.exit_code == 1 and "no customer 'nobody'" in missing.output
