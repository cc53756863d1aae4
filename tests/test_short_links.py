"""Tracked short links (短链) through the real API app on PostgreSQL: a customer's phone follows
`/l/{code}` (no API key), gets the shop's page, and each click is counted once, moves the message
to clicked, feeds the effect report's SMS click rate and is a `message.clicked` event journeys can
start on. Link previewers (HEAD) are not counted; unknown, expired and malformed codes are a 404."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from core.config import Settings
from definitions.loader import load_definitions
from store.tables import EventRow, LinkClickRow, MessageRow, ShortLinkRow
from tests.helpers import free_port, write_definitions
from tests.test_api import client_for
from tests.test_api_process import JOURNEYS
from triggers.api import create_app
from views.effect import Prices

URL = "https://shop.example/item/123?from=sms"
PHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0"


def sms(customer: str, *, at: datetime, status: str = "delivered", journey: str = "payment_reminder") -> MessageRow:
    return MessageRow(
        id=str(uuid.uuid4()), workflow_id=f"{journey}:{customer}", run_id="r1", step="first_reminder",
        journey=journey, journey_version="v1", customer_id=customer, order_id=None, channel="sms",
        address="+8613900001111", template=journey, category="marketing", variant="b", status=status,
        reason=None, at=at, body="【好店】您的订单还未付款 https://s.example/l/x 回T退订", segments=1,
        provider_template="SMS_100001", template_data={"sign_name": "好店", "params": {"name": "王芳"}},
        updated_at=at,
    )  # fmt: skip


def link(message: MessageRow, *, expires_in: timedelta = timedelta(days=180), url: str = URL) -> ShortLinkRow:
    return ShortLinkRow(
        code=secrets.token_urlsafe(12), message_id=message.id, url=url, created_at=message.at,
        expires_at=message.at + expires_in,
    )  # fmt: skip


def write(store, *rows) -> None:
    with store.transaction() as session:
        session.add_all(rows)


def rows_of(store, table):
    with store.transaction() as session:
        return list(session.scalars(select(table)))


@pytest.fixture
def woken():
    return []


@pytest.fixture
def api(pg_store, woken):
    return client_for(create_app(pg_store, on_accepted=lambda: woken.append(True)))


async def test_each_click_redirects_and_counts_once(api, pg_store, woken):
    now = datetime.now(UTC)
    message = sms("c-wang", at=now - timedelta(hours=2))
    short = link(message)
    write(pg_store, message, short)

    first = await api.get(f"/l/{short.code}", headers={"User-Agent": PHONE_UA})
    assert first.status_code == 302
    assert first.headers["location"] == URL
    assert first.headers["cache-control"] == "no-store"  # a second click must reach us too
    second = await api.get(f"/l/{short.code}", headers={"User-Agent": "x" * 1000})

    assert second.status_code == 302 and second.headers["location"] == URL
    clicks = sorted(rows_of(pg_store, LinkClickRow), key=lambda row: row.id)
    assert [(c.code, c.message_id) for c in clicks] == [(short.code, message.id)] * 2
    assert clicks[0].user_agent == PHONE_UA
    assert clicks[1].user_agent == "x" * 400  # cut to what the column keeps
    assert now <= clicks[0].at <= clicks[1].at <= datetime.now(UTC)
    [row] = rows_of(pg_store, MessageRow)
    assert row.status == "clicked"

    events = sorted(rows_of(pg_store, EventRow), key=lambda e: e.occurred_at)
    # One event per link, at its first click: a second tap starts or steers no journey again.
    assert [(e.type, e.customer_id) for e in events] == [("message.clicked", "c-wang")]
    assert events[0].data == {
        "message_id": message.id,
        "journey": "payment_reminder",
        "step": "first_reminder",
        "variant": "b",
        "channel": "sms",
        "url": URL,
        "code": short.code,
    }
    # No journey uses message.clicked in these definitions: logged as done, the dispatcher left asleep.
    assert all(e.dispatched_at is not None for e in events)
    assert woken == []


async def test_a_click_is_an_event_a_journey_can_start_on(pg_store, woken, tmp_path):
    folder = write_definitions(
        tmp_path / "definitions",
        {"clicked_thanks": 'sms:\n  zh-CN: "谢谢关注，宝贝已为您留好"\n'},
        [
            """
            name: clicked_followup
            category: marketing
            entry:
              event: message.clicked
              key: customer
            steps:
              - send: {id: thanks, channel: sms, template: clicked_thanks}
            """
        ],
    )
    app = create_app(pg_store, definitions=load_definitions(folder), on_accepted=lambda: woken.append(True))
    message = sms("c-li", at=datetime.now(UTC) - timedelta(minutes=5))
    short = link(message)
    write(pg_store, message, short)
    async with client_for(app) as api:
        assert (await api.get(f"/l/{short.code}")).status_code == 302
    [event] = rows_of(pg_store, EventRow)
    assert (event.type, event.customer_id, event.dispatched_at) == ("message.clicked", "c-li", None)  # to route
    assert woken == [True]  # the dispatcher is woken, as after POST /events


async def test_a_link_previewer_is_redirected_but_not_counted(api, pg_store, woken):
    message = sms("c-zhao", at=datetime.now(UTC) - timedelta(hours=1))
    short = link(message)
    write(pg_store, message, short)
    answer = await api.head(f"/l/{short.code}")
    assert answer.status_code == 302 and answer.headers["location"] == URL
    assert rows_of(pg_store, LinkClickRow) == []
    assert rows_of(pg_store, EventRow) == []
    assert rows_of(pg_store, MessageRow)[0].status == "delivered"


@pytest.mark.parametrize(
    "code",
    [
        "unknownCode12345",
        "a" * 33,  # longer than any code
        "a" * 5000,
        "abc$def",
        "..%2F..%2Fetc",
        "%00",
        "%FF%FE",
        "短链",
        "abc'; DROP TABLE short_links; --",
    ],
)
async def test_an_unknown_or_malformed_code_is_a_404_page(api, pg_store, code):
    message = sms("c-sun", at=datetime.now(UTC))
    write(pg_store, message, link(message))
    for method in ("GET", "HEAD"):
        answer = await api.request(method, f"/l/{code}")
        assert answer.status_code == 404, (code, answer.text)
        assert "location" not in answer.headers
    page = await api.get(f"/l/{code}")
    assert page.headers["content-type"].startswith("text/html") and "链接无效或已过期" in page.text
    assert rows_of(pg_store, LinkClickRow) == [] and rows_of(pg_store, EventRow) == []


async def test_an_expired_link_no_longer_works(api, pg_store):
    message = sms("c-zhou", at=datetime.now(UTC) - timedelta(days=200))
    short = link(message, expires_in=timedelta(days=180))
    write(pg_store, message, short)
    answer = await api.get(f"/l/{short.code}")
    assert answer.status_code == 404 and "location" not in answer.headers
    assert rows_of(pg_store, LinkClickRow) == [] and rows_of(pg_store, EventRow) == []
    assert rows_of(pg_store, MessageRow)[0].status == "delivered"


async def test_clicks_are_the_sms_click_rate_of_the_effect_report(pg_store):
    """Four SMS delivered (variant b), two followed (one of them three times): the SMS click rate
    is 2 of 4 messages, as SendGrid's clicks are email's; a late delivery receipt does not undo a click."""
    now = datetime.now(UTC)
    messages = [sms(f"c{n}", at=now - timedelta(hours=3)) for n in range(4)]
    links = [link(m) for m in messages]
    write(pg_store, *messages, *links)
    app = create_app(pg_store, prices=Prices.of(Settings.embedded()))
    async with client_for(app) as api:
        for code in (links[0].code, links[0].code, links[0].code, links[2].code):
            assert (await api.get(f"/l/{code}")).status_code == 302
        # Every journey the ledger has messages of (these definitions are empty), by channel.
        answer = await api.get("/effect", params={"by": "channel"})
    assert answer.status_code == 200, answer.text
    row = answer.json()["journeys"]["payment_reminder"]
    sms_figures = row["groups"]["sms"]
    assert (sms_figures["sent"], sms_figures["delivered"], sms_figures["clicked"]) == (4, 4, 2)
    assert sms_figures["click_rate"] == 0.5
    assert len(rows_of(pg_store, LinkClickRow)) == 4  # every click recorded, each message counted once


def test_the_api_process_serves_links_without_a_key_and_reports_the_click(pg_store, tmp_path):
    """`journeys api` on PostgreSQL with API keys (Temporal down, which a click does not need): a
    phone follows the link with no key; a link previewer's HEAD is not counted; the SMS report
    (a read key) shows the message clicked once."""
    now = datetime.now(UTC)
    message = sms("c-qian", at=now - timedelta(minutes=30))
    short = link(message)
    write(pg_store, message, short)
    api_port, nothing_there = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_store.url,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{nothing_there}",
        "JOURNEYS_API_PORT": str(api_port),
        "JOURNEYS_API_KEYS": "support:read:k-read-process",
        "JOURNEYS_SHOP_TIMEZONE": "Asia/Shanghai",
    }
    process = subprocess.Popen(
        [JOURNEYS, "api"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        previewed = httpx.head(f"{base}/l/{short.code}", timeout=10)
        followed = httpx.get(f"{base}/l/{short.code}", headers={"User-Agent": PHONE_UA}, timeout=10)
        unknown = httpx.get(f"{base}/l/{'x' * 16}", timeout=10)
        keyless = httpx.get(f"{base}/reports/sms", timeout=10)
        report = httpx.get(f"{base}/reports/sms", headers={"Authorization": "Bearer k-read-process"}, timeout=30)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert previewed.status_code == 302 and previewed.headers["location"] == URL
    assert followed.status_code == 302 and followed.headers["location"] == URL, output
    assert unknown.status_code == 404 and "链接无效或已过期" in unknown.text
    assert keyless.status_code == 401
    assert report.status_code == 200, report.text
    [line] = report.json()["lines"]
    assert (line["signature"], line["template"], line["submitted"], line["clicked"]) == ("好店", "SMS_100001", 1, 1)
    [click] = rows_of(pg_store, LinkClickRow)
    assert click.user_agent == PHONE_UA


async def test_a_click_still_counts_when_a_late_settlement_writes_sent_over_it(pg_store):
    """A send in doubt (its answer lost) that the customer clicks moves to clicked; the send
    activity settling it afterwards writes `sent` over the status (activities/journey.py writes
    its outcome as is). The click rows still make it clicked, and delivered, in both reports."""
    now = datetime.now(UTC)
    message = sms("c-wu", at=now - timedelta(minutes=10), status="unknown")
    short = link(message)
    write(pg_store, message, short)
    app = create_app(pg_store, shop_timezone="Asia/Shanghai", shop_name="好店")
    async with client_for(app) as api:
        assert (await api.get(f"/l/{short.code}")).status_code == 302
        assert rows_of(pg_store, MessageRow)[0].status == "clicked"  # a click settles the doubt
        with pg_store.transaction() as session:
            session.get(MessageRow, message.id).status = "sent"  # the settlement's write
        effect = (await api.get("/effect", params={"by": "channel"})).json()
        report = (await api.get("/reports/sms")).json()
    figures = effect["journeys"]["payment_reminder"]["groups"]["sms"]
    assert (figures["sent"], figures["delivered"], figures["clicked"], figures["click_rate"]) == (1, 1, 1, 1.0)
    [line] = report["lines"]
    assert (line["submitted"], line["delivered"], line["clicked"]) == (1, 1, 1)
