"""Every command finds what `journeys up` started (issue 22, item 7): `up` with a data directory
and ports of its own records where it runs (DATA_DIR/journeys.env), and each command given only
`--data-dir` (or JOURNEYS_DATA_DIR) works against it, from another directory, with no variable
set by hand and no database file made where it was not asked for."""

from __future__ import annotations

import json
import os
import sqlite3

import httpx

from tests.helpers import free_port
from tests.test_up import run, start_up, stop_up, until_printed

#: What an operator's shell would not have set: nothing of ours, nothing of Temporal's.
HAND_SET = ("DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_") and k not in HAND_SET}


def test_every_command_finds_what_up_started(tmp_path):
    port, ui_port, api_port = free_port(), free_port(), free_port()
    data = tmp_path / "srv" / "j"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_environment()
    process, output = start_up(tmp_path, port, ui_port, api_port, env, "--data-dir", str(data))
    try:
        assert "worker polling" in output, output
        assert f"Outbox        {data / 'outbox.jsonl'}" in output, output
        record = (data / "journeys.env").read_text()
        assert f'TEMPORAL_ADDRESS="127.0.0.1:{port}"' in record and f":{ui_port}" in record, record
        assert oct((data / "journeys.env").stat().st_mode & 0o777) == "0o600"
        given = ["--data-dir", str(data)]

        created = {"name": "Wang", "phone": "+8613800138000", "timezone": "Asia/Shanghai", "locale": "zh-CN"}
        sent = run(
            elsewhere, env, "emit", "customer.created", "--customer", "c1", "--data", json.dumps(created), *given
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr  # the API's URL came from the record
        order = '{"amount": 99}'
        sent = run(
            elsewhere, env, "emit", "order.created", "--customer", "c1", "--order", "o1", "--data", order, *given
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr

        # The status query, decrypted with the key up made, answers where the instance waits.
        until_printed(
            elsewhere,
            env,
            ["history", "--customer", "c1", *given],
            ["payment_reminder:o1  running at wait", "next wake-up"],
        )
        shown = until_printed(elsewhere, env, ["customer", "c1", *given], "customer c1  Wang")
        assert "+8613800138000" in shown
        by_variable = run(elsewhere, {**env, "JOURNEYS_DATA_DIR": str(data)}, "events")
        assert "order.created  customer c1  order o1  dispatched" in by_variable.stdout, by_variable.stderr
        before = run(elsewhere, env, *given, "events", "--pending")  # --data-dir before the command too
        assert before.returncode == 0 and before.stdout.startswith("0 pending events"), before.stderr

        preview = run(elsewhere, env, "preview", "payment_reminder", "first_reminder", "--customer", "c1", *given)
        assert preview.returncode == 0 and "Wang" in preview.stdout, preview.stdout + preview.stderr
        for command in (
            ["report"],
            ["segment", "count"],
            ["segment", "list", "lapsing_valuable"],
            ["broadcast", "dry-run", "spring_festival_care"],
            ["broadcast", "status", "spring_festival_care"],
        ):
            answer = run(elsewhere, env, *command, *given)
            assert answer.returncode == 0, (command, answer.stdout, answer.stderr)

        # The UI links, in the CLI's history and the console's API, follow --ui-port.
        listed = json.loads(run(elsewhere, env, "history", "--customer", "c1", "--json", *given).stdout)
        assert listed["instances"][0]["temporal_ui"].startswith(f"http://127.0.0.1:{ui_port}/namespaces/default/")
        served = httpx.get(f"http://127.0.0.1:{api_port}/customers/c1/history", timeout=30).json()
        assert served["instances"][0]["temporal_ui"].startswith(f"http://127.0.0.1:{ui_port}/")

        # Without the key, a history says which key is missing, in one line.
        keyless = {**env, "JOURNEYS_ENCRYPTION_KEY_FILE": str(tmp_path / "nowhere.keys")}
        failed = run(elsewhere, keyless, "history", "--customer", "c1", *given)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert "key 'k1', which is not configured" in failed.stderr
        assert "JOURNEYS_ENCRYPTION_KEYS is unset" in failed.stderr and "nowhere.keys" in failed.stderr
    finally:
        stop_up(process)
    assert not (elsewhere / ".data").exists(), "a command made ./.data"
    assert not (tmp_path / ".data").exists(), "up with --data-dir made ./.data"


def test_a_read_makes_no_database_and_names_the_real_variable(tmp_path):
    env = clean_environment()
    reads = (["customer", "c1"], ["events"], ["report"], ["segment", "count"], ["history", "--order", "o1"])
    for command in (*reads, ["customer", "erase", "c1", "--yes"]):  # an erasure reads first
        answer = run(tmp_path, env, *command)
        assert answer.returncode == 2, (command, answer.stdout, answer.stderr)
        assert answer.stderr.startswith("journeys: no database at .data/journeys.db."), answer.stderr
        assert "journeys up" in answer.stderr and "journeys migrate" in answer.stderr
        assert "DATABASE_URL" in answer.stderr and "JOURNEYS_DATABASE_URL" not in answer.stderr
    assert not (tmp_path / ".data").exists()

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    answer = run(tmp_path, {**env, "DATABASE_URL": f"sqlite:///{empty}"}, "customer", "c1")
    assert answer.returncode == 2
    assert answer.stderr.startswith("journeys: the database is not ready (no such table: "), answer.stderr
    assert "Check DATABASE_URL (or --data-dir); `journeys migrate` creates" in answer.stderr
