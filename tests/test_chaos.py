"""The chaos suite: the deployed processes (`journeys api`, `journeys worker`, a Temporal dev
server, PostgreSQL) sending through the real Twilio, SendGrid and Aliyun SDKs to local fakes of
their APIs, which fail 30% of requests (500, 503, rate limits, Aliyun's isp.SYSTEM_ERROR, and
answers 2 s late after taking the message, past the adapters' 1 s timeout). Mainland numbers go
through Aliyun (alone or in SendBatchSms batches), Hong Kong numbers through Twilio, the rest by
email. On top of that, the worker is killed with SIGKILL mid-run, or the Temporal server is
stopped for 20 s while events are posted.

Each run checks the one thing that matters: every one of the 300 shipped notices went out exactly
once. Counted twice: in the ledger (one `sent` row per order, none failed, unknown or stuck) and in
each fake provider's own log of what it took (each ledger id, or for Aliyun each number, once,
nothing else). The waits are bounds against hanging, never performance assertions.

The Aliyun part needs the shipped templates' `aliyun_sms` sections and `definitions/sms.yaml`
(the registered texts the fake renders, as Aliyun does, to compare with the ledger's)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from definitions.loader import load_sms_registry
from store.tables import MessageRow
from tests.fake_aliyun import ACCESS_KEY_ID, ACCESS_KEY_SECRET, AliyunFaults, FakeAliyun
from tests.fake_provider import AUTH_TOKEN, FakeProvider, Faults
from tests.helpers import daytime_zone
from tests.stack import Stack, api_event, pending, sent, wait_until

ORDERS = 300

#: Alarms that mean the worker itself broke. Provider faults make activity retries, which the SDK
#: logs with their tracebacks at WARNING: expected here, so not in this list.
BROKEN_WORKER = ("TMPRL1101", "Potential deadlock", "could not be evicted", "Failed running eviction", "stopped at")


DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"


def contact(n: int) -> dict[str, str]:
    """A third of the customers have a mainland number (Aliyun), a third a Hong Kong one (Twilio),
    a third only an email address (SendGrid)."""
    return [{"email": f"buyer{n}@example.com"}, {"phone": f"+86139{n:08d}"}, {"phone": f"+8529123{n:04d}"}][n % 3]


def shop(now: datetime) -> tuple[list[dict], list[dict]]:
    """300 customers, one shipped order each."""
    zone = daytime_zone(now)
    event = partial(api_event, now)

    customers = [
        event(f"cust-{n}", "customer.created", f"c{n}", timezone=zone, **contact(n))
        for n in range(ORDERS)
    ]  # fmt: skip
    shipped = [
        event(f"shipped-{n}", "order.shipped", f"c{n}", f"o{n}", carrier="顺丰", tracking_no=f"SF{n:05d}")
        for n in range(ORDERS)
    ]
    return customers, shipped


@pytest.fixture
def chaos(pg_store, tmp_path):
    """A stack whose SMS go through Aliyun's SDK (mainland numbers) and Twilio's (the others) and
    whose email goes through SendGrid's, to fakes failing 30% of requests, with SendGrid's signed
    event webhook configured."""
    registry = load_sms_registry(DEFINITIONS)
    texts = {code: template.text for code, template in registry.templates.items()}
    with FakeProvider() as provider, FakeAliyun(texts or None, registry.signatures or None) as aliyun:
        provider.faults = Faults(rate=0.3, slow=2.0)
        aliyun.faults = AliyunFaults(rate=0.3, slow=2.0)
        stack = Stack(tmp_path, pg_store.url, server_db=tmp_path / "temporal.db")
        stack.extra_env = {
            "JOURNEYS_PUBLIC_URL": stack.api,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM": "+15005550006",
            "TWILIO_API_BASE_URL": provider.url,
            "TWILIO_TIMEOUT": "1",
            "SENDGRID_API_KEY": "SG.fake",
            "SENDGRID_FROM": "shop@example.com",
            "SENDGRID_API_HOST": provider.url,
            "SENDGRID_TIMEOUT": "1",
            "SENDGRID_WEBHOOK_PUBLIC_KEY": provider.signer.public_key,
            # A worker killed before its request reached SendGrid leaves an email in doubt that no
            # event will settle: it is sent again after this wait (900 s by default).
            "JOURNEYS_SENDGRID_RECONCILE_SECONDS": "60",
            "JOURNEYS_RATE_LIMITS": "sms=100,email=100",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
            "ALIYUN_SMS_ENDPOINT": aliyun.endpoint,
            "ALIYUN_SMS_PROTOCOL": "http",
            "ALIYUN_SMS_TIMEOUT": "1",
            # The fake lists a send at once: a lost answer need not wait Aliyun's 60 s before a resend
            # (each wait would spend an attempt and grow Temporal's backoff under 30% faults).
            "JOURNEYS_ALIYUN_SMS_LOOKUP_SECONDS": "0",
        }
        provider.sendgrid_events_url = f"{stack.api}/webhooks/sendgrid/events"
        provider.sendgrid_event_delay = 5.0  # later than the activity's first retries
        with stack:
            yield stack, provider, aliyun


def assert_each_sent_exactly_once(store, stack: Stack, provider: FakeProvider, aliyun: FakeAliyun) -> None:
    with store.transaction() as session:
        rows = list(session.scalars(select(MessageRow).where(MessageRow.journey == "shipped_notice")))
    assert Counter(r.status for r in rows) == {"sent": ORDERS}, Counter((r.status, r.reason) for r in rows)
    assert sorted(r.order_id for r in rows) == sorted(f"o{n}" for n in range(ORDERS))
    assert Counter(r.channel for r in rows) == {"sms": 2 * ORDERS // 3, "email": ORDERS // 3}
    mainland = [r for r in rows if r.channel == "sms" and r.address.startswith("+86")]
    mainland_ids = {r.id for r in mainland}
    abroad = [r for r in rows if r.channel == "sms" and not r.address.startswith("+86")]
    assert len(mainland) == len(abroad) == ORDERS // 3

    # What Twilio and SendGrid took: SMS by the ledger id in their status callback URL, email by custom_args.
    sms_ids = [parse_qs(urlparse(m["status_callback"]).query)["message_id"][0] for m in provider.sms]
    taken = Counter(sms_ids + provider.mail_ids())
    duplicates = {message_id: n for message_id, n in taken.items() if n > 1}
    assert not duplicates, f"sent more than once: {duplicates}"
    assert set(taken) == {r.id for r in rows} - mainland_ids, "a provider took messages the ledger lacks, or lost some"
    assert {r.provider_id for r in abroad} == {m["sid"] for m in provider.sms}

    # What Aliyun took: each mainland number once (one order each), with the ledger's template
    # and the very text the ledger shows; a single send's OutId is its ledger id.
    accepted = aliyun.taken()
    numbers = Counter("+86" + entry["number"] for entry in accepted)
    assert numbers == Counter(r.address for r in mainland), {n: c for n, c in numbers.items() if c > 1}
    by_number = {"+86" + entry["number"]: entry for entry in accepted}
    for row in mainland:
        entry = by_number[row.address]
        assert (entry["template_code"], entry["content"]) == (row.provider_template, row.body)
        if entry["action"] == "SendSms":
            assert entry["out_id"] == row.id
        assert row.provider_id in (entry["biz_id"], f"aliyun-out:{entry['out_id']}")
    assert aliyun.actions("SendBatchSms"), "no burst went out as a batch"

    assert sum(provider.faults.drawn.values()) > 40, provider.faults.drawn  # the faults really happened
    assert sum(aliyun.faults.drawn.values()) > 10, aliyun.faults.drawn
    # Sends whose answer was lost and that were settled without a second message, on every provider.
    doubted = Counter(
        "aliyun" if r.id in mainland_ids else r.channel for r in rows if r.error and "outcome unknown" in r.error
    )
    assert doubted["sms"] >= 2 and doubted["email"] >= 2 and doubted["aliyun"] >= 2, (
        doubted,
        provider.faults.drawn,
        aliyun.faults.drawn,
    )

    log = stack.worker_logs() + stack.log("api").read_text(errors="replace")
    broken = {alarm: log.count(alarm) for alarm in BROKEN_WORKER if alarm in log}
    assert not broken, f"worker log alarms {broken}"
    for n in (1, 4, 298):
        assert f"139{n:08d}" not in log  # no mainland number in any log, with or without +86
    for n in (2, 5, 299):
        assert f"9123{n:04d}" not in log
    for n in (0, 3, 297):
        assert f"buyer{n}@example.com" not in log
    assert "顺丰单号" not in log  # nor a message body


def test_the_worker_killed_twice_during_300_journeys_under_provider_faults(chaos, pg_store):
    stack, provider, aliyun = chaos
    customers, shipped = shop(datetime.now(UTC).replace(microsecond=0))
    stack.post(customers)
    stack.post(shipped)

    for kills, after in enumerate((60, 180), start=1):
        wait_until(lambda after=after: sent(pg_store, "shipped_notice") >= after, 300, f"{after} sends")
        stack.kill_worker(0)  # mid-run: activities in flight, sends in doubt
        stack.start_worker(0)
        assert stack.log("worker0").read_text(errors="replace").count("worker polling") == kills + 1

    wait_until(lambda: sent(pg_store, "shipped_notice") >= ORDERS, 600, f"all {ORDERS} sends")
    wait_until(lambda: pending(pg_store) == 0, 120, "every event dispatched")
    time.sleep(3)  # any duplicate still on its way would arrive now
    assert_each_sent_exactly_once(pg_store, stack, provider, aliyun)


def test_temporal_stopped_for_20_seconds_while_events_are_posted_under_provider_faults(chaos, pg_store):
    stack, provider, aliyun = chaos
    customers, shipped = shop(datetime.now(UTC).replace(microsecond=0))
    stack.post(customers)
    stack.post(shipped[:100])
    wait_until(lambda: sent(pg_store, "shipped_notice") >= 50, 300, "50 sends")

    stack.stop_server()
    down = time.monotonic()
    stack.post(shipped[100:])  # the API takes events with Temporal down: they wait in the event log
    assert pending(pg_store) >= 200
    time.sleep(max(0.0, 20 - (time.monotonic() - down)))
    stack.start_server()

    wait_until(lambda: sent(pg_store, "shipped_notice") >= ORDERS, 600, f"all {ORDERS} sends")
    wait_until(lambda: pending(pg_store) == 0, 120, "every event dispatched")
    time.sleep(3)
    assert_each_sent_exactly_once(pg_store, stack, provider, aliyun)
