"""Broadcasts (批量发送) on the deployed processes and PostgreSQL: a holiday message to every member
of a segment, through the same policy and ledger as every journey (unsubscribes and the
blacklist hold, exactly one message per customer), surviving a worker killed mid-way, with its
progress in the CLI and the API; a coupon held back from members holding one unredeemed; and a
broadcast cancelled while its instances wait."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from core.records import apply_customer_event
from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.simulate import Simulation
from store import queries
from store.db import Store
from store.tables import InstanceRow, MessageRow
from tests.helpers import daytime_zone, event
from tests.stack import JOURNEYS, Stack, wait_until

MEMBERS, UNSUBSCRIBED, BLACKLISTED, OTHERS = 240, 10, 5, 20
#: Members v0000-v0019 got a vip_coupon last month; v0000-v0009 have redeemed it since.
HOLDING, REDEEMED = 20, 10


def definitions_with_broadcasts(tmp_path, now: datetime):
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "vips.yaml").write_text("name: vips\ntitle: VIP\nwhere: {tag: vip}\n")
    (folder / "templates" / "holiday_care.yaml").write_text(
        'sms:\n  zh-CN: "{{ customer.name }}，新春快乐！{{ customer.rfm.tier }}"\nemail:\n  zh-CN: {subject: "新春快乐", body: "<p>{{ customer.name }}</p>"}\n'
    )
    (folder / "broadcasts").mkdir(exist_ok=True)
    (folder / "broadcasts" / "spring_care.yaml").write_text(
        "name: spring_care\ntitle: 春节关怀\nsegment: vips\nsend: {channel: sms, template: holiday_care, resource: vip_coupon}\n"
        f'schedule: {{at: "{(now - timedelta(minutes=1)).isoformat()}"}}\nholdout: 0.2\n'
    )
    later = (now + timedelta(days=30)).replace(tzinfo=None).isoformat(timespec="minutes")
    for name, path in (("next_year", "auto"), ("next_year_each", "instances")):
        (folder / "broadcasts" / f"{name}.yaml").write_text(
            f"name: {name}\nsegment: vips\nsend: {{channel: sms, template: holiday_care}}\n"
            f'schedule: {{local_time: "{later}"}}\npath: {path}\n'
        )
    with (folder / "resources.yaml").open("a") as resources:
        resources.write("  - {name: vip_coupon, max_unredeemed: 1, redeemed_by: coupon.redeemed}\n")
    return folder


def add_customers(store, now: datetime) -> None:
    zone = daytime_zone(now)
    with store.transaction() as session:
        for n in range(MEMBERS + UNSUBSCRIBED + BLACKLISTED + OTHERS):
            data = {"name": f"客户{n}", "phone": f"+86139{n:08d}", "timezone": zone, "tags": ["vip"]}
            if n >= MEMBERS + UNSUBSCRIBED + BLACKLISTED:
                data["tags"] = []
            elif n >= MEMBERS + UNSUBSCRIBED:
                data["blacklisted"] = True
            elif n >= MEMBERS:
                data["unsubscribed"] = ["sms"]
            created = event("customer.created", now - timedelta(days=1), customer=f"v{n:04d}", **data)
            queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")
        for n in range(HOLDING):  # an earlier coupon, and for some its redemption
            issued = now - timedelta(days=30)
            session.add(
                MessageRow(
                    id=f"earlier-{n}", workflow_id=f"vip_gift:v{n:04d}", run_id="r", step="gift", journey="vip_gift",
                    journey_version="v", customer_id=f"v{n:04d}", channel="sms", template="gift", category="marketing",
                    status="delivered", at=issued, updated_at=issued, resource="vip_coupon",
                )
            )  # fmt: skip
            if n < REDEEMED:
                redeemed = event(
                    "coupon.redeemed", issued + timedelta(days=2), customer=f"v{n:04d}", resource="vip_coupon"
                )
                queries.store_event(session, redeemed, redeemed.occurred_at)


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [JOURNEYS, "broadcast", *args], env=stack.env, cwd=stack.directory, capture_output=True, text=True, timeout=60
    )


def outcomes(store, journey: str) -> dict[str, int]:
    with store.transaction() as session:
        return queries.message_outcomes(session, journey)


def simulated(tmp_path, folder, now: datetime) -> tuple[dict, set]:
    """spring_care simulated from `now` for the same customers: each member's outcome, and who was held out."""

    async def play(store: Store) -> None:
        async with Simulation(load_definitions(folder), store, now) as sim:
            await sim.start_broadcast("spring_care")
            await sim.advance_to(now + timedelta(hours=2))

    store = Store(f"sqlite:///{tmp_path}/simulated.db", durable=False).migrate()
    add_customers(store, now)
    asyncio.run(play(store))
    with store.transaction() as session:
        ledger = {
            m.customer_id: (m.status, m.reason) for m in queries.list_messages(session) if m.journey == "spring_care"
        }
        rows = session.scalars(select(InstanceRow).where(InstanceRow.journey == "spring_care"))
        held_out = {row.customer_id for row in rows if row.exit_reason == "holdout"}
    store.dispose()
    return ledger, held_out


