"""The contact policy, one rule at a time, through the real send activity and store (SQLite and
PostgreSQL): blacklist, channel choice and unsubscribes, quiet hours, frequency cap, exactly once."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities
from activities.payloads import SendRequest
from channels import build_channels
from core.channel import OutgoingMessage, PermanentChannelError, RetryableChannelError, SendReceipt
from definitions.expressions import zone
from definitions.schema import Template
from rules.quiet_hours import QUIET_HOURS
from store import queries
from store.tables import MessageRow
from tests.helpers import at, attempt, customer

TEMPLATE = Template(
    sms={"zh-CN": "您好{{ customer.name }}，订单{{ order.order_id }}", "en": "Hi {{ customer.name }}"},
    email={"zh-CN": {"subject": "订单{{ order.order_id }}", "body": "<p>{{ customer.name }}</p>"}},
)
NOON = at("2026-02-02 12:00+08:00")


def request(step="remind", category="transactional", when=NOON, customer_id="c1", **changes) -> SendRequest:
    fields = dict(
        workflow_id=f"payment_reminder:{customer_id}-o1",
        run_id="run-1",
        journey="payment_reminder",
        journey_version="v1",
        step=step,
        customer_id=customer_id,
        order_id="o1",
        category=category,
        channel="sms",
        fallback="email",
        template_name="t",
        template=TEMPLATE,
        context={"order": {"order_id": "o1"}},
        at=when,
    )
    return SendRequest(**{**fields, **changes})


def save(store, *people):
    with store.transaction() as session:
        for person in people:
            queries.upsert_customer(session, person, NOON, "CN")


def rows(store) -> list[MessageRow]:
    with store.transaction() as session:
        return queries.list_messages(session)


def sent_lines(outbox) -> list[dict]:
    return [json.loads(line) for line in outbox.read_text().splitlines()] if outbox.exists() else []


# ------------------------------------------------------------------ 1. blacklist


def test_blacklisted_customer_gets_nothing(store, send, outbox):
    save(store, customer(blacklisted=True))
    outcome = send(request())
    assert (outcome.status, outcome.reason, outcome.channel) == ("skipped", "blacklisted", None)
    assert [(r.status, r.reason, r.channel) for r in rows(store)] == [("skipped", "blacklisted", None)]
    assert sent_lines(outbox) == []


def test_blacklist_comes_before_quiet_hours(store, send):
    save(store, customer(blacklisted=True))
    outcome = send(request(when=at("2026-02-02 23:00+08:00")))
    assert (outcome.status, outcome.reason) == ("skipped", "blacklisted")


# ------------------------------------------------------------------ 2. channel choice


def test_sms_first_with_signature(store, send, outbox):
    save(store, customer())
    outcome = send(request())
    assert (outcome.status, outcome.channel) == ("sent", "sms")
    [line] = sent_lines(outbox)
    assert (line["channel"], line["to"], line["body"]) == ("sms", "+8613800000001", "【小店】您好王芳，订单o1")
    [row] = rows(store)
    assert (row.status, row.provider_id) == ("sent", f"outbox:{row.id}")


def test_no_phone_falls_back_to_email(store, send, outbox):
    save(store, customer(phone=None))
    outcome = send(request())
    assert (outcome.status, outcome.channel) == ("sent", "email")
    [line] = sent_lines(outbox)
    assert (line["to"], line["subject"], line["body"]) == ("wangfang@example.com", "订单o1", "<p>王芳</p>")


def test_sms_unsubscribe_blocks_every_sms(store, send):
    save(store, customer(unsubscribed=["sms"]))
    assert send(request()).channel == "email"
    save(store, customer("c2", unsubscribed=["sms"], email=None))
    outcome = send(request(customer_id="c2"))
    assert (outcome.status, outcome.reason) == ("skipped", "unsubscribed")


def test_email_unsubscribe_blocks_marketing_email_only(store, send):
    save(store, customer(phone=None, unsubscribed=["email"]))
    marketing = send(request(step="promo", category="marketing"))
    assert (marketing.status, marketing.reason) == ("skipped", "unsubscribed")
    transactional = send(request(step="remind"))
    assert (transactional.status, transactional.channel) == ("sent", "email")


def test_suppressed_address_is_blocked(store, send):
    save(store, customer())
    with store.transaction() as session:
        queries.add_suppression(session, "sms", "+8613800000001", "all", "STOP", NOON)
    assert send(request()).channel == "email"


def test_no_contact(store, send):
    save(store, customer(phone=None, email=None))
    outcome = send(request())
    assert (outcome.status, outcome.reason, outcome.channel) == ("skipped", "no_contact", None)
    unknown = send(request(customer_id="nobody"))
    assert (unknown.status, unknown.reason) == ("skipped", "no_contact")


# ------------------------------------------------------------------ 3. quiet hours


@pytest.mark.parametrize(
    ("local", "resume"),
    [
        ("2026-02-02 21:59", None),
        ("2026-02-02 22:00", "2026-02-03 08:00"),
        ("2026-02-02 23:30", "2026-02-03 08:00"),
        ("2026-02-03 03:00", "2026-02-03 08:00"),
        ("2026-02-03 07:59", "2026-02-03 08:00"),
        ("2026-02-03 08:00", None),
    ],
)
def test_quiet_hours_are_22_to_8_local(local, resume):
    tz = zone("Asia/Shanghai")
    deferral = QUIET_HOURS.deferral(datetime.fromisoformat(local).replace(tzinfo=tz), tz)
    assert deferral == (datetime.fromisoformat(resume).replace(tzinfo=tz) if resume else None)


def test_quiet_hours_use_the_customers_time_zone(store, send):
    save(store, customer(timezone="America/New_York"))
    # 12:00 in Shanghai is 23:00 the evening before in New York
    outcome = send(request(when=NOON))
    assert outcome.status == "deferred"
    assert outcome.defer_until == at("2026-02-02 08:00-05:00")
    assert rows(store) == []  # a deferral is not recorded: an exit meanwhile leaves no record


def test_quiet_hours_past_the_deadline_skip(store, send):
    save(store, customer())
    night = at("2026-02-02 23:15+08:00")
    outcome = send(request(when=night, deadline=at("2026-02-03 08:00+08:00")))  # 08:00 is at the deadline
    assert (outcome.status, outcome.reason, outcome.channel) == ("skipped", "quiet_hours", "sms")
    assert send(request(step="other", when=night, deadline=at("2026-02-03 08:01+08:00"))).status == "deferred"


# ------------------------------------------------------------------ 4. frequency cap


def test_two_marketing_messages_per_rolling_week(store, send):
    save(store, customer())
    day = timedelta(days=1)
    results = []
    for n, offset in enumerate([0 * day, 1 * day, 2 * day, 7 * day, 7 * day + timedelta(hours=1)]):
        outcome = send(request(step=f"m{n}", category="marketing", when=NOON + offset))
        results.append(f"{outcome.status}:{outcome.reason}")
    # the 3rd within 7 days is capped; 7 days after the 1st, one slot is free again, then none
    assert results == ["sent:None", "sent:None", "skipped:frequency_cap", "sent:None", "skipped:frequency_cap"]


def test_transactional_messages_are_neither_counted_nor_capped(store, send):
    save(store, customer())
    for n in range(3):
        assert send(request(step=f"t{n}")).status == "sent"
    assert send(request(step="m1", category="marketing")).status == "sent"
    assert send(request(step="m2", category="marketing")).status == "sent"
    assert send(request(step="t9")).status == "sent"


def test_cap_holds_under_concurrent_sends(store, outbox):
    """Two journeys send a marketing message to the same customer at the same moment on two
    workers (threads with their own connections); one slot is left: exactly one may go."""
    people = [customer(f"c{n}") for n in range(8)]
    save(store, *people)
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN")
    env = ActivityEnvironment()
    for person in people:
        env.run(
            activities.decide_message, request(step="earlier", category="marketing", customer_id=person.customer_id)
        )
    results: list[tuple[str, str]] = []
    barrier = threading.Barrier(len(people) * 2)

    def race(person, journey):
        barrier.wait()
        req = request(
            step="promo",
            category="marketing",
            customer_id=person.customer_id,
            workflow_id=f"{journey}:{person.customer_id}",
        )
        outcome = ActivityEnvironment().run(activities.decide_message, req)
        results.append((person.customer_id, outcome.status))

    threads = [threading.Thread(target=race, args=(p, j)) for p in people for j in ("review_request", "revisit_28d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for person in people:
        assert sorted(s for c, s in results if c == person.customer_id) == ["sent", "skipped"]
    with store.transaction() as session:
        for person in people:
            assert (
                len(queries.capped_at(session, person.customer_id, "marketing", "marketing", NOON - timedelta(days=7)))
                == 2
            )


# ------------------------------------------------------------------ 5. exactly once


def test_a_retried_step_sends_once(store, send, outbox):
    save(store, customer())
    first = send(request())
    again = send(request(), 2)
    assert first.message_id == again.message_id and again.status == "sent"
    assert len(sent_lines(outbox)) == 1 and len(rows(store)) == 1
    other_run = send(request(run_id="run-2"))  # a new run (continue-as-new) is a new message
    assert other_run.message_id != first.message_id


def test_a_first_attempt_meeting_a_ledger_row_is_refused_and_its_retry_sends_nothing_more(store, send, outbox):
    """A first attempt does not look for an earlier row (a step is decided once per run); if one is
    there all the same, the ledger's unique (workflow, run, step) refuses it, and the retry finds it."""
    save(store, customer())
    first = send(request())
    with pytest.raises(IntegrityError):
        send(request())
    again = send(request(), 2)
    assert (again.message_id, again.status) == (first.message_id, "sent")
    assert len(sent_lines(outbox)) == 1 and len(rows(store)) == 1


