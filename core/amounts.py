"""One rule for an amount and one for a purchase, in a Python form and a SQL form side by side.

Every reader uses them: RFM (core/rfm.py, in the router, the workflow, preview and profiles),
`order.amount` (core/orders.py), segments (store/segments.py, RFM in SQL), the `orders` read
model (store/orders.py) and through it the effect report (store/effect.py, store/reached.py), and
the intake check of built-in order events (definitions/events.py). tests/test_amounts.py runs one
table of cases through the Python form and the SQL form on SQLite and PostgreSQL.

**An amount** (`data.amount`) is, exactly:
- a JSON number (not `true`/`false`) from 0 to 10^12, finite; or
- a JSON string of ASCII digits with an optional decimal part (`"129"`, `"129.00"`, `"007"`),
  at most 32 characters, whose value is from 0 to 10^12.

Its value is read as a double. Anything else is no amount: `null`, `true`, `"NaN"`, NaN,
infinities, negative numbers (`-500`, `"-5"`), exponents in a string (`"1e3"`; the JSON number
`1e3` is a number, 1000), surrounding spaces (`" 12"`), full-width digits (`"１２"`), words
(`"一百二十九元"`, `"12元"`), `"1.2.3"`, `""`, `".5"`, `"12."`, and anything over 10^12 (`1e308`). The
API refuses all of these at intake for built-in order events (`amount_problem`), so what is
accepted is read the same everywhere; events logged before that rule are read by it too.

**An order's amount** is its first payment's amount (the earliest `order.paid`), else its
latest creation's (`order.created`), else 0 for a purchase (an order paid with no readable amount
is a purchase of 0).

**A purchase** is an order with an `order.paid`; it counts from its first payment's time. As of
a moment T it is held when first paid at or before T and not refunded at or before T. RFM counts
the purchases held at T first paid in (T-365 d, T] (`in_year`); a report's period [start, end)
counts those first paid in it and not refunded before its end (`in_period`).

**A refund** (`order.refunded`, its amount, when given, more than 0) takes back the whole
purchase from its time on, its count and its amount, whatever amount it names. A refund before
any payment takes back nothing (there is no purchase).

**A written amount** (`written_amount`: a product's price, in `POST /products` and a CSV cell
alike) is an amount, or text that is one once read plainly: full-width digits and points made
ASCII, a leading `¥`/`￥` or a trailing `元` dropped, commas only between thousands (`1,299.00`;
`12,5` is none). Order events' `data.amount` keeps the strict rule.

The SQL form works on SQLAlchemy expressions and compiles for SQLite and PostgreSQL alike; it
is imported by store/ only (the workflow imports this module passed through, and never builds SQL).
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, and_, exists, func, literal, not_, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from core.records import ORDER_TYPES

#: The largest amount (10^12), and the longest string an amount may be written as.
MAX_AMOUNT = 10**12
MAX_AMOUNT_TEXT = 32
#: A string amount: ASCII digits, optionally a point and more digits (Python's `\d` would take
#: full-width digits, so the classes are spelled out).
AMOUNT_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: RFM's year: purchases first paid in (T-365 d, T] count at T.
WINDOW = timedelta(days=365)
#: Built-in event types whose `data.amount` is checked at intake (the order events; a review's
#: data is the reviewer's); a refund's must be more than 0.
AMOUNT_CHECKED_TYPES = ORDER_TYPES

# =============================================================================================
# Python form


def amount_number(value: Any) -> int | float | None:
    """`value` (a `data.amount`) as the number it is by the rule, or None: a JSON integer stays
    an integer (templates print `99`, not `99.0`), a string without a point becomes an integer,
    anything else a float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_AMOUNT else None
    if isinstance(value, float):
        return value + 0.0 if math.isfinite(value) and 0 <= value <= MAX_AMOUNT else None  # + 0.0: no -0.0
    if isinstance(value, str) and len(value) <= MAX_AMOUNT_TEXT and AMOUNT_TEXT.fullmatch(value):
        number = float(value)
        if number > MAX_AMOUNT:
            return None
        return int(value) if "." not in value else number
    return None


def amount_of(value: Any) -> float | None:
    """`value` (a `data.amount`) as an amount (a float), or None when it is none by the rule."""
    number = amount_number(value)
    return None if number is None else float(number)


