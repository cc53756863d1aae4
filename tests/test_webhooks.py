"""Provider webhooks on a real store (SQLite and PostgreSQL): signed exactly as Twilio and SendGrid
sign them, they move messages forward and unsubscribe people; tampered, replayed and unsigned
requests are refused and change nothing; the next send obeys an opt-out."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities
from channels import build_channels
from channels.sendgrid_email import SendGridEmailChannel
from channels.twilio_sms import TwilioSmsChannel
from store import queries
from store.tables import ProviderEventRow
from tests.fake_provider import AUTH_TOKEN, Answer, FakeProvider, SendGridSigner, twilio_signed
from tests.helpers import customer
from tests.test_policy import request, rows, save
from triggers.api import create_app
from triggers.webhooks import WebhookConfig

PUBLIC = "https://journeys.example.com"
PHONE = "+8613800000001"
EMAIL = "wangfang@example.com"


@pytest.fixture(scope="module")
def signer():
    return SendGridSigner()


@pytest.fixture
def provider():
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def api(store, signer):
    config = WebhookConfig(
        public_url=PUBLIC,
        twilio_auth_token=AUTH_TOKEN,
        sendgrid_public_key=signer.public_key,
        unsubscribe_secret="s3cret",
    )
    app = create_app(store, webhooks=config, api_keys=["order-system-key"])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000")


@pytest.fixture
def send(store, provider, tmp_path):
    """The real send activity with Twilio and SendGrid pointed at the fake provider."""
    channels = build_channels(tmp_path / "outbox.jsonl")
    channels["sms"] = TwilioSmsChannel(
        "AC" + "0" * 32,
        AUTH_TOKEN,
        from_number="+15005550006",
        status_callback_url=f"{PUBLIC}/webhooks/twilio/status",
        api_base_url=provider.url,
    )
    channels["email"] = SendGridEmailChannel(
        "SG.key",
        "shop@example.com",
        host=provider.url,
        unsubscribe_url=f"{PUBLIC}/unsubscribe",
        unsubscribe_secret="s3cret",
    )
    activities = JourneyActivities(store, channels, "小店", default_region="CN")
    env = ActivityEnvironment()
    return lambda req: env.run(activities.decide_message, req)


async def twilio_post(api, path: str, form: dict[str, str], **header_changes) -> httpx.Response:
    headers = {**twilio_signed(PUBLIC + path, form), **header_changes}
    return await api.post(path, content=urlencode(form), headers=headers)


async def status(api, message: dict, value: str, error_code: str | None = None, **headers) -> httpx.Response:
    form = {"MessageSid": message["sid"], "MessageStatus": value, "To": message["to"], "From": "+15005550006"}
    if error_code:
        form["ErrorCode"] = error_code
    path = message["status_callback"].removeprefix(PUBLIC)
    return await twilio_post(api, path, form, **headers)


async def sendgrid_post(api, signer, events: list[dict], timestamp: int | None = None) -> httpx.Response:
    body = json.dumps(events).encode()
    return await api.post("/webhooks/sendgrid/events", content=body, headers=signer.headers(body, timestamp))


def by_step(store) -> dict:
    return {row.step: row for row in rows(store)}


# ------------------------------------------------------------------ Twilio status callbacks


async def test_status_callbacks_move_an_sms_to_delivered(api, store, provider, send):
    save(store, customer())
    send(request())
    [sms] = provider.sms
    assert sms["status_callback"].startswith(f"{PUBLIC}/webhooks/twilio/status?message_id=")
    for value in ("queued", "sent", "delivered"):
        answer = await status(api, sms, value)
        assert answer.status_code == 200
    row = by_step(store)["remind"]
    assert (row.status, row.provider_id) == ("delivered", sms["sid"])
    assert row.delivered_at is not None


async def test_a_late_sent_never_overwrites_delivered(api, store, provider, send):
    save(store, customer())
    send(request())
    [sms] = provider.sms
    await status(api, sms, "delivered")
    late = await status(api, sms, "sent")
    assert late.json() == {"applied": 0, "duplicates": 0, "ignored": 1}
    assert by_step(store)["remind"].status == "delivered"


async def test_a_repeated_callback_is_dropped(api, store, provider, send):
    save(store, customer())
    send(request())
    [sms] = provider.sms
    first = await status(api, sms, "delivered", **{"I-Twilio-Idempotency-Token": "tok-1"})
    again = await status(api, sms, "delivered", **{"I-Twilio-Idempotency-Token": "tok-1"})
    assert first.json() == {"applied": 1, "duplicates": 0, "ignored": 0}
    assert again.json() == {"applied": 0, "duplicates": 1, "ignored": 0}


async def test_undelivered_records_twilios_error_code(api, store, provider, send):
    save(store, customer())
    send(request())
    [sms] = provider.sms
    await status(api, sms, "undelivered", error_code="30003")
    row = by_step(store)["remind"]
    assert (row.status, row.reason, row.error) == ("undelivered", "undelivered", "Twilio 30003")
    assert (await status(api, sms, "delivered")).json()["ignored"] == 1  # final: not reopened


async def test_a_callback_that_arrives_before_the_send_returns_is_kept(api, store, provider, send):
    """Twilio can call back before our worker records the send: `sent` must not overwrite it."""
    save(store, customer())
    send(request())
    row = by_step(store)["remind"]
    with store.transaction() as session:
        queries.advance_status(session.get(type(row), row.id), "delivered", row.updated_at)
    JourneyActivities(store, {}, "x", default_region="CN")._record_sent(row.id, "SM-again")
    assert by_step(store)["remind"].status == "delivered"


# ------------------------------------------------------------------ signatures


async def test_tampered_unsigned_and_misaddressed_twilio_requests_are_refused(api, store, provider, send):
    save(store, customer())
    send(request())
    [sms] = provider.sms
    path = sms["status_callback"].removeprefix(PUBLIC)
    form = {"MessageSid": sms["sid"], "MessageStatus": "delivered"}
    signed = twilio_signed(PUBLIC + path, form)
    tampered = await api.post(path, content=urlencode({**form, "MessageStatus": "failed"}), headers=signed)
    unsigned = await api.post(path, content=urlencode(form), headers={"Content-Type": signed["Content-Type"]})
    other_url = await api.post(
        path, content=urlencode(form), headers=twilio_signed("https://evil.example" + path, form)
    )
    wrong_token = await api.post(path, content=urlencode(form), headers=twilio_signed(PUBLIC + path, form, "guess"))
    assert [a.status_code for a in (tampered, unsigned, other_url, wrong_token)] == [403, 403, 403, 403]
    assert by_step(store)["remind"].status == "sent"


async def test_webhooks_without_keys_refuse_everything(store, signer):
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(store)), base_url="http://internal")
    form = {"From": PHONE, "Body": "STOP"}
    twilio = await bare.post(
        "/webhooks/twilio/inbound",
        content=urlencode(form),
        headers=twilio_signed(PUBLIC + "/webhooks/twilio/inbound", form),
    )
    body = json.dumps([{"event": "bounce", "email": EMAIL, "sg_event_id": "e1"}]).encode()
    sendgrid = await bare.post("/webhooks/sendgrid/events", content=body, headers=signer.headers(body))
    assert (twilio.status_code, sendgrid.status_code) == (403, 403)
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) is None
        assert queries.suppression_scope(session, "email", EMAIL) is None


async def test_tampered_replayed_and_unsigned_sendgrid_events_are_refused(api, store, signer):
    events = [{"event": "bounce", "email": EMAIL, "sg_event_id": "e1", "timestamp": int(time.time())}]
    body = json.dumps(events).encode()
    headers = signer.headers(body)
    tampered = await api.post("/webhooks/sendgrid/events", content=body.replace(b"e1", b"e2"), headers=headers)
    stale = await sendgrid_post(api, signer, events, timestamp=int(time.time()) - 301)
    unsigned = await api.post("/webhooks/sendgrid/events", content=body, headers={"Content-Type": "application/json"})
    other_key = SendGridSigner()
    forged = await api.post("/webhooks/sendgrid/events", content=body, headers=other_key.headers(body))
    assert [a.status_code for a in (tampered, stale, unsigned, forged)] == [403, 403, 403, 403]
    with store.transaction() as session:
        assert queries.suppression_scope(session, "email", EMAIL) is None
    # The same request again within the five minutes is applied once.
    first = await api.post("/webhooks/sendgrid/events", content=body, headers=headers)
    replay = await api.post("/webhooks/sendgrid/events", content=body, headers=headers)
    assert first.json()["applied"] == 1 and replay.json() == {"applied": 0, "duplicates": 1, "ignored": 0}


# ------------------------------------------------------------------ inbound SMS: STOP and START


@pytest.mark.parametrize("reply", ["STOP", "stop", " Unsubscribe ", "Quit.", "END", "cancel"])
async def test_a_stop_reply_blocks_the_next_sms(api, store, provider, send, reply):
    """Twilio's own opt-out words: Twilio blocks the sender for every message, and so do we."""
    save(store, customer())
    answer = await twilio_post(api, "/webhooks/twilio/inbound", {"MessageSid": "SM1", "From": PHONE, "Body": reply})
    assert answer.status_code == 200 and "<Response>" in answer.text
    outcome = send(request())
    assert (outcome.status, outcome.channel) == ("sent", "email")  # SMS blocked: the fallback
    assert provider.sms == [] and len(provider.mail) == 1