def test_a_broadcast_reaches_each_member_once_through_the_policy_and_survives_a_lost_worker(pg_store, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    add_customers(pg_store, now)
    folder = definitions_with_broadcasts(tmp_path, now)
    env = {"JOURNEYS_DEFINITIONS": str(folder), "JOURNEYS_RATE_LIMITS": "sms=50,email=50"}
    with Stack(tmp_path, pg_store.url, extra_env=env) as stack:
        listed = cli(stack, "list").stdout
        assert "spring_care  segment vips  at " in listed and "holdout 0.2  (春节关怀)" in listed
        predicted = cli(stack, "dry-run", "spring_care")
        assert predicted.returncode == 0, predicted.stderr
        started = cli(stack, "start", "spring_care")
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("started spring_care: workflow broadcast:spring_care")
        again = cli(stack, "start", "spring_care")
        assert again.returncode == 1 and "has already been started (a broadcast runs once)" in again.stderr

        # Kill the worker once some messages are out, then bring it back.
        wait_until(lambda: sum(outcomes(pg_store, "spring_care").values()) >= 30, 120, "the first sends")
        stack.kill_worker(0)
        stack.start_worker(0)

        def settled():
            shown = httpx.get(f"{stack.api}/broadcasts/spring_care", timeout=30).json()
            return shown if shown["state"] == "done" and shown["waiting"] == 0 else None

        status = wait_until(settled, 300, "every member to be decided")
        printed = cli(stack, "status", "spring_care").stdout
        logs = stack.worker_logs()
    members = MEMBERS + UNSUBSCRIBED + BLACKLISTED
    assert status["members"] == members and status["started"] == members
    with pg_store.transaction() as session:
        ledger = {
            m.customer_id: (m.status, m.reason) for m in queries.list_messages(session) if m.journey == "spring_care"
        }
    member_ids = {f"v{n:04d}" for n in range(members)}
    assert set(ledger) <= member_ids  # nobody outside the segment
    held_out = member_ids - set(ledger)
    assert 0.1 * members < len(held_out) < 0.3 * members, len(held_out)  # the 20% control group gets nothing
    for customer_id, outcome in ledger.items():  # everyone else: the policy's answer, once
        n = int(customer_id[1:])
        expected = (
            ("skipped", "resource_limit") if REDEEMED <= n < HOLDING
            else ("sent", None) if n < MEMBERS else ("skipped", "unsubscribed") if n < MEMBERS + UNSUBSCRIBED
            else ("skipped", "blacklisted")
        )  # fmt: skip
        assert outcome == expected, (customer_id, outcome)
    assert sum(status["outcomes"].values()) == len(ledger)
    # The instances, with the group each key drew, for the effect report's holdout.
    with pg_store.transaction() as session:
        groups = Counter(
            row.variant for row in session.scalars(select(InstanceRow).where(InstanceRow.journey == "spring_care"))
        )
        sent_groups = {row.variant for row in queries.list_messages(session) if row.journey == "spring_care"}
    assert groups == {"holdout": len(held_out), "send": members - len(held_out)}
    assert sent_groups == {"send"}
    # The dry run, before the start, said exactly this.
    assert "  sends from " in predicted.stdout
    said = Counter(o for o in ledger.values())
    assert predicted.stdout.splitlines() == [
        f"spring_care: {members} members, {len(held_out)} held out",
        f"  {'send:sms':<28} {said[('sent', None)]}",
        f"  {'skip:blacklisted':<28} {said[('skipped', 'blacklisted')]}",
        f"  {'skip:resource_limit':<28} {said[('skipped', 'resource_limit')]}",
        f"  {'skip:unsubscribed':<28} {said[('skipped', 'unsubscribed')]}",
        *[line for line in predicted.stdout.splitlines() if line.startswith("  sends from ")],
    ]
    sent_to = Counter(
        json.loads(line)["customer_id"] for line in stack.outbox.read_text().splitlines() if '"spring_care"' in line
    )
    assert set(sent_to) == {c for c, o in ledger.items() if o[0] == "sent"}
    assert max(sent_to.values()) == 1  # once each, also after the kill
    # Within the SMS rate limit (50 a second, from one bucket the pages draw a second's worth from):
    # no second of the outbox holds more than the limit and one second's burst.
    written = sorted(
        datetime.fromisoformat(json.loads(line)["written_at"])
        for line in stack.outbox.read_text().splitlines()
        if '"spring_care"' in line
    )
    busiest = max(
        sum(1 for other in written[i:] if other < moment + timedelta(seconds=1)) for i, moment in enumerate(written)
    )
    assert busiest <= 100, busiest
    assert all(int(c[1:]) < MEMBERS for c in sent_to)  # members who may get SMS only
    bodies = [json.loads(line)["body"] for line in stack.outbox.read_text().splitlines() if '"spring_care"' in line]
    assert bodies and all("新春快乐！none" in body for body in bodies)  # the template read customer.rfm (no purchases)
    # The simulation of the same broadcast (journeys simulate's engine on the time-skipping server,
    # its own store) gives the very same outcome, member by member.
    assert simulated(tmp_path, folder, now) == (ledger, held_out)
    assert printed.splitlines()[0] == f"spring_care  done  segment vips: {members} members"
    assert f"  batched    {members} reached, {len(held_out)} held out, 0 waiting" in printed
    for alarm in ("TMPRL1101", "Potential deadlock", " ERROR "):
        assert alarm not in logs


@pytest.mark.parametrize("name", ["next_year", "next_year_each"])
def test_a_cancelled_broadcast_sends_nothing(pg_store, tmp_path, name):
    """Batched (`next_year`: its members wait on one timer of the broadcast for their moment) and
    through instances (`next_year_each`: each member's instance waits): cancelled, nobody gets it."""
    now = datetime.now(UTC).replace(microsecond=0)
    add_customers(pg_store, now)
    folder = definitions_with_broadcasts(tmp_path, now)
    members = MEMBERS + UNSUBSCRIBED + BLACKLISTED
    with Stack(tmp_path, pg_store.url, extra_env={"JOURNEYS_DEFINITIONS": str(folder)}) as stack:
        answer = httpx.post(f"{stack.api}/broadcasts/{name}/start", timeout=30)
        assert answer.status_code == 202, answer.text

        def all_waiting():
            shown = httpx.get(f"{stack.api}/broadcasts/{name}", timeout=30).json()
            if name == "next_year":  # nobody reached yet: the one moment of their zone is a month away
                return shown if shown["state"] == "waiting" and shown["waiting"] == members else None
            return shown if shown["started"] == members and shown["waiting"] == shown["started"] else None

        waiting = wait_until(all_waiting, 120, "every member to wait for their time")
        printed = cli(stack, "status", name).stdout
        cancelled = httpx.post(f"{stack.api}/broadcasts/{name}/cancel", timeout=30)
        assert cancelled.status_code == 202, cancelled.text

        def done():
            shown = httpx.get(f"{stack.api}/broadcasts/{name}", timeout=30).json()
            return shown if shown["state"] == "cancelled" and shown["waiting"] == 0 else None

        status = wait_until(done, 120, "the broadcast to be cancelled")
        twice = httpx.post(f"{stack.api}/broadcasts/{name}/cancel", timeout=30)
        unknown = httpx.post(f"{stack.api}/broadcasts/nope/start", timeout=30)
    assert status["outcomes"] == {}
    assert not stack.outbox.exists() or f'"{name}"' not in stack.outbox.read_text()
    assert twice.status_code == 409 and "is no longer running (completed)" in twice.json()["detail"]
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no broadcast 'nope'; broadcasts:")
    if name == "next_year":
        moment = datetime.fromisoformat(waiting["next_at"])
        assert waiting["path"] == "batched" and waiting["started"] == 0
        local = (now + timedelta(days=30)).replace(tzinfo=None, second=0)
        assert moment == local.replace(tzinfo=ZoneInfo(daytime_zone(now))).astimezone(UTC)
        assert f"  batched    0 reached, {members} waiting (next send moment {moment:%Y-%m-%dT%H:%MZ})" in printed
    else:
        assert waiting["path"] == "instances" and f"  instances  {members} started, {members} waiting" in printed


def test_a_recurring_broadcast_s_runs_are_listed_with_their_progress(pg_store, tmp_path):
    """A day's run started by hand (its time has passed today, so it sends at once) beside the
    schedule, whose first run is tomorrow's: both in the CLI and the API, and neither started twice."""
    now = datetime.now(UTC).replace(microsecond=0)
    zone = daytime_zone(now)
    with pg_store.transaction() as session:
        for n in range(6):
            data = {"name": f"客户{n}", "phone": f"+86138{n:08d}", "timezone": zone, "tags": ["vip"]}
            if n == 5:
                data["unsubscribed"] = ["sms"]
            created = event("customer.created", now - timedelta(days=1), customer=f"d{n}", **data)
            queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")
    folder = definitions_with_broadcasts(tmp_path, now)
    earlier = now - timedelta(hours=1)
    (folder / "broadcasts" / "daily_vips.yaml").write_text(
        "name: daily_vips\ntitle: 每日关怀\nsegment: vips\nsend: {channel: sms, template: holiday_care}\n"
        f'schedule: {{every: day, time: "{earlier:%H:%M}", zone: UTC}}\nonce_per: 7d\n'
    )
    today, tomorrow = earlier.date(), earlier.date() + timedelta(days=1)
    with Stack(tmp_path, pg_store.url, extra_env={"JOURNEYS_DEFINITIONS": str(folder)}) as stack:
        listed = cli(stack, "list").stdout
        by_hand = cli(stack, "start", f"daily_vips@{today}")
        twice = cli(stack, "start", f"daily_vips@{today}")
        scheduled = cli(stack, "start", "daily_vips")
        again = cli(stack, "start", "daily_vips")

        def sent():
            shown = httpx.get(f"{stack.api}/broadcasts/daily_vips/runs", timeout=30).json()
            # Done, not only every member decided: a batched run's last sweep still runs after that.
            settled = shown and shown[0]["state"] == "done" and shown[0]["waiting"] == 0
            return shown if settled and sum(shown[0]["outcomes"].values()) == 6 else None

        runs = wait_until(sent, 120, "the run's sends")
        printed = cli(stack, "runs", "daily_vips")
        status = cli(stack, "status", "daily_vips")
        one_off = httpx.get(f"{stack.api}/broadcasts/spring_care/runs", timeout=30)
        no_run = httpx.get(f"{stack.api}/broadcasts/daily_vips@2026-02-30", timeout=30)
        unknown = httpx.get(f"{stack.api}/broadcasts/nope@2026-02-03/runs", timeout=30)
        shown = httpx.get(f"{stack.api}/broadcasts/daily_vips", timeout=30).json()
    assert f"daily_vips  segment vips  every day at {earlier:%H:%M} (UTC)  once per 7d  holdout 0  (每日关怀)" in listed
    assert by_hand.returncode == 0, by_hand.stderr
    assert twice.returncode == 1 and "has already been started (a broadcast runs once)" in twice.stderr
    assert scheduled.returncode == 0 and scheduled.stdout.startswith(
        "started daily_vips's schedule: workflow broadcast:daily_vips"
    )
    assert again.returncode == 1 and "is already running" in again.stderr
    (run,) = runs
    assert (run["name"], run["members"], run["started"], run["not_again"]) == (f"daily_vips@{today}", 6, 6, 0)
    assert run["outcomes"] == {"sent": 5, "skipped:unsubscribed": 1}
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [
        f"daily_vips@{today}  done  segment vips: 6 members",
        "  batched    6 reached, 0 waiting",
        "  messages   sent 5, skipped:unsubscribed 1",
    ]
    assert status.stdout.splitlines()[:2] == [
        f"daily_vips  waiting  segment vips  every day at {earlier:%H:%M} (UTC)",
        f"  next run   daily_vips@{tomorrow} from {tomorrow}T{earlier:%H:%M}Z",
    ]
    assert (shown["state"], shown["next_run"], shown["runs"]) == ("waiting", f"daily_vips@{tomorrow}", [])
    assert one_off.status_code == 409 and "is not recurring" in one_off.json()["detail"]
    assert no_run.status_code == 404 and no_run.json()["detail"].startswith("no broadcast 'daily_vips@2026-02-30'")
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no broadcast 'nope'")
