"""The Twilio and SendGrid adapters through the real SDKs, against a local fake provider that
answers with each class of error, rate limits and slow responses."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities
from channels.sendgrid_email import SendGridEmailChannel
from channels.twilio_sms import TwilioSmsChannel
from channels.webhook import WebhookChannel
from core.channel import OutgoingMessage, PermanentChannelError, RetryableChannelError
from core.signing import unsubscribe_token, verify_signature
from store import queries
from tests.fake_provider import Answer, FakeProvider
from tests.helpers import attempt, customer, free_port
from tests.test_policy import NOON, request, rows, save

PHONE = "+8613800000001"
EMAIL = "wangfang@example.com"


@pytest.fixture
def provider():
    with FakeProvider() as fake:
        yield fake


def twilio(provider, timeout: float = 2.0) -> TwilioSmsChannel:
    return TwilioSmsChannel(
        "AC" + "0" * 32,
        "token",
        messaging_service_sid="MG" + "1" * 32,
        status_callback_url="https://journeys.example.com/webhooks/twilio/status",
        timeout=timeout,
        api_base_url=provider.url,
    )


def sendgrid(provider) -> SendGridEmailChannel:
    return SendGridEmailChannel(
        "SG.key",
        "shop@example.com",
        unsubscribe_group_id=42,
        unsubscribe_url="https://journeys.example.com/unsubscribe",
        unsubscribe_secret="s3cret",
        host=provider.url,
    )


def message(channel="sms", to=PHONE, category="transactional", **changes) -> OutgoingMessage:
    fields = dict(
        message_id="m-1",
        channel=channel,
        to=to,
        subject="订单o1" if channel == "email" else None,
        body="<p>您好 &amp; 再见</p>" if channel == "email" else "【小店】您好",
        journey="review_request",
        step="review_request",
        customer_id="c1",
        category=category,
    )
    return OutgoingMessage(**{**fields, **changes})


# ------------------------------------------------------------------ Twilio


def test_twilio_sends_with_service_and_status_callback(provider):
    receipt = twilio(provider).send(message())
    [sent] = provider.sms
    assert receipt.provider_id == sent["sid"]
    assert (sent["to"], sent["body"], sent["messaging_service_sid"]) == (PHONE, "【小店】您好", "MG" + "1" * 32)
    assert sent["status_callback"] == "https://journeys.example.com/webhooks/twilio/status?message_id=m-1"


@pytest.mark.parametrize("code", [21211, 21614, 21612, 21408, 21606, 21617, 20003])
def test_twilio_permanent_errors(provider, code):
    provider.script[PHONE] = [Answer(status=400 if code != 20003 else 401, code=code)]
    with pytest.raises(PermanentChannelError) as raised:
        twilio(provider).send(message())
    assert raised.value.code == str(code) and raised.value.unsubscribed is False


def test_twilio_opt_out_is_permanent_and_unsubscribes(provider):
    provider.script[PHONE] = [Answer(status=400, code=21610)]
    with pytest.raises(PermanentChannelError) as raised:
        twilio(provider).send(message())
    assert raised.value.unsubscribed is True


@pytest.mark.parametrize("answer", [Answer(status=429, code=20429), Answer(status=500), Answer(status=503)])
def test_twilio_rate_limits_and_outages_are_retried(provider, answer):
    provider.script[PHONE] = [answer]
    with pytest.raises(RetryableChannelError):
        twilio(provider).send(message())
    assert provider.sms == []


def test_twilio_unreachable_is_retried():
    channel = TwilioSmsChannel(
        "AC" + "0" * 32, "t", from_number="+15005550006", api_base_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(RetryableChannelError, match="cannot reach Twilio"):
        channel.send(message())


def test_twilio_timeout_is_never_sent_twice(provider, caplog):
    """Twilio took the message but answered too late: the retry finds it instead of resending. The
    look-up puts the number in the URL, and the SDK logs URLs at INFO: none of it reaches the log."""
    caplog.set_level(logging.INFO)
    provider.script[PHONE] = [Answer(delay=1.5)]
    channel = twilio(provider, timeout=0.5)
    started = datetime.now(UTC)
    with pytest.raises(RetryableChannelError, match="outcome unknown"):
        channel.send(message())
    time.sleep(1.2)  # the slow answer completes at the provider
    receipt = channel.send(message(earlier_attempt_at=started))
    assert len(provider.sms) == 1
    assert receipt.provider_id == provider.sms[0]["sid"]
    assert provider.posts == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert PHONE.lstrip("+") not in logged.replace("%2B", "+") and "您好" not in logged, logged


def test_twilio_retry_sends_when_the_earlier_attempt_never_arrived(provider):
    provider.script[PHONE] = [Answer(status=503)]
    channel = twilio(provider)
    started = datetime.now(UTC)
    with pytest.raises(RetryableChannelError):
        channel.send(message())
    receipt = channel.send(message(earlier_attempt_at=started))
    assert [m["sid"] for m in provider.sms] == [receipt.provider_id]


# ------------------------------------------------------------------ SendGrid


def test_sendgrid_sends_a_transactional_email(provider):
    receipt = sendgrid(provider).send(message("email", EMAIL))
    [sent] = provider.mail
    assert receipt.provider_id.startswith("sg-")
    assert sent["personalizations"] == [{"to": [{"email": EMAIL}], "subject": "订单o1"}]
    assert sent["from"] == {"email": "shop@example.com"}
    assert sent["content"] == [
        {"type": "text/plain", "value": "您好 & 再见"},
        {"type": "text/html", "value": "<p>您好 &amp; 再见</p>"},
    ]
    assert sent["custom_args"] == {"message_id": "m-1", "journey": "review_request", "step": "review_request"}
    assert sent["categories"] == ["review_request"]
    assert "asm" not in sent and "headers" not in sent  # transactional mail has no unsubscribe group


def test_sendgrid_marketing_email_carries_unsubscribe(provider):
    sendgrid(provider).send(message("email", EMAIL, category="marketing"))
    [sent] = provider.mail
    assert sent["asm"] == {"group_id": 42}
    token = unsubscribe_token("s3cret", "m-1")
    assert (
        sent["headers"]["List-Unsubscribe"]
        == f"<https://journeys.example.com/unsubscribe?message_id=m-1&token={token}>"
    )
    assert sent["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_sendgrid_dynamic_template_from_a_definition(provider, store):
    """A definition naming a SendGrid dynamic template: SendGrid renders it with the message's data,
    while the ledger keeps our own rendering of subject and body."""
    from definitions.schema import Template
    from tests.test_policy import NOON

    template = Template(
        email={
            "zh-CN": {
                "subject": "订单{{ order.order_id }}",
                "body": "<p>{{ customer.name }}</p>",
                "sendgrid_template_id": "d-" + "0123456789abcdef" * 2,
            }
        }
    )
    save(store, customer(phone=None))
    activities = JourneyActivities(store, {"email": sendgrid(provider)}, "小店", default_region="CN")
    closes_at = NOON.replace(hour=20)
    req = request(template=template, context={"order": {"order_id": "o1"}, "vars": {"closes_at": closes_at}})
    assert ActivityEnvironment().run(activities.decide_message, req).status == "sent"
    [sent] = provider.mail
    assert sent["template_id"] == "d-" + "0123456789abcdef" * 2
    assert "content" not in sent and "subject" not in sent["personalizations"][0]
    data = sent["personalizations"][0]["dynamic_template_data"]
    assert (data["subject"], data["body"], data["customer"]["name"]) == ("订单o1", "<p>王芳</p>", "王芳")
    assert data["vars"]["closes_at"] == closes_at.isoformat() and data["shop"] == {"name": "小店"}
    [row] = rows(store)
    assert (row.subject, row.body, row.provider_template) == ("订单o1", "<p>王芳</p>", "d-" + "0123456789abcdef" * 2)


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_sendgrid_permanent_errors(provider, status):
    provider.script[EMAIL] = [Answer(status=status)]
    with pytest.raises(PermanentChannelError) as raised:
        sendgrid(provider).send(message("email", EMAIL))
    assert raised.value.code == str(status)


def test_sendgrid_rate_limit_waits_for_the_reset(provider):
    reset = int(time.time()) + 30
    provider.script[EMAIL] = [Answer(status=429, headers={"X-RateLimit-Reset": str(reset)})]
    with pytest.raises(RetryableChannelError) as raised:
        sendgrid(provider).send(message("email", EMAIL))
    assert 25 <= raised.value.retry_after <= 31


def test_sendgrid_outage_is_retried(provider):
    provider.script[EMAIL] = [Answer(status=500)]
    with pytest.raises(RetryableChannelError):
        sendgrid(provider).send(message("email", EMAIL))


# ------------------------------------------------------------------ signed webhook channel


def hook(provider, timeout: float = 2.0) -> WebhookChannel:
    return WebhookChannel(f"{provider.url}/hook", "hook-secret", timeout=timeout)


def test_webhook_posts_signed_json(provider):
    receipt = hook(provider).send(message("webhook", "c1", body="您的订单已发货"))
    [sent] = provider.hooks
    assert receipt.provider_id.startswith("push-")
    assert (sent["body"]["to"], sent["body"]["body"], sent["body"]["message_id"]) == ("c1", "您的订单已发货", "m-1")
    assert sent["headers"]["Idempotency-Key"] == "m-1"
    signature = sent["headers"]["X-Journeys-Signature"]
    assert verify_signature("hook-secret", signature, sent["raw"].encode())
    assert not verify_signature("other-secret", signature, sent["raw"].encode())
    assert not verify_signature("hook-secret", signature, sent["raw"].replace("c1", "c2").encode())
    assert not verify_signature("hook-secret", signature, sent["raw"].encode(), now=time.time() + 301)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_webhook_error_classes(provider, status, retryable):
    provider.script["c1"] = [Answer(status=status, headers={"Retry-After": "7"})]
    with pytest.raises(RetryableChannelError if retryable else PermanentChannelError) as raised:
        hook(provider).send(message("webhook", "c1"))
    assert raised.value.code == str(status)
    if status == 429:
        assert raised.value.retry_after == 7


def test_webhook_timeout_and_unreachable_are_retried(provider):
    provider.script["c1"] = [Answer(delay=1.0)]
    with pytest.raises(RetryableChannelError, match="did not answer in time"):
        hook(provider, timeout=0.3).send(message("webhook", "c1"))
    with pytest.raises(RetryableChannelError, match="cannot reach"):
        WebhookChannel(f"http://127.0.0.1:{free_port()}/hook", "s").send(message("webhook", "c1"))


# ------------------------------------------------------------------ through the send activity


def test_opt_out_at_twilio_blocks_the_next_sms(provider, store):
    save(store, customer())
    provider.script[PHONE] = [Answer(status=400, code=21610)]
    activities = JourneyActivities(
        store, {"sms": twilio(provider), "email": sendgrid(provider)}, "小店", default_region="CN"
    )
    first = ActivityEnvironment().run(activities.decide_message, request(step="one"))
    assert (first.status, first.reason) == ("failed", "provider_rejected")
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "all"
    second = ActivityEnvironment().run(activities.decide_message, request(step="two"))
    assert (second.status, second.channel) == ("sent", "email")  # the fallback
    assert [r.error for r in rows(store) if r.status == "failed"] == [
        "21610: Twilio 21610: the recipient replied STOP (unsubscribed) (Unable to create record: fake error 21610)"
    ]


def test_rate_limit_sets_temporals_next_retry_delay(provider, store):
    save(store, customer(phone=None))
    provider.script[EMAIL] = [Answer(status=429, headers={"X-RateLimit-Reset": str(int(time.time()) + 20)})]
    activities = JourneyActivities(
        store, {"sms": twilio(provider), "email": sendgrid(provider)}, "小店", default_region="CN"
    )
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(activities.decide_message, request(when=NOON))
    assert 15 <= raised.value.next_retry_delay.total_seconds() <= 21
    retried = attempt(2).run(activities.decide_message, request(when=NOON))
    assert retried.status == "sent" and len(provider.mail) == 1


def test_configuration_picks_the_live_channels(tmp_path):
    from channels import build_channels, describe_channels
    from core.config import Settings

    outbox_only = build_channels(tmp_path / "o.jsonl", Settings.from_env({}))
    assert describe_channels(outbox_only) == "sms: outbox, email: outbox, webhook: outbox, outbox: outbox"
    live_env = {
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "t",
        "TWILIO_FROM": "+15005550006",
        "SENDGRID_API_KEY": "SG.k",
        "SENDGRID_FROM": "shop@example.com",
        "SENDGRID_UNSUBSCRIBE_GROUP_ID": "42",
        "JOURNEYS_WEBHOOK_URL": "https://push.example.com/journeys",
        "JOURNEYS_WEBHOOK_SECRET": "s",
    }
    live = Settings.from_env(live_env)
    channels = build_channels(tmp_path / "o.jsonl", live)
    assert describe_channels(channels) == (
        "sms: twilio, email: sendgrid (at most once: no event webhook to settle a lost answer), "
        "webhook: webhook, outbox: outbox"
    )
    assert channels["email"].unsubscribe_group_id == 42
    assert (channels["sms"].settles_doubt, channels["email"].settles_doubt) == ("lookup", "never")
    webhook_env = {"SENDGRID_WEBHOOK_PUBLIC_KEY": "MFkw", "JOURNEYS_SENDGRID_RECONCILE_SECONDS": "120"}
    signed = build_channels(tmp_path / "o.jsonl", Settings.from_env(live_env | webhook_env))
    assert (signed["email"].settles_doubt, signed["email"].reconcile_seconds) == ("event", 120.0)


def test_the_outbox_writes_a_message_in_doubt_once(tmp_path):
    """A worker killed between writing a line and recording it leaves the send in doubt; the
    next attempt finds the line and writes nothing more. A new message is written as usual."""
    from channels.outbox import OutboxChannel

    path = tmp_path / "outbox.jsonl"
    outbox = OutboxChannel(path=path)
    message = OutgoingMessage(message_id="m-1", channel="sms", to="+8613800000001", body="hi", journey="j",
                              step="s", customer_id="c1", category="marketing")  # fmt: skip
    first = outbox.send(message)
    again = outbox.send(message.model_copy(update={"earlier_attempt_at": datetime.now(UTC)}))
    other = outbox.send(message.model_copy(update={"message_id": "m-2", "earlier_attempt_at": datetime.now(UTC)}))
    lines = path.read_text().splitlines()
    assert first == again and other.provider_id == "outbox:m-2"
    assert [json.loads(line)["message_id"] for line in lines] == ["m-1", "m-2"]
