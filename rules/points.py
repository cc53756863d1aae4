"""The points arithmetic (积分体系, core/loyalty.py), from values alone: what a purchase earns, which
source a bonus is kept once by, when a lot of points lapses, and how spending and lapsing take the
oldest lots first. store/points.py keeps the ledger and activities/points.py applies these to it.

**A purchase** earns `earning.points` for each `earning.per` of its amount, times the highest
factor of the multipliers (限时积分活动) active at its payment: from `start` (inclusive) to `end`
(exclusive), for everyone, for the members of a segment, or for the items of one catalogue
category. Factors do not multiply: each part of the amount takes the highest factor that applies
to it. A category's part of the amount is the sum of its items' price × quantity (the item's
`price`, else the catalogue's), at most the order's amount (scaled down together when the items
add up to more: a discount is shared); the rest (shipping, items of other categories, items with
no known price) takes the factor for everyone. When every item of the order is of one category,
the whole amount is that category's, prices or not. The total is rounded once, as
`earning.rounding` says (down, half_up or up), in decimal arithmetic (199.99 earns 199, not 199.98999).

**A lot** is a positive entry; it lapses at its `expires_at`: `rolling_days` after it counts, or at
the end of the calendar year after the one it was earned in (in the programme's zone: points earned
any day of 2026 lapse at 2028-01-01 00:00, so their last day, `expires_on`, is 2027-12-31).

**Debits** (redeem, expire, a negative adjust, import or reverse) take from the lots in the order
they were recorded, each from the oldest lot (by when it counts) with points left; an expiry takes
from the lot it names. A debit larger than what is left leaves a deficit (a refund of points
already spent takes the balance below zero), and the next lots pay it off first. So the points
left in the lots always add up to the balance, or to 0 when the balance is below zero.
"""

from __future__ import annotations

from bisect import insort
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal
from zoneinfo import ZoneInfo

from core.loyalty import Bonus, Earning, Expiry, Multiplier

#: The most points one entry may move (the ledger's column is a 32-bit integer): a purchase earns at
#: most this many, and a request may ask for at most this many.
MAX_ENTRY_POINTS = 1_000_000_000

_ROUNDING = {"down": ROUND_DOWN, "half_up": ROUND_HALF_UP, "up": ROUND_UP}


def _decimal(value: float | int) -> Decimal:
    return Decimal(str(value))


@dataclass(frozen=True)
class Item:
    """One line of an order, as the category multipliers read it: its catalogue category (None when
    its SKU is not in the catalogue) and its price × quantity (None when no price is known)."""

    category: str | None
    amount: float | None


@dataclass(frozen=True)
class Earned:
    """What a purchase earns, and the multipliers that counted (by name), for the entry's reason."""

    points: int
    multipliers: tuple[str, ...] = ()


def active_multipliers(
    multipliers: Iterable[Multiplier], paid_at: datetime, segments: Collection[str]
) -> list[Multiplier]:
    """The multipliers that apply to a purchase paid at `paid_at` by a customer in `segments` (names)."""
    return [
        multiplier
        for multiplier in multipliers
        if multiplier.start <= paid_at < multiplier.end
        and (multiplier.segment is None or multiplier.segment in segments)
    ]


def _parts(amount: Decimal, items: Sequence[Item], categories: Collection[str]) -> dict[str | None, Decimal]:
    """The amount split by the categories that have a multiplier (None: the rest)."""
    known = {item.category for item in items}
    if items and len(known) == 1 and next(iter(known)) in categories:
        return {next(iter(known)): amount}  # every item of one category: the whole amount is its
    priced = [item for item in items if item.amount is not None and item.amount > 0]
    listed = sum((_decimal(item.amount) for item in priced if item.amount is not None), Decimal(0))
    share = amount / listed if listed > amount else Decimal(1)  # items worth more than paid: share the discount
    parts: dict[str | None, Decimal] = defaultdict(Decimal)
    for item in priced:
        if item.category in categories and item.amount is not None:
            parts[item.category] += _decimal(item.amount) * share
    total = sum(parts.values(), Decimal(0))
    parts[None] = amount - total
    return parts


