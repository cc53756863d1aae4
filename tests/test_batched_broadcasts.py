"""Batched broadcasts (issue 29): a one-message broadcast decided a page at a time gives exactly
what one instance per member gives, on both databases: the same messages to the same people
through the same channels with the same text, the same skips and reasons (blacklist, SMS
unsubscribes and suppressions, an unusable number, the frequency cap, the coupon's limit), the
same deferrals to the same moments (quiet hours in four time zones, with a DST change in one),
the same control group, and the same effect report. Cancelled mid-way, it sends nothing more;
`journeys validate` says which path each broadcast takes and why.

Both paths run on the production worker (journeys.worker.build_workers, sandbox on) on the
time-skipping test server (journeys.simulate.Simulation), one store each."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from temporalio.testing import ActivityEnvironment

from activities.broadcast_pages import BroadcastPageActivities
from activities.journey import JourneyActivities
from activities.payloads import PageResult, SendPage
from channels.outbox import OutboxChannel
from core.records import Customer
from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.simulate import Simulation
from store import queries
from store.db import Store
from store.effect import Period
from store.tables import DeferralRow, InstanceRow, MessageRow
from tests.conftest import PG_URL
from tests.helpers import event
from tests.stack import JOURNEYS
from views.effect import Prices, effect_report

#: New York moved its clocks on 8 March 2026 (UTC-4 since); Auckland keeps daylight time (UTC+13).
ZONES = ["Asia/Shanghai", "Europe/London", "America/New_York", "Pacific/Auckland"]
BEGIN = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
MEMBERS, OUTSIDERS = 80, 8
SCHEDULES = {
    # One moment for all: 19:00 in Shanghai, 11:00 in London, 07:00 in New York (quiet until 08:00,
    # 12:00Z), midnight in Auckland (quiet until 08:00, 19:00Z).
    "moment": '{at: "2026-03-10T11:00:00+00:00"}',
    # Each zone's own 07:30: quiet hours hold every member half an hour, each zone at its moment.
    "local": '{local_time: "2026-03-10T07:30"}',
}


def definitions_for(directory: Path, path: str, schedule: str, holdout: float = 0.1):
    folder = directory / path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "fans.yaml").write_text("name: fans\ntitle: 粉丝\nwhere: {tag: fan}\n")
    (folder / "broadcasts" / "care.yaml").write_text(
        "name: care\ntitle: 春季关怀\nsegment: fans\n"
        "send: {channel: sms, fallback: email, template: holiday_care, resource: spring_coupon}\n"
        f"schedule: {schedule}\nholdout: {holdout}\ngoal: order.paid\npath: {path}\npage: 7\n"
    )
    return load_definitions(folder)


def customers() -> list[Customer]:
    """Members in four zones; every tenth of a kind the policy treats apart."""
    found = []
    for n in range(MEMBERS + OUTSIDERS):
        kind = n % 10
        fields = {
            "customer_id": f"m{n:03d}",
            "name": f"会员{n}",
            "phone": "12345" if kind == 6 else f"+86139{n:08d}",
            "email": None if kind in (2, 7) else f"fan{n}@example.com",
            "timezone": ZONES[n % 4],
            "locale": "zh-CN" if n % 3 else "en",
            "tags": ["fan"] if n < MEMBERS else [],
            "blacklisted": kind == 2,
            "unsubscribed": ["sms"] if kind in (1, 7) else [],
        }
        found.append(Customer.model_validate(fields))
    return found


def history(store: Store) -> None:
    """Before the broadcast: marketing messages that fill the cap (kind 3), a coupon issued last
    week (kind 4), an SMS suppression at the provider (kind 5)."""
    with store.transaction() as session:
        for n in range(MEMBERS):
            customer_id, kind = f"m{n:03d}", n % 10
            earlier = []
            if kind == 3:
                earlier = [(f"promo{d}", BEGIN - timedelta(days=d), None) for d in (1, 2)]
            if kind == 4:
                earlier = [("coupon", BEGIN - timedelta(days=7), "spring_coupon")]
            for step, at, resource in earlier:
                session.add(
                    MessageRow(
                        id=str(uuid.uuid4()), workflow_id=f"earlier:{customer_id}:{step}", run_id="r", step=step,
                        journey="earlier", journey_version="v", customer_id=customer_id, channel="sms",
                        address=f"+86139{n:08d}", template="t", category="marketing", status="delivered", at=at,
                        updated_at=at, resource=resource,
                    )
                )  # fmt: skip
            if kind == 5:
                queries.add_suppression(session, "sms", f"+86139{n:08d}", "all", "provider 21610", BEGIN)


async def run(store: Store, definitions, *, cancel_at: datetime | None = None, moves: tuple = ()):
    """The broadcast started at BEGIN, the clock run two days; order.paid (the goal) from a few
    members on the 11th. With `cancel_at`, cancelled then."""
    history(store)
    async with Simulation(definitions, store, BEGIN) as sim:
        for customer in customers():
            await sim.create_customer(customer, BEGIN)
        await sim.start_broadcast("care")
        for when, customer_id, zone in moves:  # a member moving zone after the plan
            await sim.emit(event("customer.updated", when, customer=customer_id, timezone=zone))
        if cancel_at is not None:
            await sim.advance_to(cancel_at)
            await sim.client.get_workflow_handle("broadcast:care").signal("cancel")
        await sim.advance_to(BEGIN + timedelta(days=1))
        for n in range(0, MEMBERS, 4):  # the goal, in both groups
            paid = event(
                "order.paid", BEGIN + timedelta(days=1, hours=1), customer=f"m{n:03d}", order=f"o{n}", amount="120.00"
            )
            await sim.emit(paid)
        await sim.advance_to(BEGIN + timedelta(days=2))
        progress = await sim.broadcast_progress("care")
    return progress


def records(store: Store) -> dict[str, object]:
    """What a user can see of the broadcast: messages, deferrals, instances, by customer."""
    with store.transaction() as session:
        messages = {
            row.customer_id: (
                row.status, row.reason, row.channel, row.address, row.template, row.variant, row.locale, row.subject,
                row.body, row.resource, _no_fraction(row.error), row.at.replace(second=0, microsecond=0),
            )
            for row in session.scalars(select(MessageRow).where(MessageRow.journey == "care"))
        }  # fmt: skip
        deferrals = Counter(
            (row.customer_id, row.reason, row.channel, row.resume_at, row.detail)
            for row in session.scalars(select(DeferralRow).where(DeferralRow.journey == "care"))
        )
        instances = {
            row.customer_id: (row.variant, row.exit_reason, row.entered_at.replace(second=0, microsecond=0))
            for row in session.scalars(select(InstanceRow).where(InstanceRow.journey == "care"))
        }
    return {"messages": messages, "deferrals": deferrals, "instances": instances}


def _no_fraction(text: str | None) -> str | None:
    """A detail with the moments it names to the minute: each path's activity ran a moment later
    or earlier on the test server's clock, which moves with real time while work runs."""
    return re.sub(r"(T\d\d:\d\d):\d\d(\.\d+)?", r"\1", text) if text else text


