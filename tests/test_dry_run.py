"""Dry runs (docs/dry-runs.md): a draft simulated against a seeded week of the shop's own events,
beside what runs now, through the job's life and the API, on both databases."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core.config import Settings
from core.records import Event
from definitions.drafts import check_with, content_hash
from definitions.loader import PACKAGE_DIR
from journeys.dry_run import run_dry_run, touched
from store import dry_runs, queries
from store.tables import DefinitionAuditRow, DefinitionChangeRow, DefinitionFileRow, DryRunRow
from tests.helpers import customer, daytime_zone
from triggers.api import create_app
from triggers.live import LiveDefinitions

PAYMENT_REMINDER = (PACKAGE_DIR / "payment_reminder.yaml").read_text(encoding="utf-8")
#: The draft: the reminder two hours after the order instead of fifteen minutes.
LATER = {"payment_reminder.yaml": PAYMENT_REMINDER.replace("  - wait: 15m\n", "  - wait: 2h\n")}
assert LATER["payment_reminder.yaml"] != PAYMENT_REMINDER


def seed_week(store, now: datetime) -> None:
    """A week of a small shop, every customer where `now` is midday except one where it is night:

    - 王芳 (o1): pays an hour after ordering: the 15-minute reminder reaches her, and converts;
    - 李娜 (o2): pays within five minutes: no reminder;
    - 张伟 (o3): never pays: the reminder, then the last call two hours before it closes;
    - 刘洋 (o4): unsubscribed from SMS: the (transactional) reminder goes by email instead;
    - 陈静 (o5): orders at one in the morning her time: the reminder waits out quiet hours;
    - 孙丽 (o7): blacklisted: skipped;
    - 赵磊: an order from before the week, paid in it (history the window leaves out).
    """
    day = daytime_zone(now)
    night = daytime_zone(now + timedelta(hours=11))  # where `now` is 01:00-02:59
    people = [
        customer("c1", name="王芳", phone="+8613800000001", email="wangfang@example.com", timezone=day),
        customer("c2", name="李娜", phone="+8613800000002", email="lina@example.com", timezone=day),
        customer("c3", name="张伟", phone="+8613800000003", email="zhangwei@example.com", timezone=day),
        customer(
            "c4", name="刘洋", phone="+8613800000004", email="liuyang@example.com", timezone=day, unsubscribed=["sms"]
        ),
        customer("c5", name="陈静", phone="+8613800000005", email="chenjing@example.com", timezone=night),
        customer("c6", name="赵磊", phone="+8613800000006", email="zhaolei@example.com", timezone=day),
        customer("c7", name="孙丽", phone="+8613800000007", timezone=day, blacklisted=True),
    ]
    t = {n: now - timedelta(days=n) for n in range(1, 10)}

    def order(event_id, kind, at, who, order_id, **data):
        return Event(event_id=event_id, type=kind, occurred_at=at, customer_id=who, order_id=order_id, data=data)

    events = [
        order("e1", "order.created", t[6], "c1", "o1", amount=199.0),
        order("e2", "order.paid", t[6] + timedelta(hours=1), "c1", "o1", amount=199.0),
        order("e3", "order.created", t[5], "c2", "o2", amount=59.0),
        order("e4", "order.paid", t[5] + timedelta(minutes=5), "c2", "o2", amount=59.0),
        order("e5", "order.created", t[6] + timedelta(minutes=30), "c3", "o3", amount=88.0),
        order("e6", "order.created", t[3], "c4", "o4", amount=120.0),
        order("e7", "order.created", t[2], "c5", "o5", amount=35.5),
        order("e8", "order.created", t[9], "c6", "o6", amount=300.0),  # before the window
        order("e9", "order.paid", t[4], "c6", "o6", amount=300.0),
        order("e10", "order.created", t[1], "c7", "o7", amount=45.0),
    ]
    with store.transaction() as session:
        for person in people:
            queries.upsert_customer(session, person, t[9], "CN")
        queries.store_events(session, events, now)


def queue(store, files, days=7, now=None, change_id=None) -> str:
    with store.transaction() as session:
        return dry_runs.queue(session, files, days, "marketer [test]", change_id, now or datetime.now(UTC)).id


def a_change(store, files) -> str:
    """A draft change holding `files`, as store/definition_changes.py writes one."""
    now = datetime.now(UTC)
    with store.transaction() as session:
        session.add(
            DefinitionChangeRow(
                id="chg-1", title="催付晚一点", state="draft", author="marketer", created_at=now, updated_at=now,
                hash=content_hash(files),
            )
        )  # fmt: skip
    return "chg-1"


def audit_of(store, change_id) -> list[DefinitionAuditRow]:
    with store.transaction() as session:
        return list(session.scalars(select(DefinitionAuditRow).where(DefinitionAuditRow.change_id == change_id)))


def row_of(store, job_id) -> DryRunRow:
    with store.transaction() as session:
        return dry_runs.get(session, job_id)


async def test_a_week_dry_run_shows_the_draft_against_what_runs(store):
    """A later reminder misses 王芳 (she paid within the two hours): one message and one conversion
    fewer; the rest of the week is the same, and nothing but the reminder is reported."""
    now = datetime.now(UTC).replace(microsecond=0)
    seed_week(store, now)
    change_id = a_change(store, LATER)
    job_id = queue(store, LATER, now=now, change_id=change_id)
    assert row_of(store, job_id).state == "queued"
    seen: list[tuple[str, float]] = []

    async def watch():
        while True:
            row = row_of(store, job_id)
            seen.append((row.state, row.progress))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        row = await run_dry_run(store, job_id, PACKAGE_DIR, now=now)
    finally:
        watcher.cancel()
    assert row.state == "done", row.message
    assert row.progress == 1.0 and row.pid is not None and row.finished_at >= row.started_at
    progress = [value for state, value in seen if state == "running"]  # queued before, done after
    assert progress == sorted(progress) and any(0 < value < 1 for value in progress), seen
    result = row.result
    window = result["window"]
    assert datetime.fromisoformat(window["to"]) == now
    assert datetime.fromisoformat(window["from"]) == now - timedelta(days=7)
    assert (result["events"], result["customers"]) == (9, 7)  # e8 is before the window; c6 still paid in it
    assert set(result["current"]) == set(result["draft"]) == set(result["diff"]) == {"payment_reminder"}
    current, draft, diff = (result[k]["payment_reminder"] for k in ("current", "draft", "diff"))
    assert current == {
        "sent": 4,  # 王芳's, 张伟's and 陈静's by SMS, 刘洋's by email
        "skipped": {"blacklisted": 1},  # 孙丽's
        "deferred": {"quiet_hours": 1},  # 陈静's, to 08:00 her time
        "failed": 0,
        "cost": 0.151,  # three SMS at 0.05, an email at 0.001
        "converted": 1,  # 王芳 paid after it
        "revenue": 199.0,
    }
    assert draft == {
        "sent": 3,  # 王芳 paid before two hours were up
        "skipped": {"blacklisted": 1},
        "deferred": {"quiet_hours": 1},
        "failed": 0,
        "cost": 0.101,
        "converted": 0,
        "revenue": 0.0,
    }
    assert diff == {
        "sent": -1,
        "skipped": {"blacklisted": 0},
        "deferred": {"quiet_hours": 0},
        "failed": 0,
        "cost": -0.05,
        "converted": -1,
        "revenue": -199.0,
    }
    assert result["seconds"] > 0
    # the change's audit: who asked, the hash of what ran, the figures
    [audit] = audit_of(store, change_id)
    assert (audit.action, audit.who, audit.hash) == ("dry_run", "marketer [test]", content_hash(LATER))
    assert audit.figures["diff"] == result["diff"] and audit.figures["dry_run"] == job_id


def test_the_window_carries_its_customers_earlier_orders_as_history(store):
    """赵磊's order placed before the week is history the simulation writes first (RFM and
    past-purchase segments read it); nobody outside the window's customers comes with it."""
    now = datetime.now(UTC).replace(microsecond=0)
    seed_week(store, now)
    with store.transaction() as session:
        queries.upsert_customer(session, customer("c8", name="周杰", timezone=daytime_zone(now)), now, "CN")
        queries.store_events(
            session,
            [Event(event_id="e11", type="order.created", occurred_at=now - timedelta(days=30), customer_id="c8",
                   order_id="o8", data={"amount": 10.0})],
            now,
        )  # fmt: skip
        customers, events, history = dry_runs.window(session, now - timedelta(days=7), now)
    assert [e.event_id for e in history] == ["e8"]
    assert "e8" not in {e.event_id for e in events} and "c8" not in {c.customer_id for c in customers}