#: An amount as a person writes it in a file or a product's price: `１２９．００`, `¥129`, `129元`,
#: `1,299.00`; commas only as thousands separators (`12,5` and `1,2,3` are no amount).
WRITTEN_AMOUNT = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?")


def written_amount(value: Any) -> int | float | None:
    """A price as a person wrote it (a product's `price`, in `POST /products` and a CSV cell alike):
    a number by the amount rule, or text that is one once read plainly: full-width digits and
    points made ASCII (NFKC), a leading ¥/￥ or a trailing 元 dropped, commas as thousands separators
    only. None when it is no amount. Order events' `data.amount` keeps the strict rule above."""
    if not isinstance(value, str):
        return amount_number(value)
    text = unicodedata.normalize("NFKC", value).strip()
    text = text.removeprefix("¥").removeprefix("￥").removesuffix("元").strip()  # NFKC keeps ￥ as ¥
    if len(text) > MAX_AMOUNT_TEXT or not WRITTEN_AMOUNT.fullmatch(text):
        return None
    return amount_number(text.replace(",", ""))


def amount_problem(value: Any, *, refund: bool = False) -> str | None:
    """What is wrong with a `data.amount` an event carries, for the intake's 422; None when it is
    an amount (or null: none given). A refund's amount must be more than 0."""
    if value is None:
        return None
    number = amount_of(value)
    if number is None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return (
            f"{shown} is not an amount: give a number from 0 to 10^12, or a string of digits with an optional "
            'decimal part ("129.00"), without spaces, signs, exponents, full-width digits or a currency'
        )
    if refund and number <= 0:
        return f"a refund's amount must be more than 0, not {value!r}"
    return None


def order_amount(paid_amount: float | None, created_amount: float | None) -> float:
    """An order's amount: its first payment's, else its latest creation's, else 0."""
    if paid_amount is not None:
        return paid_amount
    return created_amount if created_amount is not None else 0.0


def held(paid_at: datetime | None, refunded_at: datetime | None, at: datetime) -> bool:
    """Whether an order (its first payment and first refund) is a purchase held at `at`: first
    paid at or before it and not refunded at or before it."""
    return paid_at is not None and paid_at <= at and (refunded_at is None or refunded_at > at)


def in_year(paid_at: datetime | None, refunded_at: datetime | None, at: datetime) -> bool:
    """Whether an order counts for RFM at `at`: held then, first paid in (at - 365 d, at]."""
    return held(paid_at, refunded_at, at) and paid_at is not None and paid_at > at - WINDOW


def in_period(paid_at: datetime | None, refunded_at: datetime | None, start: datetime, end: datetime) -> bool:
    """Whether an order is a purchase of the period [start, end): first paid in it, not refunded
    before its end."""
    return paid_at is not None and start <= paid_at < end and (refunded_at is None or refunded_at >= end)


# =============================================================================================
# SQL form: the same rules as SQLAlchemy expressions, for SQLite and PostgreSQL


def decimal_text_sql(dialect: str, text_sql: str, max_chars: int) -> str:
    """The SQL condition "the text `text_sql` is a decimal string (`AMOUNT_TEXT`) of at most
    `max_chars` characters", for `dialect` ("sqlite" or "postgresql"); `text_sql` is SQL text
    (not NULL). Used by `amount_sql` and store/segments.py's trait numbers."""
    if dialect == "postgresql":
        pattern = f"^{AMOUNT_TEXT.pattern}$".replace("'", "''")
        return f"length({text_sql}) <= {max_chars} AND {text_sql} ~ '{pattern}'"
    if dialect == "sqlite":
        # GLOB cannot say `[0-9]+(\.[0-9]+)?` at once: a digit first, then only digits and
        # points, no point last, at most one point.
        return (
            f"length({text_sql}) <= {max_chars} AND {text_sql} GLOB '[0-9]*' AND {text_sql} NOT GLOB '*[^0-9.]*' "
            f"AND {text_sql} NOT GLOB '*.' AND {text_sql} NOT GLOB '*.*.*'"
        )
    raise ValueError(f"no decimal-text condition for the dialect {dialect!r}")


class _JsonAmount(FunctionElement):
    """`data.amount` of a JSON column by `amount_of`'s rule, as a double; NULL when none."""

    type = Float()
    inherit_cache = True
    name = "json_amount"


