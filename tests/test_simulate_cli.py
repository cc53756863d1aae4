"""`journeys simulate` as a marketer runs it: files in, messages.jsonl and a summary out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
JOURNEYS = str(Path(sys.executable).parent / "journeys")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([JOURNEYS, "simulate", *args], capture_output=True, text=True, timeout=120)


def test_simulate_a_shop(tmp_path):
    out = tmp_path / "messages.jsonl"
    result = run(
        "--customers", str(DATA / "customers.jsonl"), "--events", str(DATA / "events.jsonl"),
        "--until", "2026-03-10T00:00:00Z", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [
        (r["at"], r["journey"], r["customer_id"], r["order_id"], r["channel"], r["status"], r["reason"])
        for r in records
    ] == [
        ("2026-02-01T02:15:00Z", "payment_reminder", "c1", "o1", "sms", "sent", None),
        ("2026-02-02T01:00:00Z", "shipped_notice", "c1", "o1", "sms", "sent", None),
        # a night order closing at midnight: 08:00 is past its close, so the reminder is skipped
        ("2026-02-03T15:45:00Z", "payment_reminder", "c1", "o2", "sms", "skipped", "quiet_hours"),
        ("2026-02-04T07:00:00Z", "delivered_care", "c1", "o1", "sms", "sent", None),
        ("2026-02-05T04:15:00Z", "payment_reminder", "c3", "o4", None, "skipped", "blacklisted"),
        ("2026-02-05T17:15:00Z", "payment_reminder", "c2", "o3", "sms", "sent", None),  # 12:15 in New York
        ("2026-02-07T02:00:00Z", "birthday_greeting", "c1", None, "sms", "sent", None),
        ("2026-02-07T07:00:00Z", "review_request", "c1", "o1", "sms", "sent", None),
        ("2026-02-08T02:00:00Z", "pre_close_reminder", "c3", "o4", None, "skipped", "blacklisted"),
        ("2026-02-08T15:00:00Z", "pre_close_reminder", "c2", "o3", "sms", "sent", None),
        ("2026-02-25T15:00:00Z", "birthday_greeting", "c2", None, "sms", "sent", None),  # --02-29 in 2026
        # the monthly member statement (a recurring broadcast): c1 bought in the last year
        ("2026-03-01T02:00:00Z", "member_statement_20260301", "c1", None, "sms", "sent", None),
        ("2026-03-04T07:00:00Z", "revisit_28d", "c1", "o1", "sms", "sent", None),
    ]
    assert records[1]["body"] == "【Journeys】亲爱的王芳，您的订单o1已发货，顺丰单号SF123，请留意查收。"
    assert records[5]["body"].startswith("[Journeys] Hi Amy, your order o3 is waiting for payment.")
    assert all(r["body"] is None for r in records if r["status"] == "skipped")
    assert "payment_reminder: sent 2, skipped blacklisted 1, quiet_hours 1" in result.stdout
    assert "3 customers, 7 events, 13 records" in result.stdout


def test_bad_input_names_file_and_line(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id":"e1","type":"order.created","occurred_at":"2026-02-01T10:00:00+08:00","customer_id":"c1","order_id":"o1"}\n'
        '{"event_id":"e2","type":"order.paid","occurred_at":"2026-02-01T10:00:00","customer_id":"c1","order_id":"o1"}\n'
        '{"event_id":"e3","type":"order.paid","occurred_at":"2026-02-01T10:00:00Z","customer_id":"c1"}\n'
        '{"event_id":"e4","type":"cart.abandonned","occurred_at":"2026-02-01T10:00:00Z","customer_id":"c1"}\n'
        '{"event_id":"e5","type":"cart.abandoned","occurred_at":"2026-02-01T10:00:00Z","customer_id":"c1"}\n'
    )
    result = run(
        "--customers", str(DATA / "customers.jsonl"), "--events", str(events),
        "--until", "2026-03-01T00:00:00Z", "--out", str(tmp_path / "m.jsonl"),
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{events}:2: occurred_at: Input should have timezone info" in result.stderr
    assert f"{events}:3: event: Value error, order_id is required for order.paid events" in result.stderr
    assert f"{events}:4: type: 'cart.abandonned' is not a known event type; known: " in result.stderr
    assert f"{events}:5: data: 'cart_value' is a required property" in result.stderr  # events.yaml's schema
    assert not (tmp_path / "m.jsonl").exists()


def test_dry_run_a_new_journey(tmp_path):
    """A marketer's new journey, tried against the events before it goes live."""
    definitions = tmp_path / "definitions"
    (definitions / "templates").mkdir(parents=True)
    (definitions / "templates" / "vip_thanks.yaml").write_text(
        'sms:\n  zh-CN: "感谢{{ customer.name }}的大额订单{{ order.order_id }}"\n'
    )
    (definitions / "vip_thanks.yaml").write_text(
        "name: vip_thanks\ncategory: marketing\n"
        'entry: {event: order.paid, key: order, condition: "event.data.amount is defined and event.data.amount >= 500"}\n'
        "steps:\n  - wait: 1d\n  - send: {template: vip_thanks}\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id":"p1","type":"order.paid","occurred_at":"2026-02-01T10:00:00+08:00","customer_id":"c1","order_id":"o1","data":{"amount":800}}\n'
        '{"event_id":"p2","type":"order.paid","occurred_at":"2026-02-01T11:00:00+08:00","customer_id":"c2","order_id":"o2","data":{"amount":80}}\n'
    )
    out = tmp_path / "m.jsonl"
    result = run(
        "--customers", str(DATA / "customers.jsonl"), "--events", str(events),
        "--until", "2026-02-10T00:00:00Z", "--out", str(out), "--definitions", str(definitions),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["journey"], r["order_id"], r["at"], r["body"]) for r in records] == [
        ("vip_thanks", "o1", "2026-02-02T02:00:00Z", "【Journeys】感谢王芳的大额订单o1 退订回T")
    ]


