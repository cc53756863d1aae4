"""Member tiers (VIP体系): evaluation when a customer's orders change (upgrades at once),
re-evaluation at a card's end (downgrade by at most one level, or to what qualifies), the
member.tier_changed / member.card_expiring notices (activities/loyalty.py calls these), and an
operator's override, a customer's tier and the report (the API and the CLI call these).

- **On a purchase or a refund** (`note_customers`, in the transaction that logs the events): the
  window is measured as of now; a higher level than the one held is taken at once, with a new
  card (since now, until now + validity_days). A refund never lowers a tier here: the tier is
  re-evaluated at its card's end. A customer on the member blacklist (会员黑名单: listed, or in a
  listed segment) loses the tier they hold (reason 会员黑名单) and gains none.
- **An override** (`override`, `POST /customers/{id}/tier`, `journeys tier set`) sets a tier (or
  none) until a date, logged as `override` with who and why. It is never lowered before its
  `until` (purchases and refunds do not lower any tier anyway), but a purchase that qualifies for
  a higher level still upgrades it at once: an override is a floor, not a ceiling.
- **Daily** (`daily`): cards ended by the run's moment are re-evaluated (renew: a new card from
  the old one's end, no event; up or down: member.tier_changed); member.card_expiring notices go
  out for cards ending within each of notice_days (once each: the event's id is the card's end
  date and the number of days); customers without a tier who qualify on their history (imported
  as backfill, which moves no tier by itself) get it, the reason naming that history; holders on
  the member blacklist lose their tier.

Every change is one row of the change log, its source unique per customer (`up:vip:<time>`,
`renew:vip:<card end>`), and its event's id is made of the same source, so a retry writes
nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from activities.engine_events import write_engine_events
from core.loyalty import Loyalty, Tiers, engine_event
from core.records import Event
from definitions.loader import Definitions
from rules.tiers import Measures, at_card_end, direction, on_evaluation, qualifies, rank
from store import reached
from store import tiers as tier_store
from store.db import Store
from store.segments import segments_of
from store.tables import MemberTierRow

if TYPE_CHECKING:
    from activities.loyalty import DailyReport

#: Customers per transaction in the daily run.
BATCH = 500
ENGINE = "engine"
BLACKLIST_REASON = "会员黑名单"


class NoTiers(Exception):
    """No member tiers are configured (loyalty.yaml has no `tiers`)."""

    def __init__(self) -> None:
        super().__init__("no member tiers are configured: definitions/loyalty.yaml has no `tiers`")


class OverrideRefused(ValueError):
    """An override that cannot be made; `status` is the HTTP answer it deserves (422 or 409)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _tiers(definitions: Definitions) -> Tiers:
    if definitions.loyalty.tiers is None:
        raise NoTiers()
    return definitions.loyalty.tiers


def measures_of(session: Session, customer_ids: Iterable[str], at: datetime, tiers: Tiers) -> dict[str, Measures]:
    """Each customer's window as of `at` (store/tiers.py measures it)."""
    found = tier_store.window_measures(session, set(customer_ids), at, tiers.window_days)
    return {customer: Measures(**vars(m), window_days=tiers.window_days) for customer, m in found.items()}


def blacklisted(session: Session, customer_ids: Iterable[str], definitions: Definitions, at: datetime) -> set[str]:
    """Those of `customer_ids` on the member blacklist at `at`: listed, or in a listed segment."""
    listed = definitions.loyalty.blacklists.members
    wanted = set(customer_ids)
    found = wanted & set(listed.customers)
    segments = [definitions.segments[name] for name in listed.segments if name in definitions.segments]
    if segments:
        for customer in sorted(wanted - found):
            if segments_of(session, customer, segments, at, definitions.rfm):
                found.add(customer)
    return found


def _title(tiers: Tiers, name: str | None) -> str | None:
    level = next((tier for tier in tiers.levels if tier.name == name), None)
    return None if level is None else level.title or level.name


def _day(moment: datetime, loyalty: Loyalty) -> str:
    """A moment's date in the shop's loyalty zone (what notices and cards name)."""
    return moment.astimezone(ZoneInfo(loyalty.zone)).date().isoformat()


