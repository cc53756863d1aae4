"""The contact policy, as one pure function, `decide`: blacklist, channel choice, quiet hours,
resource limits, frequency cap, in that order (exactly-once is the ledger's job). The send activity
records what it decides; `journeys preview` shows what it would decide now. What the rule needs from
the store (suppressions, the recent marketing count, a resource's issues and redemptions) comes in
through `Lookups`, so the rule itself touches nothing; `StoreLookups` answers from a session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from activities.contacts import DEFAULT_REGION, UnusableContact, address_for
from core.durations import format_duration
from core.records import Customer
from core.vocabulary import Reason
from definitions.schema import Resource
from store import queries

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


@dataclass(frozen=True)
class ResourceUses:
    """One customer's history with one resource: when it was issued (sent, or possibly sent) and
    when a redemption event for it arrived."""

    issued: tuple[datetime, ...] = ()
    redeemed: tuple[datetime, ...] = ()


def unredeemed(resource: Resource, at: datetime, uses: ResourceUses) -> int:
    """How many issued are neither redeemed nor expired at `at`. Each redemption redeems the
    oldest one issued before it that had not expired by then."""
    lifetime = resource.lifetime

    def alive(issued: datetime, when: datetime) -> bool:
        return lifetime is None or when < issued + lifetime

    outstanding: list[datetime] = []
    # At equal times the issue comes first: a coupon redeemed the moment it arrives was redeemed.
    for when, redemption in sorted([(t, False) for t in uses.issued] + [(t, True) for t in uses.redeemed]):
        if not redemption:
            outstanding.append(when)
            continue
        outstanding = [issued for issued in outstanding if alive(issued, when)]
        if outstanding:
            outstanding.pop(0)
    return sum(1 for issued in outstanding if alive(issued, at))


def resource_refusal(resource: Resource, at: datetime, uses: ResourceUses) -> str | None:
    """Why issuing `resource` at `at` would break one of its limits, or None. Issues after `at`
    count too: another journey may have decided a moment later on its own clock."""
    window = resource.window
    if window is not None:
        recent = [issued for issued in uses.issued if issued > at - window]
        if recent:
            return f"{resource.name} already issued at {max(recent).isoformat()}; at most once per {resource.once_per}"
    if resource.max_unredeemed is not None:
        open_ = unredeemed(resource, at, uses)
        if open_ >= resource.max_unredeemed:
            return f"{open_} {resource.name} issued and not redeemed; at most {resource.max_unredeemed}"
    return None


class Lookups(Protocol):
    """What the policy asks the store, for one customer."""

    def suppression_scope(self, channel: str, address: str) -> str | None: ...

    def marketing_since(self, since: datetime) -> int: ...

    def resource_uses(self, resource: Resource) -> ResourceUses: ...


@dataclass(frozen=True)
class StoreLookups:
    """The policy's lookups answered from the store, in the caller's transaction."""

    session: Session
    customer_id: str

    def suppression_scope(self, channel: str, address: str) -> str | None:
        return queries.suppression_scope(self.session, channel, address)

    def marketing_since(self, since: datetime) -> int:
        return queries.counted_marketing_since(self.session, self.customer_id, since)

    def resource_uses(self, resource: Resource) -> ResourceUses:
        issued = queries.resource_issued(self.session, self.customer_id, resource.name)
        redeemed = (
            queries.resource_redeemed(self.session, self.customer_id, resource.redeemed_by, resource.name)
            if resource.redeemed_by
            else []
        )
        return ResourceUses(tuple(issued), tuple(redeemed))


def decide(
    customer: Customer | None,
    *,
    channel: str,
    fallback: str | None,
    category: str,
    at: datetime,
    deadline: datetime | None,
    lookups: Lookups,
    resource: Resource | None = None,
    default_region: str = DEFAULT_REGION,
    planned_at: datetime | None = None,
    max_lateness: timedelta | None = None,
) -> Decision:
    """The contact policy for a send due `at` (the journey's clock), handing out `resource` if
    given. A send deferred past its `deadline` is skipped instead; so is one more than
    `max_lateness` past its `planned_at` (stale: an order replayed days late sends no notice)."""
    if planned_at is not None and max_lateness is not None and at - planned_at > max_lateness:
        late, most = format_duration(at - planned_at), format_duration(max_lateness)
        detail = f"planned for {planned_at.isoformat()}, {late} late; max_lateness {most}"
        return Decision("skip", reason=Reason.STALE, detail=detail)
    if customer is None:
        return Decision("skip", reason=Reason.NO_CONTACT)
    if customer.blacklisted:
        return Decision("skip", reason=Reason.BLACKLISTED)
    choice = choose_channel(customer, channel, fallback, category, lookups.suppression_scope, default_region)
    if choice.channel is None:
        return Decision("skip", reason=choice.skip_reason or Reason.NO_CONTACT, notes=choice.problems)
    chosen = {"channel": choice.channel, "address": choice.address, "notes": choice.problems}
    resume_at = QUIET_HOURS.deferral(at, ZoneInfo(customer.timezone))
    if resume_at is not None:
        if deadline is not None and resume_at >= deadline:
            return Decision("skip", reason=Reason.QUIET_HOURS, detail=f"quiet until {resume_at}", **chosen)
        return Decision("defer", resume_at=resume_at, **chosen)
    if resource is not None:
        refusal = resource_refusal(resource, at, lookups.resource_uses(resource))
        if refusal is not None:
            return Decision("skip", reason=Reason.RESOURCE_LIMIT, detail=refusal, **chosen)
    if category == "marketing":
        recent = lookups.marketing_since(at - FREQUENCY_WINDOW)
        if recent >= FREQUENCY_CAP:
            detail = f"{recent} marketing messages in the last {FREQUENCY_WINDOW.days} days"
            return Decision("skip", reason=Reason.FREQUENCY_CAP, detail=detail, **chosen)
    return Decision("send", **chosen)
