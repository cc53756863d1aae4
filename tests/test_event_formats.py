"""Declared event types assert `format` (definitions/events.py): `date`, `date-time`, `email`,
`uri` and `uuid`, each problem naming the field, through the catalogue and through the API."""

from __future__ import annotations

import httpx
import pytest

from definitions.events import FORMAT_CHECKER, FORMATS, EventCatalog, EventDeclaration
from definitions.loader import PACKAGE_DIR, load_definitions
from tests.helpers import event
from triggers.api import create_app

CASES = {
    "date": (
        ["2026-03-31", "2024-02-29"],
        ["明天", "2026-02-30", "2026-3-31", "20260331", "２０２６-03-31", "2026-03-31T00:00:00Z", ""],
    ),
    "date-time": (
        ["2026-03-31T10:00:00+08:00", "2026-03-31T02:00:00Z", "2026-03-31t02:00:00.123456789z", "2016-12-31T23:59:60Z"],
        [
            "2026-03-31T10:00:00",
            "2026-03-31 10:00:00+08:00",
            "2026-03-31T25:00:00Z",
            "2026-03-31T10:00:00+24:00",
            "明天上午十点",
            "2026-03-31",
        ],
    ),
    "email": (
        ["wang.fang@example.com", "a+tag@shop.example.cn"],
        ["wang.fang", "a@b", "王芳@例子.中国", "a@@example.com", "a @example.com"],
    ),
    "uri": (
        ["https://shop.example/p?id=1#top", "mailto:kf@shop.example", "urn:isbn:0451450523", "https://x.cn"],
        ["shop.example/p", "https://", "http:/x", "https://例子.中国/", "https://a b", "/relative/path", "%zz:x"],
    ),
    "uuid": (
        ["123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"],
        ["123e4567e89b12d3a456426614174000", "{123e4567-e89b-12d3-a456-426614174000}", "not-a-uuid"],
    ),
}


def test_the_asserted_formats_are_these_five():
    assert set(FORMATS) == set(CASES) == set(FORMAT_CHECKER.checkers)


@pytest.mark.parametrize("name", CASES)
def test_each_format_takes_what_it_should_and_refuses_the_rest(name):
    good, bad = CASES[name]
    assert [value for value in good if not FORMAT_CHECKER.conforms(value, name)] == []
    assert [value for value in bad if FORMAT_CHECKER.conforms(value, name)] == []
    assert FORMAT_CHECKER.conforms(12, name)  # a format applies to strings; `type` says the rest


def catalog() -> EventCatalog:
    properties = {name.replace("-", "_"): {"type": "string", "format": name} for name in CASES}
    return EventCatalog.of(
        [
            EventDeclaration.model_validate(
                {"name": "profile.checked", "key": "customer", "schema": {"type": "object", "properties": properties}}
            )
        ]
    )


def test_the_catalogue_names_each_bad_field():
    checked = catalog()
    good = {name.replace("-", "_"): CASES[name][0][0] for name in CASES}
    assert checked.problems(event("profile.checked", "2026-03-02 10:00+08:00", **good)) == []
    bad = {name.replace("-", "_"): CASES[name][1][0] for name in CASES}
    problems = checked.problems(event("profile.checked", "2026-03-02 10:00+08:00", **bad))
    assert [where for where, _ in problems] == ["data.date", "data.date_time", "data.email", "data.uri", "data.uuid"]
    assert dict(problems)["data.date"] == "'明天' is not a 'date'"


def test_other_formats_stay_annotations():
    checked = EventCatalog.of(
        [
            EventDeclaration.model_validate(
                {"name": "x.y", "key": "customer", "schema": {"properties": {"ip": {"format": "ipv4"}}}}
            )
        ]
    )
    assert checked.problems(event("x.y", "2026-03-02 10:00+08:00", ip="not an address")) == []


async def test_the_api_refuses_a_subscription_expiring_tomorrow_in_words(store):
    """The issue's case, on the shipped `subscription.expiring` (`expires_on: {format: date}`)."""
    app = create_app(store, definitions=load_definitions(PACKAGE_DIR))
    base = {"type": "subscription.expiring", "occurred_at": "2026-03-02T10:00:00+08:00", "customer_id": "c1"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        refused = await api.post("/events", json={**base, "event_id": "words", "data": {"expires_on": "明天"}})
        taken = await api.post("/events", json={**base, "event_id": "date", "data": {"expires_on": "2026-03-31"}})
    assert refused.status_code == 422
    assert refused.json()["rejected"] == [
        {
            "index": 0,
            "event_id": "words",
            "problems": [{"field": "data.expires_on", "message": "'明天' is not a 'date'"}],
        }
    ]
    assert taken.status_code == 202 and taken.json()["accepted"] == ["date"]
