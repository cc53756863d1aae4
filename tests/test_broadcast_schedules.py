"""Recurring broadcasts (定时批量发送): which dates a schedule runs on and when each run starts
(month ends, a zone without DST and one with it), the file's problems as `file:line`, a daily
campaign over a simulated month (one run a day, each member once a run, a run started by hand
not started again, a worker restarted mid-month), once_per, and "card expiring in 7 days" end to
end through `simulate` with a segment on a customer trait."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from channels import build_channels
from core.config import Settings
from core.records import Customer, apply_customer_event
from definitions.broadcasts import Broadcast, BroadcastSchedule, not_again, run_journey
from definitions.loader import PACKAGE_DIR, check_definitions, load_definitions
from journeys.simulate import TASK_QUEUE, Simulation, simulate
from journeys.worker import build_workers
from store import queries, segments
from store.db import Store
from store.tables import InstanceRow, MessageRow
from tests.helpers import event
from triggers import broadcasts
from workflows.broadcast import RecurringBroadcastWorkflow

# ------------------------------------------------------------------ dates and moments


def schedule(**fields) -> BroadcastSchedule:
    return BroadcastSchedule.model_validate(fields)


def days(found: list[date]) -> list[str]:
    return [d.isoformat() for d in found]


def test_the_dates_of_daily_weekly_and_monthly_runs():
    daily = schedule(every="day", time="09:00", start="2026-12-30", end="2027-01-02")
    assert daily.next_run(date(2026, 1, 1)) == date(2026, 12, 30)
    assert [daily.next_run(date(2026, 12, 31)), daily.next_run(date(2027, 1, 2))] == [date(2027, 1, 1), None]

    weekly = schedule(every="week", weekdays=["mon", "thu"], time="09:00")
    found, day = [], date(2026, 12, 5)  # a Saturday
    for _ in range(4):
        day = weekly.next_run(day)
        found.append(f"{day:%a %m-%d}")
    assert found == ["Mon 12-07", "Thu 12-10", "Mon 12-14", "Thu 12-17"]

    # The 31st: a 30-day month and February (leap or not) run on their last day.
    month_end = schedule(every="month", day=31, time="10:00")
    found, day = [], date(2026, 12, 31)
    for _ in range(6):
        day = month_end.next_run(day)
        found.append(day)
    assert days(found) == ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31", "2027-06-30"]
    assert month_end.next_run(date(2028, 1, 31)) == date(2028, 2, 29)
    assert schedule(every="month", day=30, time="10:00").next_run(date(2027, 1, 30)) == date(2027, 2, 28)
    assert schedule(every="month", day=1, time="10:00").next_run(date(2026, 12, 1)) == date(2027, 1, 1)


@pytest.mark.parametrize(
    ("zone", "day", "starts"),
    [
        # Each customer's own zone: a run starts when its time is first reached, at UTC+14.
        (None, "2026-12-03", "2026-12-02T19:00:00+00:00"),
        # China keeps one offset all year.
        ("Asia/Shanghai", "2026-03-07", "2026-03-07T01:00:00+00:00"),
        ("Asia/Shanghai", "2026-07-07", "2026-07-07T01:00:00+00:00"),
        # New York moves its clocks on 2026-03-08: 09:00 is 14:00Z before, 13:00Z after.
        ("America/New_York", "2026-03-07", "2026-03-07T14:00:00+00:00"),
        ("America/New_York", "2026-03-09", "2026-03-09T13:00:00+00:00"),
        ("America/New_York", "2026-11-02", "2026-11-02T14:00:00+00:00"),
    ],
)
def test_when_a_run_starts_in_a_zone_with_and_without_dst(zone, day, starts):
    daily = schedule(every="day", time="09:00", **({"zone": zone} if zone else {}))
    assert daily.run_starts(date.fromisoformat(day)).isoformat() == starts


def test_the_runs_a_window_holds_and_the_earlier_runs_once_per_leaves_out():
    shanghai = schedule(every="week", weekdays=["mon", "fri"], time="10:00", zone="Asia/Shanghai")
    begin, until = datetime(2026, 12, 4, 2, 0, tzinfo=UTC), datetime(2026, 12, 14, 2, 0, tzinfo=UTC)
    # Friday the 4th at 10:00 Shanghai is 02:00Z: the window's first moment; Monday the 14th its last.
    assert days(shanghai.runs_between(begin, until)) == ["2026-12-04", "2026-12-07", "2026-12-11", "2026-12-14"]
    assert days(shanghai.runs_between(begin + timedelta(seconds=1), until)) == [
        "2026-12-07",
        "2026-12-11",
        "2026-12-14",
    ]
    weekly = Broadcast.model_validate(
        {"name": "care", "segment": "s", "send": {"template": "t"}, "schedule": shanghai.model_dump(), "once_per": "7d"}
    )
    # Within 7 days of run dates: the runs of the 6 days before (Monday's reaches back to Friday).
    assert not_again(weekly, date(2026, 12, 7)) == [run_journey("care", date(2026, 12, 4))]
    assert not_again(weekly, date(2026, 12, 11)) == [run_journey("care", date(2026, 12, 7))]
    daily = weekly.model_copy(update={"schedule": schedule(every="day", time="10:00"), "once_per": "3d"})
    assert not_again(daily, date(2026, 12, 3)) == ["care_20261202", "care_20261201"]


# ------------------------------------------------------------------ problems in the file


@pytest.fixture
def folder(tmp_path):
    copied = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, copied, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copied


@pytest.mark.parametrize(
    ("schedule_lines", "problem"),
    [
        (
            'schedule:\n  every: week\n  weekdays: [mon, thur]\n  time: "10:00"\n',
            ":6: schedule.weekdays[1]: 'thur' is not one of mon, tue, wed, thu, fri, sat, sun",
        ),
        (
            'schedule: {every: week, time: "10:00"}\n',
            ":4: schedule: Value error, weekdays (mon ... sun) go with every: week",
        ),
        (
            'schedule: {every: month, day: 32, time: "10:00"}\n',
            ":4: schedule.day: 32: Input should be less than or equal to 31",
        ),
        (
            'schedule: {every: fortnight, time: "10:00"}\n',
            ":4: schedule.every: 'fortnight' is not one of day, week, month",
        ),
        (
            'schedule: {every: day, time: "25:00"}\n',
            ":4: schedule.time: '25:00': Input should be in a valid time format",
        ),
        ('schedule: {every: day, time: "10:00", zone: Asia/Shangai}\n', "'Asia/Shangai' is not an IANA time zone"),
        ("schedule: {every: day}\n", "every: day needs a time"),
        ('schedule: {local_time: "2027-02-06T10:00", every: day, time: "10:00"}\n', "give one of local_time"),
        ('schedule: {local_time: "2027-02-06T10:00", weekdays: [mon]}\n', "weekdays: only for a recurring schedule"),
        ('schedule: {every: day, time: "10:00"}\nonce_per: 12h\n', "once_per: '12h' is not a whole number of days"),
        (
            'schedule: {every: day, time: "10:00"}\nonce_per: 30 days\n',
            ":5: once_per: '30 days': String should match pattern",
        ),
        ('schedule: {local_time: "2027-02-06T10:00"}\nonce_per: 30d\n', "once_per is for a recurring schedule"),
    ],
)
def test_a_schedule_s_problems_name_the_file_and_line(folder, schedule_lines, problem):
    path = folder / "broadcasts" / "daily_care.yaml"
    path.write_text(
        "name: daily_care\nsegment: lapsing_valuable\nsend: {channel: sms, template: holiday_care}\n" + schedule_lines
    )
    loaded, problems = check_definitions(folder)
    assert "daily_care" not in loaded.broadcasts
    mine = [line for line in problems if line.startswith(str(path))]
    assert mine and problem in mine[0], problems
    assert "spring_festival_care" in loaded.broadcasts  # the one-off broadcast beside it still loads


def test_a_recurring_broadcast_loads_beside_a_one_off(folder):
    (folder / "broadcasts" / "daily_care.yaml").write_text(
        "name: daily_care\ntitle: 每日关怀\nsegment: lapsing_valuable\nsend: {channel: sms, template: holiday_care}\n"
        'schedule: {every: week, weekdays: [mon, thu], time: "10:00", zone: Asia/Shanghai}\nonce_per: 30d\n'
    )
    loaded = load_definitions(folder)
    broadcast, snapshot = loaded.broadcasts["daily_care"]
    assert broadcast.schedule.describe() == "every week on mon, thu at 10:00 (Asia/Shanghai)"
    assert broadcast.once_per_days == 30 and snapshot.definition.name == "daily_care"
    assert loaded.broadcasts["spring_festival_care"][0].schedule.describe() == "2027-02-06T10:00:00 local"


# ------------------------------------------------------------------ the store's side, both databases


def add_customer(store, customer_id: str, when: datetime, **data) -> None:
    data = {"name": "王芳", "phone": f"+86139{int(customer_id[1:]):08d}", "timezone": "Asia/Shanghai", **data}
    created = event("customer.created", when, customer=customer_id, **data)
    with store.transaction() as session:
        queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")


def test_a_trait_date_within_the_next_days(store, definitions):
    from core.audience import Segment

    now = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    expiring = {"c1": "2026-03-01", "c2": "2026-03-08", "c3": "2026-03-09", "c4": "2026-02-28",
                "c5": "2026-03-08T23:00:00+08:00", "c6": None}  # fmt: skip
    for customer_id, expires in expiring.items():
        add_customer(store, customer_id, now, traits={"card_expires_on": expires} if expires else {})
    segment = Segment.model_validate(
        {"name": "card_expiring", "where": {"trait": "card_expires_on", "within_next_days": 7}}
    )
    with store.transaction() as session:
        found = [m.customer_id for m in segments.members(session, segment, now, definitions.rfm)]
        later = [m.customer_id for m in segments.members(session, segment, now + timedelta(days=2), definitions.rfm)]
    assert found == ["c1", "c2", "c5"]
    assert later == ["c2", "c3", "c5"]


def test_an_earlier_run_reached_a_customer_unless_its_message_was_skipped(store):
    at = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    with store.transaction() as session:
        for customer_id, journey, status in (
            ("c1", "card_20260301", "sent"), ("c2", "card_20260301", "skipped"), ("c3", "card_20260301", None),
            ("c4", "card_20260201", "sent"), ("c5", "other_20260301", "sent"), ("c6", "card_20260301", "failed"),
        ):  # fmt: skip
            workflow_id = f"{journey}:{customer_id}"
            session.add(InstanceRow(workflow_id=workflow_id, run_id="r", journey=journey, journey_version="v",
                                    customer_id=customer_id, variant="holdout" if status is None else "send",
                                    entered_at=at))  # fmt: skip
            if status:
                session.add(
                    MessageRow(
                        id=f"m-{customer_id}", workflow_id=workflow_id, run_id="r", step="send", journey=journey,
                        journey_version="v", customer_id=customer_id, channel="sms", template="t",
                        category="marketing", status=status, at=at, updated_at=at,
                    )
                )  # fmt: skip
    ids = [f"c{n}" for n in range(1, 8)]
    with store.transaction() as session:
        # c1 was sent it, c3 held out (the control stays the control); c2 and c6 got nothing.
        assert queries.reached_by_runs(session, ids, ["card_20260301", "card_20260228"]) == {"c1", "c3"}
        assert queries.reached_by_runs(session, ids, []) == set()
        assert queries.run_journeys(session, "card_") == ["card_20260201", "card_20260301"]


def test_a_recurring_broadcast_s_dry_run_is_its_next_run_s_without_those_once_per_leaves_out(store, folder):
    definitions = daily_definitions(folder, once_per="3d")
    now = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    for customer_id, zone in ZONES.items():
        add_customer(store, customer_id, now - timedelta(days=1), timezone=zone, tags=["vip"])
    with store.transaction() as session:  # yesterday's run reached c1 (its message still waiting)
        session.add(InstanceRow(workflow_id="daily_care_20260302:c1", run_id="r", journey="daily_care_20260302",
                                journey_version="v", customer_id="c1", variant="send", entered_at=now))  # fmt: skip
    found = broadcasts.dry_run(store, definitions, "daily_care", now, default_region="CN")
    # The 2nd's run started at 20:00Z on the 1st (10:00 at UTC+14): the next is the 3rd's.
    assert (found.name, found.members, found.held_out) == ("daily_care@2026-03-03", 3, 0)
    assert found.outcomes == {"not_again:once_per": 1, "send:sms": 2}
    assert (found.first_send.isoformat(), found.last_send.isoformat()) == (
        "2026-03-03T10:00:00+00:00", "2026-03-03T15:00:00+00:00",
    )  # fmt: skip
    with pytest.raises(broadcasts.UnknownBroadcast, match="no broadcast 'daily_care@2026-02-30'"):
        broadcasts.dry_run(store, definitions, "daily_care@2026-02-30", now, default_region="CN")


def test_a_dry_run_gives_a_full_cap_the_send_step_s_deadline_as_the_run_would(store, folder):
    """The shipped marketing cap (2 in 7 days) is full for c1 and c2 at the send time (10:00 on
    3 March, Shanghai). The send step's deadline (`now + days(2)`, at the send step: 5 March
    10:00) is the member's own: c1's window frees on the 4th, before it, so the run would defer
    c1's message to that slot; c2's frees on the 9th, after it: skipped. c3 has room: sent."""
    (folder / "segments" / "vips.yaml").write_text("name: vips\nwhere: {tag: vip}\n")
    (folder / "broadcasts" / "march_offer.yaml").write_text(
        "name: march_offer\ntitle: 三月特惠\nsegment: vips\n"
        'send: {channel: sms, template: holiday_care, deadline: "now + days(2)"}\n'
        'schedule: {at: "2026-03-03T10:00:00+08:00"}\n'
    )
    definitions = load_definitions(folder)
    now, send_at = datetime(2026, 3, 2, 0, 0, tzinfo=UTC), datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    for customer_id in ("c1", "c2", "c3"):
        add_customer(store, customer_id, now - timedelta(days=30), tags=["vip"])
    sent_before = {"c1": timedelta(days=6), "c2": timedelta(days=1)}  # two marketing messages, that long before
    with store.transaction() as session:
        for customer_id, back in sent_before.items():
            for n in range(2):
                when = send_at - back + timedelta(minutes=n)
                session.add(
                    MessageRow(id=f"{customer_id}-{n}", workflow_id=f"weekly_promo:{customer_id}", run_id="r",
                               step=f"promo{n}", journey="weekly_promo", journey_version="v", customer_id=customer_id,
                               channel="sms", template="promo", category="marketing", status="sent", at=when,
                               updated_at=when, segments=1)
                )  # fmt: skip
    found = broadcasts.dry_run(store, definitions, "march_offer", now, default_region="CN")
    assert found.outcomes == {"defer:sms": 1, "skip:frequency_cap": 1, "send:sms": 1}
    assert found.first_send == found.last_send == send_at


# ------------------------------------------------------------------ a month of daily runs on Temporal

ZONES = {"c1": "Asia/Shanghai", "c2": "America/New_York", "c3": "Europe/London"}


def daily_definitions(folder, once_per: str | None = None):
    """A daily campaign to the VIPs, without the shipped marketing cap (2 in 7 days) it would meet."""
    (folder / "policy.yaml").write_text("quiet_hours:\n  - hours: 22:00-08:00\ncaps: []\n")
    (folder / "segments" / "vips.yaml").write_text("name: vips\nwhere: {tag: vip}\n")
    (folder / "broadcasts" / "daily_care.yaml").write_text(
        "name: daily_care\ntitle: 每日关怀\nsegment: vips\nsend: {channel: sms, template: holiday_care}\n"
        'schedule: {every: day, time: "10:00"}\n' + (f"once_per: {once_per}\n" if once_per else "")
    )
    return load_definitions(folder)


def customers() -> list[Customer]:
    return [
        Customer(customer_id=c, name=f"客户{c}", phone=f"+861390000000{c[1]}", timezone=zone, tags=["vip"])
        for c, zone in ZONES.items()
    ]


async def restart_workers(sim: Simulation) -> None:
    """Stop the simulation's workers and start new ones, as a deployment restarts its worker. The
    new ones cache no workflow, so each task replays its history (and the test server, whose clock
    does not move while a task waits on a stopped worker's sticky queue, never has one to wait on);
    the first restart, before anything runs, is for that."""
    for worker in reversed(sim.workers):
        await worker.__aexit__(None, None, None)
    settings = Settings.embedded(
        task_queue=TASK_QUEUE, shop_name=sim.shop_name, rate_limits={}, worker_cached_workflows=0
    )
    sim.workers = build_workers(
        sim.client, settings, sim.store, sim._executor, build_channels(None), policy=sim.definitions.policy
    )
    for worker in sim.workers:
        await worker.__aenter__()


async def test_a_daily_schedule_starts_one_run_a_day_each_member_once_across_a_worker_restart(folder, tmp_path):
    definitions = daily_definitions(folder)
    begin = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    store = Store(f"sqlite:///{tmp_path}/month.db", durable=False).migrate()
    async with Simulation(definitions, store, begin) as sim:
        await restart_workers(sim)
        for customer in customers():
            await sim.create_customer(customer, begin)
        started = await broadcasts.start(sim.client, definitions, "daily_care", TASK_QUEUE, now=begin,
                                         clock_offset=sim.offset)  # fmt: skip
        assert started == "broadcast:daily_care"
        with pytest.raises(broadcasts.BroadcastError, match="is already running"):
            await broadcasts.start(
                sim.client, definitions, "daily_care", TASK_QUEUE, now=begin, clock_offset=sim.offset
            )
        # The run of the 5th started by hand, early: the schedule finds it started, and starts nobody again.
        await broadcasts.start(sim.client, definitions, "daily_care@2026-03-05", TASK_QUEUE, now=begin,
                               clock_offset=sim.offset)  # fmt: skip
        await sim.advance_to(datetime(2026, 3, 14, 12, 0, tzinfo=UTC))
        await restart_workers(sim)
        await sim.advance_to(datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
        with pytest.raises(broadcasts.BroadcastError, match="has already been started"):
            await broadcasts.start(sim.client, definitions, "daily_care@2026-03-20", TASK_QUEUE, now=await sim.now(),
                                   clock_offset=sim.offset)  # fmt: skip
        schedule = await sim.client.get_workflow_handle("broadcast:daily_care").query(
            RecurringBroadcastWorkflow.progress
        )
        progress = [await sim.broadcast_progress(f"daily_care@2026-03-{n:02d}") for n in range(2, 32)]
        records = [r for r in sim.records() if r["journey"].startswith("daily_care_")]
    store.dispose()
    # 10:00 on 1 March is reached first at UTC+14 on 28 February at 20:00Z, before the start: the
    # first run is the 2nd's; the 31st's starts on the 30th (UTC) and April's first on the 31st.
    assert schedule.runs == [f"daily_care@2026-03-{n:02d}" for n in range(2, 32)] + ["daily_care@2026-04-01"]
    assert (schedule.state, schedule.already, schedule.missed) == ("waiting", 1, [])
    assert schedule.next_run == "daily_care@2026-04-02"
    assert [p.total for p in progress] == [3] * 30 and [p.started + p.already for p in progress] == [3] * 30
    sent = Counter((r["journey"], r["customer_id"]) for r in records)
    assert set(sent.values()) == {1}  # each member once a run
    by_day = Counter(r["journey"] for r in records)
    assert sorted(by_day) == [f"daily_care_202603{n:02d}" for n in range(2, 32)]
    # 10:00 in each customer's own zone: New York's clocks move on 8 March, London's on 29 March.
    at = {(r["journey"][-2:], r["customer_id"]): r["at"] for r in records}
    assert (at[("02", "c1")], at[("02", "c2")], at[("02", "c3")]) == (
        "2026-03-02T02:00:00Z", "2026-03-02T15:00:00Z", "2026-03-02T10:00:00Z",
    )  # fmt: skip
    assert (at[("09", "c2")], at[("30", "c3")]) == ("2026-03-09T14:00:00Z", "2026-03-30T09:00:00Z")
    assert all(r["status"] == "sent" for r in records)


async def test_once_per_keeps_a_customer_from_the_campaign_for_its_window(folder, tmp_path):
    definitions = daily_definitions(folder, once_per="3d")
    begin = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    store = Store(f"sqlite:///{tmp_path}/once.db", durable=False).migrate()
    async with Simulation(definitions, store, begin) as sim:
        for customer in customers():
            await sim.create_customer(customer, begin)
        await broadcasts.start(sim.client, definitions, "daily_care", TASK_QUEUE, now=begin, clock_offset=sim.offset)
        await sim.advance_to(datetime(2026, 3, 9, 0, 0, tzinfo=UTC))
        progress = [await sim.broadcast_progress(f"daily_care@2026-03-{n:02d}") for n in range(2, 9)]
        records = [r for r in sim.records() if r["journey"].startswith("daily_care_")]
    store.dispose()
    # Runs of the 2nd to the 8th: a member reached on the 2nd is left out on the 3rd and 4th.
    assert [(p.total, p.started, p.not_again) for p in progress] == [
        (3, 3, 0), (3, 0, 3), (3, 0, 3), (3, 3, 0), (3, 0, 3), (3, 0, 3), (3, 3, 0),
    ]  # fmt: skip
    assert sorted({r["journey"] for r in records}) == [
        "daily_care_20260302",
        "daily_care_20260305",
        "daily_care_20260308",
    ]
    assert len(records) == 9


# ------------------------------------------------------------------ card expiring in 7 days, end to end


async def test_card_expiring_in_7_days_runs_daily_in_a_simulation(folder):
    (folder / "segments" / "card_expiring.yaml").write_text(
        "name: card_expiring\ntitle: 会员卡7天内到期\nwhere: {trait: card_expires_on, within_next_days: 7}\n"
    )
    (folder / "templates" / "card_expiring.yaml").write_text(
        'sms:\n  zh-CN: "{{ customer.name }}，您的会员卡将于{{ customer.traits.card_expires_on }}到期，续卡享9折。"\n'
    )
    (folder / "broadcasts" / "card_expiring.yaml").write_text(
        "name: card_expiring\ntitle: 会员卡到期提醒\nsegment: card_expiring\n"
        "send: {channel: sms, template: card_expiring}\n"
        'schedule: {every: day, time: "10:00", zone: Asia/Shanghai}\nonce_per: 30d\n'
    )
    definitions = load_definitions(folder)
    begin, until = datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    expires = {"c1": "2026-03-05", "c2": "2026-03-20", "c3": "2026-04-20", "c4": "2026-03-10"}
    people = [
        Customer(customer_id=c, name=f"客户{c[1]}", phone=f"+861380000000{c[1]}", timezone="Asia/Shanghai",
                 traits={"card_expires_on": day}, unsubscribed=["sms"] if c == "c4" else [])
        for c, day in expires.items()
    ] + [Customer(customer_id="c5", name="客户5", phone="+8613800000005", timezone="Asia/Shanghai")]  # fmt: skip
    events = [event("customer.updated", begin, customer="c5", event_id="e-c5", name="客户5")]
    report = await simulate(definitions, people, events, until, shards=1)
    # Split across two processes (each its own server, schedule and store), the same runs and counts.
    sharded = await simulate(definitions, people, events, until, shards=2)
    assert [line for line in sharded.summary_lines() if "card_expiring" in line] == [
        line for line in report.summary_lines() if "card_expiring" in line
    ]
    mine = [r for r in report.messages if r["journey"].startswith("card_expiring_")]
    # To the minute: the time-skipping server's clock runs on while a loaded machine works the
    # run's activities (a full run once saw 02:00:02).
    sent = [(r["at"][:16], r["customer_id"], r["body"]) for r in mine if r["status"] == "sent"]
    # c1 on the first run (its card expires within 7 days already), c2 seven days before the 20th;
    # once_per keeps both from the runs after; c3's card expires in April, c5 has none.
    assert sent == [
        ("2026-03-01T02:00", "c1", "【Journeys】客户1，您的会员卡将于2026-03-05到期，续卡享9折。 退订回T"),
        ("2026-03-13T02:00", "c2", "【Journeys】客户2，您的会员卡将于2026-03-20到期，续卡享9折。 退订回T"),
    ]
    # c4 unsubscribed: each day's message is skipped, which is not reaching them, so each run tries.
    skipped = [(r["journey"], r["reason"]) for r in mine if r["customer_id"] == "c4"]
    assert skipped == [(f"card_expiring_202603{n:02d}", "unsubscribed") for n in range(3, 11)]
    assert (
        "broadcast card_expiring: every day at 10:00 (Asia/Shanghai), 31 runs from card_expiring@2026-03-01 to "
        "card_expiring@2026-03-31, segment card_expiring: 21 members, 10 reached, 11 not again (once_per 30d)"
    ) in report.summary_lines()
