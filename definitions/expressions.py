"""The one language of conditions, computed times and templates: sandboxed Jinja2.

Expressions see `event`, `order`, `customer`, `vars` and `now` (in the customer's time zone) and
these helpers:

    time(x)            an RFC 3339 string or datetime → datetime; a naive time is read in the
                       customer's time zone
    minutes(n) hours(n) days(n) duration("1d12h")      → timedelta, for arithmetic on times
    yearly(date, time="10:00", before="3d")   the next moment, strictly after now, that is `before`
                       ahead of the yearly anniversary of `date` (YYYY-MM-DD or --MM-DD) at `time`
                       local; 29 February is kept on 28 February in other years

Templates add the filter `localtime(fmt)` (a time shown in the customer's time zone).

Everything here is deterministic (no clock, no I/O) so workflows may evaluate expressions.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from definitions.schema import parse_duration

_MONTH_DAY = re.compile(r"^(?:\d{4}|-)-(\d{2})-(\d{2})$")


class ExpressionError(ValueError):
    """An expression that does not parse, or that failed or gave the wrong kind of value."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, refusing unsafe attribute access loudly instead of yielding an
    undefined value, so an escape attempt fails with a message naming it."""

    def unsafe_undefined(self, obj: Any, attribute: str):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


# Conditions read free-form data: a missing field is falsy rather than an error.
_CONDITIONS = _Sandbox(undefined=ChainableUndefined)
TEMPLATES_TEXT = _Sandbox(undefined=StrictUndefined, autoescape=False)
TEMPLATES_HTML = _Sandbox(undefined=StrictUndefined, autoescape=True)


@lru_cache(maxsize=1024)
def _compiled(source: str):
    return _CONDITIONS.compile_expression(source, undefined_to_none=True)


def check_expression(source: str) -> str | None:
    """The parse error of an expression, or None when it parses."""
    try:
        _compiled(source)
    except TemplateSyntaxError as err:
        return f"expression {source!r} does not parse: {err.message}"
    return None


def check_template(source: str, html: bool = False) -> str | None:
    """The parse error of a template, or None when it parses."""
    try:
        (TEMPLATES_HTML if html else TEMPLATES_TEXT).parse(source)
    except TemplateSyntaxError as err:
        return f"line {err.lineno}: {err.message}"
    return None


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo:
    """The time zone `name` (Asia/Shanghai when empty). Workflows get zones here: the workflow
    sandbox only lets ZoneInfo through a passed-through module like this one."""
    return ZoneInfo(name or "Asia/Shanghai")


def to_datetime(value: Any, tz: ZoneInfo) -> datetime:
    """A datetime, date or RFC 3339 string as an aware datetime; naive values are read in `tz`."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as err:
            raise ExpressionError(f"{value!r} is not an RFC 3339 time") from err
    else:
        raise ExpressionError(f"{value!r} is not a time")
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def next_yearly(month_day: str, now: datetime, tz: ZoneInfo, at: str = "00:00", before: str = "0d") -> datetime:
    """The first `(anniversary − before) at `at` local` strictly after `now`."""
    match = _MONTH_DAY.match(str(month_day or ""))
    if not match:
        raise ExpressionError(f"{month_day!r} is not a date like YYYY-MM-DD or --MM-DD")
    month, day = int(match.group(1)), int(match.group(2))
    hour, minute = (int(part) for part in at.split(":"))
    lead = parse_duration(before)
    local_now = now.astimezone(tz)
    for year in range(local_now.year, local_now.year + 3):
        kept_day = 28 if (month, day) == (2, 29) and not calendar.isleap(year) else day
        # Wall-clock arithmetic: "3 days before at 10:00" stays 10:00 across a DST change.
        candidate = datetime(year, month, kept_day, hour, minute, tzinfo=tz) - lead
        if candidate > local_now:
            return candidate
    raise ExpressionError(f"no yearly date found for {month_day!r}")  # unreachable for real dates


def build_context(
    *,
    tz: ZoneInfo,
    now: datetime,
    event: Mapping[str, Any] | None = None,
    order: Mapping[str, Any] | None = None,
    customer: Mapping[str, Any] | None = None,
    vars: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The names an expression can use."""
    local_now = now.astimezone(tz)
    event = dict(event or {})
    if "occurred_at" in event:
        event["occurred_at"] = to_datetime(event["occurred_at"], tz).astimezone(tz)
    return {
        "event": event,
        "order": dict(order or {}),
        "customer": dict(customer or {}),
        "vars": dict(vars or {}),
        "now": local_now,
        "time": lambda value: to_datetime(value, tz).astimezone(tz),
        "minutes": lambda n: timedelta(minutes=n),
        "hours": lambda n: timedelta(hours=n),
        "days": lambda n: timedelta(days=n),
        "duration": parse_duration,
        "yearly": lambda value, time="00:00", before="0d": next_yearly(value, local_now, tz, time, before),
    }


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """The value of an expression; any failure becomes an ExpressionError naming the expression."""
    try:
        return _compiled(source)(**context)
    except ExpressionError:
        raise
    except Exception as err:  # a marketer's expression can fail in any way; name it
        raise ExpressionError(f"expression {source!r} failed: {err}") from err


def evaluate_time(source: str, context: Mapping[str, Any], tz: ZoneInfo) -> datetime:
    value = evaluate(source, context)
    if value is None:
        raise ExpressionError(f"expression {source!r} gave no time")
    return to_datetime(value, tz)