def _change(
    session: Session,
    definitions: Definitions,
    customer_id: str,
    held: MemberTierRow | None,
    *,
    to: str | None,
    direction_logged: str,
    reason: str,
    by: str,
    source: str,
    now: datetime,
    since: datetime,
    until: datetime,
    overridden: bool = False,
) -> Event | None:
    """Apply a change: the tier row, the log row (once per source) and, when the tier moved up or
    down, the member.tier_changed event to write (None otherwise, or when the source was logged
    before)."""
    loyalty = definitions.loyalty
    tiers = _tiers(definitions)
    before = held.tier if held is not None else None
    change = {"customer_id": customer_id, "from_tier": before, "to_tier": to, "direction": direction_logged}
    if not tier_store.log_change(session, change | {"reason": reason, "by": by, "source": source, "at": now}):
        return None
    if to is None:
        tier_store.remove_tier(session, customer_id)
    else:
        tier_store.set_tier(session, customer_id, to, since=since, until=until, overridden=overridden, now=now)
    moved = direction(tiers, before, to) if before != to else None
    if moved is None:
        return None
    data: dict[str, Any] = {
        "from": before,
        "to": to,
        "direction": moved,
        "reason": reason,
        "until": _day(until, loyalty) if to is not None else None,
    }
    return engine_event("member.tier_changed", customer_id, source, now, data)


def _upgrade(
    session: Session,
    definitions: Definitions,
    customer_id: str,
    held: MemberTierRow | None,
    to: str,
    reason: str,
    now: datetime,
) -> Event | None:
    tiers = _tiers(definitions)
    return _change(
        session, definitions, customer_id, held,
        to=to, direction_logged="up", reason=reason, by=ENGINE, source=f"up:{to}:{now.isoformat()}",
        now=now, since=now, until=now + timedelta(days=tiers.validity_days),
    )  # fmt: skip


def _lose_to_blacklist(session: Session, definitions: Definitions, held: MemberTierRow, now: datetime) -> Event | None:
    return _change(
        session, definitions, held.customer_id, held,
        to=None, direction_logged="down", reason=BLACKLIST_REASON, by=ENGINE,
        source=f"down:{held.tier}:blacklist:{now.isoformat()}", now=now, since=now, until=now,
    )  # fmt: skip


def note_customers(session: Session, customers: Iterable[str], definitions: Definitions, now: datetime) -> list[Event]:
    """Re-evaluate the tiers of customers whose orders just changed (a purchase, a refund): an
    upgrade at once when the window qualifies above the held tier; a blacklisted holder loses
    theirs. Returns the member.tier_changed events to log."""
    tiers = definitions.loyalty.tiers
    wanted = sorted(set(customers))
    if tiers is None or not wanted:
        return []
    held = tier_store.current_of(session, wanted)
    excluded = blacklisted(session, wanted, definitions, now)
    measures = measures_of(session, [c for c in wanted if c not in excluded], now, tiers)
    caused: list[Event] = []
    for customer in wanted:
        holding = held.get(customer)
        if customer in excluded:
            event = _lose_to_blacklist(session, definitions, holding, now) if holding is not None else None
        else:
            window = measures[customer]
            move = on_evaluation(tiers, holding.tier if holding else None, qualifies(tiers, window))
            event = None
            if move is not None and move.to is not None:
                reason = f"{window.describe()}: reach {_title(tiers, move.to)} ({move.to})"
                event = _upgrade(session, definitions, customer, holding, move.to, reason, now)
        if event is not None:
            caused.append(event)
    return caused


# ---------------------------------------------------------------------------------------------
# Daily


def _written(session: Session, events: list[Event], definitions: Definitions, at: datetime) -> list[Event]:
    """Log the events in the batch's transaction; those the log took now."""
    ids = write_engine_events(session, events, definitions, at)
    return [event for event in events if event.event_id in ids]


