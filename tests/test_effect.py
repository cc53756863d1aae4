"""The effect report on a fixture month, against figures computed by hand, on SQLite and
PostgreSQL: the conversion rule at its edges, revenue and 回款 with the order's amount, cost and
ROI, each journey's own credit with totals deduplicated by order, the holdout's uplift with its
interval, grouping by step, channel, variant and day, and the result indicators."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from store import queries
from store.effect import Period
from store.tables import DeferralRow, InstanceRow, MessageRow, ProviderEventRow
from tests.helpers import at, event, shipped_definitions_with
from views.effect import Prices, csv_rows, effect_report, newcombe, report_lines, wilson

FEB = Period(at("2026-02-01 00:00+08:00"), at("2026-03-01 00:00+08:00"), "Asia/Shanghai")
PRICES = Prices(sms=0.05, email=0.01, currency="CNY")
T = at("2026-02-10 10:00+08:00")


def message(journey, key, when, *, status="sent", channel="sms", customer="c1", order=None, step="remind", **more):
    return MessageRow(
        id=str(uuid.uuid4()),
        workflow_id=f"{journey}:{key}",
        run_id="r1",
        step=step,
        journey=journey,
        journey_version="v1",
        customer_id=customer,
        order_id=order,
        channel=channel,
        template=step,
        category="transactional",
        status=status,
        at=when,
        updated_at=when,
        segments=more.pop("segments", 1 if channel == "sms" and status != "skipped" else None),
        **more,
    )


def order_events(order, customer, *, created=None, paid=None, amount=None, paid_amount=None, refunded=None):
    found = []
    if created:
        found.append(
            event("order.created", created, customer=customer, order=order, **({"amount": amount} if amount else {}))
        )
    if paid:
        data = {"amount": paid_amount} if paid_amount else {}
        found.append(event("order.paid", paid, customer=customer, order=order, **data))
    if refunded:
        found.append(event("order.refunded", refunded, customer=customer, order=order))
    return found


def instance(journey, key, entered, variant=None, customer=None, order=None):
    return InstanceRow(
        workflow_id=f"{journey}:{key}",
        run_id="r1",
        journey=journey,
        journey_version="v1",
        customer_id=customer or key,
        order_id=order,
        variant=variant,
        entered_at=entered,
    )


def load(store, rows, events):
    with store.transaction() as session:
        session.add_all(rows)
        session.flush()
        queries.store_events(session, events, FEB.end)


@pytest.fixture
def month(store):
    """催付 over February: nine orders, each an edge of the rule."""
    h, d, s = timedelta(hours=1), timedelta(days=1), timedelta(seconds=1)
    pr = "payment_reminder"
    rows = [
        instance(pr, f"o{n}", T - timedelta(minutes=15), customer=f"c{n}", order=f"o{n}") for n in range(1, 10)
    ] + [
        message(pr, "o1", T, customer="c1", order="o1", segments=2),  # paid an hour later: converts (100)
        message(pr, "o2", T, customer="c2", order="o2"),  # paid before the reminder: no
        message(pr, "o3", T, customer="c3", order="o3", status="delivered"),  # paid in the same second: no
        message(pr, "o4", T, customer="c4", order="o4", status="clicked"),  # paid at exactly 3 days: converts
        message(pr, "o5", T, customer="c5", order="o5", status="undelivered", reason="undelivered"),  # 3d + 1s: no
        message(pr, "o6", T, customer="c6", order="o6"),  # the customer paid another order: no
        message(pr, "o8", T, customer="c8", order="o8", channel=None, status="skipped", reason="no_contact"),  # never sent
        message(pr, "o9", T, customer="c9", order="o9", channel="email", status="opened"),  # two reminders,
        message(pr, "o9", T + d, customer="c9", order="o9", step="again"),  # one conversion
        # The pre-close reminder reminded o1 too: its own credit, the total counts o1 once.
        message("pre_close_reminder", "o1", T + timedelta(minutes=30), customer="c1", order="o1", step="last_call"),
        message("pre_close_reminder", "o7", T + timedelta(minutes=30), customer="c6", order="o7", step="last_call",
                status="failed", reason="provider_rejected"),
    ]  # fmt: skip
    events = [
        *order_events("o1", "c1", created=T - 2 * h, paid=T + h, amount=120, paid_amount=100),
        *order_events("o2", "c2", created=T - 2 * h, paid=T - h, amount=50),
        *order_events("o3", "c3", created=T - 2 * h, paid=T, amount=60),
        *order_events("o4", "c4", created=T - 2 * h, paid=T + 3 * d, amount=250),
        *order_events("o5", "c5", created=T - 2 * h, paid=T + 3 * d + s, amount=70),
        *order_events("o6", "c6", created=T - 2 * h, amount=90),
        *order_events("o7", "c6", created=T - 3 * h, paid=T + h, amount=40),
        *order_events("o9", "c9", created=T - 2 * h, paid=T + 2 * d, amount=80),
    ]
    rows[0].ended_at, rows[0].exit_reason = T + h, "exit:order.paid"  # how two runs ended
    rows[1].ended_at, rows[1].exit_reason = T + d, "completed"
    load(store, rows, events)
    with store.transaction() as session:  # an unsubscribe and a complaint about o9's email
        o9 = session.query(MessageRow).filter_by(workflow_id="payment_reminder:o9", step="remind").one()
        session.add_all(
            [
                ProviderEventRow(provider="sendgrid", event_key="u1", kind="unsubscribe", message_id=o9.id, received_at=T),
                ProviderEventRow(provider="sendgrid", event_key="s1", kind="spamreport", message_id=o9.id, received_at=T),
            ]
        )  # fmt: skip
    return store


def test_payment_reminders_recovered_amount_and_roi(month, definitions):
    report = effect_report(month, definitions, FEB, PRICES)
    pr = report.journeys["payment_reminder"]
    assert (pr.entered, pr.sent, pr.skipped, pr.skipped_by_reason) == (9, 8, 1, {"no_contact": 1})
    assert (pr.exited, pr.exited_by_reason) == (2, {"exit:order.paid": 1, "completed": 1})
    assert (pr.delivered, pr.opened, pr.clicked, pr.bounced) == (3, 2, 1, 1)
    assert (pr.unsubscribes, pr.complaints) == (1, 1)
    # Reached: o1 o2 o3 o4 o5 o6 o9 (o8 was never sent). Converted: o1 (an hour after), o4 (exactly
    # 3 days after), o9 (once, for two reminders). Not: o2 (paid before), o3 (the same second),
    # o5 (3 days and a second), o6 (the customer paid another order).
    assert (pr.reached, pr.converted, pr.conversion_rate) == (7, 3, round(3 / 7, 4))
    # 回款: o1's paid amount 100, o4's and o9's created amounts 250 and 80.
    assert pr.revenue == 430.0
    # Cost: SMS segments 2 + 1*5 (o2 o3 o4 o5 o6) + 1 (o9's second) = 8 at 0.05, one email at 0.01.
    assert (pr.sms_segments, pr.emails, pr.cost) == (8, 1, 0.41)
    assert pr.roi == round(430 / 0.41, 2)
    assert (pr.delivery_rate, pr.bounce_rate, pr.click_rate) == (0.375, 0.125, round(1 / 3, 4))
    assert (pr.goal, pr.within, pr.title) == ("order.paid", "3d", "首次催付")

    pre = report.journeys["pre_close_reminder"]
    assert (pre.sent, pre.failed, pre.failed_by_reason, pre.reached, pre.converted, pre.revenue) == (
        1, 1, {"provider_rejected": 1}, 1, 1, 100.0,
    )  # fmt: skip
    # Each journey its own credit; the total counts o1 once.
    assert (report.totals.converted_orders, report.totals.revenue) == (3, 430.0)
    assert report.totals.cost == round(0.41 + 0.05, 4)
    assert report.journeys["review_request"].sent == 0  # every journey of the definitions is listed


def deferral(journey, key, when, reason, *, step="promo", channel="sms", **more):
    return DeferralRow(
        workflow_id=f"{journey}:{key}", run_id="r1", step=step, journey=journey, customer_id="c1",
        category="marketing", channel=channel, reason=reason, at=when, resume_at=when + timedelta(hours=10), **more,
    )  # fmt: skip


def test_deferrals_are_counted_by_reason_beside_skips(month, definitions):
    with month.transaction() as session:
        session.add_all(
            [
                deferral("review_request", "o1", T, "quiet_hours"),
                deferral("review_request", "o2", T, "frequency_cap", cap="marketing", priority=20, open=True),
                deferral("review_request", "o2", T + timedelta(days=1), "frequency_cap", cap="marketing"),
                deferral("review_request", "o3", T - timedelta(days=30), "quiet_hours"),  # before the period
            ]
        )
    report = effect_report(month, definitions, FEB, PRICES)
    rr = report.journeys["review_request"]
    assert (rr.deferred, rr.deferred_by_reason) == (3, {"quiet_hours": 1, "frequency_cap": 2})
    assert report.journeys["payment_reminder"].deferred_by_reason == {}
    assert "  deferred: frequency_cap 2, quiet_hours 1" in report_lines(report)
    rows = csv_rows(effect_report(month, definitions, FEB, PRICES, by="channel"))
    header = rows[0]
    [sms] = [row for row in rows if row[:2] == ["review_request", "sms"]]
    assert (sms[header.index("deferred:frequency_cap")], sms[header.index("deferred")]) == (2, 3)


def test_grouped_by_step_channel_and_day(month, definitions):
    by_step = effect_report(month, definitions, FEB, PRICES, by="step", journey="payment_reminder")
    assert set(by_step.journeys) == {"payment_reminder"}
    groups = by_step.journeys["payment_reminder"].groups
    # A conversion belongs to the instance's first sent message's step.
    assert {g: (f.sent, f.reached, f.converted) for g, f in groups.items()} == {"remind": (7, 7, 3), "again": (1, 0, 0)}
    assert by_step.journeys["payment_reminder"].entered == 9

    by_channel = effect_report(month, definitions, FEB, PRICES, by="channel", journey="payment_reminder").journeys
    channels = by_channel["payment_reminder"].groups
    assert {g: (f.sent, f.skipped, f.converted, f.cost) for g, f in channels.items()} == {
        "sms": (7, 0, 2, 0.4),
        "email": (1, 0, 1, 0.01),
        "none": (0, 1, 0, 0.0),
    }
    by_day = effect_report(month, definitions, FEB, PRICES, by="day", journey="payment_reminder").journeys
    days = {g: (f.entered, f.sent, f.converted) for g, f in by_day["payment_reminder"].groups.items()}
    assert days == {"2026-02-10": (9, 7, 3), "2026-02-11": (0, 1, 0)}  # days in Asia/Shanghai
    exits = {g: f.exited_by_reason for g, f in by_day["payment_reminder"].groups.items()}
    assert exits == {"2026-02-10": {"exit:order.paid": 1}, "2026-02-11": {"completed": 1}}


def test_a_period_counts_instances_first_sent_in_it(month, definitions):
    """o9's second reminder (11 February) falls in a period that starts that day, but its first
    was before: no instance is reached, nothing converts."""
    later = Period(at("2026-02-11 00:00+08:00"), FEB.end, FEB.timezone)
    pr = effect_report(month, definitions, later, PRICES).journeys["payment_reminder"]
    assert (pr.sent, pr.reached, pr.converted, pr.entered) == (1, 0, 0, 0)


def test_holdout_uplift_with_its_interval(store, definitions):
    """The spring broadcast's 10% holdout: converted from entry within the goal's 3 days, against
    the treated instances' conversions after their message."""
    name, d = "spring_festival_care", timedelta(days=1)
    rows, events = [], []
    for n in range(40):  # 40 sent, 12 of whom order within 3 days of the message
        key = f"t{n:02d}"
        rows += [
            instance(name, key, T, variant="send"),
            message(name, key, T, customer=key, step="send", variant="send"),
        ]
        if n < 12:
            events += order_events(f"to{n}", key, created=T + d, amount=100)
    for n in range(20):  # 20 held out, 2 of whom order within 3 days of entry (one more after 4 days)
        key = f"h{n:02d}"
        rows.append(instance(name, key, T, variant="holdout"))
        if n < 3:
            events += order_events(f"ho{n}", key, created=T + (d if n < 2 else 4 * d), amount=100)
    load(store, rows, events)
    report = effect_report(store, definitions, FEB, PRICES, by="variant", journey=name)
    care = report.journeys[name]
    assert (care.entered, care.reached, care.converted, care.revenue) == (60, 40, 12, 1200.0)
    lift = care.uplift
    assert (lift.treated.instances, lift.treated.converted, lift.treated.rate) == (40, 12, 0.3)
    assert (lift.holdout.instances, lift.holdout.converted, lift.holdout.rate) == (20, 2, 0.1)
    assert (lift.absolute, lift.relative) == (0.2, 2.0)
    # Wide, and across zero: 20 held out say little (Newcombe's interval, as computed by hand).
    assert lift.interval == (-0.033742, 0.370328)
    assert {g: (f.entered, f.reached, f.converted) for g, f in care.groups.items()} == {
        "send": (40, 40, 12),
        "holdout": (20, 20, 2),
    }


