"""Builders for the events and customers the tests play."""

from __future__ import annotations

import dataclasses
import itertools
import random
import socket
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import ActivityEnvironment

from core.records import Customer, Event

_ids = itertools.count(1)


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on right now, below the kernel's ephemeral range.

    `temporal server start-dev` binds five more ports of its own (history, matching, worker,
    HTTP, metrics), each found by binding port 0 and closing it, so they come from the ephemeral
    range. A port a test picked the same way and handed to a process that binds it later can be
    one of those: the dev server then exits with code 1 (seen once in CI). Ports below the range
    are never handed out by the kernel, so they cannot collide with the server's own picks."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def daytime_zone(now: datetime) -> str:
    """A fixed-offset time zone where `now` is between 12:00 and 13:59 local: at least eight hours
    from quiet hours (22:00-08:00) either way, so end-to-end tests with real clocks pass at any hour."""
    for offset in range(-12, 15):
        if 12 <= (now + timedelta(hours=offset)).hour <= 13:
            return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
    raise AssertionError("unreachable: every hour is 12 or 13 somewhere")


def attempt(number: int) -> ActivityEnvironment:
    """An activity environment for an activity's `number`th try: a retry, as Temporal makes it,
    is attempt 2 on (the send activity looks for its earlier ledger row only then)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number)
    return env


def at(text: str) -> datetime:
    """`'2026-02-01 10:00+08:00'` → an aware datetime (an offset is required)."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} needs an offset"
    return moment


def event(
    type: str,
    when: str | datetime,
    *,
    customer: str = "c1",
    order: str | None = None,
    event_id: str | None = None,
    **data: Any,
) -> Event:
    return Event(
        event_id=event_id or f"evt-{next(_ids)}",
        type=type,
        occurred_at=at(when) if isinstance(when, str) else when,
        customer_id=customer,
        order_id=order,
        data=data,
    )


def customer(customer_id: str = "c1", **fields: Any) -> Customer:
    base = {
        "name": "王芳",
        "phone": "+8613800000001",
        "email": "wangfang@example.com",
        "timezone": "Asia/Shanghai",
        "locale": "zh-CN",
    }
    return Customer(customer_id=customer_id, **{**base, **fields})


def summary(records: list[dict]) -> list[tuple]:
    """Records as (at, journey, order or customer, channel, status, reason), in time order."""
    return [
        (r["at"], r["journey"], r["order_id"] or r["customer_id"], r["channel"], r["status"], r["reason"])
        for r in records
    ]


def write_definitions(folder: Path, templates: dict[str, str], journeys: tuple[str, ...] | list[str]) -> Path:
    """A definitions folder of the given templates (name → YAML) and journeys (YAML, dedented)."""
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in templates.items():
        (folder / "templates" / f"{name}.yaml").write_text(text)
    for n, text in enumerate(journeys):
        (folder / f"j{n}.yaml").write_text(textwrap.dedent(text))
    return folder


#: How long a test waits for a Temporal dev server to start listening. The SDK's default (5 s) is
#: too short on a loaded 2-core machine: it failed once in make test with the server still starting.
DEV_SERVER_STARTUP = timedelta(seconds=60)


def shipped_definitions_with(folder: Path, files: dict[str, str]) -> Path:
    """A copy of the shipped definitions in `folder`, with `files` (path inside it → text) written in."""
    import shutil

    from definitions.loader import PACKAGE_DIR

    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for path, text in files.items():
        (folder / path).write_text(text)
    return folder


async def local_temporal(port: int):
    """A Temporal dev server on `port` (`async with await local_temporal(port):`), with the
    project's data converter and only errors in its log."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from core.temporal import binary

    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        port=port,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
