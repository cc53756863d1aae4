"""Quiet hours: the hours of the night no message is sent in, in the customer's time zone. A send
due then is deferred to their end (or skipped, past the send's deadline: rules.policy). Which
hours apply to a send is the contact policy's (core.contact_policy: by category and channel, a
journey's or a step's own); `QuietHours.of` reads them as written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.contact_policy import DEFAULT_QUIET_HOURS, NO_QUIET_HOURS, clock, span


@dataclass(frozen=True)
class QuietHours:
    """Nothing is sent between `start` and `end` in the customer's time zone."""

    start: time
    end: time

    @classmethod
    def of(cls, hours: str) -> QuietHours | None:
        """`'21:00-09:00'` → those hours; `'none'` → None."""
        if hours == NO_QUIET_HOURS:
            return None
        start, end = span(hours)
        return cls(clock(start), clock(end))

    def deferral(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """When a send due at `at` may go instead, or None if `at` is outside quiet hours."""
        local = at.astimezone(tz)
        if self.end <= local.time() < self.start:
            return None
        day = local.date() if local.time() < self.end else local.date() + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=tz)


#: The quiet hours of the shipped policy (and of every send before policy.yaml): 22:00 to 08:00.
QUIET_HOURS = QuietHours.of(DEFAULT_QUIET_HOURS)
