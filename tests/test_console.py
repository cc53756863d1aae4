"""The console (/ui/) in a real headless Chromium, against the engine started as `journeys up`
starts it (a Temporal dev server, the worker and the API in one process) on PostgreSQL, with an
API key configured: sign in, a journey's chart, funnel, uplift and step diagram, a step's preview,
a diagram with a split, an `if` and a `wait_for` with each arm's count and the instances waiting,
the A/B table, a customer found by phone with their profile and one timeline, an order with its
amount, items and status, starting and cancelling a broadcast, the dead letters, CSRF refusals,
the pages' titles, and the pages at phone width.
Screenshots go to $JOURNEYS_ARTIFACTS (default .artifacts/console)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from store import queries
from store.tables import InstanceRow, MessageRow
from tests.ab_journey import AB_JOURNEY, WAIT_FOR_ORDER, WAIT_SMALL, definitions_with_ab
from tests.helpers import daytime_zone, event, free_port
from tests.test_timeline import seed_customer
from tests.test_up import start_up, stop_up

SHOP = ZoneInfo("Asia/Shanghai")  # the shop's time zone by default (JOURNEYS_SHOP_TIMEZONE)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KEY = "console-operator-" + uuid.uuid4().hex
READ_KEY = "console-reader-" + uuid.uuid4().hex
ARTIFACTS = (
    Path(os.environ.get("JOURNEYS_ARTIFACTS", Path(__file__).resolve().parent.parent / ".artifacts")) / "console"
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium (make test installs it)")


def seed_history(store, now: datetime) -> None:
    """Six payment reminders at noon (the shop's time) on each of the last three days; the even
    orders were paid an hour after."""
    rows, events = [], []
    today = now.astimezone(SHOP).date()
    for n in range(1, 7):
        day = today - timedelta(days=n % 3 + 1)
        sent_at = datetime.combine(day, dt_time(12, n), SHOP).astimezone(UTC)
        order, customer = f"seed-o{n}", f"seed-c{n}"
        rows.append(
            InstanceRow(workflow_id=f"payment_reminder:{order}", run_id="r1", journey="payment_reminder",
                        journey_version="v1", customer_id=customer, order_id=order, entered_at=sent_at - timedelta(minutes=15))
        )  # fmt: skip
        rows.append(
            MessageRow(id=str(uuid.uuid4()), workflow_id=f"payment_reminder:{order}", run_id="r1", step="first_reminder",
                       journey="payment_reminder", journey_version="v1", customer_id=customer, order_id=order,
                       channel="sms", template="payment_reminder", category="transactional", status="delivered",
                       at=sent_at, updated_at=sent_at, segments=1)
        )  # fmt: skip
        events.append(
            event("order.created", sent_at - timedelta(minutes=20), customer=customer, order=order, amount=100 * n)
        )
        if n % 2 == 0:
            events.append(event("order.paid", sent_at + timedelta(hours=1), customer=customer, order=order))
    # A lapsing valuable customer (bought for 800 four months ago), a member of the broadcast's segment.
    long_ago = now - timedelta(days=120)
    events += [
        event("customer.created", long_ago, customer="c-bob", name="Bob", phone="+8613900139000", locale="en"),
        event("order.created", long_ago, customer="c-bob", order="o-bob", amount=800),
        event("order.paid", long_ago + timedelta(minutes=5), customer="c-bob", order="o-bob"),
    ]
    with store.transaction() as session:
        session.add_all(rows)
        session.flush()
        queries.store_events(session, events, now)
        # The seeded orders' journeys ran long ago (the rows above): the router must not start them again.
        queries.mark_all_dispatched(
            session, [e.event_id for e in events if e.order_id and e.order_id.startswith("seed-")], now
        )


#: The A/B journey's customers and their carts (>= 100: a wait for an order; less: a plain wait).
CARTS = {"ab-1": 150, "ab-2": 180, "ab-3": 120, "ab-4": 40, "ab-5": 30, "ab-6": 250, "ab-7": 60, "ab-8": 300}


@pytest.fixture
def console(tmp_path, pg_store):
    now = datetime.now(UTC).replace(microsecond=0)
    seed_history(pg_store, now)
    seed_customer(pg_store)  # c-tl: one of every kind of timeline entry
    with pg_store.transaction() as session:
        queries.mark_all_dispatched(session, ["tl-1", "tl-2"], now)  # history: it starts nothing now
    port, ui_port, api_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "JOURNEYS_DEFINITIONS": str(definitions_with_ab(tmp_path)),
        "DATABASE_URL": pg_store.url,
        "JOURNEYS_API_KEYS": f"ops:operator:{KEY},reader:read:{READ_KEY}",
        "JOURNEYS_OUTBOX": str(tmp_path / "outbox.jsonl"),
    }
    process, output = start_up(tmp_path, port, ui_port, api_port, env)
    base = f"http://127.0.0.1:{api_port}"
    try:
        assert f"Console       {base}/ui/ (sign in with an API key)" in output, output
        post = httpx.post(
            f"{base}/events",
            headers={"Authorization": f"Bearer {KEY}"},
            json=[
                {
                    "event_id": "alice-1",
                    "type": "customer.created",
                    "customer_id": "c-alice",
                    "occurred_at": now.isoformat(),
                    "data": {
                        "name": "Alice",
                        "phone": "13800138000",
                        "email": "alice@example.com",
                        "locale": "en",
                        "timezone": daytime_zone(now),
                    },  # midday there: no quiet hours hold her messages
                },
                {
                    "event_id": "alice-2",
                    "type": "order.created",
                    "customer_id": "c-alice",
                    "order_id": "o-100",
                    "occurred_at": now.isoformat(),
                    "data": {"amount": 199},
                },
                *(
                    {
                        "event_id": f"alice-{n}",
                        "type": kind,
                        "customer_id": "c-alice",
                        "order_id": "o-101",
                        "occurred_at": now.isoformat(),
                        "data": data,
                    }
                    for n, (kind, data) in enumerate(
                        [
                            ("order.created", {"amount": 59, "items": [{"title": "龙井茶", "qty": 2, "price": 29.5}]}),
                            ("order.paid", {"amount": 59}),
                            ("order.shipped", {"carrier": "SF Express", "tracking_no": "SF1234567890"}),
                        ],
                        start=3,
                    )
                ),  # fmt: skip
                # One order whose events name two customers: the page links each.
                {
                    "event_id": "two-1",
                    "type": "order.created",
                    "customer_id": "c8",
                    "order_id": "o-two",
                    "occurred_at": now.isoformat(),
                    "data": {"amount": 10},
                },
                {
                    "event_id": "two-2",
                    "type": "order.refunded",
                    "customer_id": "c2",
                    "order_id": "o-two",
                    "occurred_at": now.isoformat(),
                    "data": {},
                },
                *(
                    item
                    for n, (who, value) in enumerate(CARTS.items())
                    for item in (
                        {
                            "event_id": f"{who}-c",
                            "type": "customer.created",
                            "customer_id": who,
                            "occurred_at": now.isoformat(),
                            "data": {"name": who, "phone": f"+86139000020{n:02d}", "timezone": daytime_zone(now)},
                        },
                        {
                            "event_id": f"{who}-a",
                            "type": "cart.abandoned",
                            "customer_id": who,
                            "occurred_at": now.isoformat(),
                            "data": {"cart_value": value},
                        },
                    )
                ),
            ],  # fmt: skip
            timeout=30,
        )
        assert post.status_code == 202, post.text
        for _ in range(300):  # the dispatcher applies customer.created to the store
            found = httpx.get(f"{base}/customers/c-alice", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
            if found.status_code == 200:
                break
            time.sleep(0.1)
        assert found.status_code == 200, found.text
        yield base
    finally:
        stop_up(process)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:  # each launch has a fresh profile of its own
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        try:
            yield launched
        finally:
            launched.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def ready(page) -> None:
    page.wait_for_selector("body[data-ready='true']", timeout=30_000)


def sign_in(browser, base: str, key: str = KEY, **context):
    page = browser.new_context(**({"viewport": {"width": 1280, "height": 800}} | context)).new_page()
    page.goto(f"{base}/ui/")
    assert "/ui/login" in page.url
    page.get_by_label("API key 密钥").fill("not-a-key")
    page.get_by_role("button", name="Sign in 登录").click()
    assert "That key is not known" in page.locator(".error").inner_text()
    page.get_by_label("API key 密钥").fill(key)
    page.get_by_role("button", name="Sign in 登录").click()
    ready(page)
    return page


def unnamed_controls(page) -> list[str]:
    """Buttons, inputs, selects and links without an accessible name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, a, canvas')].filter((el) => {
            const named = el.getAttribute('aria-label') || (el.labels && el.labels.length) || el.textContent.trim()
              || el.getAttribute('title');
            return !named && el.type !== 'hidden';
        }).map((el) => el.outerHTML.slice(0, 80))"""
    )


def drawn_whole(page) -> None:
    """Nothing on the page is an object printed as text, or a stray null."""
    text = page.locator("body").inner_text()
    assert "[object" not in text, text
    assert "null" not in page.locator("main").inner_text().split(), text


def test_a_marketer_reads_a_journey_and_previews_a_step(console, browser):
    page = sign_in(browser, console)
    assert page.title() == "旅程 Journeys"
    drawn_whole(page)  # the overview's KPIs are followed by no "null"
    cookie = next(c for c in page.context.cookies() if c["name"] == "journeys_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    row = page.locator("tr", has=page.get_by_role("link", name="首次催付"))
    assert row.locator("td").nth(3).inner_text() == "6"  # sent
    assert row.locator("td").nth(5).inner_text() == "3"  # converted
    shot(page, "journeys")

    page.get_by_role("link", name="首次催付").click()
    ready(page)
    # Three days with sends, and today: o-100 entered the journey.
    assert page.locator("#daily-chart").get_attribute("data-days") == "4"
    kpis = page.locator(".kpis").inner_text()
    assert "Converted 转化" in kpis and "CNY 1,200.00" in kpis  # orders 2, 4 and 6: 200 + 400 + 600
    assert "first_reminder" in page.locator(".funnel").inner_text()
    assert "This journey has no holdout." in page.locator("#uplift").inner_text()
    assert "This journey has no A/B split." in page.locator("#variants").inner_text()
    assert page.title() == "旅程 Journeys · 首次催付 · payment_reminder"
    drawn_whole(page)
    step = page.locator(".step.send", has_text="first_reminder")
    assert "sent 发送 6" in step.inner_text() and "converted 转化 3" in step.inner_text()
    assert page.locator(".step.wait").count() >= 1  # the diagram draws the waits between the sends
    shot(page, "journey")

    options = page.locator("#pv-step option").all_inner_texts()
    assert options == ["first_reminder"]  # its send steps, a list to choose from
    step.get_by_role("button", name="Preview first_reminder 预览").click()
    assert page.locator("#pv-step").input_value() == "first_reminder"
    page.get_by_label("Customer id 客户编号").fill("c-alice")
    page.get_by_label("Order id 订单编号").fill("o-100")
    page.locator("#preview").get_by_role("button", name="Preview 预览").click()
    preview = page.locator("#preview .card").first
    preview.wait_for(timeout=30_000)
    assert "Hi Alice, your order o-100 is waiting for payment" in preview.inner_text()
    shot(page, "preview")
    assert unnamed_controls(page) == []


def test_an_operator_finds_a_customer_and_an_order(console, browser):
    page = sign_in(browser, console)
    page.get_by_label("Find a customer by id, phone or email 按编号、手机或邮箱查找客户").fill("13800138000")
    page.get_by_role("button", name="Find 查找").click()
    page.wait_for_url("**/ui/customers/c-alice", timeout=30_000)
    ready(page)
    profile = page.locator("#profile").inner_text()
    assert "Alice" in profile and "alice@example.com" in profile
    assert "Lifecycle 生命周期" in profile  # the stage, next to RFM
    assert "R / F / M" in profile and "score 分" in profile
    assert page.title() == "旅程 Journeys · 客户 Customer · c-alice"
    deadline = time.monotonic() + 60
    # Temporal's visibility lags a little, and the worker sends the shipped notice: wait for both.
    while not (
        "payment_reminder" in page.locator("#running").inner_text()
        and "shipped_notice · " in page.locator("#timeline").inner_text()
    ):
        assert time.monotonic() < deadline, page.locator("main").inner_text()
        page.reload()
        ready(page)
    running = page.locator("#running").inner_text()
    assert "payment_reminder" in running and "wait" in running  # what runs now, at which step
    timeline = page.locator("#timeline").inner_text()
    assert "customer.created" in timeline and "order.shipped" in timeline  # the logged events
    assert "shipped_notice · shipped" in timeline and "sent" in timeline  # the notice, through the outbox
    assert "payment_reminder started" in timeline  # the instances' starts, in the same list
    assert page.get_by_role("link", name="history 历史").first.get_attribute("href").startswith("http://127.0.0.1:")
    drawn_whole(page)
    shot(page, "customer")

    page.goto(f"{console}/ui/orders/o-100")
    ready(page)
    deadline = time.monotonic() + 60
    while "pre_close_reminder" not in page.locator("#timeline").inner_text():
        assert time.monotonic() < deadline, page.locator("#timeline").inner_text()
        page.reload()
        ready(page)
    assert "payment_reminder" in page.locator("#timeline").inner_text()  # both reminders wait for o-100
    assert page.title() == "旅程 Journeys · 订单 Order · o-100"

    # The order: its amount, items and status; each customer a link of its own.
    page.goto(f"{console}/ui/orders/o-101")
    ready(page)
    order = page.locator("#order").inner_text()
    assert "CNY 59.00" in order and "shipped" in order and "龙井茶" in order, order
    shot(page, "order")
    page.goto(f"{console}/ui/orders/o-two")
    ready(page)
    assert page.locator(".customers a").all_inner_texts() == ["c2", "c8"]
    assert "Customer 客户 c2, c8" in page.locator(".customers").inner_text()
    drawn_whole(page)
    page.goto(f"{console}/ui/customers?q=nobody@example.com")
    ready(page)
    assert "No customer matches" in page.locator("main").inner_text()


def test_an_operator_starts_and_cancels_a_broadcast(console, browser):
    page = sign_in(browser, console)
    page.goto(f"{console}/ui/broadcasts")
    ready(page)
    row = page.locator("tr[data-broadcast='spring_festival_care']")
    assert "not started" in row.inner_text()
    row.get_by_role("button", name="Start spring_festival_care 启动").click()
    state = "tr[data-broadcast='spring_festival_care'] .pill.state"
    page.wait_for_function(
        f"() => ['waiting'].includes(document.querySelector(\"{state}\").innerText)",
        timeout=60_000,
    )
    shot(page, "broadcast-started")
    row = page.locator("tr[data-broadcast='spring_festival_care']")
    assert row.count() == 1, page.locator("main").inner_text()
    # Batched: its members wait for 10:00 in their zone, on one timer per moment, none reached yet.
    assert row.locator("td.path").inner_text() == "batched 批量"
    # In the shop's zone, and labelled so.
    next_send = row.locator("td.next").inner_text()
    assert next_send.startswith("2027-02-") and next_send.endswith("(Asia/Shanghai)"), row.inner_text()
    row.get_by_role("button", name="Cancel spring_festival_care 取消").click()
    deadline = time.monotonic() + 90
    while page.locator(state).inner_text() != "cancelled":
        assert time.monotonic() < deadline, page.locator("main").inner_text()
        page.reload()
        ready(page)
    shot(page, "broadcasts")

    # The console's actions need the page's CSRF token: a request without it is refused.
    refused = page.evaluate(
        """async () => (await fetch('/broadcasts/spring_festival_care/cancel', {method: 'POST', credentials: 'same-origin'})).status"""
    )
    assert refused == 403
    # The console never sends events, whatever the key may do.
    assert page.evaluate("async () => (await fetch('/events', {method: 'POST', body: '[]'})).status") == 403


def test_a_read_key_reads_but_cannot_start_a_broadcast(console, browser):
    page = sign_in(browser, console, key=READ_KEY)
    page.goto(f"{console}/ui/broadcasts")
    ready(page)
    page.locator("tr[data-broadcast='spring_festival_care']").get_by_role(
        "button", name="Start spring_festival_care 启动"
    ).click()
    page.locator("[role=status] .error").wait_for(timeout=30_000)
    assert "may not start or cancel broadcasts" in page.locator("[role=status]").inner_text()
    page.goto(f"{console}/ui/events")
    ready(page)
    assert "No failed events." in page.locator("main").inner_text()
    assert "Waiting for dispatch" in page.locator("main").inner_text()


def test_the_console_at_phone_width(console, browser):
    page = sign_in(browser, console, viewport={"width": 390, "height": 844}, is_mobile=True)
    pages = ("/ui/", "/ui/journeys/payment_reminder", f"/ui/journeys/{AB_JOURNEY}", "/ui/customers/c-alice",
             "/ui/customers/c-tl", "/ui/orders/o-101", "/ui/segments", "/ui/broadcasts", "/ui/events")  # fmt: skip
    for path in pages:
        page.goto(console + path)
        ready(page)
        drawn_whole(page)
        assert page.title().startswith("旅程 Journeys"), path
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 392, f"{path} is {width}px wide at a 390px screen"
        assert page.get_by_role("navigation", name="Main").is_visible()
        shot(page, "phone-" + (path.strip("/").replace("/", "-").removeprefix("ui-") or "ui"))


def test_a_diagram_draws_every_branch_with_its_counts(console, browser):
    """The split's arms with their instances, the if's arms, the wait_for's arms, and how many
    instances wait at each wait now: the same figures the API gives."""
    headers = {"Authorization": f"Bearer {KEY}"}
    deadline = time.monotonic() + 90
    while True:  # the dispatcher starts the eight, the worker runs each to its wait
        waiting = httpx.get(f"{console}/journeys/{AB_JOURNEY}/waiting", headers=headers, timeout=30).json()
        by_variant = httpx.get(f"{console}/journeys/{AB_JOURNEY}/effect", params={"by": "variant"}, headers=headers,
                               timeout=30).json()["journeys"][AB_JOURNEY]["groups"]  # fmt: skip
        entered = {g: f["entered"] for g, f in by_variant.items()}
        treated = sum(n for g, n in entered.items() if g != "holdout")
        if sum(entered.values()) == len(CARTS) and sum(waiting["steps"].values()) == treated == waiting["answered"]:
            break
        assert time.monotonic() < deadline, (waiting, entered)
        time.sleep(0.5)
    page = sign_in(browser, console)
    page.goto(f"{console}/ui/journeys/{AB_JOURNEY}")
    ready(page)
    assert page.title() == f"旅程 Journeys · 购物车试验 · {AB_JOURNEY}"
    diagram = page.locator(".diagram")
    for arm in ("variant_a", "variant_b"):
        label = diagram.locator(f"[data-arm='{arm}'] > .arm").inner_text()
        assert label == f"{arm} · weight 权重 1 · {entered.get(arm, 0)} instances 实例", label
        sent = diagram.locator(f"[data-arm='{arm}'] .step.send").inner_text()
        assert f"sent 发送 {entered.get(arm, 0)}" in sent, sent  # each treated instance's nudge
    holdout = diagram.locator("[data-arm='holdout'] > .arm").inner_text()
    assert holdout == f"holdout 对照组 20.0% · {entered.get('holdout', 0)} instances 实例", holdout
    for arm in ("then 是", "else 否", "on event 收到事件", "on timeout 超时"):
        assert diagram.locator(".arm", has_text=arm).count() == 1, arm
    for path in (WAIT_FOR_ORDER, WAIT_SMALL):
        step = diagram.locator(f"li[data-path='{path}'] > .step").inner_text()
        assert f"waiting now 当前等待 {waiting['steps'].get(path, 0)}" in step, step
    assert (
        "wait for 等待事件 order.created (≤ 3d)"
        in diagram.locator(f"li[data-path='{WAIT_FOR_ORDER}'] > .step").inner_text()
    )
    assert diagram.locator("li[data-path='steps[1].if.then[0].wait_for.on_timeout[0]'] .step.send").count() == 1
    # The A/B table: a row per variant with what it entered and sent.
    for group, n in entered.items():
        cells = page.locator(f"#variants tr[data-variant='{group}'] td").all_inner_texts()
        assert cells[:2] == [group, str(n)], cells
    options = page.locator("#pv-step option").all_inner_texts()
    assert options == ["nudge_a", "nudge_b", "thanks", "last_call", "small_cart"]
    assert "n/a (no receipts)" in page.locator(".kpis").inner_text()  # the outbox: no receipts
    drawn_whole(page)
    assert unnamed_controls(page) == []
    shot(page, "journey-ab")


def test_a_customer_timeline_is_one_list_newest_first(console, browser):
    page = sign_in(browser, console)
    page.goto(f"{console}/ui/customers/c-tl")
    ready(page)
    rows = page.locator("#timeline tr.entry")
    kinds = [rows.nth(n).get_attribute("data-kind") for n in range(rows.count())]
    assert kinds == ["tier", "points", "instance_ended", "event", "reply", "click", "delivery", "message",
                     "instance_started", "event"]  # fmt: skip
    head = page.locator("#timeline thead").inner_text()
    assert "(Asia/Shanghai)" in head  # every time in the shop's zone, labelled
    message = page.locator("#timeline tr.entry[data-kind='message']").inner_text()
    # Sent 06:02 UTC: 14:02 in the shop, 07:02 for the customer in Berlin (quiet hours are theirs).
    assert message.startswith("2026-12-01 14:02") and "2026-12-01 07:02 (Europe/Berlin)" in message, message
    assert "delivered" in page.locator("#timeline tr.entry[data-kind='delivery']").inner_text()
    drawn_whole(page)
    shot(page, "customer-timeline")
