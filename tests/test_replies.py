"""SMS replies (回复记录) through the real app on PostgreSQL, from Aliyun's SmsUp push and Twilio's
inbound webhook alike: logged once per provider key, linked to the customer by number and to the
message they answer, classified by the shop's reply rules (TD, 退订 and full-width ｔｄ
unsubscribe from marketing SMS at once; a keyword gets its answer; anything else the
customer-service webhook), written into the event log as `sms.replied`, handed to the answering
side once, and shown in the customer's profile and reply log."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from activities.journey import JourneyActivities
from channels import build_channels
from core.records import Event
from core.replies import (
    DEFAULT_REPLIES,
    PRACTICE_UNSUBSCRIBE_WORDS,
    STOP_WORDS,
    UNSUBSCRIBE_WORDS,
    Otherwise,
    ReplyRule,
    ReplyRules,
)
from definitions.loader import PACKAGE_DIR, load_definitions
from rules.replies import decide, match
from store import queries
from store.replies import expire_replies
from store.tables import EventRow, ProviderEventRow, SmsReplyRow
from tests.fake_provider import twilio_signed
from tests.helpers import attempt, customer
from tests.test_aliyun_push import PUBLIC, app_for, push, sent_sms
from tests.test_policy import request, save
from triggers.router import plan

PHONE = "+8613800000001"
RULES = ReplyRules(
    rules=[
        ReplyRule(keywords=["TD", "T", "退订"], action="unsubscribe", confirm="unsubscribed_confirm"),
        ReplyRule(keywords=["1", "查物流"], action="answer", template="logistics_answer"),
        ReplyRule(pattern=r"(?i)\bstop\b", action="unsubscribe"),
    ],
    otherwise=Otherwise(action="webhook", url="https://service.shop.example/sms"),
)


@pytest.fixture
def store(pg_store):
    return pg_store


@pytest.fixture
def hook():
    """The answering side's hook: what it was handed (helper E's starts a workflow)."""
    handed: list[str] = []

    async def on_reply(reply_id: str) -> None:
        handed.append(reply_id)

    on_reply.handed = handed
    return on_reply


def now_in_beijing(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")


def up(text: str, sequence_id, number: str = "13800000001", sign_name: str | None = "小店") -> dict:
    item = {"phone_number": number, "send_time": now_in_beijing(), "content": text, "dest_code": "1234",
            "sequence_id": sequence_id}  # fmt: skip
    if sign_name is not None:
        item["sign_name"] = sign_name
    return item


def logged_replies(store) -> list[SmsReplyRow]:
    with store.transaction() as session:
        rows = list(session.scalars(select(SmsReplyRow).order_by(SmsReplyRow.received_at)))
        session.expunge_all()
        return rows


def replied_events(store) -> list[EventRow]:
    with store.transaction() as session:
        rows = list(session.scalars(select(EventRow).where(EventRow.type == "sms.replied")))
        session.expunge_all()
        return rows


def test_the_rules_compare_replies_as_customers_type_them():
    assert [decide(RULES, text).action for text in ("TD", " td。", "ｔｄ", "退订！", "T.", "Ｔ")] == ["unsubscribe"] * 6
    assert match(RULES, "１") is RULES.rules[1]  # a full-width digit is the keyword 1
    assert match(RULES, "please STOP now") is RULES.rules[2]  # a pattern is searched
    assert match(RULES, "TDX") is None and decide(RULES, "TDX").url == "https://service.shop.example/sms"
    assert not decide(ReplyRules(), "hello").needs_answer  # the default otherwise: nothing to do
    assert decide(RULES, "TD").needs_answer and not decide(DEFAULT_REPLIES, "TD").needs_answer  # no confirm template


def test_every_stop_word_twilio_acts_on_unsubscribes_through_aliyun_too():
    """One list of Twilio's STOP words (core/replies.py): the built-in rule and the shipped
    replies.yaml unsubscribe on each of them, as Twilio itself does."""
    shipped = load_definitions(PACKAGE_DIR).replies
    for word in sorted(STOP_WORDS):
        for rules in (DEFAULT_REPLIES, shipped):
            decided = decide(rules, word.lower() + "。")
            assert decided.action == "unsubscribe", (word, decided)
        assert not decide(shipped, word).needs_answer  # Twilio confirms these itself: no second confirmation
    assert set(PRACTICE_UNSUBSCRIBE_WORDS) | STOP_WORDS == set(UNSUBSCRIBE_WORDS)


@pytest.mark.parametrize(
    ("text", "number"), [("TD", "13800000001"), ("退订", "8613800000001"), ("ｔｄ", "13800000001")]
)
async def test_an_unsubscribe_reply_stops_marketing_sms_and_is_handed_on_once(store, tmp_path, hook, text, number):
    save(store, customer())
    answered = sent_sms(store, tmp_path, template_data={"sign_name": "小店", "params": {}}, provider_id="BIZ-1")
    woken: list[int] = []
    async with app_for(store, replies=RULES, on_reply=hook, woken=woken) as api:
        first = await push(api, "up", [up(text, 1234567890, number)])
        again = await push(api, "up", [up(text, "1234567890", number)])  # pushed twice (as a string this time)
    assert first.status_code == 200 and first.json()["code"] == 0 and first.json()["applied"] == 1
    assert again.json()["duplicates"] == 1
    [reply] = logged_replies(store)
    assert (reply.provider, reply.provider_key, reply.number, reply.content) == ("aliyun", "1234567890", PHONE, text)
    assert (reply.customer_id, reply.message_id, reply.order_id) == ("c1", answered.id, "o1")
    assert (reply.action, reply.sign_name, reply.handled_at) == ("unsubscribe", "小店", None)  # a confirmation is due
    assert hook.handed == [reply.id] and woken == [1]
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "marketing"
        # The effect report counts it as the answered message's unsubscribe.
        assert session.get(ProviderEventRow, ("journeys", f"unsubscribe:{answered.id}")).kind == "unsubscribe"
    # The next marketing SMS to the number is skipped as unsubscribed; a payment notice still goes.
    activities = JourneyActivities(store, build_channels(tmp_path / "outbox.jsonl"), "小店", default_region="CN")
    promo = attempt(1).run(activities.decide_message, request(step="promo", category="marketing", fallback=None))
    assert (promo.status, promo.reason) == ("skipped", "unsubscribed")
    notice = attempt(1).run(activities.decide_message, request(step="notice"))
    assert (notice.status, notice.channel) == ("sent", "sms")


async def test_a_reply_from_a_number_the_customer_no_longer_holds_is_theirs_through_the_ledger(store, tmp_path, hook):
    """The customer changed their number after the reminder went out; a reply from the old one is
    still put down to them and to the message it answers (the ledger's latest SMS to that number,
    read by the number alone through its index, migration 0027), among other numbers' messages."""
    save(store, customer())
    answered = sent_sms(store, tmp_path, template_data={"sign_name": "小店", "params": {}})
    save(store, customer(customer_id="c2", phone="+8613800000002"))
    sent_sms(store, tmp_path, step="other", customer_id="c2", at=answered.at + timedelta(minutes=1))
    save(store, customer(phone="+8613900000009"))  # c1's new number
    async with app_for(store, replies=RULES, on_reply=hook) as api:
        assert (await push(api, "up", [up("好的", 4242)])).json()["applied"] == 1
    [reply] = logged_replies(store)
    assert (reply.number, reply.customer_id, reply.message_id, reply.order_id) == (PHONE, "c1", answered.id, "o1")


