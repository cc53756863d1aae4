"""A mainland shop's SMS end to end, through the processes users run (`journeys api`, `journeys
worker`, a Temporal dev server, PostgreSQL) and Aliyun's SDK against the local fake of its API,
with the shipped definitions (sms.yaml's registered texts, replies.yaml): the shipped notice goes
out as its registered template, Aliyun's receipt marks it delivered, and a TD reply pushed twice
unsubscribes the number from marketing SMS and is confirmed once, through Aliyun too."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from definitions.loader import load_sms_registry
from store.tables import EventRow, MessageRow, SmsReplyRow, SuppressionRow
from tests.fake_aliyun import ACCESS_KEY_ID, ACCESS_KEY_SECRET, FakeAliyun
from tests.helpers import daytime_zone
from tests.stack import Stack, api_event, pending, sent, wait_until

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
TOKEN = "push-token-0123456789abcdefghijklmnopqrstuv"
BEIJING = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def shop(pg_store, tmp_path):
    registry = load_sms_registry(DEFINITIONS)
    texts = {code: template.text for code, template in registry.templates.items()}
    with FakeAliyun(texts, registry.signatures) as aliyun:
        stack = Stack(tmp_path, pg_store.url, server_db=tmp_path / "temporal.db")
        stack.extra_env = {
            "JOURNEYS_PUBLIC_URL": stack.api,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
            "ALIYUN_SMS_ENDPOINT": aliyun.endpoint,
            "ALIYUN_SMS_PROTOCOL": "http",
            "ALIYUN_SMS_PUSH_TOKEN": TOKEN,
        }
        with stack:
            yield stack, aliyun


def _beijing(at: datetime) -> str:
    return at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def test_a_notice_goes_out_as_its_registered_template_and_a_td_reply_is_confirmed_once(shop, pg_store):
    stack, aliyun = shop
    now = datetime.now(UTC).replace(microsecond=0)
    stack.post(
        [
            api_event(now, "cust-1", "customer.created", "c1", timezone=daytime_zone(now), phone="13912345678",
                      name="王芳"),
            api_event(now, "ship-1", "order.shipped", "c1", "o1", carrier="顺丰", tracking_no="ＳＦ１２３"),
        ]
    )  # fmt: skip
    wait_until(lambda: sent(pg_store, "shipped_notice") == 1, 120, "the shipped notice")

    [notice] = aliyun.taken()
    assert (notice["number"], notice["template_code"], notice["sign_name"]) == (
        "13912345678",
        "SMS_460000103",
        "示例商城",
    )
    assert notice["content"] == "【示例商城】亲爱的王芳，您的订单o1已发货，顺丰单号ＳＦ１２３，请留意查收。"
    with pg_store.transaction() as session:
        row = session.scalars(select(MessageRow).where(MessageRow.journey == "shipped_notice")).one()
        assert (row.address, row.body, row.provider_template, row.segments) == (
            "+8613912345678",
            notice["content"],
            "SMS_460000103",
            1,
        )
        assert row.provider_id == notice["biz_id"]
        message_id = row.id

    # Aliyun's receipt, pushed twice (it may be): delivered, once. A push with another token changes nothing.
    receipt = {"phone_number": "13912345678", "send_time": _beijing(now), "report_time": _beijing(now + timedelta(seconds=5)),
               "success": True, "err_code": "DELIVERED", "err_msg": "用户接收成功", "sms_size": "1",
               "biz_id": notice["biz_id"], "out_id": notice["out_id"]}  # fmt: skip
    forged = httpx.post(f"{stack.api}/webhooks/aliyun/not-the-token/report", json=[receipt | {"success": False}])
    assert forged.status_code == 403
    for _ in range(2):
        answer = httpx.post(f"{stack.api}/webhooks/aliyun/{TOKEN}/report", json=[receipt])
        assert answer.status_code == 200 and answer.json()["code"] == 0
    with pg_store.transaction() as session:
        assert session.get(MessageRow, message_id).status == "delivered"

    # The customer answers TD; Aliyun pushes the reply twice.
    reply = {"phone_number": "13912345678", "send_time": _beijing(now + timedelta(minutes=1)), "content": "TD",
             "sign_name": "示例商城", "dest_code": "1234", "sequence_id": 9001}  # fmt: skip
    for _ in range(2):
        answer = httpx.post(f"{stack.api}/webhooks/aliyun/{TOKEN}/up", json=[reply])
        assert answer.status_code == 200 and answer.json()["code"] == 0
    wait_until(lambda: len(aliyun.taken()) == 2, 120, "the unsubscribe's confirmation")
    time.sleep(3)  # a second confirmation, were one on its way, would come now
    confirmations = aliyun.taken()[1:]
    assert [(c["number"], c["template_code"]) for c in confirmations] == [("13912345678", "SMS_460000109")]
    assert confirmations[0]["content"].startswith("【示例商城】您已成功退订营销短信")

    wait_until(lambda: pending(pg_store) == 0, 60, "every event dispatched")

    def answered() -> bool:
        """The reply's answer written as sent and the reply marked handled: the steps after the
        provider took the confirmation."""
        with pg_store.transaction() as session:
            rows = session.scalars(select(SmsReplyRow)).all()
            if not rows or rows[0].handled_at is None or rows[0].answer_id is None:
                return False
            answer = session.get(MessageRow, rows[0].answer_id)
            return answer is not None and answer.status == "sent"

    wait_until(answered, 60, "the reply's outcome recorded")
    with pg_store.transaction() as session:
        [logged] = session.scalars(select(SmsReplyRow)).all()
        assert (logged.customer_id, logged.message_id, logged.order_id, logged.action) == (
            "c1",
            message_id,
            "o1",
            "unsubscribe",
        )
        assert logged.handled_at is not None and logged.answer_id is not None
        confirm = session.get(MessageRow, logged.answer_id)
        assert (confirm.journey, confirm.step, confirm.category, confirm.status) == (
            "replies",
            "confirm",
            "transactional",
            "sent",
        )
        suppression = session.get(SuppressionRow, ("sms", "+8613912345678"))
        assert suppression is not None and suppression.scope == "marketing"
        [event] = session.scalars(select(EventRow).where(EventRow.type == "sms.replied")).all()
        assert event.customer_id == "c1" and event.data["text"] == "TD" and event.data["journey"] == "shipped_notice"
