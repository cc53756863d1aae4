"""The engine as it is deployed, for the load test and the production benchmark: a Temporal dev
server, `journeys api` (the event API and its dispatcher) and one or more `journeys worker`
processes, each its own OS process with its log in a file, over one database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select

from journeys.up import server_command
from store import queries
from store.db import Store
from store.tables import MessageRow
from tests.helpers import free_port

JOURNEYS = str(Path(sys.executable).parent / "journeys")
TEMPORAL = str(Path(sys.executable).parent / "temporal")

#: What a healthy worker log never holds: deadlocks in the sandbox, failed evictions, journeys that
#: ended on an error, workflow tasks that failed.
WORKER_LOG_ALARMS = (
    "TMPRL1101",
    "Potential deadlock",
    "could not be evicted",
    "Failed running eviction",
    "Eviction processed",
    "expression error",
    "stopped at",  # a journey ended by an expression failing on its data (logged at ERROR)
    " ERROR ",
    "Failed activation",
    "Traceback",
)


def wait_until(check, seconds: float, what: str, interval: float = 0.2):
    """Poll `check` until it returns something truthy; fail naming `what` after `seconds` (a bound
    against hanging forever, never a performance assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {seconds:.0f} s")
        time.sleep(interval)


@dataclass
class Stack:
    """Start with `start()`, stop with `stop()` (or use it as a context manager)."""

    directory: Path
    database_url: str
    workers: int = 1
    task_queue: str = "journeys"
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Keep the dev server's state in this SQLite file, so the server can be stopped and started
    #: again with its workflows (in memory when None).
    server_db: Path | None = None
    #: Start the dev server as `journeys up` does (journeys.up.server_command: its flags, the Web
    #: UI, the search attributes), its state in `server_db` or else temporal.db in `directory`.
    as_up: bool = False

    def __post_init__(self) -> None:
        self.port, self.ui_port, self.api_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.outbox = self.directory / "outbox.jsonl"
        self.processes: dict[str, subprocess.Popen] = {}
        self.drain_seconds: dict[str, float] = {}

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.address,
            "DATABASE_URL": self.database_url,
            "JOURNEYS_TASK_QUEUE": self.task_queue,
            "JOURNEYS_OUTBOX": str(self.outbox),
            "JOURNEYS_API_PORT": str(self.api_port),
            "JOURNEYS_API_URL": self.api,
            "JOURNEYS_SHOP_NAME": "小店",
            **self.extra_env,
        }

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(command, cwd=self.directory, env=self.env, stdout=out, stderr=out)
        self.processes[name] = process
        return process

    def _port_open(self, port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def start_server(self) -> None:
        if self.as_up:
            self.server_db = self.server_db or self.directory / "temporal.db"
            self._spawn("temporal", server_command(self.server_db, self.port, self.ui_port))
        else:
            persist = ["--db-filename", str(self.server_db)] if self.server_db else []
            self._spawn(
                "temporal",
                [TEMPORAL, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port),
                 "--ui-port", str(self.ui_port), "--log-level", "error", *persist],
            )  # fmt: skip
        wait_until(lambda: self._port_open(self.port), 60, "the Temporal dev server")

    def stop_server(self) -> None:
        """Stop the Temporal server (its state stays in `server_db`); `start_server` brings it back."""
        process = self.processes.pop("temporal")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        wait_until(lambda: not self._port_open(self.port), 30, "the Temporal port to close")

    def kill_worker(self, n: int) -> None:
        """kill -9: the worker gets no chance to finish anything it was doing."""
        process = self.processes.pop(f"worker{n}")
        process.kill()
        process.wait()

    def start_worker(self, n: int) -> None:
        """Start worker `n` (again, after it was stopped: its log goes on in the same file)."""
        log = self.log(f"worker{n}")
        before = log.read_text(errors="replace").count("worker polling") if log.exists() else 0
        self._spawn(f"worker{n}", [JOURNEYS, "worker"])
        wait_until(lambda: log.read_text(errors="replace").count("worker polling") > before, 90, f"worker {n} to poll")

    def start_api(self, probe: str = "/readyz") -> None:
        """Start `journeys api` and wait until `probe` answers 200 (`/healthz` for an API without
        Temporal, whose /readyz says 503)."""
        self._spawn("api", [JOURNEYS, "api"])

        def ready() -> bool:
            try:
                return httpx.get(f"{self.api}{probe}", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, f"the API's {probe}")

    def start(self) -> Stack:
        self.start_server()
        for n in range(self.workers):
            self.start_worker(n)
        self.start_api()
        return self

    def worker_logs(self) -> str:
        return "".join(self.log(f"worker{n}").read_text(errors="replace") for n in range(self.workers))

    def stop_worker(self, n: int, grace: float = 60) -> float:
        """SIGTERM a worker and return how long it took to exit."""
        process = self.processes.pop(f"worker{n}")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"worker {n} was still running {grace:.0f} s after SIGTERM") from None
        self.drain_seconds[f"worker{n}"] = time.monotonic() - began
        return self.drain_seconds[f"worker{n}"]

    def stop(self) -> None:
        for name in ("api", *[f"worker{n}" for n in range(self.workers)], "temporal"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGINT if name == "api" else signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=40)
            if process.poll() is None:
                process.kill()
                process.wait()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def post(self, events: list[dict], batch: int = 100) -> None:
        """Post events in batches; every one must be accepted."""
        with httpx.Client(base_url=self.api, timeout=60) as client:
            for start in range(0, len(events), batch):
                answer = client.post("/events", json=events[start : start + batch])
                assert answer.status_code == 202, answer.text
                assert not answer.json()["rejected"], answer.text


def api_event(now, event_id: str, type: str, customer: str, order: str | None = None, **data) -> dict:
    """One event as an order system posts it to `POST /events`, occurring at `now`."""
    return {
        "event_id": event_id, "type": type, "occurred_at": now.isoformat(), "customer_id": customer,
        "order_id": order, "data": data,
    }  # fmt: skip


def pending(store: Store) -> int:
    """Events in the log not yet dispatched (nor dead letters)."""
    with store.transaction() as session:
        return queries.count_pending(session)


def sent(store: Store, journey: str) -> int:
    """Messages of `journey` the ledger records as sent."""
    with store.transaction() as session:
        return session.scalar(select(func.count()).where(MessageRow.journey == journey, MessageRow.status == "sent"))