async def test_what_runs_now_is_the_published_version_read_when_the_job_starts(sqlite_store):
    """With the later reminder published, going back to the 15-minute one is the draft: one
    message and one conversion more than what runs now."""
    now = datetime.now(UTC).replace(microsecond=0)
    seed_week(sqlite_store, now)
    with sqlite_store.transaction() as session:
        session.add(
            DefinitionChangeRow(
                id="chg-live", title="晚一点", state="published", author="marketer", created_at=now, updated_at=now,
                hash=content_hash(LATER), seq=1, published_at=now, reviewed_by="boss",
            )
        )  # fmt: skip
        session.add(
            DefinitionFileRow(
                change_id="chg-live", path="payment_reminder.yaml", kind="journey", name="payment_reminder",
                text=LATER["payment_reminder.yaml"], hash=content_hash(LATER),
            )
        )  # fmt: skip
    back = {"payment_reminder.yaml": PAYMENT_REMINDER}
    row = await run_dry_run(sqlite_store, queue(sqlite_store, back, now=now), PACKAGE_DIR, now=now)
    assert row.state == "done", row.message
    assert row.result["current"]["payment_reminder"]["sent"] == 3
    assert row.result["diff"]["payment_reminder"]["sent"] == 1


async def test_a_draft_that_does_not_load_fails_with_its_problems_at_their_lines(sqlite_store):
    broken = PAYMENT_REMINDER.replace("      channel: sms\n", "      channel: pigeon\n")
    files = {"payment_reminder.yaml": broken, "templates/nope.yaml": "sms: [\n"}
    job_id = queue(sqlite_store, files, change_id=a_change(sqlite_store, files))
    row = await run_dry_run(sqlite_store, job_id, PACKAGE_DIR)
    assert row.state == "failed" and row.result is None
    assert row.message.startswith("the draft does not load:\n")
    line = broken.splitlines().index("      channel: pigeon") + 1  # 20
    assert f"payment_reminder.yaml:{line}: steps[1].send.channel: 'pigeon' is not one of sms, email" in row.message
    assert "templates/nope.yaml:2: not valid YAML: " in row.message  # where the file ended unclosed
    [audit] = audit_of(sqlite_store, "chg-1")
    assert audit.comment == row.message and audit.figures is None


