"""The one message context (definitions.expressions.message_context): what the workflow sends,
the send activity renders and preview shows. The saved histories pin its shape: the names in one
order, so a send request's payload stays what running instances recorded."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from definitions.expressions import MESSAGE_NAMES, build_context, message_context, zone

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def _context(**names):
    return build_context(tz=zone("Asia/Shanghai"), now=datetime(2026, 2, 1, 2, 0, tzinfo=UTC), **names)


def test_the_data_of_an_expression_context_without_its_helpers():
    context = _context(event={"type": "order.paid"}, order={"order_id": "o1"}, customer={"rfm": {}}, vars={"n": 1})
    found = message_context(context)
    assert list(found) == list(MESSAGE_NAMES)
    assert found["entry"] == found["event"] == context["event"]  # no entry given: the event itself
    assert found["order"] == {"order_id": "o1"} and found["vars"] == {"n": 1}


def test_before_revision_4_no_entry_and_the_customer_given_stands_in_place():
    found = message_context(_context(event={"type": "order.paid"}), customer={"rfm": {"tier": "gold"}}, entry=False)
    assert list(found) == ["event", "order", "vars", "customer"]
    assert found["customer"] == {"rfm": {"tier": "gold"}}


def test_a_context_passed_on_keeps_what_it_has_in_its_order():
    sent = {"event": {"type": "order.paid"}, "order": {}, "vars": {}}  # a send from before `customer`
    found = message_context(sent, customer={"name": "王芳"})
    assert list(found) == ["event", "order", "vars", "customer"]


def _recorded_sends(path: Path) -> list[dict]:
    sends = []
    for event in json.loads(path.read_text())["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "send_message":
            sends.append(json.loads(base64.b64decode(scheduled["input"]["payloads"][0]["data"])))
    return sends


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_every_recorded_send_is_a_message_context(path):
    for request in _recorded_sends(path):
        context = request["context"]
        assert [name for name in MESSAGE_NAMES if name in context] == list(context), path.name
        assert json.dumps(message_context(context)) == json.dumps(context)
        # What the send activity renders with: the same, the customer's record added.
        assert list(message_context(context, customer={})) == list(dict.fromkeys([*context, "customer"]))
