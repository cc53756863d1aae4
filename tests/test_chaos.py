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

A batched broadcast (issue 29) is held to the same: 600 members in pages of 100, each page's
messages handed over in bulk (SendBatchSms, SendGrid personalizations, concurrent Twilio
requests), the worker killed mid-page twice, each recipient's message taken exactly once.

The Aliyun part needs the shipped templates' `aliyun_sms` sections and `definitions/sms.yaml`
(the registered texts the fake renders, as Aliyun does, to compare with the ledger's)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import func, select

from definitions.loader import PACKAGE_DIR, load_sms_registry
from store.tables import MessageRow
from tests.fake_aliyun import ACCESS_KEY_ID, ACCESS_KEY_SECRET, AliyunAnswer, AliyunFaults, FakeAliyun
from tests.fake_provider import AUTH_TOKEN, Answer, FakeProvider, Faults
from tests.helpers import daytime_zone
from tests.stack import JOURNEYS, Stack, api_event, pending, sent, wait_until

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
def chaos(pg_store, tmp_path, request):
    """A stack whose SMS go through Aliyun's SDK (mainland numbers) and Twilio's (the others) and
    whose email goes through SendGrid's, to fakes failing 30% of requests, with SendGrid's signed
    event webhook configured. Parametrized indirectly with a function `(tmp_path) -> folder`, the
    stack runs that definitions folder (JOURNEYS_DEFINITIONS) instead of the shipped one."""
    build: Callable[[Path], Path] | None = getattr(request, "param", None)
    definitions = build(tmp_path) if build else DEFINITIONS
    registry = load_sms_registry(definitions)
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
        if build:
            stack.extra_env["JOURNEYS_DEFINITIONS"] = str(definitions)
        provider.sendgrid_events_url = f"{stack.api}/webhooks/sendgrid/events"
        provider.sendgrid_event_delay = 5.0  # later than the activity's first retries
        with stack:
            yield stack, provider, aliyun


def assert_each_sent_exactly_once(
    store,
    stack: Stack,
    provider: FakeProvider,
    aliyun: FakeAliyun,
    *,
    journey: str = "shipped_notice",
    customers: int = ORDERS,
    orders: bool = True,
    body_text: str = "顺丰单号",
    doubted_on: tuple[str, ...] = ("sms", "email", "aliyun"),
    aliyun_drawn: int = 10,
) -> list[MessageRow]:
    """One `sent` row of `journey` for each of customers c0 ... c{customers-1} (and their order
    o{n} each, with `orders`), each taken once by its provider and nothing else; the faults
    happened, sends in doubt were settled (at least two on each of `doubted_on`: `sms` is Twilio),
    the worker never broke and no log shows an address or `body_text`. The ledger rows, for more
    checks."""
    with store.transaction() as session:
        rows = list(session.scalars(select(MessageRow).where(MessageRow.journey == journey)))
    assert Counter(r.status for r in rows) == {"sent": customers}, Counter((r.status, r.reason) for r in rows)
    if orders:
        assert sorted(r.order_id for r in rows) == sorted(f"o{n}" for n in range(customers))
    assert sorted(r.customer_id for r in rows) == sorted(f"c{n}" for n in range(customers))
    assert Counter(r.channel for r in rows) == {"sms": 2 * customers // 3, "email": customers // 3}
    mainland = [r for r in rows if r.channel == "sms" and r.address.startswith("+86")]
    mainland_ids = {r.id for r in mainland}
    abroad = [r for r in rows if r.channel == "sms" and not r.address.startswith("+86")]
    assert len(mainland) == len(abroad) == customers // 3

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
    assert sum(aliyun.faults.drawn.values()) >= aliyun_drawn, aliyun.faults.drawn
    # Sends whose answer was lost and that were settled without a second message, on every provider.
    doubted = Counter(
        "aliyun" if r.id in mainland_ids else r.channel for r in rows if r.error and "outcome unknown" in r.error
    )
    assert all(doubted[provider_name] >= 2 for provider_name in doubted_on), (
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
    assert body_text not in log  # nor a message body
    return rows


def script_doubts(provider: FakeProvider, aliyun: FakeAliyun) -> None:
    """Three sends on each provider whose answer comes too late (taken, the answer lost). The
    random faults make more, but how many land on each provider varies with the order requests
    arrive in (once, a run drew a single late SendGrid answer): these make sure every provider has
    sends in doubt to settle, as assert_each_sent_exactly_once requires."""
    for n in (0, 3, 6):
        provider.script[contact(n)["email"]] = [Answer(delay=2.0)]
    for n in (2, 5, 8):
        provider.script[contact(n)["phone"]] = [Answer(delay=2.0)]
    for n in (1, 4, 7):
        aliyun.script[contact(n)["phone"].removeprefix("+86")] = [AliyunAnswer(delay=2.0)]


def test_the_worker_killed_twice_during_300_journeys_under_provider_faults(chaos, pg_store):
    stack, provider, aliyun = chaos
    script_doubts(provider, aliyun)
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
    script_doubts(provider, aliyun)
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


#: The batched broadcast's members: 200 mainland numbers, 200 Hong Kong ones, 200 email only.
MEMBERS = 600
BROADCAST = "chaos_care"


def broadcast_definitions(tmp_path: Path) -> Path:
    """The shipped definitions (as tests/test_broadcasts.py copies them), with a segment of the
    customers tagged `chaos` and a broadcast to them in pages of 100, due a minute ago: the shipped
    holiday_care greeting (its `aliyun_sms` section names a text registered in sms.yaml), by SMS,
    else by email."""
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "chaos_members.yaml").write_text("name: chaos_members\nwhere: {tag: chaos}\n")
    due = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    (folder / "broadcasts" / f"{BROADCAST}.yaml").write_text(
        f"name: {BROADCAST}\nsegment: chaos_members\n"
        "send: {channel: sms, fallback: email, template: holiday_care}\n"
        f'schedule: {{at: "{due.isoformat()}"}}\npath: batched\npage: 100\n'
    )
    return folder


def decided(store) -> int:
    """The broadcast's ledger rows: each page writes its members' rows before any provider is called."""
    with store.transaction() as session:
        return session.scalar(select(func.count()).where(MessageRow.journey == BROADCAST))


def still_sending(store) -> int:
    """The broadcast's messages decided and not yet answered by their provider."""
    with store.transaction() as session:
        return session.scalar(
            select(func.count()).where(MessageRow.journey == BROADCAST, MessageRow.status == "sending")
        )


@pytest.mark.parametrize("chaos", [broadcast_definitions], ids=["broadcast_definitions"], indirect=True)
def test_a_batched_broadcast_with_the_worker_killed_mid_page_under_provider_faults(chaos, pg_store):
    """Issue 29: a worker killed mid-page, and the provider failing 30% of calls, still give every
    recipient exactly one message. Each page's rows are written before its bulk calls (SendBatchSms,
    SendGrid personalizations, concurrent Twilio requests); a killed page is taken up again after
    its heartbeat times out, decides nobody twice and settles its messages in doubt one by one."""
    stack, provider, aliyun = chaos
    now = datetime.now(UTC).replace(microsecond=0)
    zone = daytime_zone(now)
    members = [
        api_event(now, f"cust-{n}", "customer.created", f"c{n}", timezone=zone, tags=["chaos"], **contact(n))
        for n in range(MEMBERS)
    ]  # fmt: skip
    stack.post(members)
    wait_until(lambda: pending(pg_store) == 0, 120, "every customer stored")
    # A page's texts go in a SendBatchSms or two, too few calls for the random faults to be sure to
    # strike: a batch naming one of these numbers answers late (taken, the answer lost) or 503.
    scripted = {f"139{n:08d}": AliyunAnswer(delay=2.0) for n in range(1, 40, 9)}
    scripted |= {f"139{n:08d}": AliyunAnswer(code="ServiceUnavailable", status=503) for n in range(301, 340, 9)}
    for number, answer in scripted.items():
        aliyun.script[number] = [answer]

    started = subprocess.run(
        [JOURNEYS, "broadcast", "start", BROADCAST],
        env=stack.env, cwd=stack.directory, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr

    unanswered_at_kills = []
    for kills, after in enumerate((100, 350), start=1):
        wait_until(lambda after=after: decided(pg_store) >= after, 300, f"{after} members decided")
        stack.kill_worker(0)  # mid-page: its rows written, its bulk calls in flight or not yet made
        unanswered_at_kills.append(still_sending(pg_store))
        stack.start_worker(0)
        assert stack.log("worker0").read_text(errors="replace").count("worker polling") == kills + 1
    assert sum(unanswered_at_kills) > 0, "the worker was never killed with a page's messages unanswered"

    def done():
        shown = httpx.get(f"{stack.api}/broadcasts/{BROADCAST}", timeout=30).json()
        return shown if shown["state"] == "done" and shown["waiting"] == 0 else None

    status = wait_until(done, 600, "the broadcast to be done")
    time.sleep(3)  # any duplicate still on its way would arrive now
    # SendGrid takes a page's emails in a request or two: a lost answer among them is not sure to
    # be drawn, so only Twilio's and Aliyun's are required (the worker's kills leave doubt too).
    assert_each_sent_exactly_once(
        pg_store, stack, provider, aliyun, journey=BROADCAST, customers=MEMBERS, orders=False,
        body_text="新春快乐", doubted_on=("sms", "aliyun"), aliyun_drawn=0,
    )  # fmt: skip
    # The scripted faults struck (a batch takes the answer of its first scripted number only).
    struck = [number for number in scripted if not aliyun.script.get(number)]
    assert len(struck) >= 2, aliyun.script
    assert status["members"] == MEMBERS and status["outcomes"] == {"sent": MEMBERS}, status

    # The bulk calls really happened: Aliyun batches of several numbers, SendGrid requests of
    # several recipients, Twilio requests side by side.
    assert any(len(call["numbers"]) > 1 for call in aliyun.actions("SendBatchSms")), aliyun.calls
    assert any(len(body["personalizations"]) > 1 for body in provider.mail), provider.mail_refused
    assert provider.sms_most_in_flight > 1
