"""Authoring in the console (/ui/definitions, the editor, a change's page, /ui/audit) in a real
headless Chromium, against the engine as `journeys up` starts it on PostgreSQL with API keys for
an operator, a publisher and a reader: a marketer writes a journey in the editor and sees each
problem at its line as they type, the diagram redrawn from the draft and a send step's preview;
a dry run over a seeded week; an operator cannot publish and a publisher can; a published
version starts new instances without a restart while running ones keep theirs; the audit page
lists the change. Screenshots go to $JOURNEYS_ARTIFACTS (default .artifacts/console-authoring)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from definitions.loader import PACKAGE_DIR
from store import queries
from tests import test_console
from tests.helpers import daytime_zone, event, free_port
from tests.test_console import CHROMIUM, ready, sign_in, unnamed_controls
from tests.test_up import start_up, stop_up

SHOP = ZoneInfo("Asia/Shanghai")
OPERATOR = "authoring-operator-" + uuid.uuid4().hex
PUBLISHER = "authoring-publisher-" + uuid.uuid4().hex
READER = "authoring-reader-" + uuid.uuid4().hex
ARTIFACTS = (
    Path(os.environ.get("JOURNEYS_ARTIFACTS", Path(__file__).resolve().parent.parent / ".artifacts"))
    / "console-authoring"
)
JOURNEY = (PACKAGE_DIR / "payment_reminder.yaml").read_text(encoding="utf-8")

#: The console tests' headless Chromium, a fresh profile per test.
browser = test_console.browser
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium (make test installs it)")


def seed_week(store, now: datetime) -> None:
    """Six customers with a phone, each with an order created at noon (the shop's time) on one of
    the last six days; orders 2, 4 and 6 were paid five minutes later, the others never."""
    events = []
    today = now.astimezone(SHOP).date()
    for n in range(1, 7):
        created = datetime.combine(today - timedelta(days=n), dt_time(12, 0), SHOP).astimezone(UTC)
        customer, order = f"week-c{n}", f"week-o{n}"
        events += [
            event("customer.created", created - timedelta(days=30), customer=customer, name=f"Customer {n}",
                  phone=f"+861390000000{n}", locale="zh-CN", timezone="Asia/Shanghai"),
            event("order.created", created, customer=customer, order=order, amount=100 * n),
        ]  # fmt: skip
        if n % 2 == 0:
            events.append(event("order.paid", created + timedelta(minutes=5), customer=customer, order=order))
    with store.transaction() as session:
        queries.store_events(session, events, now)
        # Their journeys ran when the events came: the router must not start them again now.
        queries.mark_all_dispatched(session, [e.event_id for e in events if e.order_id], now)


def post_events(base: str, events: list[dict]) -> None:
    answer = httpx.post(f"{base}/events", headers={"Authorization": f"Bearer {OPERATOR}"}, json=events, timeout=30)
    assert answer.status_code == 202, answer.text


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def alice_orders(base: str, order: str, event_id: str) -> None:
    """Alice orders now (and does not pay): payment_reminder starts for it."""
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    post_events(base, [{"event_id": event_id, "type": "order.created", "customer_id": "c-alice", "order_id": order,
                        "occurred_at": now, "data": {"amount": 199}}])  # fmt: skip


@pytest.fixture
def engine(tmp_path, pg_store):
    now = datetime.now(UTC).replace(microsecond=0)
    seed_week(pg_store, now)
    port, ui_port, api_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_store.url,
        "JOURNEYS_API_KEYS": f"ops:operator:{OPERATOR},boss:publish:{PUBLISHER},reader:read:{READER}",
        "JOURNEYS_OUTBOX": str(tmp_path / "outbox.jsonl"),
    }
    process, output = start_up(tmp_path, port, ui_port, api_port, env)
    base = f"http://127.0.0.1:{api_port}"
    try:
        assert f"Console       {base}/ui/ (sign in with an API key)" in output, output
        post_events(
            base,
            [
                {
                    "event_id": "alice-1",
                    "type": "customer.created",
                    "customer_id": "c-alice",
                    "occurred_at": now.isoformat(),
                    "data": {"name": "Alice", "phone": "13800138000", "locale": "en", "timezone": daytime_zone(now)},
                },
            ],  # fmt: skip  (her orders are each test's: the dry run's week holds the seeded ones only)
        )
        for _ in range(300):  # the dispatcher applies customer.created to the store
            found = httpx.get(f"{base}/customers/c-alice", headers=as_key(OPERATOR), timeout=30)
            if found.status_code == 200:
                break
            time.sleep(0.1)
        assert found.status_code == 200, found.text
        yield base
    finally:
        stop_up(process)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def editor_js(page, script: str, *args):
    """Run `script` with `cm`, the CodeMirror editor of the file tab that is shown."""
    return page.evaluate(
        f"(args) => {{ const cm = document.querySelector('.pane.active .CodeMirror').CodeMirror; {script} }}",
        list(args),
    )


def line_number(page, needle: str) -> int:
    """The 1-based line of the shown file that holds `needle`."""
    return editor_js(page, "return cm.getValue().split('\\n').findIndex((l) => l.includes(args[0])) + 1;", needle)


def select_text(page, needle: str) -> None:
    """Put the shown editor's selection on the first `needle`, focused, as a double-click would."""
    editor_js(
        page,
        "const at = cm.getValue().indexOf(args[0]); cm.focus();"
        "cm.setSelection(cm.posFromIndex(at), cm.posFromIndex(at + args[0].length));",
        needle,
    )


def wait_checked(page, ok: bool) -> None:
    page.wait_for_selector(f"#check-status[data-ok='{'true' if ok else 'false'}']", timeout=30_000)


def open_tab(page, path: str) -> None:
    page.get_by_role("tab", name=path, exact=True).click()


def test_an_edit_shows_its_problem_at_its_line_redraws_and_previews(engine, browser):
    alice_orders(engine, "o-100", "alice-2")
    page = sign_in(browser, engine, key=OPERATOR)
    page.goto(f"{engine}/ui/definitions")
    ready(page)
    page.get_by_label("New journey's name 新旅程名称").fill("spring_nudge")
    page.get_by_role("button", name="New journey 新建旅程").click()
    page.wait_for_url("**/ui/definitions/edit?new=spring_nudge", timeout=30_000)
    ready(page)
    assert page.title().startswith("Edit definitions 编辑定义")
    wait_checked(page, ok=True)
    assert page.locator("#check-status").inner_text() == "No problems 没有问题"
    assert page.get_by_role("tab").all_inner_texts() == ["spring_nudge.yaml", "templates/spring_nudge.yaml"]
    assert page.locator("#draft-diagram .step.send").count() == 1
    assert "spring_nudge · sms" in page.locator("#draft-diagram .step.send").inner_text()

    # A channel that does not exist: the problem is shown at its line, in the gutter and below.
    line = line_number(page, "channel: sms")
    select_text(page, "sms")
    page.keyboard.type("pigeon")
    wait_checked(page, ok=False)
    problem = page.locator("#problems li.error")
    assert problem.count() == 1
    assert problem.get_attribute("data-line") == str(line)
    assert f"spring_nudge.yaml:{line}" in problem.inner_text()
    assert (
        "steps[1].send.channel" in problem.inner_text() and "'pigeon' is not one of sms, email" in problem.inner_text()
    )
    assert page.locator("#check-status").inner_text() == "1 problem 个问题"
    marked = "return [cm.lineInfo(args[0]).gutterMarkers !== null, String(cm.lineInfo(args[0]).bgClass)];"
    assert editor_js(page, marked, line - 1) == [True, "cm-problem-line"]
    assert editor_js(page, "return cm.lineInfo(args[0]).gutterMarkers;", line - 2) is None  # only that line
    assert "has-problems" in page.get_by_role("tab", name="spring_nudge.yaml", exact=True).get_attribute("class")
    # The diagram stays the last draft that loaded, and says so.
    assert "last version of it that loaded" in page.locator(".authoring .diagram").inner_text()
    shot(page, "editor-problem")

    select_text(page, "pigeon")
    page.keyboard.type("sms")
    wait_checked(page, ok=True)
    assert page.locator("#problems li").count() == 0
    assert editor_js(page, "return cm.lineInfo(args[0]).gutterMarkers;", line - 1) is None

    # Another wait and send at the end: the diagram is redrawn from the draft.
    editor_js(
        page,
        "cm.replaceRange(args[0], {line: cm.lastLine() + 1, ch: 0});",
        "  - wait: 2d\n  - send:\n      id: second_nudge\n      channel: sms\n      template: spring_nudge\n",
    )
    page.wait_for_function("() => document.querySelectorAll('#draft-diagram .step.send').length === 2", timeout=30_000)
    assert page.locator("#draft-diagram .step.wait").all_inner_texts()[-1].endswith("wait 等待 2d")
    assert "second_nudge · sms" in page.locator("#draft-diagram .step.send").nth(1).inner_text()
    assert page.locator("#draft-diagram").get_attribute("data-steps") == "4"
    shot(page, "editor-redrawn")

    # The template's text, changed in its tab, is what the preview of the draft's step shows.
    open_tab(page, "templates/spring_nudge.yaml")
    select_text(page, "thank you for")
    page.keyboard.type("thanks a lot for")
    wait_checked(page, ok=True)
    page.get_by_label("Send step 发送步骤").select_option("second_nudge")
    page.locator("#draft-preview").get_by_label("Customer id 客户编号").fill("c-alice")
    page.locator("#draft-preview").get_by_role("button", name="Preview 预览").click()
    preview = page.locator("#draft-preview-out .card").first
    preview.wait_for(timeout=30_000)
    assert "second_nudge → c-alice" in page.locator("#draft-preview-out").inner_text()
    assert "Hi Alice, thanks a lot for your order o-100." in preview.inner_text()
    shot(page, "editor-preview")
    assert unnamed_controls(page) == []

    # Nothing of the draft runs: the journeys the engine knows are unchanged.
    running = httpx.get(f"{engine}/journeys", headers=as_key(OPERATOR), timeout=30).json()
    assert "spring_nudge" not in {j["name"] for j in running}


def test_the_editor_at_phone_width(engine, browser):
    page = sign_in(browser, engine, key=OPERATOR, viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(f"{engine}/ui/definitions/edit?new=phone_nudge")
    ready(page)
    wait_checked(page, ok=True)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 392, f"the editor is {width}px wide at a 390px screen"
    shot(page, "phone-editor")


# The tests below need the change, dry-run, review and audit routes (docs/publishing.md).


def create_change(base: str, key: str, files: dict[str, str], title: str) -> dict:
    answer = httpx.post(
        f"{base}/definitions/changes", headers=as_key(key), json={"files": files, "title": title}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_dry_run_over_a_seeded_week_shows_the_expected_counts(engine, browser):
    # The draft reminds after 2 minutes instead of 15: the orders paid after 5 minutes get one too.
    draft = JOURNEY.replace("  - wait: 15m\n", "  - wait: 2m\n")
    assert draft != JOURNEY
    change = create_change(engine, OPERATOR, {"payment_reminder.yaml": draft}, "Remind sooner")
    page = sign_in(browser, engine, key=OPERATOR)
    page.goto(f"{engine}/ui/changes/{change['id']}")
    ready(page)
    assert "wait: 2m" in page.locator("#files pre.diff .add").all_inner_texts()[-1]
    assert "wait: 15m" in page.locator("#files pre.diff .del").all_inner_texts()[-1]
    page.get_by_label("Days of events 天数").fill("7")
    page.get_by_role("button", name="Start a dry run 开始试运行").click()
    page.wait_for_selector(".dry-run[data-state='done']", timeout=600_000)
    result = page.locator(".dry-run[data-state='done'] .outcomes[data-journey='payment_reminder']")
    sent = result.locator("tr[data-outcome='sent'] td")
    # Current: the three orders never paid; draft: all six (three paid only after the reminder).
    assert sent.all_inner_texts()[1:] == ["3", "6", "+3"]
    # The three paid after a reminder count as its conversions: their 200 + 400 + 600.
    assert result.locator("tr[data-outcome='converted'] td").all_inner_texts()[1:] == ["0", "3", "+3"]
    assert result.locator("tr[data-outcome='revenue'] td").all_inner_texts()[1:] == [
        "CNY 0.00",
        "CNY 1,200.00",
        "+CNY 1,200.00",
    ]
    shot(page, "dry-run")
    audit = httpx.get(f"{engine}/audit", headers=as_key(OPERATOR), timeout=30).json()
    assert any(a["action"] == "dry_run" and a["change_id"] == change["id"] for a in audit)
    # Edited after its dry run: the run is marked as one of an earlier version, not this one's.
    edited = httpx.put(
        f"{engine}/definitions/changes/{change['id']}", headers=as_key(OPERATOR), timeout=30,
        json={"files": {"payment_reminder.yaml": draft.replace("  - wait: 2m\n", "  - wait: 3m\n")}},
    )  # fmt: skip
    assert edited.status_code == 200, edited.text
    page.reload()
    ready(page)
    assert page.locator(".dry-run[data-state='done'] .pill.stale").count() == 1


def test_an_operator_cannot_publish_a_publisher_can_and_the_audit_lists_it(engine, browser):
    operator = sign_in(browser, engine, key=OPERATOR)
    operator.goto(f"{engine}/ui/definitions/edit?new=autumn_nudge")
    ready(operator)
    wait_checked(operator, ok=True)
    operator.get_by_label("Title of the change 变更标题").fill("Autumn nudge")
    operator.get_by_role("button", name="Submit for review 提交审核").click()
    operator.wait_for_url("**/ui/changes/*", timeout=30_000)
    ready(operator)
    change_id = operator.url.rsplit("/", 1)[1]
    assert "in review 审核中" in operator.locator("#change-facts").inner_text()
    assert "ops" in operator.locator("#change-facts").inner_text()  # the author
    operator.get_by_role("button", name="Approve and publish 批准并发布").click()
    alert = operator.locator(".alerts [role=alert]")
    alert.wait_for(timeout=30_000)
    assert "role operator" in alert.inner_text() and "publish" in alert.inner_text()
    shot(operator, "review-refused")

    publisher = sign_in(browser, engine, key=PUBLISHER)
    publisher.goto(f"{engine}/ui/changes/{change_id}")
    ready(publisher)
    publisher.get_by_role("button", name="Reject 驳回").click()  # a rejection needs a comment
    assert "needs a comment" in publisher.locator(".alerts [role=alert]").inner_text()
    publisher.get_by_label("Review comment 审核意见").fill("Looks right for the autumn sale")
    publisher.get_by_role("button", name="Approve and publish 批准并发布").click()
    publisher.wait_for_function(
        "() => (document.querySelector('#change-facts') || {innerText: ''}).innerText.includes('published')",
        timeout=30_000,
    )
    assert "boss" in publisher.locator("#change-facts").inner_text()  # reviewed by
    shot(publisher, "review-approved")

    # The publisher may not approve a change of their own.
    own = create_change(
        engine, PUBLISHER, {"autumn_nudge.yaml": JOURNEY.replace("name: payment_reminder", "name: autumn_nudge")}, "Own"
    )
    assert (
        httpx.post(
            f"{engine}/definitions/changes/{own['id']}/submit", headers=as_key(PUBLISHER), timeout=30
        ).status_code
        == 200
    )
    publisher.goto(f"{engine}/ui/changes/{own['id']}")
    ready(publisher)
    publisher.get_by_role("button", name="Approve and publish 批准并发布").click()
    publisher.locator(".alerts [role=alert]").wait_for(timeout=30_000)
    assert "in review" in publisher.locator("#change-facts").inner_text()

    publisher.goto(f"{engine}/ui/audit")
    ready(publisher)
    assert publisher.title().startswith("Audit 审计")
    versions = publisher.locator("#published .versions[data-journey='autumn_nudge']")
    assert versions.get_by_role("link", name=f"Change {change_id}: definition and diff 定义与差异").count() == 1
    assert "boss" in versions.inner_text() and "Looks right for the autumn sale" in versions.inner_text()
    actions = publisher.locator(f"#actions tr[data-change='{change_id}']")
    # Newest first: the approval, the submission, the creation.
    assert [row.get_attribute("data-action") for row in actions.all()] == ["approved", "submitted", "created"]
    assert "boss" in actions.first.inner_text() and "Looks right for the autumn sale" in actions.first.inner_text()
    shot(publisher, "audit")
    versions.get_by_role("link", name=f"Change {change_id}: definition and diff 定义与差异").click()
    ready(publisher)
    # Published, it is what runs: no difference left, and its definition is shown.
    assert "No difference from what runs." in publisher.locator("#files").inner_text()
    assert (
        "name: autumn_nudge"
        in publisher.locator("#files .file[data-path='autumn_nudge.yaml'] details.definition pre").inner_text()
    )


def test_a_published_version_starts_new_instances_and_running_ones_keep_theirs(engine, browser):
    def versions() -> dict:
        found = httpx.get(f"{engine}/journeys", headers=as_key(OPERATOR), timeout=30).json()
        return next(j for j in found if j["name"] == "payment_reminder")

    alice_orders(engine, "o-100", "alice-2")
    deadline = time.monotonic() + 60
    while versions()["running_this_version"] < 1:  # o-100 waits its 15 minutes
        assert time.monotonic() < deadline, versions()
        time.sleep(0.5)
    old = versions()["version"]
    draft = JOURNEY.replace("  - wait: 15m\n", "  - wait: 20m\n")
    change = create_change(engine, OPERATOR, {"payment_reminder.yaml": draft}, "Wait longer")
    assert (
        httpx.post(
            f"{engine}/definitions/changes/{change['id']}/submit", headers=as_key(OPERATOR), timeout=30
        ).status_code
        == 200
    )
    page = sign_in(browser, engine, key=PUBLISHER)
    page.goto(f"{engine}/ui/changes/{change['id']}")
    ready(page)
    page.get_by_role("button", name="Approve and publish 批准并发布").click()
    page.wait_for_function(
        "() => (document.querySelector('#change-facts') || {innerText: ''}).innerText.includes('published')",
        timeout=30_000,
    )

    deadline = time.monotonic() + 60
    while versions()["version"] == old:  # the API picks the published version up without a restart
        assert time.monotonic() < deadline, versions()
        time.sleep(0.5)
    alice_orders(engine, "o-200", "alice-3")
    deadline = time.monotonic() + 60
    while not (versions()["running_this_version"] >= 1 and versions()["running_older_versions"] >= 1):
        assert time.monotonic() < deadline, versions()
        time.sleep(0.5)
    page.goto(f"{engine}/ui/")
    ready(page)
    row = page.locator("tr", has=page.get_by_role("link", name="首次催付"))
    assert row.locator("td").nth(1).inner_text() == versions()["version"][:8]
    assert row.locator("td").nth(2).inner_text() == "1 / 1"  # o-200 on the new version, o-100 on the old
    shot(page, "published-version")


def test_a_marketer_edits_what_runs_saves_a_draft_and_continues_it(engine, browser):
    page = sign_in(browser, engine, key=OPERATOR)
    page.goto(f"{engine}/ui/definitions")
    ready(page)
    assert page.title().startswith("Definitions 定义")
    running = page.locator("#running tr[data-path='payment_reminder.yaml']")
    assert "files 文件" in running.inner_text()
    running.get_by_role("link", name="Edit payment_reminder.yaml 编辑").click()
    page.wait_for_url("**/ui/definitions/edit?path=payment_reminder.yaml", timeout=30_000)
    ready(page)
    wait_checked(page, ok=True)
    # The template its send step names opens beside it, as it runs.
    page.wait_for_function("() => document.querySelectorAll('[role=tab]').length === 2", timeout=30_000)
    assert page.get_by_role("tab").all_inner_texts() == ["payment_reminder.yaml", "templates/payment_reminder.yaml"]
    page.get_by_role("button", name="Save draft 保存草稿").click()
    assert "Nothing changed yet" in page.locator(".alerts [role=alert]").inner_text()

    select_text(page, "15m")
    page.keyboard.type("10m")
    wait_checked(page, ok=True)
    assert page.locator("#draft-diagram .step.wait").first.inner_text().endswith("wait 等待 10m")
    page.get_by_label("Title of the change 变更标题").fill("Remind at ten minutes")
    page.get_by_role("button", name="Save draft 保存草稿").click()
    page.wait_for_url("**/ui/definitions/edit?change=*", timeout=30_000)
    assert "Saved as change" in page.locator("#change-id").inner_text()
    change_id = page.url.rsplit("=", 1)[1]
    saved = httpx.get(f"{engine}/definitions/changes/{change_id}", headers=as_key(OPERATOR), timeout=30).json()
    assert [f["path"] for f in saved["files"]] == ["payment_reminder.yaml"]  # the untouched template is not in it
    assert saved["state"] == "draft" and saved["title"] == "Remind at ten minutes"

    page.reload()  # the draft continues where it was saved
    ready(page)
    wait_checked(page, ok=True)
    assert "wait: 10m" in editor_js(page, "return cm.getValue();")
    assert page.get_by_label("Title of the change 变更标题").input_value() == "Remind at ten minutes"

    page.goto(f"{engine}/ui/definitions")
    ready(page)
    assert "draft 草稿" in page.locator(f"#open-changes tr[data-change='{change_id}']").inner_text()
    assert page.locator("#running tr[data-path='payment_reminder.yaml'] td").nth(6).inner_text() == "1"
    shot(page, "definitions")

    # A template alone: the diagram is of the journey that sends it, its step ready to preview.
    page.get_by_role("link", name="Edit templates/payment_reminder.yaml 编辑").click()
    page.wait_for_url("**/ui/definitions/edit?path=templates%2Fpayment_reminder.yaml", timeout=30_000)
    ready(page)
    wait_checked(page, ok=True)
    page.wait_for_selector("#draft-diagram .step.send", timeout=30_000)
    assert "first_reminder · sms → email" in page.locator("#draft-diagram .step.send").inner_text()
    assert page.get_by_label("Send step 发送步骤").input_value() == "first_reminder"
