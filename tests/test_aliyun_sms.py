"""Aliyun SMS through Aliyun's own SDK against a local fake of Dysmsapi that checks each request's
V3 signature as Aliyun does (tests/fake_aliyun.py).

What a shop would notice: which message reached which number, once; which were refused and why
(Aliyun's code and what it means, in the ledger); that a rate limit only delays a message; that a
lost answer is settled by QuerySendDetails without a second text; that a burst of one template
goes out as SendBatchSms, each ledger row settling alone when the batch is refused."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities
from channels import build_channels, describe_channels
from channels.aliyun_sms import AliyunSmsChannel
from core.channel import OutgoingMessage, PermanentChannelError, RetryableChannelError
from core.config import Settings
from core.sms_registry import aliyun_parts, aliyun_text
from store.tables import MessageRow
from tests.fake_aliyun import ACCESS_KEY_ID, ACCESS_KEY_SECRET, AliyunAnswer, FakeAliyun, acs3_signature

SIGN = "小店"
SHIPPED = "SMS_480000001"
TEMPLATES = {SHIPPED: "您的订单${order}已发货，${carrier}单号${tracking}。回T退订"}


@pytest.fixture
def aliyun():
    with FakeAliyun(TEMPLATES, [SIGN]) as fake:
        yield fake


def channel(
    fake: FakeAliyun,
    *,
    secret: str = ACCESS_KEY_SECRET,
    batch_seconds: float = 0.0,
    timeout: float = 0.5,
    lookup_grace: float = 0.0,
):
    """The adapter against the fake; the fake lists a send at once, so no grace is needed after a
    lost answer (the real Aliyun gets LOOKUP_GRACE, tested on its own)."""
    return AliyunSmsChannel(
        ACCESS_KEY_ID,
        secret,
        endpoint=fake.endpoint,
        protocol="http",
        timeout=timeout,
        batch_seconds=batch_seconds,
        lookup_grace=lookup_grace,
    )


def number(n: int) -> str:
    return f"+86139{n:08d}"


def params(n: int) -> dict[str, str]:
    return {"order": f"o{n}", "carrier": "顺丰", "tracking": f"SF{n:05d}"}


def message(n: int, *, to: str | None = None, earlier: datetime | None = None, **changes) -> OutgoingMessage:
    fields = {
        "message_id": f"m-{n}",
        "channel": "sms",
        "to": to or number(n),
        "body": aliyun_text(SIGN, TEMPLATES[SHIPPED], params(n)),
        "journey": "shipped_notice",
        "step": "notify",
        "customer_id": f"c{n}",
        "category": "transactional",
        "provider_template": SHIPPED,
        "template_data": {"sign_name": SIGN, "params": params(n)},
        "earlier_attempt_at": earlier,
    }
    return OutgoingMessage(**(fields | changes))


# ------------------------------------------------------------------ one message at a time


def test_a_message_reaches_the_number_as_its_registered_template(aliyun):
    receipt = channel(aliyun).send(message(1))
    [taken] = aliyun.taken()
    assert (taken["action"], taken["number"], taken["out_id"]) == ("SendSms", "13900000001", "m-1")
    assert (taken["template_code"], taken["sign_name"], taken["params"]) == (SHIPPED, SIGN, params(1))
    assert taken["content"] == "【小店】您的订单o1已发货，顺丰单号SF00001。回T退订"
    assert receipt.provider_id == taken["biz_id"]


def test_a_message_without_an_aliyun_template_is_refused_naming_it(aliyun):
    with pytest.raises(PermanentChannelError, match="no Aliyun template code.*aliyun_sms section") as refused:
        channel(aliyun).send(message(1, provider_template=None, template_data=None))
    assert refused.value.code == "no_template"
    assert aliyun.calls == []


#: What the shop reads when Aliyun refuses: code → (tried again?, the words that say why).
REFUSALS = {
    "isv.MOBILE_NUMBER_ILLEGAL": (False, "not a valid mobile number"),
    "isv.SMS_TEMPLATE_ILLEGAL": (False, "template code is not registered"),
    "isv.SMS_SIGNATURE_ILLEGAL": (False, "signature is not registered"),
    "isv.BLACK_KEY_CONTROL_LIMIT": (False, "blacklisted keyword"),
    "isv.TEMPLATE_MISSING_PARAMETERS": (False, "parameter the template declares is missing"),
    "isv.INVALID_PARAMETERS": (False, "parameter is invalid"),
    "isv.INVALID_JSON_PARAM": (False, "JSON object of strings"),
    "isv.DAY_LIMIT_CONTROL": (False, "daily sending limit"),
    "isv.MOBILE_COUNT_OVER_LIMIT": (False, "too many numbers"),
    "isv.AMOUNT_NOT_ENOUGH": (False, "balance is insufficient"),
    "isv.OUT_OF_SERVICE": (False, "suspended"),
    "isv.PRODUCT_UN_SUBSCRIPT": (False, "not activated"),
    "isp.RAM_PERMISSION_DENY": (False, "RAM user may not send"),
    "isv.BUSINESS_LIMIT_CONTROL": (True, "frequency limit"),
    "isp.SYSTEM_ERROR": (True, "system error at Aliyun"),
}
#: Gateway errors come with an HTTP status.
HTTP_REFUSALS = {
    ("Throttling.User", 400): (True, "flow control"),
    ("Throttling", 503): (True, "flow control"),
    ("InternalError", 500): (True, "internal error"),
    ("ServiceUnavailable", 503): (True, "unavailable"),
    ("isv.SOMETHING_NEW", 200): (False, "refused"),  # a code Aliyun adds later: not retried blindly
    ("Unknown.Gateway", 502): (True, "refused"),
    ("Forbidden.RAM", 403): (False, "not authorised"),
}


@pytest.mark.parametrize(
    ("code", "status", "retried", "why"),
    [(code, 200, *expected) for code, expected in REFUSALS.items()]
    + [(code, status, *expected) for (code, status), expected in HTTP_REFUSALS.items()],
)
def test_each_aliyun_refusal_is_retried_or_failed_with_its_reason(aliyun, code, status, retried, why):
    aliyun.script["13900000001"] = [AliyunAnswer(code=code, status=status)]
    with pytest.raises(RetryableChannelError if retried else PermanentChannelError) as refused:
        channel(aliyun).send(message(1))
    assert refused.value.code == code
    assert f"Aliyun {code}: " in str(refused.value) and why in str(refused.value)
    # A refusal or a rate limit took nothing; a 5xx or a system error may have: its retry looks first.
    limited = code.startswith("Throttling") or code == "isv.BUSINESS_LIMIT_CONTROL"
    assert refused.value.in_doubt == (retried and not limited and (status >= 500 or code.startswith("isp.")))
    assert aliyun.taken() == []


def test_a_rate_limit_waits_then_the_message_goes_once(aliyun):
    aliyun.script["13900000001"] = [AliyunAnswer(code="isv.BUSINESS_LIMIT_CONTROL")]
    sms = channel(aliyun)
    with pytest.raises(RetryableChannelError) as limited:
        sms.send(message(1))
    assert limited.value.retry_after == 60.0  # a number's limit is per minute at best
    sms.send(message(1))
    assert aliyun.out_ids() == ["m-1"]


def test_a_wrong_secret_or_unknown_key_is_refused_by_the_signature_check(aliyun):
    with pytest.raises(PermanentChannelError, match="ALIBABA_CLOUD_ACCESS_KEY_SECRET") as wrong:
        channel(aliyun, secret="not-the-secret").send(message(1))
    assert wrong.value.code == "SignatureDoesNotMatch"
    stranger = AliyunSmsChannel("LTAI5tSomeoneElse", ACCESS_KEY_SECRET, endpoint=aliyun.endpoint, protocol="http")
    with pytest.raises(PermanentChannelError) as unknown:
        stranger.send(message(1))
    assert unknown.value.code == "InvalidAccessKeyId.NotFound"
    assert aliyun.refused_signatures == ["SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound"]
    assert aliyun.taken() == []
    channel(aliyun).send(message(1))  # the right key pair is taken
    assert aliyun.out_ids() == ["m-1"]


def test_a_forged_or_replayed_request_is_refused_by_the_signature_check(aliyun):
    """A request signed for one number, sent with another: the query is part of what is signed.
    The genuine request sent twice: the second is a replay."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    headers = {
        "host": aliyun.endpoint,
        "x-acs-action": "SendSms",
        "x-acs-version": "2017-05-25",
        "x-acs-date": now,
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": empty,
    }
    values = json.dumps(params(1), ensure_ascii=False)
    query = {"PhoneNumbers": "13900000001", "SignName": SIGN, "TemplateCode": SHIPPED, "TemplateParam": values}
    signed = sorted(headers)
    signature = acs3_signature(ACCESS_KEY_SECRET, "POST", "/", list(query.items()), headers, signed)
    authorization = (
        f"ACS3-HMAC-SHA256 Credential={ACCESS_KEY_ID},SignedHeaders={';'.join(signed)},Signature={signature}"
    )
    forged = query | {"PhoneNumbers": "13900000666"}
    answer = httpx.post(
        f"http://{aliyun.endpoint}/?{urlencode(forged)}", headers=headers | {"Authorization": authorization}
    )
    assert answer.status_code == 400 and answer.json()["Code"] == "SignatureDoesNotMatch"
    assert aliyun.taken() == []
    # The request as signed is taken once; replayed as it is, its nonce is refused.
    genuine = f"http://{aliyun.endpoint}/?{urlencode(query)}"
    assert httpx.post(genuine, headers=headers | {"Authorization": authorization}).json()["Code"] == "OK"
    replayed = httpx.post(genuine, headers=headers | {"Authorization": authorization})
    assert replayed.status_code == 400 and replayed.json()["Code"] == "SignatureNonceUsed"
    assert [entry["number"] for entry in aliyun.taken()] == ["13900000001"]


