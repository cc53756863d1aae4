"""The caps on how much reaches one customer: the frequency cap on marketing messages, and the
limits on a resource a send hands out (a coupon at most once per 30 days, at most two unredeemed).
Each `*_refusal` says why a send would break its cap, or None; the counts come from the store
through rules.policy's `Lookups`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

#: At most FREQUENCY_CAP marketing messages to a customer within FREQUENCY_WINDOW, all journeys
#: and channels together.
FREQUENCY_CAP = 2
FREQUENCY_WINDOW = timedelta(days=7)


def frequency_refusal(recent: int) -> str | None:
    """Why one more marketing message would break the frequency cap, given the `recent` ones sent
    within the window, or None."""
    if recent >= FREQUENCY_CAP:
        return f"{recent} marketing messages in the last {FREQUENCY_WINDOW.days} days"
    return None


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