def effect(store: Store, definitions) -> dict:
    period = Period(BEGIN, BEGIN + timedelta(days=3), "UTC")
    report = effect_report(store, definitions, period, Prices(sms=0.05, email=0.01, currency="CNY"), journey="care")
    return report.journeys["care"].model_dump()


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, tmp_path):
    """Two empty stores of one kind: one for each path."""
    if request.param == "sqlite":
        stores = [Store(f"sqlite:///{tmp_path}/{name}.db", durable=False).migrate() for name in ("a", "b")]
        yield stores
        for store in stores:
            store.dispose()
        return
    admin = request.getfixturevalue("pg_admin")
    schemas = [f"journeys_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.connect() as connection:
        for schema in schemas:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    stores = [Store(f"{PG_URL}?options=-csearch_path%3D{schema}").migrate() for schema in schemas]
    yield stores
    for store in stores:
        store.dispose()
    with admin.connect() as connection:
        for schema in schemas:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
async def test_a_batched_broadcast_gives_exactly_what_one_instance_per_member_gives(two_stores, tmp_path, schedule):
    batched_store, instances_store = two_stores
    batched = definitions_for(tmp_path, "batched", SCHEDULES[schedule])
    each = definitions_for(tmp_path, "instances", SCHEDULES[schedule])
    progress = await run(batched_store, batched)
    await run(instances_store, each)
    got, expected = records(batched_store), records(instances_store)

    assert progress.path == "batched" and progress.state == "done" and progress.total == MEMBERS
    for kind in ("messages", "instances"):
        differ = {
            key: (got[kind].get(key), expected[kind].get(key))
            for key in {*got[kind], *expected[kind]}
            if got[kind].get(key) != expected[kind].get(key)
        }
        assert not differ, (kind, differ)
    assert got["deferrals"] == expected["deferrals"]
    assert effect(batched_store, batched) == effect(instances_store, each)

    # ... and what they both give is the policy's answer for each member.
    messages = got["messages"]
    assert set(got["instances"]) == {f"m{n:03d}" for n in range(MEMBERS)}  # the segment, nobody else
    held_out = {c for c, (variant, reason, _) in got["instances"].items() if variant == "holdout"}
    assert held_out and set(messages) == set(got["instances"]) - held_out
    outcome = Counter((status, reason, channel) for status, reason, channel, *_ in messages.values())
    for expected_outcome in [
        ("sent", None, "sms"),
        ("sent", None, "email"),  # SMS unsubscribed, suppressed or an unusable number: by email
        ("skipped", "blacklisted", None),
        ("skipped", "unsubscribed", None),  # SMS unsubscribed and no email
        ("skipped", "frequency_cap", "sms"),
        ("skipped", "resource_limit", "sms"),
    ]:
        assert outcome[expected_outcome], (expected_outcome, outcome)
    for customer_id, (status, _reason, channel, *rest) in messages.items():
        if int(customer_id[1:]) % 10 == 6 and status == "sent":  # an unusable number: by email, and why
            assert channel == "email" and "12345" in (rest[-2] or ""), rest
    assert progress.counts.sent == outcome[("sent", None, "sms")] + outcome[("sent", None, "email")]
    assert progress.counts.held_out == len(held_out) and progress.counts.deferred == 0
    assert sum(progress.counts.skipped.values()) == sum(n for (s, *_), n in outcome.items() if s == "skipped")

    # Deferred by quiet hours in their own zone, and sent at its end there.
    deferred = {customer_id: resume_at for customer_id, _, _, resume_at, _ in got["deferrals"]}
    if schedule == "moment":
        ends = {"America/New_York": datetime(2026, 3, 10, 12, 0, tzinfo=UTC),
                "Pacific/Auckland": datetime(2026, 3, 10, 19, 0, tzinfo=UTC)}  # fmt: skip
    else:
        # 07:30 in Shanghai and Auckland passed before the start (23:30Z and 18:30Z on the 9th):
        # their members are decided at once, in their daytime; London and New York wait for theirs.
        ends = {"Europe/London": datetime(2026, 3, 10, 8, 0, tzinfo=UTC),
                "America/New_York": datetime(2026, 3, 10, 12, 0, tzinfo=UTC)}  # fmt: skip
    zone_of = {c.customer_id: c.timezone for c in customers()}
    assert deferred and {zone_of[c] for c in deferred} == set(ends)
    for customer_id, resume_at in deferred.items():
        assert resume_at == ends[zone_of[customer_id]]
        if messages[customer_id][0] == "sent":
            assert messages[customer_id][-1] == resume_at


async def test_a_batched_broadcast_cancelled_mid_way_sends_nothing_more(tmp_path):
    """Each zone's 07:30: Auckland's and Shanghai's had passed at the start (18:30Z and 23:30Z on
    the 9th), so their members are decided at once. Cancelled at 05:00Z, London's and New York's
    members (07:30 there is 07:30Z and 11:30Z) get nothing, and nobody stays waiting."""
    store = Store(f"sqlite:///{tmp_path}/cancel.db", durable=False).migrate()
    definitions = definitions_for(tmp_path, "batched", SCHEDULES["local"])
    progress = await run(store, definitions, cancel_at=datetime(2026, 3, 10, 5, 0, tzinfo=UTC))
    found = records(store)
    store.dispose()
    zone_of = {c.customer_id: c.timezone for c in customers()}
    reached = Counter(zone_of[c] for c in found["instances"])
    assert set(reached) == {"Asia/Shanghai", "Pacific/Auckland"}, reached
    assert {zone_of[c] for c in found["messages"]} == {"Asia/Shanghai", "Pacific/Auckland"}
    assert all(reason != "cancelled" for _, reason, _ in found["instances"].values())
    assert progress.state == "cancelled" and progress.next_at is None
    assert progress.counts.decided == len(found["instances"]) and progress.counts.deferred == 0


def test_validate_says_which_path_each_broadcast_takes_and_why(tmp_path):
    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "fans.yaml").write_text("name: fans\nwhere: {tag: fan}\n")
    base = (
        "segment: fans\nsend: {channel: sms, template: holiday_care%s}\nschedule: {at: '2027-01-01T10:00:00+08:00'}\n"
    )
    (folder / "broadcasts" / "plain.yaml").write_text("name: plain\n" + base % "")
    (folder / "broadcasts" / "each.yaml").write_text("name: each\npath: instances\n" + base % "")
    (folder / "broadcasts" / "waits.yaml").write_text("name: waits\n" + base % ", deadline: \"'2027-01-02T00:00:00Z'\"")
    checked = subprocess.run([JOURNEYS, "validate", str(folder)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert (
        "broadcast plain: batched (one send to each member: decided a page at a time, one timer per send moment)"
        in lines
    )
    assert "broadcast each: instances (the file asks for it (path: instances))" in lines
    assert any(line.startswith("broadcast waits: instances (its send has a deadline: ") for line in lines), lines

    (folder / "broadcasts" / "forced.yaml").write_text(
        "name: forced\npath: batched\n" + base % ", deadline: \"'2027-01-02T00:00:00Z'\""
    )
    refused = subprocess.run([JOURNEYS, "validate", str(folder)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "forced.yaml" in refused.stdout + refused.stderr
    assert "path: batched cannot run this broadcast: its send has a deadline" in refused.stdout + refused.stderr


async def test_a_member_who_moves_zone_after_the_plan_still_gets_the_broadcast_once(tmp_path):
    """m001 lives in London when the broadcast plans its moments (07:30 in each zone) and moves to
    Shanghai, whose 07:30 has passed, before London's comes: London's moment finds nobody of
    theirs, and the last sweep decides them then, once."""
    store = Store(f"sqlite:///{tmp_path}/moves.db", durable=False).migrate()
    definitions = definitions_for(tmp_path, "batched", SCHEDULES["local"])
    moved = (BEGIN + timedelta(hours=1), "m001", "Asia/Shanghai")
    progress = await run(store, definitions, moves=(moved,))
    found = records(store)
    store.dispose()
    assert set(found["instances"]) == {f"m{n:03d}" for n in range(MEMBERS)}  # everybody reached
    status, reason, channel, *_, at = found["messages"]["m001"]
    assert (status, reason, channel) == ("sent", None, "email")  # kind 1: SMS unsubscribed, so by email
    assert at >= datetime(2026, 3, 10, 11, 30, tzinfo=UTC)  # at the sweep, after the last zone's moment
    assert progress.state == "done" and progress.counts.decided == MEMBERS and progress.counts.deferred == 0


class CrashingOutbox(OutboxChannel):
    """The outbox, three messages a bulk call, whose worker dies in its second bulk call (after
    claiming its messages, before the provider took them)."""

    bulk_limit = 3

    def __init__(self, path: Path, crash_on: int | None = 2):
        super().__init__("sms", path)
        self.calls, self.crash_on = 0, crash_on

    def send_many(self, messages):
        self.calls += 1
        if self.calls == self.crash_on:
            raise SystemExit("worker killed mid-page")
        return super().send_many(messages)


def test_a_page_tried_again_after_its_worker_died_mid_page_sends_each_member_once(store, tmp_path):
    """The page's worker dies in its second bulk call: three members were sent, three were being
    handed over (in doubt), four were never begun. The page tried again settles the three in
    doubt the channel's way (the outbox looks for their lines), sends the four, and nobody twice."""
    definitions = definitions_for(tmp_path, "batched", '{at: "2026-03-10T11:00:00+00:00"}', holdout=0)
    _broadcast, snapshot = definitions.broadcasts["care"]
    outbox = tmp_path / "outbox.jsonl"
    with store.transaction() as session:
        for n in range(10):
            customer = Customer(customer_id=f"c{n:03d}", phone=f"+86139{n:08d}", timezone="Asia/Shanghai", tags=["fan"])
            queries.upsert_customer(session, customer, BEGIN, "CN")
    moment = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
    page = SendPage(
        snapshot=snapshot, broadcast="care", customer_ids=[f"c{n:03d}" for n in range(10)], run_id="run-1", at=moment,
        due=moment, entered_at=BEGIN,
    )  # fmt: skip

    def attempt(channel) -> PageResult:
        sends = JourneyActivities(store, {"sms": channel, "email": channel}, "shop", default_region="CN",
                                  policy=definitions.policy)  # fmt: skip
        return ActivityEnvironment().run(BroadcastPageActivities(store, sends).send_broadcast_page, page)

    with pytest.raises(SystemExit):
        attempt(CrashingOutbox(outbox))
    with store.transaction() as session:
        rows = session.scalars(select(MessageRow).where(MessageRow.journey == "care")).all()
    assert Counter(row.status for row in rows) == {"sent": 3, "sending": 7}
    assert sum(row.attempted_at is not None for row in rows if row.status == "sending") == 3  # in doubt: begun
    result = attempt(CrashingOutbox(outbox, crash_on=None))
    lines = Counter(json.loads(line)["customer_id"] for line in outbox.read_text().splitlines())
    assert lines == {f"c{n:03d}": 1 for n in range(10)}
    with store.transaction() as session:
        rows = session.scalars(select(MessageRow).where(MessageRow.journey == "care")).all()
    assert Counter(row.status for row in rows) == {"sent": 10} and result.counts.sent == 10