async def test_the_reply_event_carries_the_message_journey_and_order(store, tmp_path, hook):
    save(store, customer())
    older = sent_sms(store, tmp_path, step="remind", template_data={"sign_name": "小店", "params": {}})
    newer = sent_sms(store, tmp_path, step="promo", template_data={"sign_name": "别家", "params": {}},
                     at=older.at + timedelta(minutes=5))  # fmt: skip
    async with app_for(store, replies=RULES, on_reply=hook) as api:
        await push(api, "up", [up("1", 1, sign_name="小店"), up("谢谢，已收到", 2, sign_name=None)])
    by_key = {r.provider_key: r for r in logged_replies(store)}
    # The latest message under the reply's signature; without one, the latest.
    assert (by_key["1"].message_id, by_key["2"].message_id) == (older.id, newer.id)
    assert (by_key["1"].action, by_key["2"].action) == ("answer", "webhook")  # a keyword; anything else
    assert sorted(hook.handed) == sorted([by_key["1"].id, by_key["2"].id])
    events = {e.data["reply_id"]: e for e in replied_events(store)}
    keyword = events[by_key["1"].id]
    assert (keyword.customer_id, keyword.order_id) == ("c1", None)  # a customer's event: the order is in its data
    assert keyword.data == {"text": "1", "reply_id": by_key["1"].id, "action": "answer", "message_id": older.id,
                            "journey": "payment_reminder", "step": "remind", "order_id": "o1"}  # fmt: skip
    assert events[by_key["2"].id].data["text"] == "谢谢，已收到"
    assert len(events) == 2  # once each