def test_newcombe_matches_the_published_example():
    """Newcombe (1998), table II, example (a): 56/70 against 48/80 gives -0.0524 to 0.3339... for
    p1 - p2 = 0.2; and Wilson's interval for 81/263 is 0.2553 to 0.3662."""
    low, high = newcombe((56, 70), (48, 80))
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    assert tuple(round(x, 4) for x in wilson(81, 263)) == (0.2553, 0.3662)


def test_result_indicators(store, definitions):
    """Repeat purchase, retention and reactivation over February."""
    d = timedelta(days=1)
    jan = at("2026-01-10 10:00+08:00")
    events = [
        *order_events("a1", "a", created=T, paid=T, amount=100),  # a: two purchases in Feb
        *order_events("a2", "a", created=T + d, paid=T + d, amount=60),
        *order_events("b1", "b", created=jan, paid=jan, amount=80),  # b: January and February
        *order_events("b2", "b", created=T, paid=T, amount=30),
        *order_events("c1", "c", created=jan, paid=jan, amount=20),  # c: January only
        *order_events("e1", "e", created=T, paid=T, amount=500, refunded=T + d),  # refunded: not a purchase
        # f: bought in October, silent since, got a message on 10 Feb and bought on the 12th
        *order_events("f0", "f", created=at("2025-10-01 10:00+08:00"), paid=at("2025-10-01 10:00+08:00"), amount=10),
        *order_events("f1", "f", created=T + 2 * d, paid=T + 2 * d, amount=70),
        # g: bought in October, got a message, did not buy again
        *order_events("g0", "g", created=at("2025-10-01 10:00+08:00"), paid=at("2025-10-01 10:00+08:00"), amount=10),
    ]
    rows = [message("revisit_28d", "f", T, customer="f"), message("revisit_28d", "g", T, customer="g")]
    load(store, rows, events)
    results = effect_report(store, definitions, FEB, PRICES).results
    assert (results.buyers, results.orders, results.amount) == (3, 4, 260.0)  # a (2), b, f
    assert (results.repeat_buyers, results.repeat_purchase_rate, results.repeat_amount) == (1, round(1 / 3, 4), 60.0)
    # January's 31 days before 1 Feb hold b and c; b bought again.
    assert (results.earlier_buyers, results.retained, results.retention_rate) == (2, 1, 0.5)
    assert (results.silent_days, results.silent_messaged, results.reactivated) == (90, 2, 1)