def purchase_points(
    amount: float,
    earning: Earning,
    multipliers: Iterable[Multiplier],
    paid_at: datetime,
    segments: Collection[str] = (),
    items: Sequence[Item] = (),
) -> Earned:
    """The points a purchase of `amount` paid at `paid_at` earns (module docstring); `segments`
    are the names of the customer's segments, `items` the order's lines (for category multipliers)."""
    if amount <= 0:
        return Earned(0)
    active = active_multipliers(multipliers, paid_at, segments)
    everyone = max((_decimal(m.factor) for m in active if m.category is None), default=Decimal(1))
    by_category: dict[str, Decimal] = {}
    for multiplier in active:
        if multiplier.category is not None:
            factor = _decimal(multiplier.factor)
            by_category[multiplier.category] = max(by_category.get(multiplier.category, factor), factor)
    parts = _parts(_decimal(amount), items, by_category) if by_category else {None: _decimal(amount)}
    counted: set[str] = set()
    weighted = Decimal(0)
    for category, part in parts.items():
        if part <= 0:
            continue
        factor = max(everyone, by_category.get(category, Decimal(1))) if category is not None else everyone
        weighted += part * factor
        for multiplier in active:
            if _decimal(multiplier.factor) == factor and factor > 1 and multiplier.category in (None, category):
                counted.add(multiplier.name)
    raw = weighted * _decimal(earning.points) / _decimal(earning.per)
    points = min(int(raw.quantize(Decimal(1), rounding=_ROUNDING[earning.rounding])), MAX_ENTRY_POINTS)
    return Earned(points, tuple(sorted(counted)))


def bonus_source(bonus: Bonus, event_id: str, order_id: str | None, at: datetime, zone: str) -> str:
    """The ledger source that keeps a bonus to its `once_per`: one per event, per order (an event
    naming no order: per event), per calendar year in `zone` (of the event's time), or ever."""
    if bonus.once_per == "order" and order_id:
        return f"bonus:{bonus.name}:order:{order_id}"
    if bonus.once_per == "year":
        return f"bonus:{bonus.name}:year:{at.astimezone(ZoneInfo(zone)).year}"
    if bonus.once_per == "ever":
        return f"bonus:{bonus.name}:ever"
    return f"bonus:{bonus.name}:event:{event_id}"


def bonus_applies(bonus: Bonus, event_type: str, data: dict) -> bool:
    """Whether an event earns `bonus`: its type, and each `match` value in its data (equal as JSON
    values are: `true` is not 1)."""
    if event_type != bonus.event:
        return False
    for key, wanted in bonus.match.items():
        value = data.get(key)
        if value != wanted or isinstance(value, bool) != isinstance(wanted, bool):
            return False
    return True


def lot_expiry(at: datetime, expiry: Expiry, zone: str) -> datetime | None:
    """When points that count from `at` lapse: `rolling_days` later, or at the start of the second
    calendar year after `at`'s (in `zone`); None when they never do."""
    if expiry.rolling_days is not None:
        return at + timedelta(days=expiry.rolling_days)
    if expiry.end_of_next_year:
        local = at.astimezone(ZoneInfo(zone))
        return datetime(local.year + 2, 1, 1, tzinfo=ZoneInfo(zone))
    return None


def expires_on(expires_at: datetime, zone: str) -> date:
    """The last day (in `zone`) points lapsing at `expires_at` are good for."""
    return (expires_at - timedelta(microseconds=1)).astimezone(ZoneInfo(zone)).date()


# ---------------------------------------------------------------------------------------------
# Lots and debits


