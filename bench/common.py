"""What the benchmarks share: a throwaway PostgreSQL schema at the newest migration, timing,
and the process's peak memory."""

from __future__ import annotations

import os
import resource
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine, text

from store.db import Store

T = TypeVar("T")

PG_URL = os.environ.get("JOURNEYS_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