def _reevaluate(session: Session, definitions: Definitions, rows: list[MemberTierRow], at: datetime) -> list[Event]:
    """Cards that ended: renew, or move up or down."""
    tiers = _tiers(definitions)
    excluded = blacklisted(session, [row.customer_id for row in rows], definitions, at)
    measures = measures_of(session, [row.customer_id for row in rows if row.customer_id not in excluded], at, tiers)
    events: list[Event] = []
    for row in rows:
        if row.customer_id in excluded:
            event = _lose_to_blacklist(session, definitions, row, at)
        else:
            window = measures[row.customer_id]
            move = at_card_end(tiers, row.tier, qualifies(tiers, window))
            ended = row.until
            source = f"{move.direction}:{move.to}:{ended.isoformat()}"
            if move.direction == "renew":
                renewed = ended + timedelta(days=tiers.validity_days)
                if renewed <= at:  # a run missed for a whole card: a new card from now
                    renewed = at + timedelta(days=tiers.validity_days)
                reason = f"re-evaluated at the card's end: {window.describe()} still reach {row.tier}"
                event = _change(
                    session, definitions, row.customer_id, row,
                    to=row.tier, direction_logged="renew", reason=reason, by=ENGINE, source=source,
                    now=at, since=row.since, until=renewed,
                )  # fmt: skip
            else:
                mode = "" if move.direction == "up" else f"; {tiers.downgrade}"
                reason = (
                    f"re-evaluated at the card's end: {window.describe()} "
                    f"qualify for {qualifies(tiers, window) or 'no tier'}{mode}"
                )
                event = _change(
                    session, definitions, row.customer_id, row,
                    to=move.to, direction_logged=move.direction, reason=reason, by=ENGINE, source=source,
                    now=at, since=at, until=at + timedelta(days=tiers.validity_days),
                )  # fmt: skip
        if event is not None:
            events.append(event)
    return events


def _notices(definitions: Definitions, rows: list[MemberTierRow], at: datetime) -> list[Event]:
    """member.card_expiring for each card and each N of notice_days with at in [until - N days,
    until): its id names the card's end date and N, so it is written once."""
    tiers = _tiers(definitions)
    loyalty = definitions.loyalty
    events = []
    for row in rows:
        for days in sorted(set(tiers.notice_days)):
            if row.until - timedelta(days=days) <= at < row.until:
                expires_on = _day(row.until, loyalty)
                data = {"tier": row.tier, "expires_on": expires_on, "days": days}
                events.append(engine_event("member.card_expiring", row.customer_id, f"{expires_on}:{days}", at, data))
    return events


def _untiered(session: Session, definitions: Definitions, customers: list[str], at: datetime) -> list[Event]:
    """Customers without a tier whose history qualifies: an upgrade, its reason naming it."""
    tiers = _tiers(definitions)
    excluded = blacklisted(session, customers, definitions, at)
    wanted = [customer for customer in customers if customer not in excluded]
    events = []
    for customer, window in measures_of(session, wanted, at, tiers).items():
        to = qualifies(tiers, window)
        if to is None:
            continue
        reason = f"history: {window.describe()}: reach {_title(tiers, to)} ({to})"
        event = _upgrade(session, definitions, customer, None, to, reason, at)
        if event is not None:
            events.append(event)
    return events


def _blacklisted_holders(session: Session, definitions: Definitions, rows: list[MemberTierRow], at: datetime):
    excluded = blacklisted(session, [row.customer_id for row in rows], definitions, at)
    lost = [_lose_to_blacklist(session, definitions, row, at) for row in rows if row.customer_id in excluded]
    return [event for event in lost if event is not None]


def daily(store: Store, definitions: Definitions, at: datetime, report: DailyReport) -> Iterator[Event]:
    """Re-evaluate the cards that ended by `at`; yield member.card_expiring notices due; give
    customers without a tier what their history qualifies for; take the tier of blacklisted
    holders. Each batch of customers is one transaction that writes its changes and its events
    (queries.store_events) together; the events yielded are those written now."""
    tiers = definitions.loyalty.tiers
    if tiers is None:
        return
    listed = definitions.loyalty.blacklists.members
    if listed.customers or listed.segments:
        yield from _pages(
            store, definitions, at, lambda session, after: tier_store.holders(session, after=after, limit=BATCH),
            lambda session, rows: _blacklisted_holders(session, definitions, rows, at),
        )  # fmt: skip
    yield from _pages(
        store, definitions, at, lambda session, after: tier_store.cards_ended(session, at, after=after, limit=BATCH),
        lambda session, rows: _reevaluate(session, definitions, rows, at),
    )  # fmt: skip
    longest = max(tiers.notice_days, default=0)
    if longest > 0:
        yield from _pages(
            store, definitions, at,
            lambda session, after: tier_store.cards_ending(session, at, longest, after=after, limit=BATCH),
            lambda session, rows: _notices(definitions, rows, at),
        )  # fmt: skip
    everyone = any(all(v in (None, 0) for v in level.min.model_dump().values()) for level in tiers.levels)
    yield from _pages(
        store, definitions, at,
        lambda session, after: tier_store.untiered_candidates(
            session, at, tiers.window_days, everyone=everyone, after=after, limit=BATCH
        ),
        lambda session, customers: _untiered(session, definitions, customers, at),
    )  # fmt: skip