def test_report_is_empty_but_whole_without_records(store, definitions):
    report = effect_report(store, definitions, FEB, PRICES)
    assert set(report.journeys) >= {"payment_reminder", "spring_festival_care"}
    assert all(j.sent == 0 and j.converted == 0 and j.roi is None for j in report.journeys.values())
    assert report.totals.model_dump() == {"sent": 0, "cost": 0.0, "converted_orders": 0, "revenue": 0.0, "roi": None}


# ------------------------------------------------------------------ the surfaces


async def test_the_api_answers_the_same_report(month, definitions):
    import httpx

    from triggers.api import create_app

    app = create_app(month, definitions=definitions, prices=PRICES, shop_timezone="Asia/Shanghai")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        whole = await api.get("/effect", params={"from": "2026-02-01", "to": "2026-02-28"})
        one = await api.get(
            "/journeys/payment_reminder/effect", params={"from": "2026-02-01", "to": "2026-02-28", "by": "channel"}
        )
        bad_date = await api.get("/effect", params={"from": "yesterday"})
        bad_group = await api.get("/effect", params={"by": "hour"})
        unknown = await api.get("/journeys/nope/effect")
        contract = (await api.get("/openapi.json")).json()
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["journeys"]["payment_reminder"]["revenue"] == 430.0
    assert body["totals"] == {
        "sent": 9,
        "cost": 0.46,
        "converted_orders": 3,
        "revenue": 430.0,
        "roi": round(430 / 0.46, 2),
    }
    assert body["start"] == "2026-01-31T16:00:00Z" and body["end"] == "2026-02-28T16:00:00Z"
    assert list(one.json()["journeys"]) == ["payment_reminder"]
    assert set(one.json()["journeys"]["payment_reminder"]["groups"]) == {"sms", "email", "none"}
    assert bad_date.status_code == 422 and "'yesterday' is not a date" in bad_date.json()["detail"]
    assert bad_group.status_code == 422
    assert unknown.status_code == 404 and "no journey 'nope'" in unknown.json()["detail"]
    assert {"/effect", "/journeys/{name}/effect"} <= set(contract["paths"])


