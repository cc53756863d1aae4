"""The database: an engine for DATABASE_URL (a SQLite file by default) and its migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from store import reached

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def missing_database(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist (SQLite would create it empty on the
    first connection), else None: commands that only read check this first."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def make_engine(url: str, durable: bool = True) -> Engine:
    """An engine for `url`. SQLite transactions take the write lock at BEGIN (BEGIN IMMEDIATE), so
    a read-check-write in one transaction is atomic across threads and processes. `durable=False`
    (for throwaway stores such as a simulation's) skips SQLite's fsync on every commit. SQLite
    overwrites what it deletes with zeros (`secure_delete`), so an erased phone number is not left
    readable in the file's free pages; `Store.checkpoint` empties the write-ahead log."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=" + ("FULL" if durable else "OFF"))
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")  # erasure and retention leave no bytes behind
        cursor.close()
        # The time arithmetic PostgreSQL has built in (store/effect.py), exact to the microsecond.
        dbapi_connection.create_function("journeys_shift", 2, _shift, deterministic=True)
        dbapi_connection.create_function("journeys_local_day", 2, _local_day, deterministic=True)

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


#: How SQLAlchemy writes a datetime to SQLite (naive UTC); the functions below read and write it.
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.strptime(text if "." in text else text + ".000000", _SQLITE_TIME)


def _shift(text: str | None, seconds: float | None) -> str | None:
    moment = _sqlite_time(text)
    if moment is None or seconds is None:
        return None
    return (moment + timedelta(seconds=seconds)).strftime(_SQLITE_TIME)


def _local_day(text: str | None, zone: str) -> str | None:
    moment = _sqlite_time(text)
    return None if moment is None else moment.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    """The engine and a session factory; activities and the API share one per process."""

    def __init__(self, url: str, durable: bool = True):
        self.url = url
        self.engine = make_engine(url, durable)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Its sessions collect the messages they insert already sent, for `transaction`.
        reached.track_sends(self._sessions)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction, committed on success and rolled back on error. Before
        it commits, the `reached` read model notes the messages it inserted already sent (its
        send point, store/reached.py `note_sends`)."""
        with self._sessions() as session, session.begin():
            yield session
            reached.note_sends(session)

    @contextmanager
    def snapshot(self, readers: int) -> Iterator[list[Session]]:
        """`readers` sessions that read one snapshot of the database, for independent queries run
        side by side in threads: on PostgreSQL, REPEATABLE READ transactions that share the
        first one's exported snapshot (so together they see one moment); on SQLite, whose
        transactions take the write lock, one session `readers` times (run them one after
        another). Nothing is written; everything is rolled back at the end."""
        with ExitStack() as stack:
            first = stack.enter_context(self._sessions())
            if self.engine.dialect.name != "postgresql":
                try:
                    yield [first] * readers
                finally:
                    first.rollback()
                return
            repeatable = {"isolation_level": "REPEATABLE READ"}
            first.connection(execution_options=repeatable)
            shared = first.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            sessions = [first]
            for _ in range(readers - 1):
                session = stack.enter_context(self._sessions())
                session.connection(execution_options=repeatable)
                session.execute(text("SET TRANSACTION SNAPSHOT :snapshot"), {"snapshot": shared})
                sessions.append(session)
            try:
                yield sessions
            finally:
                for session in sessions:
                    session.rollback()

    @property
    def parallel(self) -> bool:
        """Whether the sessions of `snapshot` may run at once (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    async def run(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one transaction, in a thread, for async callers (the API)."""

        def in_transaction() -> T:
            with self.transaction() as session:
                return work(session)

        return await asyncio.to_thread(in_transaction)

    def checkpoint(self) -> None:
        """On SQLite, copy the write-ahead log into the database and truncate it (after an erasure
        or retention: the log still holds the old pages, personal data and all, until then). It
        waits for readers up to the busy timeout. Nothing to do on PostgreSQL (see docs/privacy.md
        for its dead rows and backups)."""
        if self.engine.dialect.name != "sqlite":
            return
        connection = self.engine.raw_connection()  # no BEGIN: a checkpoint cannot run in a transaction
        try:
            cursor = connection.cursor()
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.fetchall()
            cursor.close()
        finally:
            connection.close()

    def migrate(self) -> Store:
        migrate(self.engine)
        return self

    def dispose(self) -> None:
        self.engine.dispose()