def test_a_dry_run_whose_process_is_gone_is_failed_when_read(sqlite_store):
    import subprocess
    import sys

    job_id = queue(sqlite_store, LATER)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    long_ago = datetime.now(UTC) - timedelta(minutes=1)
    with sqlite_store.transaction() as session:
        assert dry_runs.claim(session, job_id, long_ago, gone.pid)
    row = row_of(sqlite_store, job_id)
    assert row.state == "failed"
    assert f"its process (pid {gone.pid}) is no longer running" in row.message
    # one just claimed, not yet given its process, is left alone
    fresh = queue(sqlite_store, LATER)
    with sqlite_store.transaction() as session:
        assert dry_runs.claim(session, fresh, datetime.now(UTC), None)
    assert row_of(sqlite_store, fresh).state == "running"


def test_a_dry_run_failed_as_gone_stays_failed_when_its_process_finishes_late(store):
    job_id = queue(store, LATER)
    now = datetime.now(UTC)
    with store.transaction() as session:
        assert dry_runs.claim(session, job_id, now, os.getpid())
        dry_runs.fail(session, job_id, "its process is gone", now)
        dry_runs.finish(session, job_id, {"diff": {}}, now)
    row = row_of(store, job_id)
    assert (row.state, row.message, row.result) == ("failed", "its process is gone", None)


