"""The contact policy, as one pure function, `decide`: staleness, blacklist, channel choice, quiet
hours and send windows, resource limits, caps, in that order (exactly-once is the ledger's job).
The send activity records what it decides; `journeys preview` and a broadcast's dry run show what
it would decide now. Which hours and caps hold is the send's `SendPolicy` (core.contact_policy:
the shop's policy.yaml with the journey's and the step's overrides). What the rule needs from the
store (suppressions, how many messages a cap counts, a resource's issues and redemptions) comes in
through `Lookups`, so the rule itself touches nothing; store.lookups.StoreLookups answers from a
session."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from core.contact_policy import Cap, CapWait, ContactPolicy, SendPolicy
from core.contacts import UnusableContact
from core.durations import format_duration
from core.records import Customer
from core.vocabulary import Reason
from rules.caps import ResourceLimits, ResourceUses, check_cap, resource_refusal
from rules.contacts import address_for
from rules.quiet_hours import QuietHours
from rules.send_windows import NeverOpen, opening

#: The policy of a send nobody configured: the shipped one (22:00-08:00, marketing 2 per 7 days).
DEFAULT_POLICY = ContactPolicy().for_send()


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
    default_region: str,
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
    `reason`; or `defer` until `resume_at` with a `reason` (quiet hours, a send window, a full
    cap). `notes` are unusable contacts passed over. `cap`: the cap a send counts against when it
    is not its category's (a step's `cap: NAME`), for the ledger; None counts it against its
    category's. A deferral for a cap names it in `waits_for` with the message's `priority`, and
    `held` when it waits out the cap's `hold` before a last free slot: the store keeps it as a
    waiting message, which lower-priority messages leave the slot to."""

    action: Literal["send", "skip", "defer"]
    channel: str | None = None
    address: str | None = None
    reason: str | None = None
    detail: str | None = None
    resume_at: datetime | None = None
    notes: tuple[str, ...] = ()
    cap: str | None = None
    waits_for: str | None = None
    priority: int | None = None
    held: bool = False


class Lookups(Protocol):
    """What the policy asks the store, for one customer."""

    def suppression_scope(self, channel: str, address: str) -> str | None: ...

    def capped_at(self, cap: str, category: str | None, since: datetime) -> Sequence[tuple[datetime, str | None]]:
        """When, and on which channel, the messages sent (or possibly sent) to the customer after
        `since` that count against `cap` were sent, oldest first: those recorded against it, and
        those of `category` (the cap's) recorded against none; every channel."""

    def cap_waits(self, cap: str) -> Sequence[CapWait]:
        """The customer's other messages waiting for a slot of `cap` (deferred for it, undecided)."""

    def resource_issued(self, resource: str) -> Sequence[datetime]:
        """When `resource` was issued to the customer (sent, or possibly sent)."""

    def resource_redeemed(self, resource: str, event_type: str) -> Sequence[datetime]:
        """When the customer's `event_type` events redeemed `resource`."""


def resource_uses(resource: ResourceLimits, lookups: Lookups) -> ResourceUses:
    """The customer's history with `resource`; without a redeeming event nothing is ever redeemed."""
    issued = lookups.resource_issued(resource.name)
    redeemed = lookups.resource_redeemed(resource.name, resource.redeemed_by) if resource.redeemed_by else ()
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
    default_region: str,
    resource: ResourceLimits | None = None,
    planned_at: datetime | None = None,
    max_lateness: timedelta | None = None,
    policy: SendPolicy = DEFAULT_POLICY,
    waiting: CapWait | None = None,
) -> Decision:
    """The contact `policy` for a send due `at` (the journey's clock), handing out `resource` if
    given; national phone numbers are read in `default_region` (the shop's) unless the customer
    has their own. A send deferred past its `deadline` is skipped instead; so is one more than
    `max_lateness` past its `planned_at` (stale: an order replayed days late sends no notice).
    The hours that hold are the chosen channel's: a fallback may have other quiet hours.

    A full cap skips a send without a `deadline`; one with it waits (`defer`) for the moment the
    full windows free, and is skipped when that is not before the deadline (max_lateness makes
    nothing wait: every shipped marketing step sets one, and a full cap skips them as before).
    `waiting` is the send's own wait when it was deferred for the cap before: since when it waits
    ranks it among messages of equal priority. A send leaves a free slot to the customer's
    waiting messages of higher priority that are due (`_cap_decision`)."""
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
    tz = ZoneInfo(customer.timezone)
    held = _held_until(policy, category, choice.channel, at, tz)
    if held is not None:
        reason, resume_at, detail = held
        if resume_at is None or (deadline is not None and resume_at >= deadline):
            return Decision("skip", reason=reason, detail=detail, **chosen)
        return Decision("defer", resume_at=resume_at, reason=reason, detail=detail, **chosen)
    if resource is not None:
        refusal = resource_refusal(resource, at, resource_uses(resource, lookups))
        if refusal is not None:
            return Decision("skip", reason=Reason.RESOURCE_LIMIT, detail=refusal, **chosen)
    cap = policy.cap(category)
    if cap is not None and not policy.exempt:
        capped = _cap_decision(cap, policy, category, choice.channel, at, deadline, waiting, lookups, tz)
        if capped is not None:
            return dataclasses.replace(capped, **chosen)
    own = cap.name if cap is not None and cap.category != category else None
    return Decision("send", cap=own, **chosen)


