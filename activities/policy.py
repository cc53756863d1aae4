"""The contact policy, as one pure function, `decide`: blacklist, channel choice, quiet hours,
frequency cap, in that order (exactly-once is the ledger's job). The send activity records what it
decides; `journeys preview` shows what it would decide now. Lookups in the store (suppressions, the
recent marketing count) come in as functions, so the rule itself touches nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from activities.contacts import DEFAULT_REGION, UnusableContact, address_for
from core.records import Customer
from core.vocabulary import Reason

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


@dataclass(frozen=True)
class Decision:
    """What the policy says about one send: `send` on `channel` to `address`; `skip` with a
    `reason`; or `defer` until `resume_at` (quiet hours). `notes` are unusable contacts passed over."""

    action: Literal["send", "skip", "defer"]
    channel: str | None = None
    address: str | None = None
    reason: str | None = None
    detail: str | None = None
    resume_at: datetime | None = None
    notes: tuple[str, ...] = ()


def decide(
    customer: Customer | None,
    *,
    channel: str,
    fallback: str | None,
    category: str,
    at: datetime,
    deadline: datetime | None,
    suppression_scope: Callable[[str, str], str | None],
    marketing_since: Callable[[datetime], int],
    default_region: str = DEFAULT_REGION,
) -> Decision:
    """The contact policy for a send due `at` (the journey's clock). A send deferred past its
    `deadline` is skipped instead. `marketing_since(t)` counts the customer's marketing messages
    after t (asked only for marketing sends)."""
    if customer is None:
        return Decision("skip", reason=Reason.NO_CONTACT)
    if customer.blacklisted:
        return Decision("skip", reason=Reason.BLACKLISTED)
    choice = choose_channel(customer, channel, fallback, category, suppression_scope, default_region)
    if choice.channel is None:
        return Decision("skip", reason=choice.skip_reason or Reason.NO_CONTACT, notes=choice.problems)
    chosen = {"channel": choice.channel, "address": choice.address, "notes": choice.problems}
    resume_at = QUIET_HOURS.deferral(at, ZoneInfo(customer.timezone))
    if resume_at is not None:
        if deadline is not None and resume_at >= deadline:
            return Decision("skip", reason=Reason.QUIET_HOURS, detail=f"quiet until {resume_at}", **chosen)
        return Decision("defer", resume_at=resume_at, **chosen)
    if category == "marketing":
        recent = marketing_since(at - FREQUENCY_WINDOW)
        if recent >= FREQUENCY_CAP:
            detail = f"{recent} marketing messages in the last {FREQUENCY_WINDOW.days} days"
            return Decision("skip", reason=Reason.FREQUENCY_CAP, detail=detail, **chosen)
    return Decision("send", **chosen)