def test_at_most_two_run_and_the_rest_wait(sqlite_store):
    ids = [queue(sqlite_store, LATER) for _ in range(3)]
    with sqlite_store.transaction() as session:
        claimed = [dry_runs.claim_next(session, datetime.now(UTC), 1) for _ in range(3)]  # pid 1: alive
    assert claimed == [ids[0], ids[1], None]
    assert row_of(sqlite_store, ids[2]).state == "queued"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys")


def app_for(store, tmp_path: Path, **options):
    """The API with its settings (the data directory for the jobs' logs) in `app.state.settings`,
    as triggers/serve.py sets them."""
    app = create_app(store, live=LiveDefinitions(store, PACKAGE_DIR), **options)
    app.state.settings = Settings.embedded(data_dir=tmp_path / "data")
    return app


async def test_the_api_runs_a_changes_dry_run_in_a_process_of_its_own_and_the_approval_records_it(store, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    seed_week(store, now)
    async with client_for(app_for(store, tmp_path, publish_own_changes=True)) as api:
        made = await api.post("/definitions/changes", json={"files": LATER, "title": "催付晚一点"})
        assert made.status_code == 201, made.text
        change_id = made.json()["id"]
        answer = await api.post(f"/definitions/changes/{change_id}/dry-runs", json={"days": 7})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["state"] in ("queued", "running") and job["progress"] == 0 and job["days"] == 7
        assert job["change_id"] == change_id and job["result"] is None
        for _ in range(600):
            job = (await api.get(f"/definitions/dry-runs/{job['id']}")).json()
            if job["state"] in ("done", "failed"):
                break
            await asyncio.sleep(0.2)
        log = (tmp_path / "data" / "dry-runs" / f"{job['id']}.log").read_text()
        assert job["state"] == "done", (job["message"], log)
        assert job["progress"] == 1.0
        assert set(job) >= {"id", "change_id", "state", "progress", "message", "days", "started_at", "finished_at"}
        result = job["result"]
        assert set(result) == {"window", "events", "customers", "seconds", "current", "draft", "diff"}
        assert result["diff"]["payment_reminder"]["sent"] == -1
        assert result["current"]["payment_reminder"]["sent"] == 4
        assert (await api.post(f"/definitions/changes/{change_id}/submit")).status_code == 200
        approved = await api.post(f"/definitions/changes/{change_id}/approve", json={"comment": "看过演练"})
        assert approved.status_code == 200, approved.text
        audit = (await api.get("/audit", params={"kind": "journey", "name": "payment_reminder"})).json()
        unknown = await api.post("/definitions/changes/nochange/dry-runs", json={"days": 7})
    actions = {entry["action"]: entry for entry in audit}
    assert {"created", "dry_run", "submitted", "approved"} <= set(actions)
    assert actions["dry_run"]["figures"]["diff"]["payment_reminder"]["sent"] == -1
    assert actions["approved"]["figures"]["diff"]["payment_reminder"]["sent"] == -1
    assert actions["approved"]["hash"] == actions["created"]["hash"]
    assert unknown.status_code == 404 and "nochange" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"files": LATER, "days": 0}, 422, "days"),
        ({"files": LATER, "days": 91}, 422, "days"),
        ({"files": {}, "days": 7}, 422, "at least one file"),
        ({"files": {"../etc/passwd.yaml": "x"}, "days": 7}, 422, "'../etc/passwd.yaml': a draft's file is a relative"),
        ({"files": {"events.yaml": "x"}, "days": 7}, 422, "events.yaml: drafts change journeys"),
        ({"files": {"templates/a/b.yaml": "x"}, "days": 7}, 422, "templates/a/b.yaml: not a definition file"),
        ({"files": {"payment_reminder.yaml": "x" * 300_000}, "days": 7}, 422, "longer than 256 KiB"),
        ('{"files": {"payment_reminder.yaml": "name: \\ud800"}}', 422, "payment_reminder.yaml: not text"),  # as sent
        ({"files": LATER, "days": 7, "change_id": "nope"}, 404, "no change nope"),
        ({"files": LATER, "days": 7, "extra": 1}, 422, "extra"),
    ],
)
async def test_the_api_refuses_what_cannot_be_dry_run(sqlite_store, tmp_path, body, status, says):
    async with client_for(app_for(sqlite_store, tmp_path)) as api:
        if isinstance(body, str):  # JSON no client would encode from a str: a lone surrogate
            answer = await api.post(
                "/definitions/dry-runs", content=body.encode(), headers={"content-type": "application/json"}
            )
        else:
            answer = await api.post("/definitions/dry-runs", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.text
    with sqlite_store.transaction() as session:
        assert session.query(DryRunRow).count() == 0


async def test_reading_dry_runs_needs_a_known_id_and_the_right_roles(sqlite_store, tmp_path):
    app = app_for(sqlite_store, tmp_path, api_keys=["reader:read:v-secret", "operator:operator:o-secret"])
    async with client_for(app) as api:
        missing = await api.get("/definitions/dry-runs/" + "0" * 32, headers={"Authorization": "Bearer v-secret"})
        assert missing.status_code == 404 and "no dry run" in missing.text
        bad = await api.get("/definitions/dry-runs/x';--", headers={"Authorization": "Bearer v-secret"})
        assert bad.status_code == 422 and "32 hex digits" in bad.text
        viewer = await api.post(
            "/definitions/dry-runs", json={"files": LATER}, headers={"Authorization": "Bearer v-secret"}
        )
        assert viewer.status_code == 403 and "write, check and dry-run drafts" in viewer.text
        anonymous = await api.get("/definitions/dry-runs/" + "0" * 32)
        assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("payment_reminder.yaml", {"payment_reminder"}),
        ("templates/payment_reminder.yaml", {"payment_reminder"}),  # the journey that sends it
        ("templates/holiday_care.yaml", {"spring_festival_care"}),  # a broadcast's template
        ("segments/members.yaml", {"member_statement"}),  # the broadcast to the segment
        ("broadcasts/member_statement.yaml", {"member_statement"}),
    ],
)
def test_the_journeys_a_change_touches(definitions, path, expected):
    before = (PACKAGE_DIR / path).read_text(encoding="utf-8")
    after = before + "\n# 改了一行\n"
    draft, problems = check_with(PACKAGE_DIR, {path: after})
    assert [p for p in problems if not p.warning] == []
    assert touched({path: after}, definitions, draft, {path: before}) == expected


