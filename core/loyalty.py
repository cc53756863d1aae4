"""The shop's loyalty programme (忠诚度管理) as `definitions/loyalty.yaml` states it: how points are
earned and expire (积分体系), the member tiers and their cards (VIP体系), and who is kept out
(积分黑名单, 会员黑名单). This module is the vocabulary only: the models of the file, the
engine's own event types and their data. The arithmetic is in rules/points.py and
rules/tiers.py; the ledger and the tiers are kept by store/points.py and store/tiers.py; they are
applied as events are logged and once a day by activities/loyalty.py.

The engine's own events (ENGINE_EVENT_TYPES) are written into the event log by the engine, each
exactly once (its id is made of what it is about, so a second write is a duplicate the log
refuses), and start journeys like any event; the API refuses them from outside:

- `points.earned` (customer): `points`, `balance`, `reason`, `source` (the entry's source),
  and `order_id` when a purchase earned them;
- `points.expiring` (customer): `points` (what lapses then), `expires_on` (a date), `days`
  (before), `balance`;
- `member.tier_changed` (customer): `from`, `to` (tier names; `from` null for a first tier, `to`
  null when the tier is lost), `direction` (`up`/`down`), `reason`, `until` (the card's end);
- `member.card_expiring` (customer): `tier`, `expires_on` (a date), `days` (before);
- `lifecycle.changed` (customer): `from`, `to` (stages, core/lifecycle.py), `direction`
  (`forward`: toward buying more, `backward`: toward lapsing, `sideways`: buying as often, the
  first purchase only aged past the active window: new_repeat -> old_repeat; store/lifecycle.py).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from core.records import ENGINE_EVENT_TYPES, Event, EventName

__all__ = ["ENGINE_EVENT_TYPES"]

#: A ledger entry's kind: what moved the balance.
EntryKind = Literal["earn", "redeem", "expire", "adjust", "import", "reverse"]
ENTRY_KINDS: tuple[str, ...] = get_args(EntryKind)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Earning(_Strict):
    """交易积分: `points` for each `per` of a purchase's amount (core/amounts.py's one rule), counted
    when the order is paid or when its receipt is confirmed, rounded as said."""

    points: float = Field(1, gt=0, description="Points for each `per` of the amount.")
    per: float = Field(1, gt=0, description="The amount (yuan) that earns `points`.")
    counted_at: Literal["paid", "confirmed"] = Field(
        "paid", description="paid: on order.paid; confirmed: on order.confirmed (确认收货)."
    )
    rounding: Literal["down", "half_up", "up"] = "down"


class Bonus(_Strict):
    """Points for an event that is not a purchase: a review, a review with photos (晒图), a birthday."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)
    title: str | None = None
    event: EventName
    points: int = Field(gt=0)
    #: The event's data must hold these values (`{has_photos: true}` for 晒图).
    match: dict[str, str | int | float | bool] = Field(default_factory=dict)
    #: At most once per event (the default), per order, per customer per calendar year, or ever.
    once_per: Literal["event", "order", "year", "ever"] = "event"


class Multiplier(_Strict):
    """限时积分活动: purchases paid from `start` until `end` earn `factor` times, for everyone, for
    a segment's members, or for the items of a catalogue category only."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)
    title: str | None = None
    factor: float = Field(gt=1, le=100)
    start: AwareDatetime
    end: AwareDatetime
    segment: str | None = None
    category: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Multiplier:
        if self.end <= self.start:
            raise ValueError(f"multiplier {self.name!r}: end must be after start")
        return self


class Expiry(_Strict):
    """When earned points lapse: `rolling_days` after earning, or at the end of the calendar year
    after the one they were earned in (in the shop's zone). Neither: they never lapse."""

    rolling_days: int | None = Field(None, ge=1, le=3650)
    end_of_next_year: bool = False
    #: points.expiring is written this many days before points lapse (one event per number).
    notice_days: list[int] = Field(default_factory=lambda: [30])

    @model_validator(mode="after")
    def _one(self) -> Expiry:
        if self.rolling_days is not None and self.end_of_next_year:
            raise ValueError("expiry: give rolling_days or end_of_next_year, not both")
        return self


class Points(_Strict):
    earning: Earning = Field(default_factory=Earning)
    bonuses: list[Bonus] = Field(default_factory=list)
    multipliers: list[Multiplier] = Field(default_factory=list)
    expiry: Expiry = Field(default_factory=Expiry)
    #: What one point is worth (yuan): the points overview's outstanding liability.
    point_value: float = Field(0.01, ge=0)


class TierMinimum(_Strict):
    """What a tier needs within the window; every measure given must be reached."""

    orders: int | None = Field(None, ge=0)
    spend: float | None = Field(None, ge=0)
    items: int | None = Field(None, ge=0)
    points: int | None = Field(None, ge=0)


class Tier(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)
    title: str | None = None
    min: TierMinimum


class Tiers(_Strict):
    """VIP体系: ordered levels, lowest first, reached on the purchases of a rolling window."""

    window_days: int = Field(365, ge=1, le=3650)
    #: A card is valid this long after the tier is reached (or renewed at re-evaluation).
    validity_days: int = Field(365, ge=1, le=3650)
    #: At the card's end the tier is re-evaluated: one_level drops at most one level; qualified
    #: drops to what the window qualifies for.
    downgrade: Literal["one_level", "qualified"] = "one_level"
    #: member.card_expiring is written this many days before the card ends (one event per number).
    notice_days: list[int] = Field(default_factory=lambda: [7, 1])
    levels: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Tiers:
        names = [tier.name for tier in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"tiers: a level is named twice: {', '.join(names)}")
        return self

    def names(self) -> list[str]:
        return [tier.name for tier in self.levels]


class Blacklist(_Strict):
    customers: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)


