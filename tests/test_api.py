"""The event API on a real store (SQLite and PostgreSQL): what an order system sees."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from store.tables import EventRow
from triggers.api import create_app

GOOD = {
    "event_id": "evt-1",
    "type": "order.created",
    "occurred_at": "2026-02-01T10:00:00+08:00",
    "customer_id": "c1",
    "order_id": "o1",
    "data": {"amount": 99},
}


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys")


def logged(store) -> list[EventRow]:
    with store.transaction() as session:
        return list(session.scalars(select(EventRow).order_by(EventRow.event_id)))


@pytest.fixture
def woken():
    return []


@pytest.fixture
def api(store, woken):
    return client_for(create_app(store, on_accepted=lambda: woken.append(True), max_body_bytes=64_000))


async def test_an_event_is_logged_before_the_answer(api, store, woken):
    answer = await api.post("/events", json=GOOD)
    assert answer.status_code == 202
    assert answer.json() == {"accepted": ["evt-1"], "duplicates": [], "rejected": [], "duplicate": False}
    [row] = logged(store)
    assert (row.type, row.order_id, row.dispatched_at, row.data) == ("order.created", "o1", None, {"amount": 99})
    assert row.occurred_at.isoformat() == "2026-02-01T02:00:00+00:00"  # stored in UTC
    assert woken == [True]


async def test_the_same_event_id_again_changes_nothing(api, store):
    await api.post("/events", json=GOOD)
    again = await api.post("/events", json={**GOOD, "data": {"amount": 1}})
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert logged(store)[0].data == {"amount": 99}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"order_id": None}, "event", "order_id is required for order.created events"),
        ({"type": "order.teleported"}, "type", "'order.teleported' is not a known event type; known: order.created"),
        ({"type": "Order Created"}, "type", "should match pattern"),
        ({"occurred_at": "2026-02-01T10:00:00"}, "occurred_at", "timezone"),
        ({"occurred_at": "yesterday"}, "occurred_at", "datetime"),
        ({"customer_id": 42}, "customer_id", "string"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
async def test_a_bad_event_is_refused_naming_the_field(api, store, change, field, message):
    answer = await api.post("/events", json={k: v for k, v in {**GOOD, **change}.items() if v is not None})
    assert answer.status_code == 422
    [rejected] = answer.json()["rejected"]
    assert rejected["event_id"] == "evt-1"
    assert any(p["field"] == field and message in p["message"] for p in rejected["problems"]), rejected
    assert logged(store) == []


async def test_a_batch_takes_the_good_events_and_names_the_bad(api, store):
    batch = [
        GOOD,
        {**GOOD, "event_id": "evt-2", "type": "order.paid"},
        {**GOOD, "event_id": "evt-3", "type": "nope"},
        GOOD,
    ]
    answer = await api.post("/events", json=batch)
    assert answer.status_code == 202
    body = answer.json()
    assert body["accepted"] == ["evt-1", "evt-2"]
    assert body["duplicates"] == ["evt-1"]  # the same event twice in one batch counts once
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(2, "evt-3")]
    *sent, engine = [r.event_id for r in logged(store)]
    assert sent == ["evt-1", "evt-2"]
    assert engine.startswith("lifecycle.changed:c1:prospect>")  # c1's first purchase moves them (to a stage by its age)


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b'{"event_id": ', 422, "not JSON"),
        (b"\xff\xfe", 422, "not JSON"),
        (b'"just a string"', 422, "one event (an object) or a batch"),
        (b"[" + b" " * 70_000 + b"]", 413, "over 64000 bytes"),
    ],
)
async def test_what_a_client_can_send_never_gives_a_500(api, content, status, detail):
    answer = await api.post("/events", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert detail in answer.json()["detail"]


async def test_batches_hold_at_most_1000_events(store):
    async with client_for(create_app(store)) as api:
        answer = await api.post(
            "/events", content=json.dumps([GOOD] * 1001), headers={"content-type": "application/json"}
        )
    assert answer.status_code == 413
    assert answer.json()["detail"] == "1001 events in one batch; at most 1000"
    assert logged(store) == []


async def test_api_keys(store):
    app = create_app(store, api_keys=["k-one", "k-two"])
    async with client_for(app) as api:
        assert (await api.post("/events", json=GOOD)).status_code == 401
        wrong = await api.post("/events", json=GOOD, headers={"Authorization": "Bearer k-three"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = await api.post("/events", json=GOOD, headers={"Authorization": "Bearer k-two"})
        assert right.status_code == 202
        assert (await api.get("/healthz")).status_code == 200  # health checks need no key


async def test_health_and_contract(api):
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    contract = (await api.get("/openapi.json")).json()
    body = contract["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0] == {"$ref": "#/components/schemas/Event"}
    assert "event_id" in contract["components"]["schemas"]["Event"]["properties"]
    assert {"200", "202", "401", "413", "422", "503"} <= set(contract["paths"]["/events"]["post"]["responses"])
