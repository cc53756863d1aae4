"""Customer data encrypted in Temporal histories: with JOURNEYS_ENCRYPTION_KEYS set, the deployed
worker and API seal every payload with AES-256-GCM; the raw history on the server holds neither
the customer's phone number nor the message; the journey still works; the codec endpoint opens
the payloads for an operator with a key; keys rotate; histories from before still replay."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.encryption import EncryptionCodec, EncryptionKeyError, new_key_line, parse_keys
from store import queries
from tests.helpers import daytime_zone
from tests.stack import Stack, api_event, sent, wait_until
from triggers.api import create_app

PHONE = "+8613912345678"
KEYS = ",".join([new_key_line("k2"), new_key_line("k1")])


async def test_a_payload_is_sealed_with_the_current_key_and_opened_with_any():
    old, new = parse_keys(new_key_line("k1")), parse_keys(new_key_line("k2"))
    before = EncryptionCodec(old)
    after = EncryptionCodec({**new, **old})  # rotated: k2 encrypts, k1 still opens
    plain = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"phone": PHONE}).encode())
    [sealed_before] = await before.encode([plain])
    [sealed_after] = await after.encode([plain])
    assert sealed_after.metadata["encryption-key-id"] == b"k2" and PHONE.encode() not in sealed_after.data
    assert await after.decode([sealed_before, sealed_after, plain]) == [plain, plain, plain]  # old ones pass
    with pytest.raises(EncryptionKeyError, match="key 'k2', which is not configured"):
        await before.decode([sealed_after])


@pytest.mark.parametrize(
    ("setting", "problem"),
    [("k1", "key-id=base64-key"), ("k1=%%%", "not base64"), ("k1=" + base64.b64encode(b"short").decode(), "32")],
)
def test_a_bad_key_setting_names_the_problem_not_the_key(setting, problem):
    with pytest.raises(EncryptionKeyError, match=problem):
        parse_keys(setting)


def raw_history_bytes(history) -> bytes:
    return b"".join(event.SerializeToString() for event in history.events)


def test_histories_hold_no_contact_data_and_operators_can_decode_them(pg_store, tmp_path):
    stack = Stack(tmp_path, pg_store.url, extra_env={"JOURNEYS_ENCRYPTION_KEYS": KEYS, "JOURNEYS_API_KEYS": "ops"})
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        api_event(now, "cust-1", "customer.created", "c1", phone=PHONE, name="王芳", timezone=daytime_zone(now)),
        api_event(now, "ship-1", "order.shipped", "c1", "o1", carrier="顺丰", tracking_no="SF777"),
    ]
    with stack:
        answer = httpx.post(f"{stack.api}/events", json=events, headers={"Authorization": "Bearer ops"}, timeout=30)
        assert answer.status_code == 202, answer.text
        wait_until(lambda: sent(pg_store, "shipped_notice") == 1, 120, "the shipped notice")

        async def fetch():
            plain = await Client.connect(stack.address, data_converter=pydantic_data_converter)  # no codec
            return await plain.get_workflow_handle("shipped_notice:o1").fetch_history()

        history = asyncio.run(fetch())
        raw = raw_history_bytes(history)
        started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
        body = {"payloads": [MessageToDict(started)]}
        decoded = httpx.post(f"{stack.api}/codec/decode", json=body, headers={"Authorization": "Bearer ops"})
        refused = httpx.post(f"{stack.api}/codec/decode", json=body)
        preflight = httpx.options(
            f"{stack.api}/codec/decode",
            headers={"Origin": "http://127.0.0.1:8233", "Access-Control-Request-Method": "POST"},
        )

    with pg_store.transaction() as session:
        [message] = queries.list_messages(session)
    assert message.status == "sent" and message.address == PHONE and "SF777" in message.body
    assert started.metadata["encoding"] == b"binary/encrypted"
    for secret in (PHONE, PHONE.lstrip("+86"), "王芳", "SF777", message.body):
        assert secret.encode() not in raw, f"{secret!r} is in the raw history"
    assert decoded.status_code == 200, decoded.text
    opened = base64.b64decode(decoded.json()["payloads"][0]["data"]).decode()
    assert PHONE in opened and "王芳" in opened
    assert refused.status_code == 401
    assert preflight.headers.get("access-control-allow-origin") == "http://127.0.0.1:8233"


async def test_the_codec_endpoint_without_encryption_says_so(store):
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://j") as api:
        answer = await api.post("/codec/decode", json={"payloads": []})
        garbage = await api.post("/codec/decode", content=b"{nope")
    assert answer.status_code == 404 and "not configured" in answer.json()["detail"]
    assert garbage.status_code in (404, 422)