@compiles(_JsonAmount, "sqlite")
def _json_amount_sqlite(element, compiler, **kw):
    (column,) = element.clauses
    col = compiler.process(column, **kw)
    kind, value = f"json_type({col}, '$.\"amount\"')", f"json_extract({col}, '$.\"amount\"')"
    # A JSON number past a double (1e400) is read as Inf: out.
    return (
        f"(CASE WHEN {kind} IN ('integer', 'real') THEN "
        f"CASE WHEN {value} BETWEEN 0 AND {MAX_AMOUNT} THEN CAST({value} AS REAL) END "
        f"WHEN {kind} = 'text' THEN "
        f"CASE WHEN {decimal_text_sql('sqlite', value, MAX_AMOUNT_TEXT)} "
        f"AND CAST({value} AS REAL) <= {MAX_AMOUNT} THEN CAST({value} AS REAL) END END)"
    )


@compiles(_JsonAmount, "postgresql")
def _json_amount_pg(element, compiler, **kw):
    (column,) = element.clauses
    col = compiler.process(column, **kw)
    value, text = f"({col} -> 'amount')", f"({col} ->> 'amount')"
    # Nested CASEs: PostgreSQL evaluates a THEN only when its WHEN holds, so a cast never sees
    # text it cannot read. A JSON number is bounded as NUMERIC first (any size casts), then read
    # as a double; a string is checked by its pattern and length before it is cast.
    double = f"CAST({text} AS DOUBLE PRECISION)"
    return (
        f"(CASE json_typeof({value}) "
        f"WHEN 'number' THEN CASE WHEN CAST({text} AS NUMERIC) BETWEEN 0 AND {MAX_AMOUNT * 10} THEN "
        f"CASE WHEN {double} <= {MAX_AMOUNT} THEN {double} END END "
        f"WHEN 'string' THEN CASE WHEN {decimal_text_sql('postgresql', text, MAX_AMOUNT_TEXT)} THEN "
        f"CASE WHEN {double} <= {MAX_AMOUNT} THEN {double} END END END)"
    )


def amount_sql(data) -> ColumnElement:
    """SQL form of `amount_of`: the `amount` of the JSON column `data` (an event's data), a double
    or NULL."""
    return _JsonAmount(data)


def order_amount_sql(paid_amount, created_amount) -> ColumnElement:
    """SQL form of `order_amount`."""
    return func.coalesce(paid_amount, created_amount, 0.0)


def _moment(value: datetime | ColumnElement, like) -> ColumnElement:
    """A time to compare with the column `like`: a Python datetime bound with the column's type
    (store/tables' UTCDateTime keeps SQLite's UTC convention), or an expression as it is."""
    return literal(value, like.type) if isinstance(value, datetime) else value


def held_sql(paid_at, refunded_at, at: datetime | ColumnElement) -> ColumnElement:
    """SQL form of `held`: `paid_at` and `refunded_at` are an order's first payment and refund."""
    moment = _moment(at, paid_at)
    return and_(paid_at.is_not(None), paid_at <= moment, or_(refunded_at.is_(None), refunded_at > moment))


def in_year_sql(paid_at, refunded_at, at: datetime) -> ColumnElement:
    """SQL form of `in_year`."""
    return and_(held_sql(paid_at, refunded_at, at), paid_at > _moment(at - WINDOW, paid_at))


def in_year_log_sql(paid_at, log, at: datetime, *, order_id, customer_id) -> ColumnElement:
    """SQL form of `in_year` over the event log: `paid_at` is the order's first payment, and "not
    refunded at or before `at`" is "no `order.refunded` of the order in `log` (an alias of the
    events table) at or before it", the same as a first refund after it (an anti-join the
    database plans well, where a first refund's time per order would be looked up twice)."""
    refunded = exists().where(
        log.order_id == order_id,
        log.customer_id == customer_id,
        log.type == "order.refunded",
        log.occurred_at <= _moment(at, log.occurred_at),
    )
    moment = _moment(at, paid_at)
    return and_(paid_at.is_not(None), paid_at <= moment, paid_at > _moment(at - WINDOW, paid_at), not_(refunded))


def in_period_sql(paid_at, refunded_at, start: datetime, end: datetime) -> ColumnElement:
    """SQL form of `in_period`."""
    end_at = _moment(end, paid_at)
    return and_(paid_at >= _moment(start, paid_at), paid_at < end_at, or_(refunded_at.is_(None), refunded_at >= end_at))
