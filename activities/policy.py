"""The contact policy's rules, as pure functions the send activity applies in JOURNEYS.md's order:
blacklist, channel choice, quiet hours, frequency cap (exactly-once is the ledger's job)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from activities.contacts import DEFAULT_REGION, UnusableContact, address_for
from core.models import Customer

FREQUENCY_CAP = 2
FREQUENCY_WINDOW = timedelta(days=7)


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


QUIET_HOURS = QuietHours()


@dataclass(frozen=True)
class ChannelChoice:
    channel: str | None
    address: str | None
    skip_reason: str | None = None
    problems: tuple[str, ...] = ()  # unusable contacts passed over (a bad phone number), for the record


def choose_channel(
    customer: Customer,
    channel: str,
    fallback: str | None,
    category: str,
    suppression_scope: Callable[[str, str], str | None],
    default_region: str = DEFAULT_REGION,
) -> ChannelChoice:
    """The step's channel, else its fallback. An SMS unsubscribe blocks every SMS; an email
    unsubscribe blocks marketing email only; an unusable address (not a valid mobile number or
    email) counts as none. Nothing usable: `unsubscribed` if an address was there but blocked,
    else `no_contact`."""
    blocked = False
    problems: list[str] = []
    for candidate in (channel, fallback):
        if not candidate:
            continue
        try:
            address = address_for(customer, candidate, default_region)
        except UnusableContact as err:
            problems.append(str(err))
            continue
        if not address:
            continue
        scope = suppression_scope(candidate, address)
        if candidate in customer.unsubscribed:
            scope = "all" if candidate != "email" else "marketing"
        if scope == "all" or (scope == "marketing" and category == "marketing"):
            blocked = True
            continue
        return ChannelChoice(candidate, address, problems=tuple(problems))
    return ChannelChoice(None, None, "unsubscribed" if blocked else "no_contact", tuple(problems))