async def test_without_a_matching_rule_or_a_hook_the_reply_is_logged_and_left_alone(store, tmp_path):
    save(store, customer())
    async with app_for(store) as api:  # the built-in rules: only the unsubscribe words; no hook
        answer = await push(api, "up", [up("你好，什么时候发货？", 7)])
    assert answer.json()["applied"] == 1
    [reply] = logged_replies(store)
    assert (reply.action, reply.customer_id, reply.message_id) == ("ignore", "c1", None)
    assert reply.handled_at is not None  # nothing left to answer
    [event] = replied_events(store)
    assert event.data["action"] == "ignore" and event.data["message_id"] is None


async def test_a_failing_hook_never_fails_the_push(store, tmp_path):
    save(store, customer())

    async def broken(_reply_id: str) -> None:
        raise RuntimeError("Temporal is down")

    async with app_for(store, replies=RULES, on_reply=broken) as api:
        answer = await push(api, "up", [up("查物流", 8)])
    assert answer.status_code == 200 and answer.json()["applied"] == 1
    [reply] = logged_replies(store)
    assert (reply.action, reply.handled_at) == ("answer", None)  # left for the answering side's sweep


async def test_a_reply_from_an_unknown_number_is_logged_without_an_event(store):
    async with app_for(store, replies=RULES) as api:
        answer = await push(api, "up", [up("TD", 9, number="13900000009"), {"content": "no number"}])
    assert (answer.json()["applied"], answer.json()["ignored"]) == (1, 1)
    [reply] = logged_replies(store)
    assert (reply.number, reply.customer_id, reply.action) == ("+8613900000009", None, "unsubscribe")
    assert replied_events(store) == []
    with store.transaction() as session:  # the number is unsubscribed all the same
        assert queries.suppression_scope(session, "sms", "+8613900000009") == "marketing"


async def twilio_reply(api, form: dict[str, str]):
    path = "/webhooks/twilio/inbound"
    return await api.post(path, content=urlencode(form), headers=twilio_signed(PUBLIC + path, form))


async def test_twilios_inbound_replies_take_the_same_way(store, tmp_path, hook):
    save(store, customer())
    answered = sent_sms(store, tmp_path)
    async with app_for(store, replies=RULES, on_reply=hook) as api:
        form = {"MessageSid": "SM100", "From": PHONE, "To": "+15005550006", "Body": "退订"}
        first = await twilio_reply(api, form)
        again = await twilio_reply(api, form)
        stop = await twilio_reply(api, {"MessageSid": "SM101", "From": PHONE, "Body": "STOP"})
    assert first.status_code == again.status_code == stop.status_code == 200 and "<Response>" in first.text
    replies = {r.provider_key: r for r in logged_replies(store)}
    assert set(replies) == {"SM100", "SM101"} and replies["SM100"].provider == "twilio"
    assert (replies["SM100"].customer_id, replies["SM100"].message_id, replies["SM100"].action) == (
        "c1",
        answered.id,
        "unsubscribe",
    )
    # 退订 is the shop's rule (its confirmation is due); Twilio confirms its own STOP itself.
    assert hook.handed == [replies["SM100"].id] and replies["SM101"].handled_at is not None
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "all"  # Twilio blocks the sender for all
    assert len(replied_events(store)) == 2


