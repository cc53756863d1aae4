"""Send windows: when a send may go, by weekday, in the customer's time zone (policy.yaml's
`send_windows`, e.g. no marketing on Sunday mornings). A send due outside is deferred to the next
opening (or skipped, past the send's deadline: rules.policy)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from core.contact_policy import WEEKDAYS, span

#: A whole day, in minutes: a weekday the rule does not name is open all of it.
_ALL_DAY = [(0, 24 * 60)]


class NeverOpen(Exception):
    """No weekday of the rule has an opening: the send can never go."""


def _local(day: date, minute: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=tz) + timedelta(minutes=minute)


def opening(days: dict[str, list[str]], at: datetime, tz: ZoneInfo) -> datetime | None:
    """When a send due `at` may go under the weekday windows `days`: None if now, else the next
    opening; NeverOpen when every day of the week is closed."""
    local = at.astimezone(tz)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        weekday = WEEKDAYS[day.weekday()]
        ranges = sorted(span(text) for text in days[weekday]) if weekday in days else _ALL_DAY
        for start, end in ranges:
            begins, ends = _local(day, start, tz), _local(day, end, tz)
            if begins <= local < ends:
                return None
            if local < begins:
                return begins
    raise NeverOpen
