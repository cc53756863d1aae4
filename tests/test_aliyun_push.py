"""Aliyun SMS's HTTP push, through the real app on PostgreSQL: delivery receipts (SmsReport) move
the messages the send activity wrote forward, once, never back, and settle a send whose answer was
lost; pushes without the URL's secret token are refused and counted; a receipt with a good token
about no message of ours changes nothing; a body no retry can mend is a 4xx, never a 500."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from activities.journey import JourneyActivities
from channels import build_channels
from core.replies import ReplyRules
from definitions.loader import Definitions
from store.tables import MessageRow, ProviderEventRow
from tests.fake_provider import AUTH_TOKEN
from tests.helpers import attempt, customer
from tests.test_policy import request, save
from triggers.api import create_app
from triggers.webhooks import WebhookConfig

TOKEN = "t0ken-" + "k" * 40
PUBLIC = "https://journeys.example.com"
PHONE = "+8613800000001"


def app_for(
    store, *, token: str | None = TOKEN, replies: ReplyRules | None = None, on_reply=None, woken=None, definitions=None
):
    """The API as `journeys serve` builds it, with Aliyun's push token (and Twilio's for inbound)."""
    if definitions is None:
        definitions = Definitions() if replies is None else Definitions(replies=replies)
    config = WebhookConfig(public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN, aliyun_push_token=token)
    app = create_app(
        store,
        definitions=definitions,
        webhooks=config,
        api_keys=["support:read:k-read", "shop:ingest:k-ingest"],
        on_reply=on_reply,
        on_accepted=(lambda: woken.append(1)) if woken is not None else None,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000")


async def push(api, kind: str, items, token: str = TOKEN) -> httpx.Response:
    body = items if isinstance(items, bytes) else json.dumps(items, ensure_ascii=False).encode()
    return await api.post(
        f"/webhooks/aliyun/{token}/{kind}", content=body, headers={"Content-Type": "application/json"}
    )


def sent_sms(store, tmp_path, step: str = "remind", customer_id: str = "c1", **changes) -> MessageRow:
    """An SMS the real send activity wrote to the ledger (through the outbox), as Aliyun's channel
    leaves it: `provider_id` Aliyun's BizId, `template_data` the signature and parameters."""
    activities = JourneyActivities(store, build_channels(tmp_path / "outbox.jsonl"), "小店", default_region="CN")
    outcome = attempt(1).run(activities.decide_message, request(step=step, customer_id=customer_id))
    assert (outcome.status, outcome.channel) == ("sent", "sms")
    with store.transaction() as session:
        row = session.scalars(
            select(MessageRow).where(MessageRow.step == step, MessageRow.customer_id == customer_id)
        ).one()
        for name, value in changes.items():
            setattr(row, name, value)
    return ledger(store, row.id)


def ledger(store, message_id: str) -> MessageRow:
    with store.transaction() as session:
        row = session.get(MessageRow, message_id)
        session.expunge(row)
        return row


def receipt(row: MessageRow | None = None, *, number: str = "13800000001", success: bool = True, **fields) -> dict:
    item = {
        "phone_number": number,
        "send_time": "2026-02-02 12:00:00",
        "report_time": "2026-02-02 12:00:09",
        "success": success,
        "err_code": "DELIVERED" if success else "MK:0001",
        "err_msg": "用户接收成功" if success else "空号",
        "sms_size": "1",
        "biz_id": row.provider_id if row is not None else None,
        "out_id": row.id if row is not None else None,
    }
    return {**item, **fields}


@pytest.fixture
def store(pg_store):
    return pg_store


# ------------------------------------------------------------------ receipts


async def test_receipts_apply_once_and_never_move_a_message_back(store, tmp_path):
    save(store, customer())
    row = sent_sms(store, tmp_path, provider_id="BIZ-1")
    async with app_for(store) as api:
        first = await push(api, "report", [receipt(row)])
        again = await push(api, "report", [receipt(row)])
        late_failure = await push(api, "report", [receipt(row, success=False)])
    assert first.status_code == 200 and first.json()["code"] == 0
    assert (first.json()["applied"], again.json()["duplicates"], late_failure.json()["ignored"]) == (1, 1, 1)
    after = ledger(store, row.id)
    assert (after.status, after.error, after.reason) == ("delivered", None, None)
    # Aliyun's report_time (Beijing) is taken only near our clock; this one is in 2026-02: ours is used.
    assert after.delivered_at is not None


async def test_a_late_receipt_never_undoes_a_click(store, tmp_path):
    save(store, customer())
    row = sent_sms(store, tmp_path, provider_id="BIZ-2", status="clicked")
    async with app_for(store) as api:
        answer = await push(api, "report", [receipt(row, number="8613800000001")])
    assert answer.json()["ignored"] == 1
    assert ledger(store, row.id).status == "clicked"