async def test_the_reply_log_is_in_the_profile_and_its_own_route(store, tmp_path):
    save(store, customer())
    sent_sms(store, tmp_path)
    async with app_for(store, replies=RULES) as api:
        await push(api, "up", [up("1", 1), up("TD", 2, sign_name=None)])
        reader = {"Authorization": "Bearer k-read"}
        listed = await api.get("/customers/c1/replies", headers=reader)
        profile = await api.get("/customers/c1", headers=reader)
        refused = await api.get("/customers/c1/replies", headers={"Authorization": "Bearer k-ingest"})
        nobody = await api.get("/customers/nobody/replies", headers=reader)
    assert listed.status_code == 200, listed.text
    shown = [(r["text"], r["action"], r["journey"], r["step"], r["order_id"]) for r in listed.json()]
    assert sorted(shown) == [("1", "answer", "payment_reminder", "remind", "o1"),
                             ("TD", "unsubscribe", "payment_reminder", "remind", "o1")]  # fmt: skip
    assert [r["text"] for r in profile.json()["replies"]] == [r["text"] for r in listed.json()]
    assert refused.status_code == 403 and nobody.json() == []


async def test_a_journey_that_exits_on_a_reply_is_steered_by_it(store, tmp_path):
    """As Braze's Canvas exits on an inbound SMS: the customer's winback journey told to exit on
    sms.replied gets the reply as a signal, and the event waits for the dispatcher."""
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder)
    journey = folder / "winback_sleeping.yaml"
    journey.write_text(journey.read_text().replace("exit_on: [order.created]", "exit_on: [order.created, sms.replied]"))
    definitions = load_definitions(folder)
    save(store, customer())
    sent_sms(store, tmp_path)
    woken: list[int] = []
    async with app_for(store, definitions=definitions, woken=woken) as api:
        await push(api, "up", [up("好的，马上付款", 11)])
    [row] = replied_events(store)
    assert (row.dispatched_at, row.data["order_id"], woken) == (None, "o1", [1])  # pending: a journey listens
    event = Event(event_id=row.event_id, type=row.type, occurred_at=row.occurred_at, customer_id=row.customer_id,
                  order_id=row.order_id, data=row.data)  # fmt: skip
    [dispatch] = plan(event, definitions)
    assert (dispatch.action, dispatch.journey, dispatch.key) == ("signal", "winback_sleeping", "c1")


async def test_retention_removes_old_replies_and_their_text_in_the_event_log(store, tmp_path):
    save(store, customer())
    async with app_for(store, replies=RULES) as api:
        await push(api, "up", [up("我的地址是北京市朝阳区", 12)])
    with store.transaction() as session:  # the dispatcher has applied it
        session.execute(update(EventRow).values(dispatched_at=datetime.now(UTC)))
    with store.transaction() as session:
        kept = expire_replies(session, datetime.now(UTC) - timedelta(days=1))
    assert kept == {"sms_replies": 0, "reply_events": 0}
    with store.transaction() as session:
        removed = expire_replies(session, datetime.now(UTC) + timedelta(minutes=1))
    assert removed == {"sms_replies": 1, "reply_events": 1}
    assert logged_replies(store) == [] and [e.data for e in replied_events(store)] == [{}]


async def test_an_unsubscribe_reply_never_weakens_a_stop_from_every_sms(store):
    with store.transaction() as session:
        queries.add_suppression(session, "sms", PHONE, "all", "hard bounce", datetime.now(UTC))
    async with app_for(store, replies=RULES) as api:
        await push(api, "up", [up("退订", 13)])
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", PHONE) == "all"