@pytest.mark.parametrize("reply", ["T", "td", "退订", "ｔｄ", "TD。"])
async def test_the_shops_unsubscribe_words_stop_marketing_sms_only(api, store, provider, send, reply):
    """退订 and TD are the shop's reply rules' (the built-in ones without replies.yaml): marketing
    SMS stop, a payment reminder still goes by SMS."""
    save(store, customer())
    await twilio_post(api, "/webhooks/twilio/inbound", {"MessageSid": "SM1", "From": PHONE, "Body": reply})
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "marketing"
    marketing = send(request(step="promo", category="marketing"))
    assert (marketing.status, marketing.channel) == ("sent", "email")
    notice = send(request(step="remind"))
    assert (notice.status, notice.channel) == ("sent", "sms")
    assert len(provider.sms) == 1 and len(provider.mail) == 1


async def test_start_subscribes_again_and_chatter_changes_nothing(api, store, provider, send):
    save(store, customer())
    await twilio_post(api, "/webhooks/twilio/inbound", {"MessageSid": "SM1", "From": PHONE, "Body": "STOP"})
    await twilio_post(
        api, "/webhooks/twilio/inbound", {"MessageSid": "SM2", "From": PHONE, "Body": "when does it ship?"}
    )
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "all"
    await twilio_post(api, "/webhooks/twilio/inbound", {"MessageSid": "SM3", "From": PHONE, "Body": "UNSTOP"})
    assert send(request()).channel == "sms"


