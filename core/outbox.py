"""The local outbox file (JOURNEYS_OUTBOX): one JSON line per message the outbox channel
(channels.outbox) 'sent', with the time it was written (`written_at`).

The lines hold personal data (the address, the body), so erasure (`forget_customer`) and
retention (`expire_lines`) rewrite the file without the lines they remove: a new file, written
beside it, flushed and renamed over it. Every writer, in any process, holds an exclusive lock on
`PATH.lock` (fcntl.flock; `locked`) while it appends or rewrites, so no line is appended to a
file that is being replaced, and none is lost.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the outbox's lock file (`PATH.lock`) exclusively: across threads and processes, one
    writer at a time appends to or replaces the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rewrite(path: Path | None, drop: Callable[[list[tuple[str, dict[str, Any] | None]]], list[bool]]) -> int:
    """Remove lines from the outbox: `drop` gets every line with its JSON (None for a line that
    is not JSON, such as one cut short by a crash) and says which go. The rest are written to a
    new file, flushed to disk and renamed over the old one, under the lock; the directory is
    flushed too. Returns how many lines went; the file is untouched when none does."""
    if path is None or not path.exists():
        return 0
    with locked(path):
        with path.open(encoding="utf-8", errors="replace") as source:
            lines = [line.rstrip("\n") for line in source if line.strip()]
        verdicts = drop([(line, _json(line)) for line in lines])
        kept = [line for line, gone in zip(lines, verdicts, strict=True) if not gone]
        if len(kept) == len(lines):
            return 0
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as out:
                out.writelines(line + "\n" for line in kept)
                out.flush()
                os.fsync(out.fileno())
            shutil.copymode(path, temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return len(lines) - len(kept)


def _json(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def forget_customer(path: Path | None, customer_id: str) -> int:
    """Erasure: remove the customer's lines (address, name and body with them). A line that is not
    JSON goes too if it names the customer's id."""
    quoted = json.dumps(customer_id, ensure_ascii=False)

    def drop(lines: list[tuple[str, dict[str, Any] | None]]) -> list[bool]:
        return [record.get("customer_id") == customer_id if record else quoted in line for line, record in lines]

    return rewrite(path, drop)


def expire_lines(path: Path | None, before: datetime, sent_at: Callable[[list[str]], dict[str, datetime]]) -> int:
    """Retention: remove the lines written before `before`. A line from before lines carried
    `written_at` is dated by its message's ledger row (`sent_at`: message id -> time); one the
    ledger does not know, or that is not JSON, cannot be dated and goes."""

    def drop(lines: list[tuple[str, dict[str, Any] | None]]) -> list[bool]:
        undated = [str(r.get("message_id")) for _, r in lines if r and "written_at" not in r]
        ledger = sent_at(undated) if undated else {}
        verdicts = []
        for _, record in lines:
            at = _written_at(record, ledger)
            verdicts.append(at is None or at < before)
        return verdicts

    return rewrite(path, drop)


def _written_at(record: dict[str, Any] | None, ledger: dict[str, datetime]) -> datetime | None:
    if record is None:
        return None
    if "written_at" in record:
        try:
            at = datetime.fromisoformat(str(record["written_at"]))
        except ValueError:
            return None
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return ledger.get(str(record.get("message_id")))
