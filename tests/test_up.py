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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_starts_and_stops_cleanly(tmp_path):
    port, ui_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "journeys"), "up", "--port", str(port), "--ui-port", str(ui_port)]
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
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert (tmp_path / ".data" / "temporal.db").exists() and (tmp_path / ".data" / "journeys.db").exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the dev server is still listening"