async def test_twilio_opt_out_type_wins_over_the_words(api, store):
    """With Advanced Opt-Out, Twilio classifies the reply itself (custom keywords included)."""
    await twilio_post(
        api,
        "/webhooks/twilio/inbound",
        {"MessageSid": "SM1", "From": PHONE, "Body": "不要再发了", "OptOutType": "STOP"},
    )
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "all"
    await twilio_post(
        api, "/webhooks/twilio/inbound", {"MessageSid": "SM2", "From": PHONE, "Body": "STOP", "OptOutType": "HELP"}
    )
    await twilio_post(
        api, "/webhooks/twilio/inbound", {"MessageSid": "SM3", "From": PHONE, "Body": "好的", "OptOutType": "START"}
    )
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) is None


# ------------------------------------------------------------------ SendGrid events


def sg_event(kind: str, row, event_id: str, **extra) -> dict:
    return {
        "event": kind,
        "email": row.address,
        "timestamp": int(time.time()),
        "sg_event_id": event_id,
        "sg_message_id": f"{row.provider_id}.filter0001",
        "message_id": row.id,
        **extra,
    }


async def test_sendgrid_events_move_an_email_forward(api, store, provider, send, signer):
    save(store, customer(phone=None))
    send(request())
    row = by_step(store)["remind"]
    assert (row.channel, row.status) == ("email", "sent")
    answer = await sendgrid_post(
        api, signer, [sg_event("processed", row, "e0"), sg_event("delivered", row, "e1"), sg_event("open", row, "e2")]
    )
    assert answer.json() == {"applied": 2, "duplicates": 0, "ignored": 1}
    assert by_step(store)["remind"].status == "opened"
    await sendgrid_post(api, signer, [sg_event("click", row, "e3", url="https://shop.example.com")])
    await sendgrid_post(api, signer, [sg_event("delivered", row, "e4")])  # late: ignored
    assert by_step(store)["remind"].status == "clicked"