def test_journeys_report_prints_the_table_and_csv(month, tmp_path):
    import csv
    import io
    import subprocess

    from tests.test_up import JOURNEYS, with_checkout

    env = {
        **with_checkout(None),
        "DATABASE_URL": month.url,
        "JOURNEYS_SMS_PRICE": "0.05",
        "JOURNEYS_EMAIL_PRICE": "0.01",
    }

    def report(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*JOURNEYS, "report", "--from", "2026-02-01", "--to", "2026-02-28", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    table = report("--journey", "payment_reminder")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "effect 2026-02-01 00:00 to 2026-03-01 00:00 (Asia/Shanghai), money in CNY"
    row = lines[2].split()
    assert (
        row[0] == "payment_reminder"
        and row[1:4] == ["9", "8", "1"]
        and row[6:] == ["3", "42.9%", "430.00", "0.41", "1,048.8"]
    )
    assert "  skipped: no_contact 1" in lines
    as_csv = list(csv.DictReader(io.StringIO(report("--csv", "--by", "channel").stdout)))
    reminder = {r["group"]: r for r in as_csv if r["journey"] == "payment_reminder"}
    assert (reminder[""]["converted"], reminder["sms"]["converted"], reminder["email"]["revenue"]) == ("3", "2", "80.0")
    assert reminder["none"]["skipped:no_contact"] == "1"
    bad = report("--by", "hour")
    assert bad.returncode == 2 and "--by: 'hour' is not one of journey, step, channel, variant, day" in bad.stderr


def test_a_database_not_set_up_gets_a_clear_answer(tmp_path):
    import sqlite3
    import subprocess

    from tests.test_up import JOURNEYS, with_checkout

    sqlite3.connect(tmp_path / "never-migrated.db").close()  # there, but no tables
    env = {**with_checkout(None), "DATABASE_URL": f"sqlite:///{tmp_path}/never-migrated.db"}
    answer = subprocess.run([*JOURNEYS, "report"], env=env, capture_output=True, text=True, timeout=120)
    assert answer.returncode == 2, answer.stderr
    # The first table it reads: instances, for the runs of the shipped recurring member_statement.
    assert answer.stderr.strip() == (
        "journeys: the database is not ready (no such table: instances). Check DATABASE_URL (or --data-dir); "
        "`journeys migrate` creates or upgrades its tables."
    )


# ------------------------------------------------------------------ a recurring broadcast


@pytest.fixture
def recurring(tmp_path):
    """The shipped definitions with a daily 会员卡到期 campaign: goal order.created, 20% held out."""
    from definitions.loader import load_definitions

    folder = shipped_definitions_with(
        tmp_path / "definitions",
        {
            "templates/card_expiring.yaml": 'sms:\n  zh-CN: "{{ customer.name }}，会员卡即将到期"\n',
            "broadcasts/card_expiring.yaml": "name: card_expiring\ntitle: 会员卡到期提醒\nsegment: lapsing_valuable\n"
            "send: {channel: sms, template: card_expiring}\n"
            'schedule: {every: day, time: "10:00", zone: Asia/Shanghai}\nholdout: 0.2\ngoal: order.created\n',
        },
    )
    return folder, load_definitions(folder)


def two_runs(store) -> None:
    """The runs of 10 and 11 February, each 10 messaged and 5 held out: 3 (100 each) and 2 (50
    each) of the messaged order within the goal's 3 days, 1 held out of the first run orders."""
    d = timedelta(days=1)
    rows, events = [], []
    for day, (converts, amount, held_converts) in enumerate([(3, 100, 1), (2, 50, 0)]):
        journey, when = f"card_expiring_202602{10 + day}", T + day * d
        for n in range(10):
            key = f"r{day}t{n}"
            rows += [
                instance(journey, key, when, variant="send"),
                message(journey, key, when, customer=key, step="send", variant="send"),
            ]
            if n < converts:
                events += order_events(f"{key}-o", key, created=when + d, amount=amount)
        for n in range(5):
            key = f"r{day}h{n}"
            rows.append(instance(journey, key, when, variant="holdout"))
            if n < held_converts:
                events += order_events(f"{key}-o", key, created=when + d, amount=amount)
    load(store, rows, events)


def test_a_recurring_broadcast_is_one_row_converting_by_its_goal_with_each_run(store, recurring):
    """The runs' journeys (card_expiring_20260210, ...) convert by the broadcast's goal, and the
    campaign is one row: conversions, revenue (回款), ROI and the uplift over the runs' holdouts
    together, each run's own figures beside it."""
    two_runs(store)
    _, definitions = recurring
    report = effect_report(store, definitions, FEB, PRICES)
    assert not [name for name in report.journeys if name.startswith("card_expiring_")]
    card = report.journeys["card_expiring"]
    assert (card.title, card.goal, card.within) == ("会员卡到期提醒", "order.created", "3d")
    assert (card.entered, card.sent, card.reached, card.converted, card.revenue) == (30, 20, 20, 5, 400.0)
    assert (card.cost, card.roi) == (1.0, 400.0)
    lift = card.uplift
    assert (lift.treated.instances, lift.treated.converted, lift.holdout.instances, lift.holdout.converted) == (
        20, 5, 10, 1,
    )  # fmt: skip
    assert lift.absolute == 0.15
    assert {run: (r.reached, r.converted, r.revenue, r.goal) for run, r in card.runs.items()} == {
        "card_expiring@2026-02-10": (10, 3, 300.0, "order.created"),
        "card_expiring@2026-02-11": (10, 2, 100.0, "order.created"),
    }
    assert card.runs["card_expiring@2026-02-10"].uplift.holdout.converted == 1
    assert report.totals.converted_orders == 5 and report.totals.revenue == 400.0
    lines = report_lines(report)
    assert any(line.startswith("card_expiring ") for line in lines)
    assert any(line.startswith("  card_expiring@2026-02-11") for line in lines)
    # By variant: the campaign's groups add its runs' up.
    by_variant = effect_report(store, definitions, FEB, PRICES, by="variant", journey="card_expiring")
    groups = by_variant.journeys["card_expiring"].groups
    assert {g: (f.entered, f.reached, f.converted) for g, f in groups.items()} == {
        "send": (20, 20, 5),
        "holdout": (10, 10, 1),
    }
    assert list(by_variant.journeys) == ["card_expiring"]


async def test_a_recurring_broadcast_s_effect_is_the_same_in_the_api_and_the_cli(store, recurring):
    import subprocess

    import httpx

    from tests.test_up import JOURNEYS, with_checkout
    from triggers.api import create_app

    two_runs(store)
    folder, definitions = recurring
    app = create_app(store, definitions=definitions, prices=PRICES, shop_timezone="Asia/Shanghai")
    window = {"from": "2026-02-01", "to": "2026-02-28"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        whole = (await api.get("/effect", params=window)).json()
        one = (await api.get("/journeys/card_expiring/effect", params=window)).json()
    env = {**with_checkout(None), "DATABASE_URL": store.url, "JOURNEYS_SMS_PRICE": "0.05"}
    cli = subprocess.run(
        [*JOURNEYS, "report", "--from", "2026-02-01", "--to", "2026-02-28", "--definitions", str(folder),
         "--journey", "card_expiring", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    import json

    for body in (whole, one, json.loads(cli.stdout)):
        card = body["journeys"]["card_expiring"]
        assert (card["goal"], card["converted"], card["revenue"], card["roi"]) == ("order.created", 5, 400.0, 400.0)
        assert {run: r["converted"] for run, r in card["runs"].items()} == {
            "card_expiring@2026-02-10": 3,
            "card_expiring@2026-02-11": 2,
        }
        assert not [name for name in body["journeys"] if name.startswith("card_expiring_")]
    assert list(one["journeys"]) == ["card_expiring"]


def test_roi_and_delivery_say_unknown_rather_than_zero(store, definitions):
    """A review request earns nothing (its goal is review.posted): its ROI is unknown, not 0×. An
    SMS through the local outbox gets no receipt: delivery is measured over the others only, and
    is unknown when none can come."""
    receipted = message("review_request", "o1", T, status="delivered", provider_id="biz-1", step="review_request")
    lost = message("review_request", "o2", T, status="undelivered", provider_id="biz-2", step="review_request")
    outboxed = [
        message("review_request", f"o{n}", T, provider_id=f"outbox:{n}", step="review_request") for n in range(3, 6)
    ]
    only_outbox = message("payment_reminder", "o9", T, provider_id="outbox:9", step="first_reminder")
    with store.transaction() as session:
        session.add_all([receipted, lost, *outboxed, only_outbox])
    report = effect_report(store, definitions, FEB, PRICES)
    review = report.journeys["review_request"]
    assert (review.sent, review.unreceipted, review.delivered) == (5, 3, 1)
    assert review.delivery_rate == 0.5 and review.bounce_rate == 0.5  # of the two a receipt could come for
    assert review.cost == 0.25 and review.roi is None
    reminder = report.journeys["payment_reminder"]
    assert (reminder.sent, reminder.delivery_rate, reminder.roi) == (1, None, 0.0)  # a purchase goal: 0× is true
    by_step = effect_report(store, definitions, FEB, PRICES, by="step", journey="review_request")
    assert by_step.journeys["review_request"].groups["review_request"].delivery_rate == 0.5
