"""The caps on how much reaches one customer: the contact policy's caps (policy.yaml: marketing at
most 2 per 7 days as shipped, several windows at once), and the limits on a resource a send hands
out (a coupon at most once per 30 days, at most two unredeemed). Each `*_refusal` says why a send
would break its cap, or None; the counts come from the store through rules.policy's `Lookups`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from core.contact_policy import Cap

#: When the messages a cap counts for the customer were sent, after a moment, on one channel or
#: (None) all, oldest first.
#: The messages counting against a cap, as (when sent, on which channel), since at least its longest window.
CapTimes = Sequence[tuple[datetime, str | None]]


@dataclass(frozen=True)
class CapCheck:
    """A cap's answer for one more message at a moment. `refusal`: why a window is full (None: a
    slot is free); `frees_at`: when every window has room again (with a refusal); `last_slot`: a
    slot is free, and taking it fills a window."""

    refusal: str | None = None
    frees_at: datetime | None = None
    last_slot: bool = False


def check_cap(cap: Cap, at: datetime, channel: str, sent: CapTimes, ahead: Sequence[datetime] = ()) -> CapCheck:
    """Whether one more message on `channel` at `at` fits every window of the cap, counting the
    messages `sent` and, as if sent at those moments, the waiting messages `ahead` of it (higher
    priority, due). A window with `per_channel` counts the chosen channel's messages alone. A full
    window names itself as `cap marketing 2/7d: 2 sent since ...`, or `cap marketing 2/7d; a
    higher-priority message holds the slot` when the waiting messages fill it."""
    counted: list[list[datetime]] = []
    refusal: str | None = None
    last_slot = False
    for window in cap.windows:
        since = at - window.length
        own = [when for when, on in sent if when > since and (on == channel or not window.per_channel)]
        times = sorted([*own, *ahead])
        counted.append(times)
        label = window.label(cap.name, channel)
        if len(times) >= window.max and refusal is None:
            refusal = (
                f"{label}: {len(own)} sent since {since.isoformat()}"
                if len(own) >= window.max
                else f"{label}; a higher-priority message holds the slot"
            )
        last_slot = last_slot or len(times) + 1 == window.max
    if refusal is None:
        return CapCheck(last_slot=last_slot)
    # The earliest moment every window has room: a full window frees when enough of its oldest
    # messages leave it; freeing one may leave another full, so again from there (times are fixed).
    moment = at
    for _ in range(64):
        later = moment
        for window, times in zip(cap.windows, counted, strict=True):
            inside = [t for t in times if t > moment - window.length]
            if len(inside) >= window.max:
                later = max(later, inside[len(inside) - window.max] + window.length)
        if later == moment:
            break
        moment = later
    return CapCheck(refusal=refusal, frees_at=moment)


class ResourceLimits(Protocol):
    """What the caps read of a resource: its limits as declared (definitions.schema.Resource, from
    definitions/resources.yaml, is one)."""

    @property
    def name(self) -> str: ...

    @property
    def once_per(self) -> str | None:
        """The window as written (`30d`), for the refusal's text."""

    @property
    def window(self) -> timedelta | None:
        """At most one issued to a customer within this long."""

    @property
    def max_unredeemed(self) -> int | None: ...

    @property
    def lifetime(self) -> timedelta | None:
        """An issued one no longer counts as unredeemed this long after it was issued."""

    @property
    def redeemed_by(self) -> str | None:
        """The event type that redeems one; None: nothing does."""


@dataclass(frozen=True)
class ResourceUses:
    """One customer's history with one resource: when it was issued (sent, or possibly sent) and
    when a redemption event for it arrived."""

    issued: tuple[datetime, ...] = ()
    redeemed: tuple[datetime, ...] = ()


def unredeemed(resource: ResourceLimits, at: datetime, uses: ResourceUses) -> int:
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


def resource_refusal(resource: ResourceLimits, at: datetime, uses: ResourceUses) -> str | None:
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