async def test_an_event_without_our_id_is_found_by_sendgrids_message_id(api, store, provider, send, signer):
    save(store, customer(phone=None))
    send(request())
    row = by_step(store)["remind"]
    event = sg_event("delivered", row, "e1")
    del event["message_id"]
    await sendgrid_post(api, signer, [event])
    assert by_step(store)["remind"].status == "delivered"


async def test_a_hard_bounce_suppresses_the_next_email(api, store, provider, send, signer):
    save(store, customer(phone=None))
    send(request(step="first"))
    row = by_step(store)["first"]
    await sendgrid_post(
        api, signer, [sg_event("bounce", row, "e1", type="bounce", status="5.1.1", reason="no such user")]
    )
    bounced = by_step(store)["first"]
    assert (bounced.status, bounced.reason, bounced.error) == ("undelivered", "bounced", "5.1.1 no such user")
    outcome = send(request(step="second"))
    assert (outcome.status, outcome.reason) == ("skipped", "unsubscribed")
    assert len(provider.mail) == 1


async def test_a_soft_bounce_does_not_suppress(api, store, provider, send, signer):
    save(store, customer(phone=None))
    send(request(step="first"))
    row = by_step(store)["first"]
    await sendgrid_post(api, signer, [sg_event("bounce", row, "e1", type="blocked", reason="mailbox full")])
    assert send(request(step="second")).status == "sent"


@pytest.mark.parametrize("kind", ["unsubscribe", "group_unsubscribe", "spamreport"])
async def test_an_email_unsubscribe_blocks_marketing_email_only(api, store, provider, send, signer, kind):
    save(store, customer(phone=None))
    send(request(step="first"))
    row = by_step(store)["first"]
    await sendgrid_post(api, signer, [sg_event(kind, row, "e1")])
    assert send(request(step="offer", category="marketing")).reason == "unsubscribed"
    assert send(request(step="shipped")).status == "sent"  # transactional mail still goes


# ------------------------------------------------------------------ one-click unsubscribe link