async def test_a_batchs_receipts_are_matched_by_biz_id_and_number(store, tmp_path):
    """SendBatchSms gives one BizId to every number: each receipt settles its own row, with or
    without 86 before the number, and a failure keeps Aliyun's error code."""
    save(store, customer("c2", phone="+8613800000002"), customer("c3", phone="+8613800000003"))
    two = sent_sms(store, tmp_path, customer_id="c2", provider_id="BIZ-B")
    three = sent_sms(store, tmp_path, customer_id="c3", provider_id="BIZ-B")
    items = [
        receipt(number="13800000002", biz_id="BIZ-B", out_id="batch-7"),
        receipt(number="8613800000003", biz_id="BIZ-B", out_id="batch-7", success=False),
        receipt(number="13800000004", biz_id="BIZ-B", out_id="batch-7"),  # no such number in the batch
    ]
    async with app_for(store) as api:
        answer = await push(api, "report", items)
    assert {k: answer.json()[k] for k in ("applied", "ignored")} == {"applied": 2, "ignored": 1}
    assert ledger(store, two.id).status == "delivered"
    failed = ledger(store, three.id)
    assert (failed.status, failed.reason, failed.error) == ("undelivered", "undelivered", "MK:0001")


async def test_a_receipt_settles_a_message_whose_answer_was_lost(store, tmp_path):
    save(store, customer())
    row = sent_sms(store, tmp_path, status="unknown", reason="in_doubt", provider_id=None,
                   attempted_at=datetime.now(UTC))  # fmt: skip
    async with app_for(store) as api:
        answer = await push(api, "report", [receipt(row, biz_id="BIZ-9")])
    assert answer.json()["applied"] == 1
    settled = ledger(store, row.id)
    assert (settled.status, settled.reason, settled.provider_id, settled.attempted_at) == (
        "delivered",
        None,
        "BIZ-9",
        None,
    )


# ------------------------------------------------------------------ forged pushes


def refusals(store) -> list[str]:
    with store.transaction() as session:
        return list(
            session.scalars(
                select(ProviderEventRow.kind).where(
                    ProviderEventRow.provider == "aliyun", ProviderEventRow.kind.like("refused%")
                )
            )
        )


async def test_pushes_without_the_token_are_refused_and_counted(store, tmp_path, caplog):
    save(store, customer())
    row = sent_sms(store, tmp_path, provider_id="BIZ-1")
    caplog.set_level(logging.WARNING, logger="journeys.webhooks.aliyun")
    async with app_for(store, token=None) as unconfigured:
        none_set = await push(unconfigured, "report", [receipt(row)], token="anything")
    async with app_for(store) as api:
        wrong = await push(api, "report", [receipt(row)], token=TOKEN[:-1] + "x")
        wrong_up = await push(api, "up", [{"phone_number": "13800000001", "content": "TD", "sequence_id": 1}], "x")
    assert [a.status_code for a in (none_set, wrong, wrong_up)] == [403, 403, 403]
    assert sorted(refusals(store)) == ["refused:report", "refused:report", "refused:up"]
    assert ledger(store, row.id).status == "sent"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "refused an Aliyun report push: no ALIYUN_SMS_PUSH_TOKEN configured" in logged
    assert "wrong token in the URL" in logged
    assert "13800000001" not in logged and TOKEN[:-1] not in logged  # no number, no token tried


async def test_a_receipt_with_the_token_about_no_message_of_ours_changes_nothing(store, tmp_path):
    save(store, customer())
    row = sent_sms(store, tmp_path, provider_id="BIZ-1")
    forged = [
        receipt(success=False, biz_id="BIZ-404", out_id="no-such-message"),
        receipt(number="13900000000", success=False, biz_id="BIZ-1", out_id=row.id),  # our id, another number
        receipt(success=False, biz_id=None, out_id=None),
    ]
    async with app_for(store) as api:
        answer = await push(api, "report", forged)
    assert answer.status_code == 200
    assert answer.json() == {"code": 0, "msg": "接收成功", "applied": 0, "duplicates": 0, "ignored": 3}
    after = ledger(store, row.id)
    assert (after.status, after.error) == ("sent", None)


async def test_bodies_no_retry_can_mend_are_4xx_with_a_reason(store):
    async with app_for(store) as api:
        not_json = await push(api, "report", b"{oops")
        not_array = await push(api, "up", {"phone_number": "13800000001"})
        too_big = await push(api, "report", b"[" + b" " * 1_100_000 + b"]")
        odd_items = await push(api, "report", [1, "x", {"success": "maybe"}, None])
    assert (not_json.status_code, not_array.status_code, too_big.status_code) == (422, 422, 413)
    assert not_json.json()["msg"].startswith("the body is not JSON")
    assert not_array.json()["msg"] == "Aliyun pushes a JSON array of items"
    assert odd_items.status_code == 200 and odd_items.json()["ignored"] == 4


async def test_text_the_store_cannot_keep_is_cleaned_not_a_500(store, tmp_path):
    """JSON may carry a NUL or a lone surrogate in any field (PostgreSQL refuses both)."""
    save(store, customer())
    row = sent_sms(store, tmp_path, provider_id="BIZ-1")
    odd = '[{"phone_number": "1380000000\\u0000", "success": false, "err_code": "MK\\ud800", "biz_id": "BIZ-1\\u0000",'
    odd += ' "out_id": "' + row.id + '\\u0000"}]'
    up = '[{"phone_number": "13800000001\\ud800", "content": "\\u0000TD\\ud800", "sign_name": "\\u0000", "sequence_id": "9\\u0000"}]'
    async with app_for(store) as api:
        receipt_answer = await push(api, "report", odd.encode())
        up_answer = await push(api, "up", up.encode())
    assert (receipt_answer.status_code, up_answer.status_code) == (200, 200), (receipt_answer.text, up_answer.text)
    assert up_answer.json()["applied"] == 1
