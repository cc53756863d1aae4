"""Checking and previewing a draft through the API (SQLite and PostgreSQL): what the console's
editor shows as a marketer types. A problem is at its file and line, a draft's journey comes back
as the diagram draws it, and a draft's send step renders for a real customer from the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from definitions.loader import PACKAGE_DIR
from store import queries
from tests.helpers import customer, event
from triggers.api import create_app

NOW = datetime(2026, 2, 1, 4, 0, tzinfo=UTC)
OPERATOR, READER, PUBLISHER = "op-secret-1", "read-secret-2", "pub-secret-3"
JOURNEY = (PACKAGE_DIR / "payment_reminder.yaml").read_text(encoding="utf-8")
TEMPLATE = (PACKAGE_DIR / "templates" / "payment_reminder.yaml").read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    """The 1-based line of `text` that holds `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.fixture
def api(store):
    app = create_app(store, api_keys=[f"ops:operator:{OPERATOR}", f"reader:read:{READER}", f"boss:publish:{PUBLISHER}"])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://journeys",
        headers={"Authorization": f"Bearer {OPERATOR}"},
        timeout=30,
    )


async def test_an_unchanged_journey_passes_and_comes_back_as_drawn(api):
    answer = await api.post("/definitions/check", json={"files": {"payment_reminder.yaml": JOURNEY}})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["ok"] is True
    assert [p for p in found["problems"] if not p["warning"]] == []
    assert list(found["journeys"]) == ["payment_reminder"]
    steps = found["journeys"]["payment_reminder"]["steps"]
    assert steps[0] == {"wait": "15m"}
    assert steps[1]["send"]["id"] == "first_reminder" and steps[1]["send"]["channel"] == "sms"


async def test_a_problem_is_at_its_file_line_and_field(api):
    draft = JOURNEY.replace("      channel: sms\n", "      channel: pigeon\n")
    answer = await api.post("/definitions/check", json={"files": {"payment_reminder.yaml": draft}})
    found = answer.json()
    assert answer.status_code == 200 and found["ok"] is False
    assert found["problems"] == [
        {
            "path": "payment_reminder.yaml",
            "line": line_of(draft, "channel: pigeon"),
            "field": "steps[1].send.channel",
            "message": "'pigeon' is not one of sms, email, webhook, outbox",
            "warning": False,
        }
    ]
    assert found["journeys"] == {}  # a journey with a problem does not load, so it is not drawn


async def test_broken_yaml_is_at_its_line(api):
    draft = JOURNEY.replace("  - wait: 15m\n", "  - wait: 15m\n  - wait: [\n")
    [problem] = (await api.post("/definitions/check", json={"files": {"payment_reminder.yaml": draft}})).json()[
        "problems"
    ]
    assert problem["path"] == "payment_reminder.yaml" and problem["message"].startswith("not valid YAML")
    assert problem["line"] == line_of(draft, "wait: [") + 1  # where the parser found the list unclosed


async def test_a_new_journey_and_a_changed_template_are_checked_together(api):
    journey = JOURNEY.replace("name: payment_reminder", "name: gentle_nudge").replace(
        "template: payment_reminder", "template: gentle_nudge"
    )
    template = TEMPLATE.replace("亲爱的", "你好，")
    answer = await api.post(
        "/definitions/check",
        json={"files": {"gentle_nudge.yaml": journey, "templates/gentle_nudge.yaml": template}},
    )
    found = answer.json()
    assert found["ok"] is True, found["problems"]
    assert list(found["journeys"]) == ["gentle_nudge"]
    # Without its template the same journey names what is missing, at the step's line.
    alone = (await api.post("/definitions/check", json={"files": {"gentle_nudge.yaml": journey}})).json()
    assert alone["ok"] is False
    assert {
        "path": "gentle_nudge.yaml",
        "line": line_of(journey, "template: gentle_nudge"),
        "field": "steps[1].send.template",
        "message": "unknown template 'gentle_nudge'",
        "warning": False,
    } in alone["problems"]


async def test_a_changed_template_brings_back_the_journeys_that_send_it(api):
    broken = TEMPLATE.replace("{{ order.order_id }}还未付款，宝贝", "{{ order.order_id 还未付款，宝贝", 1)
    found = (await api.post("/definitions/check", json={"files": {"templates/payment_reminder.yaml": broken}})).json()
    assert found["ok"] is False
    assert any(
        p["path"] == "templates/payment_reminder.yaml" and p["line"] == line_of(broken, "order.order_id 还未付款")
        for p in found["problems"]
    ), found["problems"]
    fixed = TEMPLATE.replace("宝贝已为您预留", "商品已为您预留")
    found = (await api.post("/definitions/check", json={"files": {"templates/payment_reminder.yaml": fixed}})).json()
    assert found["ok"] is True and "payment_reminder" in found["journeys"]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("../escape.yaml", "'../escape.yaml'"),
        ("notes.txt", "'notes.txt'"),
        ("rfm.yaml", "rfm.yaml: drafts change journeys"),
        ("deep/down/x.yaml", "deep/down/x.yaml: not a definition file"),
        ("templates/x.yml", "templates/x.yml: a file in templates/ ends .yaml"),
        ("segments/x.yml", "segments/x.yml: a file in segments/ ends .yaml"),
    ],
)
async def test_a_path_a_draft_may_not_hold_is_refused_by_name(api, path, named):
    answer = await api.post("/definitions/check", json={"files": {path: "name: x", "payment_reminder.yaml": JOURNEY}})
    assert answer.status_code == 422
    assert named in answer.json()["detail"]


@pytest.mark.parametrize("route", ["/definitions/check", "/definitions/preview"])
async def test_a_file_that_is_not_utf8_text_is_refused_by_name(api, route):
    """A lone surrogate is valid JSON but no UTF-8: the file is named, not a server error."""
    body = {"files": {"templates/payment_reminder.yaml": TEMPLATE + "# \ud800\n"}, "journey": "payment_reminder"}
    body |= {"step": "first_reminder", "customer": "c1"}
    answer = await api.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "templates/payment_reminder.yaml: not UTF-8 text (it holds a lone surrogate)"


async def test_an_empty_draft_and_a_file_too_long_are_refused(api):
    assert (await api.post("/definitions/check", json={"files": {}})).status_code == 422
    huge = JOURNEY + "# " + "x" * 300_000 + "\n"
    answer = await api.post("/definitions/check", json={"files": {"payment_reminder.yaml": huge}})
    assert answer.status_code == 422 and "payment_reminder.yaml: longer than 256 KiB" in answer.json()["detail"]


async def test_who_may_check_and_preview(api):
    body = {"files": {"payment_reminder.yaml": JOURNEY}}
    as_reader = await api.post("/definitions/check", json=body, headers={"Authorization": f"Bearer {READER}"})
    assert as_reader.status_code == 403
    assert "role read" in as_reader.json()["detail"] and "needs the role operator" in as_reader.json()["detail"]
    nobody = await api.post("/definitions/check", json=body, headers={"Authorization": "Bearer nope"})
    assert nobody.status_code == 401
    publisher = await api.post("/definitions/check", json=body, headers={"Authorization": f"Bearer {PUBLISHER}"})
    assert publisher.status_code == 200
    preview = await api.post(
        "/definitions/preview",
        json={**body, "journey": "payment_reminder", "step": "first_reminder", "customer": "c1"},
        headers={"Authorization": f"Bearer {READER}"},
    )
    assert preview.status_code == 403


def seed_customer(store) -> None:
    with store.transaction() as session:
        queries.upsert_customer(session, customer(name="王芳", locale="zh-CN"), NOW, "CN")
        queries.store_event(session, event("order.created", NOW, order="o1", event_id="e1", amount=99), NOW)


async def test_a_drafts_send_step_previews_with_the_drafts_text(api, store):
    seed_customer(store)
    template = TEMPLATE.replace("宝贝已为您预留", "新品已为您预留")
    answer = await api.post(
        "/definitions/preview",
        json={
            "files": {"payment_reminder.yaml": JOURNEY, "templates/payment_reminder.yaml": template},
            "journey": "payment_reminder",
            "step": "first_reminder",
            "customer": "c1",
            "order": "o1",
        },
    )
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["journey"] == "payment_reminder" and found["order_id"] == "o1"
    sms = next(c for c in found["channels"] if c["channel"] == "sms")
    assert "亲爱的王芳，您的订单o1还未付款，新品已为您预留" in sms["body"]
    # What runs is untouched: the live preview still says what the shipped template says.
    assert "宝贝已为您预留" in TEMPLATE


async def test_a_new_journey_of_a_draft_previews_without_being_saved(api, store):
    seed_customer(store)
    journey = JOURNEY.replace("name: payment_reminder", "name: gentle_nudge").replace("id: first_reminder", "id: nudge")
    found = await api.post(
        "/definitions/preview",
        json={"files": {"gentle_nudge.yaml": journey}, "journey": "gentle_nudge", "step": "nudge", "customer": "c1"},
    )
    assert found.status_code == 200, found.text
    assert found.json()["step"] == "nudge" and found.json()["order_id"] == "o1"  # the customer's latest order
    assert any("customer's latest" in note for note in found.json()["notes"])


async def test_a_preview_names_what_stops_it(api, store):
    seed_customer(store)
    files = {"payment_reminder.yaml": JOURNEY.replace("      channel: sms\n", "      channel: pigeon\n")}
    broken = await api.post(
        "/definitions/preview",
        json={"files": files, "journey": "payment_reminder", "step": "first_reminder", "customer": "c1"},
    )
    assert broken.status_code == 422
    assert "journey 'payment_reminder' does not load with the draft" in broken.json()["detail"]
    assert "payment_reminder.yaml:" in broken.json()["detail"] and "'pigeon'" in broken.json()["detail"]

    files = {"payment_reminder.yaml": JOURNEY}
    no_step = await api.post(
        "/definitions/preview",
        json={"files": files, "journey": "payment_reminder", "step": "second", "customer": "c1"},
    )
    assert no_step.status_code == 404
    assert "has no send step 'second' (its send steps: first_reminder)" in no_step.json()["detail"]
    no_customer = await api.post(
        "/definitions/preview",
        json={"files": files, "journey": "payment_reminder", "step": "first_reminder", "customer": "c-404"},
    )
    assert no_customer.status_code == 404 and "no customer 'c-404'" in no_customer.json()["detail"]
    with store.transaction() as session:
        queries.upsert_customer(session, customer("c9"), NOW, "CN")
    not_hers = await api.post(
        "/definitions/preview",
        json={"files": files, "journey": "payment_reminder", "step": "first_reminder", "customer": "c9", "order": "o1"},
    )
    assert not_hers.status_code == 422
    assert "order 'o1' belongs to customer 'c1', not 'c9'" in not_hers.json()["detail"]
