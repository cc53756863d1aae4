"""`journeys up` (what `make up` runs) as an operator uses it: start it, emit an order with
`journeys emit`, watch it with `journeys history` and `journeys events`, stop it with Ctrl-C,
start it again on the same data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port

#: This checkout's `journeys` (the installed console script may run another checkout's code).
ROOT = Path(__file__).resolve().parent.parent
JOURNEYS = [sys.executable, "-m", "journeys.cli"]


def with_checkout(env: dict | None) -> dict:
    """`env` (the process's by default) importing this checkout first."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_up(
    tmp_path: Path, port: int, ui_port: int, api_port: int, env: dict | None = None, *options: str
) -> tuple[subprocess.Popen, str]:
    command = [*JOURNEYS, "up", "--port", str(port), "--ui-port", str(ui_port), "--api-port", str(api_port), *options]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=with_checkout(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "worker polling" in line:
            break
    return process, "".join(lines)


def stop_up(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    return rest


def run(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*JOURNEYS, *args], cwd=tmp_path, env=with_checkout(env), capture_output=True, text=True, timeout=60
    )


def until_printed(tmp_path: Path, env: dict, args: list[str], wanted: str | list[str]) -> str:
    """The command's output once it prints every one of `wanted` in one run: what Temporal's
    visibility lists, and a status query a freshly started worker answers, settle a moment later
    on a loaded machine."""
    wanted = [wanted] if isinstance(wanted, str) else wanted
    for _ in range(100):
        out = run(tmp_path, env, *args)
        if all(text in out.stdout for text in wanted):
            return out.stdout
        time.sleep(0.1)
    raise AssertionError(f"{wanted!r} never appeared in: {out.stdout}{out.stderr}")


def test_up_emit_history_restart(tmp_path):
    port, ui_port, api_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "JOURNEYS_API_URL": f"http://127.0.0.1:{api_port}",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
    }
    process, output = start_up(tmp_path, port, ui_port, api_port)
    try:
        assert f"Temporal      127.0.0.1:{port}" in output, output
        assert f"Temporal UI   http://127.0.0.1:{ui_port}" in output
        assert f"Event API     http://127.0.0.1:{api_port}" in output
        assert "worker polling 'journeys'" in output

        emitted = run(
            tmp_path, env, "emit", "order.created", "--customer", "c1", "--order", "o1", "--data", '{"amount": 99}'
        )
        assert emitted.returncode == 0, emitted.stderr
        assert emitted.stdout.startswith("202 ")
        until_printed(
            tmp_path,
            env,
            ["history", "--order", "o1"],
            ["payment_reminder:o1  running at wait", "next wake-up", "pre_close_reminder:o1  running at wait_until"],
        )
        listed = run(tmp_path, env, "events")
        assert "order.created  customer c1  order o1  dispatched" in listed.stdout
        assert run(tmp_path, env, "events", "--pending").stdout.startswith("0 pending events")
        bad = run(tmp_path, env, "emit", "order.created", "--customer", "c1")
        assert bad.returncode == 1 and "order_id is required" in bad.stdout
    finally:
        stop_up(process)
    for stopped in (port, api_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", stopped)) != 0, f"port {stopped} is still listening"

    # Emitting while everything is down fails loudly; a second `up` finds the same instances.
    down = run(tmp_path, env, "emit", "order.paid", "--customer", "c1", "--order", "o1")
    assert down.returncode == 1 and "cannot reach the event API" in down.stderr
    process, output = start_up(tmp_path, port, ui_port, api_port)
    try:
        assert "worker polling" in output, output
        until_printed(tmp_path, env, ["history", "--order", "o1"], "payment_reminder:o1  running at wait")
        assert run(tmp_path, env, "emit", "order.paid", "--customer", "c1", "--order", "o1").returncode == 0
        until_printed(
            tmp_path,
            env,
            ["history", "--order", "o1"],
            ["payment_reminder:o1  completed", "pre_close_reminder:o1  completed"],
        )
    finally:
        stop_up(process)


def test_up_names_the_port_it_could_not_take(tmp_path):
    """A port already in use stops `up` with one line naming the port and the server's own
    words, not a traceback; nothing is left running."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ui_port))
        taken.listen()
        failed = subprocess.run(
            [*JOURNEYS, "up", "--port", str(port), "--ui-port", str(ui_port), "--api-port", str(api_port)],
            cwd=tmp_path,
            env=with_checkout(None),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert failed.returncode == 1
    assert failed.stderr.startswith("journeys up: the Temporal dev server exited with code 1"), failed.stderr
    assert f"can't set UI port {ui_port}" in failed.stderr and "address already in use" in failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the dev server is still listening"