def _pages(
    store: Store,
    definitions: Definitions,
    at: datetime,
    fetch: Callable[[Session, str | None], list[Any]],
    work: Callable[[Session, list[Any]], list[Event]],
) -> Iterator[Event]:
    """Page through customers by id (`fetch`: tier rows or ids after a customer), one transaction
    each: lock them, `work` out the changes and events, log the events; yield the events written,
    once the batch is committed."""
    after: str | None = None
    while True:
        with store.transaction() as session:
            found = fetch(session, after)
            ids = [item if isinstance(item, str) else item.customer_id for item in found]  # before any change
            reached.lock_customers(session, ids)
            written = _written(session, work(session, found), definitions, at)
        yield from written
        if len(found) < BATCH:
            return
        after = ids[-1]


# ---------------------------------------------------------------------------------------------
# An operator's override, a customer's tier, the report


def until_of(value: date | datetime | None, definitions: Definitions, now: datetime) -> datetime:
    """An override's end: a date is the start of that day in the loyalty zone (the card expires on
    it), a time as given; none: now + validity_days. Refused when not after now, or over ten years."""
    tiers = _tiers(definitions)
    if value is None:
        return now + timedelta(days=tiers.validity_days)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise OverrideRefused(f"until {value.isoformat()} has no time zone: give a date, or a time with its zone")
        until = value
    else:
        until = datetime.combine(value, time(), ZoneInfo(definitions.loyalty.zone))
    if until <= now:
        raise OverrideRefused(f"until {until.isoformat()} is not after now ({now.isoformat()})")
    if until > now + timedelta(days=3650):
        raise OverrideRefused(f"until {until.isoformat()} is more than ten years away")
    return until


def override(
    session: Session,
    definitions: Definitions,
    customer_id: str,
    tier: str | None,
    *,
    reason: str,
    by: str,
    until: date | datetime | None,
    now: datetime,
) -> Event | None:
    """An operator sets `tier` (None: removes it) until `until`, logged as `override` with who and
    why; returns the member.tier_changed event to log when the tier changes."""
    tiers = _tiers(definitions)
    if tier is not None and tier not in tiers.names():
        raise OverrideRefused(f"unknown tier {_shown(tier)}; the tiers are {', '.join(tiers.names())}")
    if not reason.strip():
        raise OverrideRefused("give a reason for the override")
    if tier is not None and blacklisted(session, [customer_id], definitions, now):
        raise OverrideRefused(f"customer {customer_id!r} is on the member blacklist (会员黑名单): no tier", 409)
    ends = until_of(until, definitions, now)
    reached.lock_customers(session, [customer_id])
    held = tier_store.current(session, customer_id)
    since = held.since if held is not None and held.tier == tier else now
    return _change(
        session, definitions, customer_id, held,
        to=tier, direction_logged="override", reason=reason.strip(), by=by,
        source=f"override:{tier}:{now.isoformat()}", now=now, since=since, until=ends, overridden=True,
    )  # fmt: skip


def _shown(text: str) -> str:
    """A name as an error may echo it: printable text only (a lone surrogate cannot be answered)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "(not UTF-8 text)"
    return repr(text[:60]) if text.isprintable() else "(with control characters)"


class Change(BaseModel):
    from_tier: str | None = Field(serialization_alias="from")
    to_tier: str | None = Field(serialization_alias="to")
    direction: str = Field(description="up, down, renew (the card renewed at the same tier) or override.")
    reason: str
    by: str = Field(description="engine, or the operator (the API key's name).")
    source: str
    at: datetime


class TierView(BaseModel):
    customer_id: str
    tier: str | None
    title: str | None
    since: datetime | None
    until: datetime | None
    overridden: bool = Field(False, description="Set by an operator: not lowered before `until`.")
    measures: Measures = Field(description="The window as of `at`.")
    qualifies: str | None = Field(description="The level the window qualifies for now.")
    changes: list[Change] = Field(description="The change log (变更日志), newest first.")
    at: datetime


def show(session: Session, definitions: Definitions, customer_id: str, now: datetime) -> TierView:
    """The customer's tier, its card, the window now and the change log."""
    tiers = _tiers(definitions)
    row = tier_store.current(session, customer_id)
    window = measures_of(session, [customer_id], now, tiers)[customer_id]
    return TierView(
        customer_id=customer_id,
        tier=row.tier if row else None,
        title=_title(tiers, row.tier) if row else None,
        since=row.since if row else None,
        until=row.until if row else None,
        overridden=bool(row.overridden) if row else False,
        measures=window,
        qualifies=qualifies(tiers, window),
        changes=[
            Change(
                from_tier=c.from_tier,
                to_tier=c.to_tier,
                direction=c.direction,
                reason=c.reason,
                by=c.by,
                source=c.source,
                at=c.at,
            )  # fmt: skip
            for c in tier_store.changes(session, customer_id)
        ],
        at=now,
    )


