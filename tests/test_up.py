"""`journeys up` (what `make up` runs): starts the dev server and a worker, says where they are,
and stops everything on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from store import queries
from store.db import Store
from tests.helpers import free_port


def test_up_starts_and_stops_cleanly(tmp_path):
    port, ui_port, api_port = free_port(), free_port(), free_port()
    command = [
        str(Path(sys.executable).parent / "journeys"), "up",
        "--port", str(port), "--ui-port", str(ui_port), "--api-port", str(api_port),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "worker polling" in line:
                break
        output = "".join(lines)
        assert f"Temporal      127.0.0.1:{port}" in output, output
        assert f"Temporal UI   http://127.0.0.1:{ui_port}" in output
        assert "worker polling 'journeys'" in output
        assert f"Event API     http://127.0.0.1:{api_port}" in output
        event = {
            "event_id": "up-1", "type": "order.shipped", "occurred_at": "2026-02-01T10:00:00+08:00",
            "customer_id": "c1", "order_id": "o1", "data": {"carrier": "顺丰"},
        }  # fmt: skip
        answer = httpx.post(f"http://127.0.0.1:{api_port}/events", json=event, timeout=10)
        assert answer.status_code == 202, answer.text
        assert httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=10).json() == {"status": "ready"}
        store = Store(f"sqlite:///{tmp_path}/.data/journeys.db")
        try:
            for _ in range(100):  # the dispatcher hands it to Temporal, the worker runs the journey
                with store.transaction() as session:
                    rows = queries.list_messages(session)
                if rows:
                    break
                time.sleep(0.1)
            assert [(r.journey, r.status, r.reason) for r in rows] == [("shipped_notice", "skipped", "no_contact")]
        finally:
            store.dispose()
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert (tmp_path / ".data" / "temporal.db").exists() and (tmp_path / ".data" / "journeys.db").exists()
    for stopped in (port, api_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", stopped)) != 0, f"port {stopped} is still listening"
