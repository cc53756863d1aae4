"""SQL that PostgreSQL and SQLite write differently, behind one name: an INSERT with ON CONFLICT,
a time plus a fixed duration and a time's date in a time zone (SQLite gets the functions from
store/db.py), text compared byte by byte, and a long `IN (...)` list cut to the size SQLite takes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import Float, String, Table, literal
from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from store.tables import UTCDateTime

T = TypeVar("T")

#: Values bound in one `IN (...)`: SQLite takes a bounded number of parameters a statement (999
#: before 3.32), so a list of ids of any length is queried a slice at a time.
IN_LIST_SIZE = 500


def in_slices(values: Sequence[T], size: int = IN_LIST_SIZE) -> Iterator[Sequence[T]]:
    """`values` a slice of at most `size` at a time, each for one `column.in_(slice)`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def upsert_insert(session: Session, table: Table) -> PostgresqlInsert | SqliteInsert:
    """An INSERT into `table` in the session's dialect, which takes ON CONFLICT clauses
    (`on_conflict_do_nothing`, `on_conflict_do_update`, and `excluded` for the row proposed):
    both databases write them alike, but SQLAlchemy has an Insert of its own for each."""
    return dialect_insert(session.bind.dialect.name, table)


def dialect_insert(dialect: str, table: Table) -> PostgresqlInsert | SqliteInsert:
    """`upsert_insert` by the dialect's name, for a statement built once per dialect and kept."""
    return (postgresql_insert if dialect == "postgresql" else sqlite_insert)(table)


def _sql_function(name: str, result_type, postgresql: str) -> type[FunctionElement]:
    """A function PostgreSQL writes as `postgresql` ({0}, {1}: the arguments) and SQLite calls by
    `name` (store/db.py registers it on every connection)."""
    function = type(name, (FunctionElement,), {"name": name, "inherit_cache": True, "type": result_type})

    @compiles(function, "postgresql")
    def _postgresql(element, compiler, **kw):
        return postgresql.format(*(compiler.process(clause, **kw) for clause in element.clauses))

    @compiles(function, "sqlite")
    def _sqlite(element, compiler, **kw):
        return f"{name}({', '.join(compiler.process(clause, **kw) for clause in element.clauses)})"

    return function


_Shifted = _sql_function("journeys_shift", UTCDateTime(), "({0} + make_interval(secs => {1}))")
_LocalDay = _sql_function("journeys_local_day", String(), "to_char({0} AT TIME ZONE {1}, 'YYYY-MM-DD')")


def shifted(column, delta: timedelta) -> ColumnElement:
    """A time plus a fixed duration."""
    return _Shifted(column, literal(delta.total_seconds(), Float(), literal_execute=True))


def local_day(column, timezone: str) -> ColumnElement:
    """A time's date (YYYY-MM-DD) in a time zone."""
    return _LocalDay(column, literal(timezone, String()))


class _Bytewise(FunctionElement):
    inherit_cache = True
    name = "bytewise"


@compiles(_Bytewise, "postgresql")
def _bytewise_postgresql(element, compiler, **kw):
    (column,) = element.clauses
    return f'{compiler.process(column, **kw)} COLLATE "C"'


@compiles(_Bytewise, "sqlite")
def _bytewise_sqlite(element, compiler, **kw):
    (column,) = element.clauses
    return compiler.process(column, **kw)  # SQLite compares bytes by default (BINARY)


def bytewise(column) -> ColumnElement:
    """Text to sort or partition by as bytes: ids need no language's collation, and PostgreSQL
    sorts a million of them several times faster so (its "C" collation)."""
    return _Bytewise(column)