def _cap_decision(
    cap: Cap,
    policy: SendPolicy,
    category: str,
    channel: str,
    at: datetime,
    deadline: datetime | None,
    waiting: CapWait | None,
    lookups: Lookups,
    tz: ZoneInfo,
) -> Decision | None:
    """The cap's answer for a send due `at` (a skip or a deferral; None: it may take a slot).

    Waiting messages ahead of it (higher priority, or equal and waiting longer; due within the
    cap's `hold`, and not past their deadline) count as if sent: a slot they need is not free.
    A send that finds every window full waits for the moment they free, moved past quiet hours
    and closed send windows, if that is before its `deadline`. A send about to take a last free
    slot first waits out the cap's `hold` (once), so that a higher-priority message due meanwhile
    goes first. Stale waits hold nothing: a wait past its deadline is ignored."""
    priority = policy.priority(category)
    hold = cap.hold_length
    since = waiting.waiting_since if waiting is not None else at
    ahead = sorted(
        max(other.resume_at, at)
        for other in lookups.cap_waits(cap.name)
        if other.deadline > at
        and other.resume_at <= at + hold
        and (other.priority > priority or (other.priority == priority and other.waiting_since < since))
    )

    # One read for every window: the longest one's messages, which each window filters.
    sent = lookups.capped_at(cap.name, cap.category, at - max(window.length for window in cap.windows))
    check = check_cap(cap, at, channel, sent, ahead)
    wait = {"reason": Reason.FREQUENCY_CAP, "waits_for": cap.name, "priority": priority}
    if check.refusal is None:
        just_held = waiting is not None and waiting.held and waiting.resume_at <= at
        if check.last_slot and hold and deadline is not None and not just_held and at + hold < deadline:
            detail = f"cap {cap.name}: the last free slot, held {cap.hold} for a higher-priority message"
            return Decision("defer", resume_at=at + hold, detail=detail, held=True, **wait)
        return None
    if deadline is None:
        return Decision("skip", reason=Reason.FREQUENCY_CAP, detail=check.refusal)
    resume_at = check.frees_at
    held = _held_until(policy, category, channel, resume_at, tz)
    if held is not None:
        resume_at = held[1]
    if resume_at is None or resume_at >= deadline:
        detail = f"{check.refusal}; no slot before its deadline {deadline.isoformat()}"
        return Decision("skip", reason=Reason.FREQUENCY_CAP, detail=detail)
    return Decision("defer", resume_at=resume_at, detail=check.refusal, **wait)


def _held_until(
    policy: SendPolicy, category: str, channel: str, at: datetime, tz: ZoneInfo
) -> tuple[str, datetime | None, str] | None:
    """Whether quiet hours or a send window hold a send due `at`: (the reason, the first moment
    both allow, or None when none ever comes, the detail); None when it may go now."""
    quiet = QuietHours.of(policy.quiet_hours(category, channel))
    window = policy.send_window(category, channel)
    held: str | None = None
    moment = at
    for _ in range(16):  # each step moves to the end of a quiet night or a window's opening
        resume = quiet.deferral(moment, tz) if quiet else None
        if resume is None and window is not None:
            try:
                resume = opening(window.days, moment, tz)
            except NeverOpen:
                return Reason.SEND_WINDOW, None, "the send windows never open"
            if resume is not None:
                held = held or Reason.SEND_WINDOW
        elif resume is not None:
            held = held or Reason.QUIET_HOURS
        if resume is None:
            break
        moment = resume
    else:
        return Reason.SEND_WINDOW, None, "no moment in the send windows outside quiet hours"
    if held is None:
        return None
    what = "quiet" if held == Reason.QUIET_HOURS else "send window closed"
    return held, moment, f"{what} until {moment}"