def test_profiles_as_of_the_end_of_a_simulation(tmp_path):
    """--profiles: each customer's traits, RFM, lifecycle stage and segments as of --until, from the
    simulated shop."""
    import shutil

    from definitions.loader import PACKAGE_DIR

    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "bought_once.yaml").write_text("name: bought_once\nwhere: {rfm: f, is: 1}\n")
    profiles = tmp_path / "profiles.jsonl"
    result = run(
        "--customers", str(DATA / "customers.jsonl"), "--events", str(DATA / "events.jsonl"),
        "--until", "2026-03-10T00:00:00Z", "--out", str(tmp_path / "m.jsonl"),
        "--definitions", str(folder), "--profiles", str(profiles),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote 3 profiles to {profiles}" in result.stdout
    found = [json.loads(line) for line in profiles.read_text().splitlines()]
    # c1 paid 99 for o1 on 1 February, 37 days before the end: R4 F1 M1, 4 + 3 + 4 = 11.
    assert found == [
        {"customer_id": "c1", "traits": {}, "rfm": {"r": 4, "f": 1, "m": 1, "score": 11, "tier": "occasional"},
         "lifecycle": "new_once", "segments": ["bought_once", "members"]},
        {"customer_id": "c2", "traits": {}, "rfm": {"r": 0, "f": 0, "m": 0, "score": 0, "tier": "none"},
         "lifecycle": "prospect", "segments": []},
        {"customer_id": "c3", "traits": {}, "rfm": {"r": 0, "f": 0, "m": 0, "score": 0, "tier": "none"},
         "lifecycle": "prospect", "segments": []},
    ]  # fmt: skip


def test_broadcasts_play_in_a_simulation(tmp_path):
    """A holiday campaign dry-run on last month's data: broadcasts scheduled in the window run as
    `journeys broadcast start` runs them; --broadcast moves one in; the others are listed as not run."""
    import shutil

    from definitions.loader import PACKAGE_DIR

    folder = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "reachable.yaml").write_text("name: reachable\nwhere: {subscribed: sms}\n")
    for name, local_time in (("lantern_care", "2026-02-20T10:00"), ("lantern_again", "2027-01-01T10:00")):
        (folder / "broadcasts" / f"{name}.yaml").write_text(
            f"name: {name}\nsegment: reachable\nsend: {{template: holiday_care, resource: spring_coupon}}\n"
            f'schedule: {{local_time: "{local_time}"}}\n'
        )
    out = tmp_path / "m.jsonl"
    result = run(
        "--customers", str(DATA / "customers.jsonl"), "--events", str(DATA / "events.jsonl"),
        "--until", "2026-03-10T00:00:00Z", "--out", str(out), "--definitions", str(folder),
        "--broadcast", "lantern_again=2026-02-25T10:00", "--report", str(tmp_path / "effect.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # 10:00 in each customer's zone (Shanghai, New York); five days later the coupon's once-per-30d
    # limit holds the second one back.
    assert [(r["at"], r["journey"], r["customer_id"], r["status"], r["reason"]) for r in records if "lantern" in r["journey"]] == [
        ("2026-02-20T02:00:00Z", "lantern_care", "c1", "sent", None),
        ("2026-02-20T15:00:00Z", "lantern_care", "c2", "sent", None),
        ("2026-02-25T02:00:00Z", "lantern_again", "c1", "skipped", "resource_limit"),
        ("2026-02-25T15:00:00Z", "lantern_again", "c2", "skipped", "resource_limit"),
    ]  # fmt: skip
    lantern = next(r for r in records if r["journey"] == "lantern_care")
    assert lantern["body"].startswith("【Journeys】王芳，新春快乐！") and lantern["body"].endswith("退订回T")
    lines = result.stdout.splitlines()
    assert "broadcast lantern_care: started 2026-02-19T20:00:00Z, segment reachable: 2 members, 2 reached" in lines
    assert "broadcast lantern_again: started 2026-02-24T20:00:00Z, segment reachable: 2 members, 2 reached" in lines
    assert (
        "broadcast spring_festival_care: not run, scheduled 2027-02-06T10:00:00 local, outside the simulated "
        "2026-02-01T02:00:00Z to 2026-03-10T00:00:00Z (--broadcast spring_festival_care=TIME moves it in)"
    ) in lines
    assert "lantern_again: sent 0, skipped resource_limit 2" in lines

    # The effect of the simulated month, from what the real workflows recorded.
    effect = json.loads((tmp_path / "effect.json").read_text())
    journeys = effect["journeys"]
    # The first payment reminder (10:15) and the payment (10:20) of o1's 99: recovered.
    reminder = journeys["payment_reminder"]
    # Four orders entered (o1 to o4); o2 (quiet hours) and o4 (blacklisted) were skipped.
    assert (reminder["entered"], reminder["sent"], reminder["reached"], reminder["converted"]) == (4, 2, 2, 1)
    assert (reminder["revenue"], reminder["goal"], reminder["within"]) == (99.0, "order.paid", "3d")
    assert reminder["cost"] == round(reminder["sms_segments"] * 0.05, 4) and reminder["sms_segments"] >= 2
    # How each run ended, as the runs recorded it: the reminders ran to their end; the pre-close
    # reminder of o1 ended on its payment, o2's closing time had passed; each birthday greeting
    # ran again for the next year.
    assert (reminder["exited"], reminder["exited_by_reason"]) == (4, {"completed": 4})
    assert journeys["pre_close_reminder"]["exited_by_reason"] == {
        "completed": 2, "exit:order.paid": 1, "time_passed": 1,
    }  # fmt: skip
    assert journeys["birthday_greeting"]["exited_by_reason"] == {"restarted": 2}
    care = journeys["lantern_care"]
    assert (care["entered"], care["sent"], care["reached"], care["converted"]) == (2, 2, 2, 0)
    assert journeys["lantern_again"]["skipped_by_reason"] == {"resource_limit": 2}
    assert effect["totals"]["converted_orders"] == 1 and effect["totals"]["revenue"] == 99.0

    unknown = run(
        "--customers", str(DATA / "customers.jsonl"), "--events", str(DATA / "events.jsonl"),
        "--until", "2026-03-10T00:00:00Z", "--out", str(out), "--broadcast", "spring=2026-02-25T10:00",
    )  # fmt: skip
    assert unknown.returncode == 2
    assert (
        "--broadcast spring=2026-02-25T10:00: no broadcast 'spring'; broadcasts: member_statement, spring_festival_care"
        in unknown.stderr
    )


def test_an_empty_or_inverted_window_is_refused(tmp_path):
    """--until before every event, or no events at all: one line and exit 2, not a silent run of nothing."""
    from typer.testing import CliRunner

    from journeys.cli import app

    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id":"e1","type":"order.created","occurred_at":"2025-06-10T10:00:00Z","customer_id":"c1","order_id":"o1"}\n'
    )
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    common = ["simulate", "--customers", str(DATA / "customers.jsonl"), "--out", str(tmp_path / "m.jsonl")]
    result = CliRunner().invoke(app, [*common, "--events", str(events), "--until", "2025-01-01T00:00:00Z"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "--until: 2025-01-01T00:00:00Z is before the first event (2025-06-10T10:00:00Z): nothing to simulate"
    ]
    result = CliRunner().invoke(app, [*common, "--events", str(empty), "--until", "2025-01-01T00:00:00Z"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"{empty}: no events, so the window to simulate is empty"]
    assert not (tmp_path / "m.jsonl").exists()


def test_simulate_prints_no_warning_about_the_test_server_s_missing_capability(tmp_path):
    """The SDK's core warns, once per worker, that the time-skipping test server does not
    advertise a heartbeat capability no simulation relies on: that warning is dropped, the run's
    output is the summary alone, in two shards (two servers) as in one."""
    for shards in ("1", "2"):
        result = run(
            "--customers", str(DATA / "customers.jsonl"), "--events", str(DATA / "events.jsonl"),
            "--until", "2026-03-10T00:00:00Z", "--out", str(tmp_path / f"messages-{shards}.jsonl"), "--shards", shards,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "activity_failure_include_heartbeat" not in result.stdout + result.stderr
        assert "Temporal Server 1.16.0 or newer is required" not in result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "3 customers, 7 events, 13 records", result.stdout
        assert lines[3:-1] == [
            "birthday_greeting: sent 2",
            "delivered_care: sent 1",
            "member_statement_20260301: sent 1",
            "payment_reminder: sent 2, skipped blacklisted 1, quiet_hours 1",
            "pre_close_reminder: sent 1, skipped blacklisted 1",
            "review_request: sent 1",
            "revisit_28d: sent 1",
            "shipped_notice: sent 1",
        ]
        assert lines[1] == (
            "broadcast member_statement: every month on day 1 at 10:00 (Asia/Shanghai), 2 runs from "
            "member_statement@2026-02-01 to member_statement@2026-03-01, segment members: 1 members, 1 reached, "
            "0 not again (once_per 20d)"
        )
        assert lines[2].startswith("broadcast spring_festival_care: not run") and lines[-1].startswith("wrote ")
        assert result.stderr == ""


def test_other_core_warnings_still_show(caplog):
    """Only the known message is dropped: any other warning of the SDK's core reaches the log."""
    import logging

    from journeys.simulate import CORE_LOG, simulation_runtime

    simulation_runtime()
    with caplog.at_level(logging.WARNING, logger=CORE_LOG.name):
        CORE_LOG.warning(
            "[temporalio_sdk_core::worker] Temporal Server 1.16.0 or newer is required to guarantee that the latest "
            "heartbeat details are preserved when an activity fails; the server did not advertise the "
            "activity_failure_include_heartbeat capability, so heartbeat details may be lost on failure"
        )
        CORE_LOG.warning("[temporalio_sdk_core::worker] Poll error: the server is unreachable")
    assert [record.getMessage() for record in caplog.records] == [
        "[temporalio_sdk_core::worker] Poll error: the server is unreachable"
    ]