class Blacklists(_Strict):
    #: 积分黑名单: earns no points (redemption and adjustments still work).
    points: Blacklist = Field(default_factory=Blacklist)
    #: 会员黑名单: holds no tier.
    members: Blacklist = Field(default_factory=Blacklist)


class Loyalty(_Strict):
    """The whole file. Without `points` nobody earns; without `tiers` nobody holds a tier."""

    #: The zone the calendar rules (end_of_next_year, the daily notices' dates) are read in.
    zone: str = "Asia/Shanghai"
    points: Points | None = None
    tiers: Tiers | None = None
    blacklists: Blacklists = Field(default_factory=Blacklists)


#: No loyalty.yaml: no points, no tiers.
NO_LOYALTY = Loyalty()


class EntryView(BaseModel):
    """One ledger entry as the API shows it."""

    entry_id: int
    kind: EntryKind
    points: int
    reason: str
    source: str
    at: datetime
    expires_at: datetime | None = None


def _schema(required: list[str], properties: dict) -> dict:
    return {"type": "object", "required": required, "properties": properties}


_TIER = {"type": ["string", "null"]}
#: The engine's events: their title and the JSON Schema of their `data` (definitions/events.py
#: declares them beside the shop's own, so `journeys validate` knows their fields).
ENGINE_EVENT_SCHEMAS: dict[str, tuple[str, dict]] = {
    "points.earned": (
        "积分到账",
        _schema(
            ["points", "balance", "reason", "source"],
            {
                "points": {"type": "integer"},
                "balance": {"type": "integer"},
                "reason": {"type": "string"},
                "source": {"type": "string"},
                "order_id": {"type": "string"},
            },
        ),
    ),
    "points.expiring": (
        "积分即将到期",
        _schema(
            ["points", "expires_on", "days", "balance"],
            {
                "points": {"type": "integer"},
                "expires_on": {"type": "string", "format": "date"},
                "days": {"type": "integer"},
                "balance": {"type": "integer"},
            },
        ),
    ),
    "member.tier_changed": (
        "会员等级变更",
        _schema(
            ["from", "to", "direction", "reason"],
            {
                "from": _TIER,
                "to": _TIER,
                "direction": {"enum": ["up", "down"]},
                "reason": {"type": "string"},
                "until": {"type": ["string", "null"], "format": "date"},
            },
        ),
    ),
    "member.card_expiring": (
        "会员卡到期",
        _schema(
            ["tier", "expires_on", "days"],
            {
                "tier": {"type": "string"},
                "expires_on": {"type": "string", "format": "date"},
                "days": {"type": "integer"},
            },
        ),
    ),
    "lifecycle.changed": (
        "生命周期变化",
        _schema(
            ["from", "to", "direction"],
            {
                "from": {"type": "string"},
                "to": {"type": "string"},
                "direction": {"enum": ["forward", "backward", "sideways"]},
            },
        ),
    ),
}


def engine_event(kind: str, customer_id: str, about: str, at: datetime, data: dict[str, Any]) -> Event:
    """One of the engine's own events, its id made of what it is about (`about`: a ledger source,
    a card's end and the days before it, a stage's move and its day), so writing it twice logs it
    once: `points.expiring:c42:2027-12-31:30`. An id longer than the log keeps is hashed."""
    if kind not in ENGINE_EVENT_TYPES:
        raise ValueError(f"{kind!r} is not one of the engine's events")
    event_id = f"{kind}:{customer_id}:{about}"
    if len(event_id) > 200:
        event_id = f"{kind}:{hashlib.sha256(event_id.encode()).hexdigest()}"
    return Event(event_id=event_id, type=kind, customer_id=customer_id, occurred_at=at, data=data)