def test_policy_and_loyalty_touch_every_journey_and_broadcast(definitions):
    every = set(definitions.journeys) | set(definitions.broadcasts)
    for path in ("policy.yaml", "loyalty.yaml"):
        text = (PACKAGE_DIR / path).read_text(encoding="utf-8")
        assert touched({path: text}, definitions, definitions, {path: text}) == every


async def test_the_api_queues_a_third_and_a_read_starts_it_when_a_slot_is_free(sqlite_store, tmp_path):
    busy = [queue(sqlite_store, LATER) for _ in range(2)]
    with sqlite_store.transaction() as session:
        for job_id in busy:  # two running, in a live process (this one)
            assert dry_runs.claim(session, job_id, datetime.now(UTC), os.getpid())
    async with client_for(app_for(sqlite_store, tmp_path)) as api:
        answer = await api.post("/definitions/dry-runs", json={"files": LATER, "days": 1})
        assert answer.status_code == 202 and answer.json()["state"] == "queued"
        job_id = answer.json()["id"]
        assert (await api.get(f"/definitions/dry-runs/{job_id}")).json()["state"] == "queued"
        with sqlite_store.transaction() as session:
            dry_runs.fail(session, busy[0], "stopped by hand", datetime.now(UTC))
        job = (await api.get(f"/definitions/dry-runs/{job_id}")).json()
        assert job["state"] in ("running", "done")  # the read started it
        for _ in range(300):
            if job["state"] in ("done", "failed"):
                break
            await asyncio.sleep(0.2)
            job = (await api.get(f"/definitions/dry-runs/{job_id}")).json()
    assert job["state"] == "done", job["message"]
    # no event in the window: nothing played, every figure 0
    assert (job["result"]["events"], job["result"]["customers"]) == (0, 0)
    assert job["result"]["diff"] == {
        "payment_reminder": {
            "sent": 0, "skipped": {}, "deferred": {}, "failed": 0, "cost": 0.0, "converted": 0, "revenue": 0.0
        }
    }  # fmt: skip