class MoveCount(BaseModel):
    from_tier: str | None = Field(serialization_alias="from")
    to_tier: str | None = Field(serialization_alias="to")
    count: int


class Distribution(BaseModel):
    at: datetime
    counts: dict[str, int] = Field(description="Customers per tier (levels lowest first); `none`: lost their tier.")


class TierReport(BaseModel):
    month: str
    zone: str
    start: datetime
    end: datetime
    levels: list[str]
    at_end: Distribution | None = Field(description="At the month's end (null while the month runs).")
    now: Distribution | None = Field(description="Now, for the current month.")
    matrix: list[MoveCount] = Field(description="The month's moves from one tier to another (renewals apart).")
    upward: int = Field(description="正向迁移: moves to a higher tier (from none included).")
    downward: int = Field(description="负向迁移: moves to a lower tier (to none included).")
    renewed: int = Field(description="Cards renewed at the same tier.")


def month_bounds(month: str, zone: str) -> tuple[datetime, datetime]:
    """[start, end) of `month` (YYYY-MM) in `zone`; ValueError naming it when it is no month."""
    try:
        year, number = (int(part) for part in month.split("-"))
        start = datetime(year, number, 1, tzinfo=ZoneInfo(zone))
        end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=ZoneInfo(zone))
    except ValueError:
        raise ValueError(f"{_shown(month)} is not a month: give YYYY-MM (2026-11)") from None
    return start, end


def _counts(tiers: Tiers, found: dict[str | None, int]) -> dict[str, int]:
    counts = {name: found.get(name, 0) for name in tiers.names()}
    counts["none"] = sum(n for name, n in found.items() if name not in counts)
    return counts


def _distribution(session: Session, tiers: Tiers, at: datetime) -> Distribution:
    return Distribution(at=at, counts=_counts(tiers, tier_store.distribution(session, at)))


def report(session: Session, definitions: Definitions, month: str, now: datetime) -> TierReport:
    """The tier distribution at the month's end (and now, for the current month) and the month's
    migration matrix from the change log."""
    tiers = _tiers(definitions)
    zone = definitions.loyalty.zone
    start, end = month_bounds(month, zone)
    if start > now:
        raise ValueError(f"{month} has not begun")
    matrix: dict[tuple[str | None, str | None], int] = {}
    upward = downward = renewed = 0
    for from_tier, to_tier, _direction, count in tier_store.moves(session, start, end):
        if from_tier == to_tier:
            renewed += count if _direction == "renew" else 0
            continue
        matrix[(from_tier, to_tier)] = matrix.get((from_tier, to_tier), 0) + count
        if rank(tiers, to_tier) > rank(tiers, from_tier):
            upward += count
        elif rank(tiers, to_tier) < rank(tiers, from_tier):
            downward += count
    ordered = sorted(matrix.items(), key=lambda item: (rank(tiers, item[0][0]), rank(tiers, item[0][1])))
    return TierReport(
        month=f"{start.year:04d}-{start.month:02d}",
        zone=zone,
        start=start,
        end=end,
        levels=tiers.names(),
        at_end=_distribution(session, tiers, end) if end <= now else None,
        now=_distribution(session, tiers, now) if end > now else None,
        matrix=[MoveCount(from_tier=f, to_tier=t, count=n) for (f, t), n in ordered],
        upward=upward,
        downward=downward,
        renewed=renewed,
    )
