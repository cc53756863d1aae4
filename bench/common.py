"""What the benchmarks share: a throwaway PostgreSQL schema at the newest migration, timing,
the process's peak memory, and a watchdog on the memory of the processes a benchmark starts."""

from __future__ import annotations

import os
import resource
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, text

from store.db import Store

T = TypeVar("T")

PG_URL = os.environ.get("JOURNEYS_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """The peak resident memory of this process (or, RUSAGE_CHILDREN, of its largest child), in MB."""
    return resource.getrusage(who).ru_maxrss / 1024


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` now, in MB (NaN once it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def meminfo_mb(field: str) -> float:
    """A figure of the machine's /proc/meminfo (MemTotal, MemAvailable), in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class MemoryLimitExceeded(RuntimeError):
    """The watchdog stopped the run: a watched process, or the machine, ran short of memory."""


class MemoryWatch:
    """Samples the RSS of named processes every `interval` seconds in a thread of its own and keeps
    each one's peak. When `limited` passes `limit_mb`, or the machine's available memory falls
    under `reserve` of its total, it stops sampling and notes why; `check()`, which a benchmark
    calls wherever it waits, then raises MemoryLimitExceeded with that reason, so the run stops
    and cleans up before the machine runs out. Use it as a context manager."""

    def __init__(
        self, pids: Callable[[], dict[str, int]], limited: str, limit_mb: float, *,
        interval: float = 2.0, reserve: float = 0.05,
    ) -> None:  # fmt: skip
        self.pids, self.limited, self.limit_mb = pids, limited, limit_mb
        self.interval, self.reserve = interval, reserve
        self.peaks: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.tripped: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def sample(self) -> None:
        for name, pid in self.pids().items():
            mb = rss_mb(pid)
            if mb == mb:  # not NaN: the process still runs
                self.last[name] = mb
                self.peaks[name] = max(self.peaks.get(name, 0.0), mb)
        server = self.last.get(self.limited, 0.0)
        available, total = meminfo_mb("MemAvailable"), meminfo_mb("MemTotal")
        if server > self.limit_mb:
            self.tripped = (
                f"the {self.limited} process reached {server:,.0f} MB RSS, over the limit of {self.limit_mb:,.0f} MB"
            )
        elif available < self.reserve * total:
            self.tripped = (
                f"the machine has {available:,.0f} MB available, under {self.reserve:.0%} of its {total:,.0f} MB "
                f"(the {self.limited} process at {server:,.0f} MB RSS)"
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
            if self.tripped:
                return

    def check(self) -> None:
        """Raise MemoryLimitExceeded if the watchdog has tripped."""
        if self.tripped:
            raise MemoryLimitExceeded(f"stopped by the memory watchdog: {self.tripped}")

    def describe_peaks(self) -> str:
        return ", ".join(f"{name} {mb:,.0f} MB" for name, mb in self.peaks.items())

    def describe_last(self) -> str:
        """The latest sample of each process."""
        return "RSS " + ", ".join(f"{name} {mb:,.0f} MB" for name, mb in self.last.items())

    def __enter__(self) -> MemoryWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def timed(work: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call."""
    began = time.perf_counter()
    result = work()
    return time.perf_counter() - began, result


class Schema:
    """A PostgreSQL schema of its own, migrated, with a Store on it (`url` for other processes).
    `drop()`, or the end of a `with` block, removes it, also when what ran in it failed."""

    def __init__(self, url: str = PG_URL, prefix: str = "journeys_bench") -> None:
        self.admin = create_engine(url, isolation_level="AUTOCOMMIT")
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._execute(f'CREATE SCHEMA "{self.name}"')
        self.url = f"{url}?options=-csearch_path%3D{self.name}"
        self.store = Store(self.url)
        try:
            self.store.migrate()
        except BaseException:
            self.drop()
            raise

    def _execute(self, statement: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(statement))

    def drop(self) -> None:
        self.store.dispose()
        self._execute(f'DROP SCHEMA "{self.name}" CASCADE')
        self.admin.dispose()

    def __enter__(self) -> Schema:
        return self

    def __exit__(self, *exc_info) -> None:
        self.drop()