async def test_the_list_unsubscribe_link_stops_marketing_email(api, store, provider, send):
    save(store, customer(phone=None))
    send(request(step="offer", category="marketing"))
    [mail] = provider.mail
    link = mail["headers"]["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC)
    assert mail["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    page = await api.get(link)  # a mail scanner following the link changes nothing
    assert page.status_code == 200 and '<form method="post"' in page.text
    with store.transaction() as session:
        assert queries.suppression_scope(session, "email", EMAIL) is None
    forged = await api.post(link.replace("token=", "token=0"))
    assert forged.status_code == 403
    done = await api.post(link, content="List-Unsubscribe=One-Click")
    again = await api.post(link, content="List-Unsubscribe=One-Click")  # a second click is no news
    assert done.status_code == 200 and EMAIL in done.text and again.status_code == 200
    # The unsubscribe is put down to the message, once, for the effect report.
    with store.transaction() as session:
        offer = next(row for row in queries.list_messages(session) if row.step == "offer")
        kinds = [(e.kind, e.message_id) for e in session.scalars(select(ProviderEventRow))]
    assert kinds == [("unsubscribe", offer.id)]
    assert send(request(step="next_offer", category="marketing")).reason == "unsubscribed"
    assert send(request(step="receipt")).status == "sent"  # transactional mail still goes


async def test_clicks_of_an_unsubscribe_link_at_once_are_one_unsubscribe(api, store, provider, send):
    """A mail client and its user clicking at the same moment: every click is answered, one
    suppression and one unsubscribe for the effect report, and no error."""
    save(store, customer(phone=None))
    send(request(step="offer", category="marketing"))
    [mail] = provider.mail
    link = mail["headers"]["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC)
    answers = await asyncio.gather(*(api.post(link, content="List-Unsubscribe=One-Click") for _ in range(6)))
    assert [answer.status_code for answer in answers] == [200] * 6
    with store.transaction() as session:
        assert queries.suppression_scope(session, "email", EMAIL) == "marketing"
        assert [e.kind for e in session.scalars(select(ProviderEventRow))] == ["unsubscribe"]


def test_two_writers_of_one_suppression_at_once_meet_in_one_row(store):
    """The second writer reads no row, then waits for the first one's insert: it must not fail
    when the first commits (a reply pushed twice, a STOP and a bounce of one address)."""
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with store.transaction() as session:
                queries.add_suppression(session, "sms", PHONE, "all", "replied STOP", datetime.now(UTC))
                assert queries.seen_provider_event(session, "journeys", "unsubscribe:m1", "unsubscribe", None,
                                                   datetime.now(UTC)) in (True, False)  # fmt: skip
        except BaseException as err:  # the thread's failure, for the test to report
            failures.append(err)

    with store.transaction() as first:
        queries.add_suppression(first, "sms", PHONE, "marketing", "replied TD", datetime.now(UTC))
        queries.seen_provider_event(first, "journeys", "unsubscribe:m1", "unsubscribe", None, datetime.now(UTC))
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)  # the second writer is waiting for this transaction's rows (or done, on SQLite's lock)
    thread.join(30)
    assert not thread.is_alive() and failures == []
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "all"  # the later, stronger one
        assert len(list(session.scalars(select(ProviderEventRow)))) == 1


async def test_an_unsubscribe_link_never_weakens_a_hard_bounce(api, store, provider, send, signer):
    """A bounced address stops every email; clicking an older mail's unsubscribe link afterwards
    must not let transactional mail go to it again."""
    save(store, customer(phone=None))
    send(request(step="offer", category="marketing"))
    row = by_step(store)["offer"]
    [mail] = provider.mail
    link = mail["headers"]["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC)
    await sendgrid_post(
        api, signer, [sg_event("bounce", row, "e1", type="bounce", status="5.1.1", reason="no such user")]
    )
    assert (await api.post(link, content="List-Unsubscribe=One-Click")).status_code == 200
    with store.transaction() as session:
        assert queries.suppression_scope(session, "email", EMAIL) == "all"
    outcome = send(request(step="receipt"))
    assert (outcome.status, outcome.reason) == ("skipped", "unsubscribed")


# ------------------------------------------------------------------ SendGrid sends in doubt


def in_doubt_activities(store, provider, *, event_webhook: bool, reconcile_seconds: float = 60) -> JourneyActivities:
    """SendGrid answering within half a second; the fake provider's scripted slow answers come later."""
    email = SendGridEmailChannel(
        "SG.key",
        "shop@example.com",
        host=provider.url,
        timeout=0.5,
        event_webhook=event_webhook,
        reconcile_seconds=reconcile_seconds,
    )
    return JourneyActivities(store, {"sms": email, "email": email}, "小店", default_region="CN")


def attempt(activities: JourneyActivities, number: int):
    """One attempt of the send activity, as Temporal's retry would run it."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number)
    return env.run(activities.decide_message, request())


async def test_an_email_whose_answer_was_lost_waits_for_sendgrids_processed_event(api, store, provider, signer):
    """SendGrid took the email but answered after our timeout. The retry does not send it again:
    it waits, and SendGrid's signed `processed` event (our ledger id in custom_args) settles it."""
    save(store, customer(phone=None))
    provider.script[EMAIL] = [Answer(delay=1.5)]
    activities = in_doubt_activities(store, provider, event_webhook=True)
    with pytest.raises(ApplicationError, match="outcome unknown"):
        attempt(activities, 1)
    with pytest.raises(ApplicationError, match="in doubt since .* waiting for sendgrid's event"):
        attempt(activities, 2)
    [mail] = provider.mail
    row = by_step(store)["remind"]
    assert (row.status, row.attempted_at is not None) == ("sending", True)

    processed = {**sg_event("processed", row, "p1"), "sg_message_id": "sg-abc.filter0001.1.0"}
    assert (await sendgrid_post(api, signer, [processed])).json()["applied"] == 1
    outcome = attempt(activities, 3)
    assert (outcome.status, outcome.channel) == ("sent", "email")
    assert provider.mail_ids() == [mail["custom_args"]["message_id"]]  # one email, never two
    row = by_step(store)["remind"]
    assert (row.status, row.provider_id, row.attempted_at) == ("sent", "sg-abc", None)


def test_an_email_sendgrid_never_got_is_sent_again_after_the_wait(store, provider):
    """No `processed` event within the wait: SendGrid never took the email, so it goes again."""
    save(store, customer(phone=None))
    provider.script[EMAIL] = [Answer(delay=1.0, lost=True)]
    activities = in_doubt_activities(store, provider, event_webhook=True, reconcile_seconds=0.8)
    with pytest.raises(ApplicationError, match="outcome unknown"):
        attempt(activities, 1)
    assert provider.mail == []
    time.sleep(0.9)
    outcome = attempt(activities, 2)
    assert outcome.status == "sent" and len(provider.mail) == 1
    row = by_step(store)["remind"]
    assert row.status == "sent" and row.error.startswith("no sendgrid event for a send begun at")


async def test_without_the_event_webhook_an_email_in_doubt_is_sent_at_most_once(api, store, provider, signer):
    """Nothing can tell whether SendGrid took it: the message is marked `unknown` for an operator
    and never sent twice. A `processed` event arriving later settles it as sent."""
    save(store, customer(phone=None))
    provider.script[EMAIL] = [Answer(delay=1.5)]
    activities = in_doubt_activities(store, provider, event_webhook=False)
    with pytest.raises(ApplicationError, match="outcome unknown"):
        attempt(activities, 1)
    outcome = attempt(activities, 2)
    assert (outcome.status, outcome.channel) == ("unknown", "email")
    assert attempt(activities, 3).status == "unknown"
    assert len(provider.mail) == 1
    row = by_step(store)["remind"]
    assert (row.status, row.reason) == ("unknown", "in_doubt")
    assert "not sent again (at most once)" in row.error

    await sendgrid_post(api, signer, [sg_event("processed", row, "p1")])
    row = by_step(store)["remind"]
    assert (row.status, row.reason) == ("sent", None)


def test_after_the_wait_a_refusal_settles_the_email_and_the_next_attempt_sends_at_once(store, provider):
    """Attempt 1's request never reached SendGrid (no answer, no event); after the wait attempt 2
    got a 503, a clear no: nothing is in doubt any more, so attempt 3 sends without waiting."""
    save(store, customer(phone=None))
    provider.script[EMAIL] = [Answer(delay=1.0, lost=True), Answer(status=503)]
    activities = in_doubt_activities(store, provider, event_webhook=True, reconcile_seconds=0.5)
    with pytest.raises(ApplicationError, match="outcome unknown"):
        attempt(activities, 1)
    time.sleep(0.6)
    with pytest.raises(ApplicationError, match="SendGrid 503"):
        attempt(activities, 2)
    assert by_step(store)["remind"].attempted_at is None  # SendGrid said no: nothing in doubt
    assert attempt(activities, 3).status == "sent"
    assert len(provider.mail) == 1


def test_a_worker_killed_mid_send_leaves_the_email_in_doubt(store, provider):
    """The worker died after SendGrid took the email and before the answer was recorded: the
    next attempt finds the call begun and unanswered, and does not send blind."""
    save(store, customer(phone=None))
    activities = in_doubt_activities(store, provider, event_webhook=False)
    real = activities.channels["email"]

    class DiesAfterSending:
        name, provider, settles_doubt, reconcile_seconds = "email", "sendgrid", "never", 0.0

        def send(self, message):
            real.send(message)
            raise SystemExit("killed")  # nothing after the provider call runs

    ready = ActivityEnvironment().run(activities.decide_message, request(deliver=False))
    assert ready.status == "ready"
    activities.channels["email"] = DiesAfterSending()
    with pytest.raises(SystemExit):
        ActivityEnvironment().run(activities.deliver_message, ready.message_id)
    activities.channels["email"] = real
    assert ActivityEnvironment().run(activities.deliver_message, ready.message_id).status == "unknown"
    assert len(provider.mail) == 1