class FlakyChannel:
    """A provider stand-in whose answers the test scripts (real providers come with their own tests)."""

    name = "sms"

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls: list[OutgoingMessage] = []

    def send(self, message):
        self.calls.append(message)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return SendReceipt(provider_id=answer)


def test_retryable_failure_is_retried_with_the_same_message_id(store):
    save(store, customer())
    channel = FlakyChannel([RetryableChannelError("503 from provider"), "SM123"])
    activities = JourneyActivities(store, {"sms": channel}, "小店", default_region="CN")
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError, match="will retry"):
        env.run(activities.decide_message, request())
    [row] = rows(store)
    assert row.status == "sending"  # written before the channel was called
    outcome = attempt(2).run(activities.decide_message, request())
    assert outcome.status == "sent"
    assert [m.message_id for m in channel.calls] == [row.id, row.id]
    [row] = rows(store)
    assert (row.status, row.provider_id) == ("sent", "SM123")


def test_permanent_failure_is_recorded_and_not_retried(store):
    save(store, customer())
    channel = FlakyChannel([PermanentChannelError("invalid number", code="21211")])
    activities = JourneyActivities(store, {"sms": channel}, "小店", default_region="CN")
    outcome = ActivityEnvironment().run(activities.decide_message, request())
    assert (outcome.status, outcome.reason) == ("failed", "provider_rejected")
    assert attempt(2).run(activities.decide_message, request()).status == "failed"
    assert len(channel.calls) == 1
    [row] = rows(store)
    assert row.error == "21211: invalid number"


def test_template_error_is_recorded_not_raised(store, send):
    save(store, customer())
    broken = Template(sms={"zh-CN": "{{ order.missing_field }}"})
    outcome = send(request(template=broken))
    assert (outcome.status, outcome.reason) == ("failed", "template_error")
    [row] = rows(store)
    assert "missing_field" in row.error


def test_record_times_are_the_journeys_clock(store, send):
    save(store, customer())
    send(request(when=datetime(2026, 2, 2, 4, 0, tzinfo=UTC)))
    [row] = rows(store)
    assert row.at == datetime(2026, 2, 2, 4, 0, tzinfo=UTC)