# ------------------------------------------------------------------ the ledger: exactly once


def ledger_rows(store, numbers: list[str]) -> list[str]:
    """`sending` rows of the shipped notice, as decide_message writes them for Aliyun numbers."""
    ids = []
    with store.transaction() as session:
        for n, to in enumerate(numbers):
            body = aliyun_text(SIGN, TEMPLATES[SHIPPED], params(n))
            row = MessageRow(
                id=str(uuid.uuid4()),
                workflow_id=f"shipped_notice:o{n}",
                run_id="run-1",
                step="notify",
                journey="shipped_notice",
                journey_version="v1",
                customer_id=f"c{n}",
                order_id=f"o{n}",
                channel="sms",
                address=to,
                template="shipped",
                category="transactional",
                status="sending",
                at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
                body=body,
                segments=aliyun_parts(body),
                provider_template=SHIPPED,
                template_data={"sign_name": SIGN, "params": params(n)},
            )
            session.add(row)
            ids.append(row.id)
    return ids


def deliver(activities: JourneyActivities, message_id: str, attempt: int):
    """One attempt of deliver_message, as Temporal's retry would run it; the outcome or the error."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    try:
        return env.run(activities.deliver_message, message_id)
    except ApplicationError as err:
        return err


def deliver_all(activities: JourneyActivities, ids: list[str], attempt: int) -> dict[str, object]:
    """Every message at once, each in its thread as the worker runs activities."""
    outcomes: dict[str, object] = {}

    def one(message_id: str) -> None:
        outcomes[message_id] = deliver(activities, message_id, attempt)

    threads = [threading.Thread(target=one, args=(message_id,)) for message_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == len(ids)
    return outcomes


def activities_for(store, sms: AliyunSmsChannel) -> JourneyActivities:
    return JourneyActivities(store, {"sms": sms}, SIGN, default_region="CN")


def rows_by_id(store) -> dict[str, MessageRow]:
    with store.transaction() as session:
        return {row.id: row for row in session.scalars(select(MessageRow))}


def test_a_lost_answer_is_settled_by_query_send_details_without_a_second_message(pg_store, aliyun):
    """Aliyun took the message but answered after our timeout. The retry asks QuerySendDetails,
    finds our OutId, and records the message sent: one text on the phone."""
    [message_id] = ledger_rows(pg_store, [number(1)])
    aliyun.script["13900000001"] = [AliyunAnswer(delay=1.2)]
    activities = activities_for(pg_store, channel(aliyun))
    first = deliver(activities, message_id, 1)
    assert isinstance(first, ApplicationError) and "outcome unknown" in str(first)
    assert rows_by_id(pg_store)[message_id].attempted_at is not None  # in doubt
    second = deliver(activities, message_id, 2)
    assert (second.status, second.channel) == ("sent", "sms")
    assert aliyun.out_ids() == [message_id]  # never two
    assert [call["action"] for call in aliyun.calls] == ["SendSms", "QuerySendDetails"]
    row = rows_by_id(pg_store)[message_id]
    assert (row.status, row.provider_id, row.attempted_at) == ("sent", f"aliyun-out:{message_id}", None)


def test_a_lookup_that_finds_nothing_soon_after_the_lost_answer_looks_again_before_sending(aliyun):
    """Aliyun lists a send a little after taking it: within the grace, not finding it is no proof it
    was not taken, so nothing is sent and the retry comes after the rest of the grace."""
    sms = channel(aliyun, lookup_grace=60)
    with pytest.raises(RetryableChannelError) as waiting:
        sms.send(message(1, earlier=datetime.now(UTC) - timedelta(seconds=5)))
    assert waiting.value.in_doubt and waiting.value.code == "lookup"
    assert 50 <= waiting.value.retry_after <= 56
    assert aliyun.taken() == []
    receipt = sms.send(message(1, earlier=datetime.now(UTC) - timedelta(seconds=61)))  # past it: sent
    assert [entry["out_id"] for entry in aliyun.taken()] == ["m-1"] and receipt.provider_id == aliyun.taken()[0][
        "biz_id"
    ]


def test_another_messages_text_does_not_settle_a_single_send(aliyun):
    """The same registered text to the same number from another message (its own OutId) is not this
    message: only a batch's record (whose OutId is the batch's) is matched by its text."""
    sms = channel(aliyun)
    sms.send(message(2, to=number(1)))
    receipt = sms.send(message(1, earlier=datetime.now(UTC) - timedelta(seconds=5), body=message(2, to=number(1)).body,
                                template_data={"sign_name": SIGN, "params": params(2)}))  # fmt: skip
    assert [entry["out_id"] for entry in aliyun.taken()] == ["m-2", "m-1"]  # sent: the record was m-2's
    assert receipt.provider_id == aliyun.taken()[1]["biz_id"]


def test_a_gateway_error_leaves_the_message_in_doubt(aliyun):
    """A 5xx may come after Aliyun took the message: the retry looks it up before sending."""
    aliyun.script["13900000001"] = [AliyunAnswer(code="ServiceUnavailable", status=503)]
    with pytest.raises(RetryableChannelError) as failed:
        channel(aliyun).send(message(1))
    assert failed.value.in_doubt


def test_a_failed_lookup_keeps_the_message_in_doubt_and_sends_nothing(aliyun):
    """QuerySendDetails itself fails: nothing is sent, the message stays in doubt for the next try."""
    aliyun.script["13900000001"] = [AliyunAnswer(delay=1.2)]
    sms = channel(aliyun)
    with pytest.raises(RetryableChannelError):
        sms.send(message(1))
    aliyun.lookup_script = [AliyunAnswer(code="InternalError", status=500)] * 3  # tried at once, up to 3 times
    retry = message(1, earlier=datetime.now(UTC) - timedelta(seconds=5))
    with pytest.raises(RetryableChannelError, match="cannot check Aliyun.*outcome unknown") as failed:
        sms.send(retry)
    assert failed.value.in_doubt and failed.value.code == "lookup"
    assert sms.send(retry).provider_id == "aliyun-out:m-1"
    assert aliyun.out_ids() == ["m-1"]


def test_a_lookup_that_fails_once_is_tried_again_at_once(aliyun):
    """A read changes nothing at Aliyun: a failed QuerySendDetails is asked again in the same attempt,
    so a fault does not spend a Temporal attempt (and its growing backoff) on a read."""
    aliyun.script["13900000001"] = [AliyunAnswer(delay=1.2)]
    sms = channel(aliyun)
    with pytest.raises(RetryableChannelError):
        sms.send(message(1))
    aliyun.lookup_script = [AliyunAnswer(code="ServiceUnavailable", status=503)]
    assert sms.send(message(1, earlier=datetime.now(UTC) - timedelta(seconds=5))).provider_id == "aliyun-out:m-1"
    assert aliyun.out_ids() == ["m-1"]
    assert [call["action"] for call in aliyun.calls].count("QuerySendDetails") == 2


def test_a_request_that_never_reached_aliyun_is_sent_after_the_lookup(pg_store, aliyun):
    [message_id] = ledger_rows(pg_store, [number(1)])
    aliyun.script["13900000001"] = [AliyunAnswer(delay=1.2, lost=True)]
    activities = activities_for(pg_store, channel(aliyun))
    assert isinstance(deliver(activities, message_id, 1), ApplicationError)
    assert aliyun.taken() == []
    assert deliver(activities, message_id, 2).status == "sent"
    [taken] = aliyun.taken()
    assert taken["out_id"] == message_id and rows_by_id(pg_store)[message_id].provider_id == taken["biz_id"]


def test_a_refusal_is_recorded_on_the_ledger_row_with_aliyuns_code(pg_store, aliyun):
    [message_id] = ledger_rows(pg_store, [number(1)])
    aliyun.refuse["13900000001"] = "isv.BLACK_KEY_CONTROL_LIMIT"
    outcome = deliver(activities_for(pg_store, channel(aliyun)), message_id, 1)
    assert (outcome.status, outcome.reason) == ("failed", "provider_rejected")
    row = rows_by_id(pg_store)[message_id]
    assert row.error.startswith("isv.BLACK_KEY_CONTROL_LIMIT: Aliyun isv.BLACK_KEY_CONTROL_LIMIT: a parameter holds")


# ------------------------------------------------------------------ batches


def test_150_concurrent_sends_of_one_template_go_as_two_batches(aliyun):
    sms = channel(aliyun, batch_seconds=1.0)
    receipts: dict[int, str] = {}

    def one(n: int) -> None:
        receipts[n] = sms.send(message(n)).provider_id

    threads = [threading.Thread(target=one, args=(n,)) for n in range(150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    batches = aliyun.actions("SendBatchSms")
    assert sorted(len(call["numbers"]) for call in batches) == [50, 100]
    assert aliyun.actions("SendSms") == []
    taken = aliyun.taken()
    assert sorted(entry["number"] for entry in taken) == sorted(number(n)[3:] for n in range(150))
    by_number = {entry["number"]: entry for entry in taken}
    for n in range(150):  # each number its own parameters, and the receipt of its own batch
        entry = by_number[number(n)[3:]]
        assert entry["params"] == params(n) and entry["content"] == message(n).body
        assert receipts[n] == entry["biz_id"]
    assert len(set(receipts.values())) == 2
    assert not any(thread.is_alive() for thread in threads)  # every caller answered, none left waiting


def test_a_lone_message_goes_by_send_sms(aliyun):
    channel(aliyun, batch_seconds=0.1).send(message(1))
    assert [call["action"] for call in aliyun.calls] == ["SendSms"]


def test_a_batch_with_a_bad_number_settles_each_row_alone(pg_store, aliyun):
    """Aliyun refuses the whole batch for one malformed number; the batch is sent again one message
    at a time: the good ones go once each, the bad one fails with Aliyun's code."""
    numbers = [number(n) for n in range(5)]
    numbers[2] = "+86139000"  # too short: Aliyun's isv.MOBILE_NUMBER_ILLEGAL
    ids = ledger_rows(pg_store, numbers)
    activities = activities_for(pg_store, channel(aliyun, batch_seconds=1.0))
    outcomes = deliver_all(activities, ids, 1)
    assert [outcomes[i].status for i in ids] == ["sent", "sent", "failed", "sent", "sent"]
    assert [(c["action"], c["code"]) for c in aliyun.calls if c["action"] == "SendBatchSms"] == [
        ("SendBatchSms", "isv.MOBILE_NUMBER_ILLEGAL")
    ]
    assert sorted(aliyun.out_ids()) == sorted(ids[:2] + ids[3:])  # each good one once, by SendSms
    rows = rows_by_id(pg_store)
    assert rows[ids[2]].error.startswith("isv.MOBILE_NUMBER_ILLEGAL: ")
    assert {rows[i].provider_id for i in ids if i != ids[2]} == {e["biz_id"] for e in aliyun.taken()}


