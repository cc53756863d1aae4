"""Member tiers (VIP体系) as pure decisions on a rolling window's measures (core/loyalty.py `Tiers`).

- `qualifies`: the highest level whose every given minimum (orders, spend, items, points) the
  measures reach, or None;
- `on_evaluation`: on a purchase or a refund, a level higher than the one held is taken at once
  (an upgrade); nothing is ever lowered here (a refund lowers a tier only at the card's end);
- `at_card_end`: when a card ends, `one_level` moves to the level the window qualifies for but
  at most one level below the held one (below the lowest: no tier), `qualified` to what the
  window qualifies for; a level at or above the held one renews the card (above it: an upgrade).

A tier name that is no longer configured ranks below every level (as no tier).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from core.loyalty import TierMinimum, Tiers

Direction = Literal["up", "down", "renew"]


class Measures(BaseModel):
    """A customer's window as the tiers read it: purchases held at the moment and first paid in
    the window, their amount, their items (where orders carry them) and the points earned."""

    orders: int = 0
    spend: float = 0.0
    items: int = 0
    points: int = 0
    window_days: int = Field(365, description="The window the measures cover, in days up to the moment.")

    def describe(self) -> str:
        """The measures as a reason names them."""
        text = f"{self.orders} orders, {self.spend:.2f} spent"
        if self.items:
            text += f", {self.items} items"
        if self.points:
            text += f", {self.points} points earned"
        return f"{text} in {self.window_days} days"


class Move(BaseModel):
    """A decision: the tier to hold (None: none) and how it moves from the held one."""

    to: str | None
    direction: Direction


def reaches(minimum: TierMinimum, measures: Measures) -> bool:
    """Whether every minimum given is reached (a level without any minimum is reached by all)."""
    return all(
        wanted is None or got >= wanted
        for wanted, got in (
            (minimum.orders, measures.orders),
            (minimum.spend, measures.spend),
            (minimum.items, measures.items),
            (minimum.points, measures.points),
        )
    )


def rank(tiers: Tiers, name: str | None) -> int:
    """A level's place, lowest 0; no tier (or one no longer configured) is -1."""
    names = tiers.names()
    return names.index(name) if name in names else -1


def qualifies(tiers: Tiers, measures: Measures) -> str | None:
    """The highest level whose minimums the measures reach, or None."""
    found = [tier.name for tier in tiers.levels if reaches(tier.min, measures)]
    return found[-1] if found else None


def direction(tiers: Tiers, held: str | None, to: str | None) -> Literal["up", "down"] | None:
    """How a change from `held` to `to` moves (None when it ranks the same)."""
    before, after = rank(tiers, held), rank(tiers, to)
    return "up" if after > before else "down" if after < before else None


def on_evaluation(tiers: Tiers, held: str | None, qualified: str | None) -> Move | None:
    """On a purchase or refund: an upgrade when the window qualifies above the held tier, else
    nothing (a tier is lowered only at its card's end)."""
    if qualified is not None and rank(tiers, qualified) > rank(tiers, held):
        return Move(to=qualified, direction="up")
    return None


def at_card_end(tiers: Tiers, held: str | None, qualified: str | None) -> Move:
    """At the card's end: renew at the held level (or go up) when the window qualifies for it or
    more; else down, by at most one level (`one_level`) or to what qualifies (`qualified`)."""
    held_rank, got = rank(tiers, held), rank(tiers, qualified)
    if held_rank >= 0 and got == held_rank:
        return Move(to=held, direction="renew")
    if got > held_rank:
        return Move(to=qualified, direction="up")
    if tiers.downgrade == "qualified" or held_rank < 0:
        return Move(to=qualified, direction="down")
    floor = max(got, held_rank - 1)
    return Move(to=tiers.levels[floor].name if floor >= 0 else None, direction="down")
