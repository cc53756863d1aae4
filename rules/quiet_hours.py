"""Quiet hours: the hours of the night no message is sent in, in the customer's time zone. A send
due then is deferred to their end (or skipped, past the send's deadline: rules.policy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class QuietHours:
    """Nothing is sent between `start` and `end` in the customer's time zone."""

    start: time = time(22, 0)
    end: time = time(8, 0)

    def deferral(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """When a send due at `at` may go instead, or None if `at` is outside quiet hours."""
        local = at.astimezone(tz)
        if self.end <= local.time() < self.start:
            return None
        day = local.date() if local.time() < self.end else local.date() + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=tz)


#: The quiet hours every send keeps: 22:00 to 08:00.
QUIET_HOURS = QuietHours()
