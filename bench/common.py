"""What the SQL benchmarks share: a throwaway PostgreSQL schema at the newest migration, timing,
and the process's peak memory."""

from __future__ import annotations

import contextlib
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import create_engine, text

from store.db import Store

T = TypeVar("T")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(work: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call."""
    began = time.perf_counter()
    result = work()
    return time.perf_counter() - began, result


@contextlib.contextmanager
def scratch_schema(url: str, prefix: str) -> Iterator[str]:
    """A new schema in the database at `url`, migrated; yields a URL whose connections use it.
    The schema is dropped afterwards, also when filling or timing it fails."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    try:
        Store(scoped).migrate().dispose()
        yield scoped
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
