"""`journeys api` on its own: it takes events while Temporal is down, says it is not ready, and
refuses to listen beyond loopback without API keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import free_port
from tests.stack import wait_until

JOURNEYS = str(Path(sys.executable).parent / "journeys")


def test_api_takes_events_while_temporal_is_down(tmp_path):
    api_port, nothing_there = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/journeys.db",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{nothing_there}",
        "JOURNEYS_API_PORT": str(api_port),
    }
    process = subprocess.Popen(
        [JOURNEYS, "api"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 90, "the API process's /healthz")  # its start-up is slow on a loaded machine
        event = {
            "event_id": "down-1", "type": "order.created", "occurred_at": "2026-02-01T10:00:00+08:00",
            "customer_id": "c1", "order_id": "o1",
        }  # fmt: skip
        answer = httpx.post(f"http://127.0.0.1:{api_port}/events", json=event, timeout=10)
        assert answer.status_code == 202, answer.text
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=15)
        assert ready.status_code == 503 and "Temporal" in ready.json()["detail"]
        listed = subprocess.run([JOURNEYS, "events", "--pending"], env=env, capture_output=True, text=True, timeout=30)
        assert listed.stdout.startswith("1 pending events")
        assert "down-1  order.created" in listed.stdout
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_api_without_keys_stays_on_loopback(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/journeys.db", "JOURNEYS_API_HOST": "0.0.0.0"}
    refused = subprocess.run([JOURNEYS, "api"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "no API keys are configured (JOURNEYS_API_KEYS), so the API listens on 127.0.0.1 only" in refused.stderr


def test_api_refuses_a_malformed_key_list_without_showing_a_secret(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/journeys.db",
        "JOURNEYS_API_KEYS": "shop:ingest:s3cret-one,ops:superuser:s3cret-two",
    }
    refused = subprocess.run([JOURNEYS, "api"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "JOURNEYS_API_KEYS entry 2 has the unknown role 'superuser'; roles are ingest, read, operator, publish, admin"
    )
    assert "s3cret" not in refused.stderr + refused.stdout