def test_a_batch_whose_answer_was_lost_is_settled_message_by_message(pg_store, aliyun):
    """The batch was taken but its answer came too late: every message is in doubt, and each
    retry finds its own text by QuerySendDetails. Nothing goes twice."""
    ids = ledger_rows(pg_store, [number(n) for n in range(4)])
    aliyun.script["13900000001"] = [AliyunAnswer(delay=1.2)]
    activities = activities_for(pg_store, channel(aliyun, batch_seconds=1.0))
    first = deliver_all(activities, ids, 1)
    assert all(isinstance(first[i], ApplicationError) and "outcome unknown" in str(first[i]) for i in ids)
    [batch] = aliyun.actions("SendBatchSms")
    assert len(batch["numbers"]) == 4
    second = deliver_all(activities, ids, 2)
    assert [second[i].status for i in ids] == ["sent"] * 4
    assert len(aliyun.taken()) == 4 and aliyun.actions("SendSms") == []
    batch_id = aliyun.taken()[0]["out_id"]
    assert {row.provider_id for row in rows_by_id(pg_store).values()} == {f"aliyun-out:{batch_id}"}


def test_a_rate_limited_batch_is_retried_whole(aliyun):
    aliyun.script["13900000000"] = [AliyunAnswer(code="Throttling.User", status=400)]
    sms = channel(aliyun, batch_seconds=1.0)
    errors: list[Exception] = []

    def one(n: int) -> None:
        try:
            sms.send(message(n))
        except RetryableChannelError as err:
            errors.append(err)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [err.code for err in errors] == ["Throttling.User"] * 3 and all(err.retry_after for err in errors)
    assert aliyun.taken() == [] and aliyun.actions("SendSms") == []


