"""A page of messages handed to a channel at once (`send_bulk` → each adapter's `send_many`), through
the real SDKs against the local fakes (tests/fake_provider.py, tests/fake_aliyun.py).

What a shop would notice: every message of a page reaches its own recipient once, with its own
ledger id (so the provider's events and receipts find it), in as few provider calls as the
provider allows; a refusal, a rate limit or a lost answer is reported on each message it concerns,
in the page's order; a message in doubt is settled as a single send settles it, never sent twice.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from channels import SmsRouter
from channels.aliyun_sms import AliyunSmsChannel
from channels.outbox import OutboxChannel
from channels.sendgrid_email import SendGridEmailChannel
from channels.twilio_sms import TwilioSmsChannel
from core.channel import (
    ChannelError,
    OutgoingMessage,
    PermanentChannelError,
    RetryableChannelError,
    SendReceipt,
    send_bulk,
)
from core.signing import unsubscribe_token
from core.sms_registry import aliyun_text, settled_by_lookup
from store.tables import MessageRow
from tests.fake_aliyun import ACCESS_KEY_ID, ACCESS_KEY_SECRET, AliyunAnswer, FakeAliyun
from tests.fake_provider import AUTH_TOKEN, Answer, FakeProvider, SendGridSigner
from triggers.api import create_app
from triggers.webhooks import WebhookConfig

SIGN = "小店"
SHIPPED = "SMS_480000001"
PROMO = "SMS_480000002"
TEMPLATES = {
    SHIPPED: "您的订单${order}已发货，${carrier}单号${tracking}。回T退订",
    PROMO: "双十二${percent}折起。回T退订",
}
SENDGRID_TEMPLATE = "d-0123456789abcdef0123456789abcdef"
UNSUBSCRIBE = "https://journeys.example.com/unsubscribe"


@pytest.fixture
def provider():
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def aliyun():
    with FakeAliyun(TEMPLATES, [SIGN]) as fake:
        yield fake


def outgoing(n: int, channel: str, to: str, **changes) -> OutgoingMessage:
    fields = {
        "message_id": f"m-{n}",
        "channel": channel,
        "to": to,
        "body": f"<p>您好 {n}</p>" if channel == "email" else f"【小店】您好 {n}",
        "journey": "double_twelve",
        "step": "announce",
        "customer_id": f"c{n}",
        "category": "marketing",
    }
    return OutgoingMessage(**(fields | changes))


def errors(results) -> dict[int, ChannelError]:
    return {index: result for index, result in enumerate(results) if isinstance(result, ChannelError)}


# ------------------------------------------------------------------ the outbox


def test_the_outbox_writes_a_page_in_one_write(tmp_path):
    """Every message of the page is a line, in order, written at one moment (one write of the
    page); each receipt is the one a single send gives."""
    path = tmp_path / "outbox.jsonl"
    page = [outgoing(n, "sms", f"+86139{n:08d}") for n in range(40)]
    results = send_bulk(OutboxChannel("sms", path), page)
    assert results == [SendReceipt(provider_id=f"outbox:m-{n}") for n in range(40)]
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["message_id"] for line in lines] == [f"m-{n}" for n in range(40)]
    assert lines[7]["to"] == "+8613900000007" and lines[7]["body"] == "【小店】您好 7"
    assert len({line["written_at"] for line in lines}) == 1


def test_the_outbox_skips_a_line_already_written_for_a_message_in_doubt(tmp_path):
    """A worker killed after writing m-1's line retries the page: m-1 is found and not written
    again; m-2, in doubt but never written, and m-3, new, are written once each."""
    path = tmp_path / "outbox.jsonl"
    outbox = OutboxChannel("sms", path)
    outbox.send(outgoing(1, "sms", "+8613900000001"))
    earlier = datetime.now(UTC)
    page = [
        outgoing(1, "sms", "+8613900000001", earlier_attempt_at=earlier),
        outgoing(2, "sms", "+8613900000002", earlier_attempt_at=earlier),
        outgoing(3, "sms", "+8613900000003"),
    ]
    results = outbox.send_many(page)
    assert [result.provider_id for result in results] == ["outbox:m-1", "outbox:m-2", "outbox:m-3"]
    written = [json.loads(line)["message_id"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert written == ["m-1", "m-2", "m-3"]


def test_the_outbox_without_a_file_gives_each_its_receipt(tmp_path):
    results = OutboxChannel("email").send_many([outgoing(n, "email", f"u{n}@example.com") for n in range(3)])
    assert [result.provider_id for result in results] == ["outbox:m-0", "outbox:m-1", "outbox:m-2"]


# ------------------------------------------------------------------ SendGrid


def sendgrid(provider: FakeProvider, timeout: float = 10.0) -> SendGridEmailChannel:
    return SendGridEmailChannel(
        "SG.key",
        "shop@example.com",
        unsubscribe_group_id=42,
        unsubscribe_url=UNSUBSCRIBE,
        unsubscribe_secret="s3cret",
        host=provider.url,
        timeout=timeout,
    )


def templated(n: int, **changes) -> OutgoingMessage:
    """A message of the shop's SendGrid dynamic template, with its recipient's own data."""
    fields = {"provider_template": SENDGRID_TEMPLATE, "template_data": {"name": f"顾客{n}", "code": f"C{n:04d}"}}
    return outgoing(n, "email", f"u{n}@example.com", **(fields | changes))


def test_2500_emails_of_one_template_go_in_three_requests_each_recipient_with_its_ledger_id(provider):
    page = [templated(n) for n in range(2500)]
    results = send_bulk(sendgrid(provider), page)

    assert [len(body["personalizations"]) for body in provider.mail] == [1000, 1000, 500]
    assert all(body["template_id"] == SENDGRID_TEMPLATE and "content" not in body for body in provider.mail)
    recipients = {recipient["email"]: recipient for recipient in provider.mail_recipients}
    assert len(provider.mail_recipients) == len(recipients) == 2500
    for n in (0, 999, 1000, 2499):
        recipient = recipients[f"u{n}@example.com"]
        # The ledger id travels as a single send carries it, so the event webhook finds the message.
        assert recipient["custom_args"] == {"message_id": f"m-{n}", "journey": "double_twelve", "step": "announce"}
        token = unsubscribe_token("s3cret", f"m-{n}")
        assert recipient["headers"]["List-Unsubscribe"] == f"<{UNSUBSCRIBE}?message_id=m-{n}&token={token}>"
        assert results[n] == SendReceipt(provider_id=recipient["provider_id"])
    by_email = {p["to"][0]["email"]: p for body in provider.mail for p in body["personalizations"]}
    assert by_email["u1234@example.com"]["dynamic_template_data"] == {"name": "顾客1234", "code": "C1234"}
    assert all(body["asm"] == {"group_id": 42} and body["categories"] == ["double_twelve"] for body in provider.mail)
    # Each request's receipt is its own; a recipient's sg_message_id starts with it.
    assert len({result.provider_id for result in results}) == 3
    assert provider.mail_ids() == [f"m-{n}" for n in range(2500)]


def test_emails_share_a_request_only_where_their_bodies_are_the_same(provider):
    """Differing free-text bodies, subjects, journeys and categories never share a request's
    content: each recipient gets the very subject and body of its own message."""
    page = [
        outgoing(0, "email", "u0@example.com", subject="双十二", body="<p>A</p>"),
        outgoing(1, "email", "u1@example.com", subject="双十二", body="<p>B</p>"),
        outgoing(2, "email", "u2@example.com", subject="双十二", body="<p>A</p>"),
        outgoing(3, "email", "u3@example.com", subject="最后一天", body="<p>A</p>"),
        outgoing(4, "email", "u4@example.com", subject="双十二", body="<p>B</p>"),
        outgoing(5, "email", "u5@example.com", subject="双十二", body="<p>A</p>", category="transactional"),
        outgoing(6, "email", "u6@example.com", subject="双十二", body="<p>A</p>", journey="other"),
        templated(7),
        templated(8, provider_template="d-another"),
        templated(9),
    ]
    results = sendgrid(provider).send_many(page)
    assert errors(results) == {}

    seen = {}
    for body in provider.mail:
        for personalization in body["personalizations"]:
            seen[personalization["to"][0]["email"]] = (body, personalization)
    assert len(seen) == len(page)
    args = {recipient["email"]: recipient["custom_args"] for recipient in provider.mail_recipients}
    for message in page:
        body, personalization = seen[message.to]
        assert args[message.to]["message_id"] == message.message_id
        assert body["categories"] == [message.journey]
        assert ("asm" in body) == (message.category == "marketing")
        if message.provider_template:
            assert body["template_id"] == message.provider_template
            assert personalization["dynamic_template_data"] == message.template_data
        else:
            assert personalization["subject"] == message.subject
            assert body["content"][1] == {"type": "text/html", "value": message.body}
    sizes = sorted(len(body["personalizations"]) for body in provider.mail)
    # A (0, 2, 3: the subject is per recipient), B (1, 4), the template (7, 9); 5, 6 and 8 alone.
    assert sizes == [1, 1, 1, 2, 2, 3]


def test_a_refused_request_gives_each_of_its_emails_the_error(provider):
    """SendGrid refuses the request of template emails (400): each of them fails with SendGrid's
    status; the free-text emails of another request are sent."""
    page = [templated(n) for n in range(5)] + [outgoing(n, "email", f"u{n}@example.com") for n in (5, 6)]
    page[6] = page[6].model_copy(update={"body": page[5].body})
    provider.script["u3@example.com"] = [Answer(status=400)]
    results = sendgrid(provider).send_many(page)
    refused = errors(results)
    assert sorted(refused) == [0, 1, 2, 3, 4]
    assert all(isinstance(err, PermanentChannelError) and err.code == "400" for err in refused.values())
    assert len({id(err) for err in refused.values()}) == 5  # each message its own error
    assert provider.mail_ids() == ["m-5", "m-6"]
    assert provider.mail_refused == [{"status": 400, "emails": [f"u{n}@example.com" for n in range(5)]}]


def test_a_rate_limited_or_lost_request_leaves_each_email_to_retry(provider):
    """A rate limit holds for each email of the request (with SendGrid's reset); a request whose
    answer came too late leaves each of its emails in doubt."""
    limited = [templated(n) for n in range(3)]
    reset = {"X-RateLimit-Reset": str(int(time.time()) + 30)}
    provider.script["u0@example.com"] = [Answer(status=429, headers=reset)]
    results = sendgrid(provider).send_many(limited)
    assert all(isinstance(err, RetryableChannelError) and err.retry_after > 1 for err in results)
    assert not any(err.in_doubt for err in results)

    provider.script["u0@example.com"] = [Answer(delay=1.5)]
    results = sendgrid(provider, timeout=0.5).send_many(limited)
    assert all(isinstance(err, RetryableChannelError) and err.in_doubt for err in results)
    assert [err.code for err in results] == ["timeout"] * 3


async def test_sendgrid_events_of_a_shared_request_find_each_message(provider, sqlite_store):
    """The event webhook, fed SendGrid's events for every recipient of one request, moves each
    ledger row by its own ledger id (custom_args), though the request's X-Message-Id is shared."""
    page = [templated(n) for n in range(4)]
    ids = {message.message_id: str(uuid.uuid4()) for message in page}
    page = [message.model_copy(update={"message_id": ids[message.message_id]}) for message in page]
    results = sendgrid(provider).send_many(page)
    now = datetime.now(UTC)
    with sqlite_store.transaction() as session:
        for message, receipt in zip(page, results, strict=True):
            session.add(
                MessageRow(
                    id=message.message_id,
                    workflow_id=f"double_twelve:{message.customer_id}",
                    run_id="r",
                    step="announce",
                    journey="double_twelve",
                    journey_version="v1",
                    customer_id=message.customer_id,
                    channel="email",
                    address=message.to,
                    template="t",
                    category="marketing",
                    status="sent",
                    at=now,
                    updated_at=now,
                    provider_id=receipt.provider_id,
                )  # fmt: skip
            )
    signer = SendGridSigner()
    app = create_app(sqlite_store, webhooks=WebhookConfig(sendgrid_public_key=signer.public_key))
    events = [
        {
            "event": "delivered",
            "email": recipient["email"],
            "timestamp": int(time.time()),
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": recipient["sg_message_id"],
            **recipient["custom_args"],
        }
        for recipient in provider.mail_recipients
    ]
    body = json.dumps(events).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal") as api:
        answer = await api.post("/webhooks/sendgrid/events", content=body, headers=signer.headers(body))
    assert answer.json()["applied"] == 4
    with sqlite_store.transaction() as session:
        statuses = {message.to: session.get(MessageRow, message.message_id).status for message in page}
    assert statuses == {message.to: "delivered" for message in page}


# ------------------------------------------------------------------ Aliyun


def aliyun_channel(fake: FakeAliyun, timeout: float = 2.0) -> AliyunSmsChannel:
    return AliyunSmsChannel(
        ACCESS_KEY_ID,
        ACCESS_KEY_SECRET,
        endpoint=fake.endpoint,
        protocol="http",
        timeout=timeout,
        batch_seconds=0.05,
        lookup_grace=0.0,
    )


def mainland(n: int) -> str:
    return f"+86139{n:08d}"


def shipped(n: int, to: str | None = None, **changes) -> OutgoingMessage:
    params = {"order": f"o{n}", "carrier": "顺丰", "tracking": f"SF{n:05d}"}
    fields = {
        "body": aliyun_text(SIGN, TEMPLATES[SHIPPED], params),
        "provider_template": SHIPPED,
        "template_data": {"sign_name": SIGN, "params": params},
        "category": "transactional",
    }
    return outgoing(n, "sms", to or mainland(n), **(fields | changes))


def test_250_texts_of_one_template_go_as_three_batches(aliyun):
    page = [shipped(n) for n in range(250)]
    started = time.monotonic()
    results = send_bulk(aliyun_channel(aliyun), page)
    assert time.monotonic() - started < 10  # no batch window waited for per message

    batches = aliyun.actions("SendBatchSms")
    assert [len(call["numbers"]) for call in batches] == [100, 100, 50]
    assert aliyun.actions("SendSms") == []
    taken = {entry["number"]: entry for entry in aliyun.taken()}
    assert len(taken) == 250
    for n in (0, 99, 100, 249):  # each number its own parameters, and the receipt of its own batch
        entry = taken[f"139{n:08d}"]
        assert entry["params"] == page[n].template_data["params"]
        assert entry["content"] == page[n].body
        assert results[n] == SendReceipt(provider_id=entry["biz_id"])
    assert {entry["out_id"] for entry in taken.values()} == {"batch-m-0", "batch-m-100", "batch-m-200"}


def test_a_repeated_number_goes_in_another_batch(aliyun):
    """Two texts to one number never share a batch (their receipts are told apart by number): the
    second goes in the next batch, or alone by SendSms when it is the only one left."""
    page = [shipped(n) for n in range(3)] + [shipped(3, to=mainland(1)), shipped(4, to=mainland(2))]
    page.append(shipped(5, to=mainland(1)))
    results = aliyun_channel(aliyun).send_many(page)
    assert errors(results) == {}
    assert [(call["action"], call["numbers"]) for call in aliyun.calls] == [
        ("SendBatchSms", ["13900000000", "13900000001", "13900000002"]),
        ("SendBatchSms", ["13900000001", "13900000002"]),
        ("SendSms", ["13900000001"]),
    ]
    to_one = [entry for entry in aliyun.taken() if entry["number"] == "13900000001"]
    assert [entry["params"]["order"] for entry in to_one] == ["o1", "o3", "o5"]
    assert [results[n].provider_id for n in (1, 3, 5)] == [entry["biz_id"] for entry in to_one]
    assert len({results[n].provider_id for n in (1, 3, 5)}) == 3


def test_a_refused_batch_settles_each_number_alone(aliyun):
    """Aliyun refuses the whole batch for one bad number: the batch is sent again one text at a
    time, so the bad number fails with its own code and the others are sent."""
    page = [shipped(n) for n in range(6)]
    aliyun.refuse["13900000002"] = "isv.MOBILE_NUMBER_ILLEGAL"
    results = aliyun_channel(aliyun).send_many(page)
    refused = errors(results)
    assert list(refused) == [2]
    assert isinstance(refused[2], PermanentChannelError) and refused[2].code == "isv.MOBILE_NUMBER_ILLEGAL"
    assert [(c["action"], c["code"]) for c in aliyun.calls][0] == ("SendBatchSms", "isv.MOBILE_NUMBER_ILLEGAL")
    sent = {entry["number"]: entry for entry in aliyun.taken("SendSms")}
    assert sorted(sent) == [f"139{n:08d}" for n in (0, 1, 3, 4, 5)]
    assert all(results[n] == SendReceipt(provider_id=sent[f"139{n:08d}"]["biz_id"]) for n in (0, 1, 3, 4, 5))
    assert sent["13900000004"]["out_id"] == "m-4"  # alone, each with its own ledger id


def test_a_rate_limited_or_lost_batch_holds_for_each_text(aliyun):
    page = [shipped(n) for n in range(4)]
    aliyun.script["13900000000"] = [AliyunAnswer(code="Throttling.User", status=400)]
    results = aliyun_channel(aliyun).send_many(page)
    assert all(isinstance(err, RetryableChannelError) and err.retry_after and not err.in_doubt for err in results)
    assert aliyun.taken() == []

    aliyun.script["13900000000"] = [AliyunAnswer(delay=1.5)]
    results = aliyun_channel(aliyun, timeout=0.5).send_many(page)
    assert all(isinstance(err, RetryableChannelError) and err.in_doubt for err in results)
    assert len({id(err) for err in results}) == 4


def test_texts_of_other_templates_and_without_one_are_kept_apart(aliyun):
    promo = {"sign_name": SIGN, "params": {"percent": "8"}}
    page = [
        shipped(0),
        shipped(1, provider_template=PROMO, template_data=promo, body=aliyun_text(SIGN, TEMPLATES[PROMO], {"percent": "8"})),
        shipped(2, provider_template=None, template_data=None),
        shipped(3),
        shipped(4, provider_template=PROMO, template_data=promo, body=aliyun_text(SIGN, TEMPLATES[PROMO], {"percent": "8"})),
    ]  # fmt: skip
    results = aliyun_channel(aliyun).send_many(page)
    assert list(errors(results)) == [2] and errors(results)[2].code == "no_template"
    batches = {tuple(call["numbers"]) for call in aliyun.actions("SendBatchSms")}
    assert batches == {("13900000000", "13900000003"), ("13900000001", "13900000004")}
    codes = {entry["number"]: entry["template_code"] for entry in aliyun.taken()}
    assert codes == {"13900000000": SHIPPED, "13900000003": SHIPPED, "13900000001": PROMO, "13900000004": PROMO}


def test_a_text_in_doubt_is_looked_up_not_sent_again(aliyun):
    """A page retried after a lost answer: the text Aliyun took is found by QuerySendDetails and
    not sent again; the others go as a batch."""
    sms = aliyun_channel(aliyun)
    first = sms.send(shipped(0))
    earlier = datetime.now(UTC)
    page = [shipped(0, earlier_attempt_at=earlier), shipped(1), shipped(2)]
    results = sms.send_many(page)
    assert errors(results) == {}
    assert results[0] == SendReceipt(provider_id=settled_by_lookup("m-0"))  # found by QuerySendDetails
    assert first.provider_id == aliyun.taken()[0]["biz_id"]
    numbers = [entry["number"] for entry in aliyun.taken()]
    assert sorted(numbers) == ["13900000000", "13900000001", "13900000002"]  # the first number once


# ------------------------------------------------------------------ Twilio


def twilio(provider: FakeProvider, timeout: float = 2.0, concurrency: int = 8) -> TwilioSmsChannel:
    return TwilioSmsChannel(
        "AC" + "0" * 32,
        AUTH_TOKEN,
        messaging_service_sid="MG" + "1" * 32,
        status_callback_url="https://journeys.example.com/webhooks/twilio/status",
        timeout=timeout,
        api_base_url=provider.url,
        bulk_concurrency=concurrency,
    )


def elsewhere(n: int) -> str:
    return f"+1415555{n:04d}"


def test_50_texts_through_twilio_each_with_its_own_result(provider):
    page = [outgoing(n, "sms", elsewhere(n)) for n in range(50)]
    for n in range(50):
        if n % 10 == 3:
            provider.script[elsewhere(n)] = [Answer(status=400, code=21211)]  # a bad number
        elif n % 10 == 7:
            provider.script[elsewhere(n)] = [Answer(status=503)]
        else:
            provider.script[elsewhere(n)] = [Answer(delay=0.05)]
    results = send_bulk(twilio(provider), page)

    failed = errors(results)
    assert sorted(failed) == [n for n in range(50) if n % 10 in (3, 7)]
    assert all(
        isinstance(failed[n], PermanentChannelError) and failed[n].code == "21211" for n in failed if n % 10 == 3
    )
    assert all(isinstance(failed[n], RetryableChannelError) for n in failed if n % 10 == 7)
    sids = {sms["to"]: sms["sid"] for sms in provider.sms}
    assert len(sids) == len(provider.sms) == 40
    for n, result in enumerate(results):
        if n not in failed:
            assert result == SendReceipt(provider_id=sids[elsewhere(n)])
    assert 1 < provider.sms_most_in_flight <= 8


def test_twilio_keeps_to_its_concurrency_and_settles_a_lost_answer(provider):
    """At most `bulk_concurrency` requests at once; a text whose answer came too late is in doubt,
    and on the page's retry it is found at Twilio, not sent again."""
    page = [outgoing(n, "sms", elsewhere(n)) for n in range(12)]
    for n in range(12):
        provider.script[elsewhere(n)] = [Answer(delay=2.0 if n == 5 else 0.1)]
    results = twilio(provider, timeout=1.0, concurrency=3).send_many(page)
    assert list(errors(results)) == [5] and results[5].in_doubt and results[5].code == "timeout"
    assert provider.sms_most_in_flight == 3

    retried = twilio(provider).send_many([page[5].model_copy(update={"earlier_attempt_at": datetime.now(UTC)})])
    [sent] = [sms for sms in provider.sms if sms["to"] == elsewhere(5)]
    assert retried == [SendReceipt(provider_id=sent["sid"])]


# ------------------------------------------------------------------ the sms router


def test_the_sms_router_splits_a_page_by_route_and_keeps_its_order(provider, aliyun):
    page = []
    for n in range(30):
        page.append(shipped(n) if n % 3 else outgoing(n, "sms", elsewhere(n)))
    aliyun.refuse[f"139{4:08d}"] = "isv.MOBILE_NUMBER_ILLEGAL"
    provider.script[elsewhere(9)] = [Answer(status=400, code=21211)]
    router = SmsRouter(aliyun_channel(aliyun), twilio(provider))
    results = send_bulk(router, page)

    assert sorted(errors(results)) == [4, 9]
    assert errors(results)[4].code == "isv.MOBILE_NUMBER_ILLEGAL" and errors(results)[9].code == "21211"
    assert sorted(sms["to"] for sms in provider.sms) == sorted(elsewhere(n) for n in range(30) if n % 3 == 0 and n != 9)
    [batch] = [call for call in aliyun.calls if call["action"] == "SendBatchSms"]
    assert batch["numbers"] == [f"139{n:08d}" for n in range(30) if n % 3]  # mainland numbers only, one batch
    biz = {entry["number"]: entry["biz_id"] for entry in aliyun.taken()}
    sids = {sms["to"]: sms["sid"] for sms in provider.sms}
    for n, result in enumerate(results):
        if n in (4, 9):
            continue
        expected = biz[f"139{n:08d}"] if n % 3 else sids[elsewhere(n)]
        assert result == SendReceipt(provider_id=expected)