@dataclass(frozen=True)
class Entry:
    """A ledger entry as the allocation reads it, in the order entries were recorded. `lot`: the
    lot an expiry takes from (its source names it)."""

    entry_id: int
    points: int
    at: datetime
    expires_at: datetime | None = None
    lot: int | None = None


@dataclass
class Lot:
    """A positive entry and what is left of it after the debits recorded so far."""

    entry_id: int
    points: int
    at: datetime
    expires_at: datetime | None
    remaining: int


@dataclass
class Allocation:
    """The lots (in recording order), with what is left of each, and the deficit: what debits took
    beyond every lot (a balance below zero), which the next lots pay off first."""

    lots: list[Lot] = field(default_factory=list)
    deficit: int = 0

    def left(self) -> int:
        return sum(lot.remaining for lot in self.lots)


def _take(lot: Lot, wanted: int) -> int:
    taken = min(lot.remaining, wanted)
    lot.remaining -= taken
    return taken


def allocate(entries: Iterable[Entry]) -> Allocation:
    """Play the entries (in the order they were recorded) against the lots: each debit takes from
    the oldest lots first (by when they count, then by entry), an expiry from its own lot."""
    found = Allocation()
    by_id: dict[int, Lot] = {}
    oldest: list[Lot] = []  # the lots by when they count, kept sorted as lots arrive
    for entry in entries:
        if entry.points > 0:
            lot = Lot(entry.entry_id, entry.points, entry.at, entry.expires_at, entry.points)
            found.deficit -= _take(lot, found.deficit)
            found.lots.append(lot)
            by_id[lot.entry_id] = lot
            insort(oldest, lot, key=lambda held: (held.at, held.entry_id))
            continue
        wanted = -entry.points
        if entry.lot is not None and entry.lot in by_id:
            wanted -= _take(by_id[entry.lot], wanted)
        for lot in oldest:
            if wanted == 0:
                break
            wanted -= _take(lot, wanted)
        found.deficit += wanted
    return found


def lapsing(lots: Iterable[Lot], by: datetime) -> list[Lot]:
    """The lots with points left that lapse at or before `by`, oldest first."""
    due = [lot for lot in lots if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= by]
    return sorted(due, key=lambda lot: (lot.at, lot.entry_id))


@dataclass(frozen=True)
class Expiring:
    """Points lapsing on one day: `expires_on` (the last day they are good for), how many, and
    when the first of them lapses."""

    expires_on: date
    points: int
    expires_at: datetime


def upcoming(lots: Iterable[Lot], after: datetime, zone: str) -> list[Expiring]:
    """What is left in the lots that lapse after `after`, by day, soonest first."""
    days: dict[date, Expiring] = {}
    for lot in lots:
        if lot.remaining <= 0 or lot.expires_at is None or lot.expires_at <= after:
            continue
        day = expires_on(lot.expires_at, zone)
        held = days.get(day)
        days[day] = Expiring(
            day,
            lot.remaining + (held.points if held else 0),
            min(lot.expires_at, held.expires_at) if held else lot.expires_at,
        )
    return [days[day] for day in sorted(days)]


@dataclass(frozen=True)
class Notice:
    """A points.expiring notice due: `points` lapse on `expires_on`, `days` is the notice's number."""

    expires_on: date
    days: int
    points: int


def notices_due(lots: Iterable[Lot], at: datetime, notice_days: Iterable[int], zone: str) -> list[Notice]:
    """For each day points lapse on, the notice due at `at`: of the numbers N in `notice_days`
    whose time has come (at or after N days before the first of them lapses, and before it does),
    the nearest (the smallest N). One written late (a day the run missed) is still due; when
    several have come at once (a lot earned or imported close to its end) only the nearest is."""
    numbers = sorted(set(notice_days))
    found = []
    for expiring in upcoming(lots, at, zone):
        due = [n for n in numbers if at >= expiring.expires_at - timedelta(days=n)]
        if due:
            found.append(Notice(expiring.expires_on, due[0], expiring.points))
    return found