# ------------------------------------------------------------------ configuration


def test_with_aliyun_configured_mainland_numbers_go_through_aliyun(tmp_path, aliyun):
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "ALIYUN_SMS_ENDPOINT": aliyun.endpoint,
        "ALIYUN_SMS_PROTOCOL": "http",
    }
    alone = build_channels(tmp_path / "o.jsonl", Settings.from_env(env))
    assert describe_channels(alone).startswith("sms: aliyun (+86), outbox, email: outbox")
    sms = alone["sms"]
    assert (sms.provider_for("+8613900000001"), sms.provider_for("+14155550100")) == ("aliyun", "outbox")
    assert sms.settles_doubt == "lookup"
    sms.send(message(1))
    sms.send(message(2, to="+14155550100", provider_template=None, template_data=None, body="Your order shipped"))
    assert aliyun.out_ids() == ["m-1"]  # the other number went to the outbox
    assert '"message_id": "m-2"' in (tmp_path / "o.jsonl").read_text()

    twilio = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+15005550006"}
    both = build_channels(tmp_path / "o.jsonl", Settings.from_env(env | twilio))
    assert describe_channels(both).startswith("sms: aliyun (+86), twilio, email: outbox")
    assert both["sms"].provider_for("+14155550100") == "twilio"
    assert both["sms"].provider_for("+8613900000001") == "aliyun"


def test_the_lookup_reads_each_day_since_the_earlier_attempt(aliyun):
    """A message in doubt since two days ago, not found: three days asked, then it is sent."""
    sms = channel(aliyun)
    sms.send(message(1, earlier=datetime.now(UTC) - timedelta(days=2)))
    asked = [call for call in aliyun.calls if call["action"] == "QuerySendDetails"]
    assert len(asked) in (3, 4)  # the days in Beijing time since a minute before the attempt
    assert aliyun.out_ids() == ["m-1"]
