"""What each journey earns (效果评估), over a period: process indicators from the ledger (sent,
delivered, opened, clicked, bounced, unsubscribes, complaints), conversions and revenue by the one
conversion rule (store/effect.py), cost and ROI, the holdout's uplift with its 95% interval, and
the shop's result indicators (repeat purchase, retention, reactivation).

`journeys report`, `GET /effect`, `GET /journeys/{name}/effect` and `journeys simulate --report`
all return this model.

This module writes nothing. Before it reads, a report asks the owner of the `reached` read
model to bring it up to date (store/reached.py `refresh`: record the definitions' goals, settle
the runs of recent sends), because the API process settles new runs only every few seconds, and
`journeys report` may run with no API process: a report must count the sends made since the
last settling.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.config import Settings
from core.vocabulary import SENT_STATUSES
from definitions.broadcasts import journey_run, run_name
from definitions.loader import Definitions
from definitions.schema import HOLDOUT, Journey
from store import effect, queries, reached
from store.db import Store
from store.effect import Grouping, Period
from store.products import SkuPrediction, prediction_errors
from store.reached import GoalRule
from store.tables import MessageRow

#: z for a two-sided 95% interval.
Z95 = 1.959963984540054


class Prices(BaseModel):
    sms: float = Field(description="One SMS segment.")
    email: float = Field(description="One email.")
    currency: str

    @classmethod
    def of(cls, settings: Settings) -> Prices:
        """JOURNEYS_SMS_PRICE, JOURNEYS_EMAIL_PRICE and JOURNEYS_CURRENCY."""
        return cls(sms=settings.sms_price, email=settings.email_price, currency=settings.currency)


class Figures(BaseModel):
    """One journey's (or one group's) figures for the period."""

    entered: int = Field(0, description="Instances started (by the router or a broadcast).")
    exited: int = Field(0, description="Runs that ended in the period.")
    exited_by_reason: dict[str, int] = Field(
        default_factory=dict, description="completed, exit:EVENT, holdout, entry_condition, restarted, ..."
    )
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    in_doubt: int = Field(0, description="Sending, or unknown: the provider's answer was lost.")
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    deferred: int = Field(0, description="Times the contact policy put a send off (a message may be put off twice).")
    deferred_by_reason: dict[str, int] = Field(
        default_factory=dict, description="quiet_hours, send_window, frequency_cap (waiting for a cap's slot)."
    )
    failed_by_reason: dict[str, int] = Field(default_factory=dict)
    delivered: int = 0
    unreceipted: int = Field(
        0,
        description="Messages sent where no delivery receipt can come (the local outbox): left out of the "
        "delivery and bounce rates, which are null when every message sent is such.",
    )
    opened: int = 0
    clicked: int = Field(
        0,
        description="Messages clicked, each once however often: SendGrid's click events for email, a followed "
        "short link (短链, /l/{code}) for SMS.",
    )
    bounced: int = Field(0, description="Undelivered: a bounce (退信) or a carrier's refusal.")
    unsubscribes: int = 0
    complaints: int = 0
    reached: int = Field(0, description="Instances whose first sent message falls in the period.")
    converted: int = Field(0, description="Reached instances that converted (once each).")
    revenue: float = 0.0
    sms_segments: int = 0
    emails: int = 0
    cost: float = 0.0
    delivery_rate: float | None = Field(
        None, description="delivered / (sent - unreceipted) (发送成功率); null when no receipt can come."
    )
    bounce_rate: float | None = Field(None, description="bounced / (sent - unreceipted) (退信率)")
    open_rate: float | None = Field(None, description="opened / delivered")
    click_rate: float | None = Field(None, description="clicked / delivered (点击率)")
    complaint_rate: float | None = Field(None, description="complaints / sent (投诉率)")
    unsubscribe_rate: float | None = Field(None, description="unsubscribes / sent")
    conversion_rate: float | None = Field(None, description="converted / reached (购买率)")
    roi: float | None = Field(
        None, description="revenue / cost; null without a cost, or when the goal is not a purchase (no revenue)."
    )

    def finish(self, prices: Prices, earns: bool = True) -> Figures:
        """Cost, ROI and the rates, from the counts. A goal that is not a purchase (`earns` False)
        has no revenue to set against the cost: its ROI is null, not 0 (a "0×" reads as a loss).
        Delivery is measured over the messages a receipt can come for: under the outbox none
        can, and 0% would read as every message lost."""
        self.cost = round(self.sms_segments * prices.sms + self.emails * prices.email, 4)
        self.revenue = round(self.revenue, 2)
        self.roi = _ratio(self.revenue, self.cost, 2) if earns else None
        receiptable = self.sent - self.unreceipted
        self.delivery_rate = _ratio(self.delivered, receiptable)
        self.bounce_rate = _ratio(self.bounced, receiptable)
        self.open_rate = _ratio(self.opened, self.delivered)
        self.click_rate = _ratio(self.clicked, self.delivered)
        self.complaint_rate = _ratio(self.complaints, self.sent)
        self.unsubscribe_rate = _ratio(self.unsubscribes, self.sent)
        self.conversion_rate = _ratio(self.converted, self.reached)
        return self


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


class GroupRate(BaseModel):
    instances: int
    converted: int
    rate: float | None


class Uplift(BaseModel):
    """The journey's conversion rate against its holdout's: does the journey cause the purchases?"""

    treated: GroupRate = Field(description="Instances reached (a first sent message), converted by the rule.")
    holdout: GroupRate = Field(description="Held-out instances, converted within the same window from entry.")
    absolute: float | None = Field(description="treated rate - holdout rate")
    relative: float | None = Field(description="absolute / holdout rate")
    interval: tuple[float, float] | None = Field(
        description="95% confidence interval of `absolute` (Newcombe's hybrid score method, from Wilson intervals)."
    )


class JourneyEffect(Figures):
    journey: str
    title: str | None = None
    goal: str | None = None
    within: str | None = None
    groups: dict[str, Figures] = Field(default_factory=dict, description="By the report's grouping, if any.")
    uplift: Uplift | None = None
    runs: dict[str, JourneyEffect] = Field(
        default_factory=dict,
        description="A recurring broadcast: each run's own figures, by run (card_expiring@2026-12-03); the row "
        "itself adds them up.",
    )


class ResultIndicators(BaseModel):
    """The shop's results over the period (order.paid, not refunded by the period's end)."""

    buyers: int
    orders: int
    amount: float
    repeat_buyers: int = Field(description="Buyers with two or more purchases in the period.")
    repeat_purchase_rate: float | None = Field(None, description="repeat_buyers / buyers (重复购买率)")
    repeat_amount: float = Field(description="The amount of purchases after each buyer's first (重复购买金额).")
    earlier_buyers: int = Field(description="Buyers in the period of the same length before.")
    retained: int = Field(description="Of those, buyers in this period too.")
    retention_rate: float | None = Field(None, description="retained / earlier_buyers (客户保持率)")
    silent_days: int
    silent_messaged: int = Field(
        description="Customers a journey reached in the period who had bought, but not in the silent_days before."
    )
    reactivated: int = Field(description="Of those, buyers after the message (客户唤醒).")
    reactivation_rate: float | None = None


class Totals(BaseModel):
    sent: int
    cost: float
    converted_orders: int = Field(description="Orders converted by any journey, each counted once.")
    revenue: float = Field(description="Their amount, each order once however many journeys claim it.")
    roi: float | None


class EffectReport(BaseModel):
    start: datetime
    end: datetime
    timezone: str
    currency: str
    by: Grouping | None
    journeys: dict[str, JourneyEffect]
    totals: Totals
    results: ResultIndicators | None = Field(description="The shop's results: in the report of every journey only.")
    repurchase: list[SkuPrediction] = Field(
        default_factory=list,
        description="Per SKU, the repurchases (a customer buying it again) paid in the period against the moment "
        "replenish_at's fallback order predicted after the purchase before (store/products.py): in the report of "
        "every journey, when the shop has a catalogue.",
    )


# ---------------------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(treated: tuple[int, int], control: tuple[int, int], z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for p1 - p2, each given as (successes, n)."""
    (k1, n1), (k2, n2) = treated, control
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def uplift(treated: tuple[int, int], control: tuple[int, int]) -> Uplift:
    """`treated` and `control` as (converted, instances)."""
    (k1, n1), (k2, n2) = treated, control
    r1, r2 = _ratio(k1, n1, 6), _ratio(k2, n2, 6)
    absolute = round(r1 - r2, 6) if r1 is not None and r2 is not None else None
    interval = None
    if n1 and n2:
        low, high = newcombe((k1, n1), (k2, n2))
        interval = (round(low, 6), round(high, 6))
    return Uplift(
        treated=GroupRate(instances=n1, converted=k1, rate=r1),
        holdout=GroupRate(instances=n2, converted=k2, rate=r2),
        absolute=absolute,
        relative=round(absolute / r2, 6) if absolute is not None and r2 else None,
        interval=interval,
    )


def goal_rule(journey: Journey) -> GoalRule | None:
    goal = journey.conversion
    return GoalRule(goal.event, goal.window, journey.entry.key) if goal else None


def journeys_of(definitions: Definitions) -> dict[str, Journey]:
    """Every journey the definitions run: the journeys and the broadcasts' journeys."""
    found = {snapshot.definition.name: snapshot.definition for snapshot in definitions}
    found.update({name: snapshot.definition for name, (_, snapshot) in definitions.broadcasts.items()})
    return found


@dataclass(frozen=True)
class Run:
    """A recurring broadcast's run, as the report knows it by its journey's name."""

    broadcast: str  # card_expiring
    name: str  # card_expiring@2026-12-03


def goals_of(definitions: Definitions, runs: dict[str, Run] | None = None) -> dict[str, GoalRule | None]:
    """Each journey's conversion rule (None: no goal), for the `reached` read model; and each of
    `runs`' journeys (`runs_of`) its recurring broadcast's, as a one-off broadcast's journey has
    the broadcast's goal."""
    goals = {name: goal_rule(definition) for name, definition in journeys_of(definitions).items()}
    return goals | {journey: goals.get(run.broadcast) for journey, run in (runs or {}).items()}


def runs_of(store: Store, definitions: Definitions) -> dict[str, Run]:
    """The recurring broadcasts' runs the store has instances of, by their journey's name
    (`card_expiring_20261203`)."""
    recurring = [b for b, _ in definitions.broadcasts.values() if b.schedule.recurring]
    if not recurring:
        return {}
    found: dict[str, Run] = {}
    with store.transaction() as session:
        for broadcast in recurring:
            for journey in queries.run_journeys(session, f"{broadcast.name}_"):
                if (run := journey_run(journey, [broadcast])) is not None:
                    found[journey] = Run(broadcast.name, run_name(broadcast.name, run[1]))
    return found


def effect_report(
    store: Store,
    definitions: Definitions,
    period: Period,
    prices: Prices,
    *,
    by: Grouping | None = None,
    journey: str | None = None,
    silent_days: int = 90,
) -> EffectReport:
    """The report for `period`, for every journey of the definitions (or only `journey`), and any
    other journey the ledger has messages of (goal unknown: no conversions). A recurring
    broadcast is one row, its runs' figures added up (each run converting by the broadcast's
    goal), with each run's own row in `runs`.

    It first has the owner of `reached` bring it up to date for these definitions' goals
    (store/reached.py `refresh`; why, in this module's docstring); the rest only reads."""
    by = None if by == "journey" else by
    known = journeys_of(definitions)
    runs = runs_of(store, definitions)
    goals = goals_of(definitions, runs)
    reached.refresh(store, goals)
    only = [journey, *(j for j, run in runs.items() if run.broadcast == journey)] if journey else None
    read = _read(store, period, by, only, goals, _held_out(known, goals, runs, only), silent_days)
    figured = _figured(read)
    per_run = {
        run.name: (run.broadcast, _journey_effect(j, known.get(run.broadcast), goals.get(j), read, by, prices))
        for j, run in sorted(runs.items())
        if j in figured
    }
    read = _folded(read, runs)
    journeys = {
        name: _journey_effect(name, known.get(name), goals.get(name), read, by, prices)
        for name in _names(read, journey, known)
    }
    for name, (broadcast, row) in per_run.items():
        journeys[broadcast].runs[name] = row
    return EffectReport(
        start=period.start,
        end=period.end,
        timezone=period.timezone,
        currency=prices.currency,
        by=by,
        journeys=journeys,
        totals=_totals(journeys, read.conversions),
        results=_results(read.results),
        repurchase=_repurchase(store, period) if journey is None else [],
    )


def _repurchase(store: Store, period: Period) -> list[SkuPrediction]:
    """The per-SKU prediction figures, read on a session of their own (nothing without a catalogue)."""
    with store.transaction() as session:
        return prediction_errors(session, period.start, period.end)


@dataclass(frozen=True)
class _Read:
    """What a report reads, from one snapshot of the store."""

    #: Per (journey, group): the ledger's counts (store/effect.py `message_counts`).
    messages: dict[tuple[str, str], dict[str, Any]]
    entered: dict[tuple[str, str], int]
    #: Per (journey, group): runs ended, by reason.
    exits: dict[tuple[str, str], dict[str, int]]
    conversions: effect.Conversions
    #: Per journey with a holdout: its (instances, converted).
    holdouts: dict[str, tuple[int, int]]
    #: The shop's result indicators (the report of every journey only).
    results: dict[str, Any] | None


def _held_out(
    known: dict[str, Journey], goals: dict[str, GoalRule | None], runs: dict[str, Run], only: list[str] | None
) -> dict[str, GoalRule]:
    """The goal of each journey reported on (a run's: its broadcast's) whose split holds some of
    its instances out."""
    return {
        name: rule
        for name, rule in goals.items()
        if rule
        and (only is None or name in only)
        and (split := known[runs[name].broadcast if name in runs else name].first_split)
        and split.holdout
    }


def _read(
    store: Store,
    period: Period,
    by: Grouping | None,
    only: list[str] | None,
    goals: dict[str, GoalRule | None],
    held_out: dict[str, GoalRule],
    silent_days: int,
) -> _Read:
    """Everything the report counts (of the journeys `only`, or all), in three independent
    parts, each on its own session of one snapshot: side by side where the database allows (the
    ledger's counts, the runs' conversions, the shop's results, of every journey only)."""
    with store.snapshot(3) as (ledger, runs, shop):
        for session in {ledger, runs, shop}:
            effect.prepare(session)
        parts = {
            "ledger": lambda: (
                _with_unreceipted(effect.message_counts(ledger, period, by, only), ledger, period, by, only),
                effect.entered_counts(ledger, period, by, only),
                effect.exit_counts(ledger, period, by, only),
            ),
            "runs": lambda: (
                effect.conversions(runs, goals, period, by, only),
                {name: effect.holdout(runs, name, rule, period, HOLDOUT) for name, rule in held_out.items()},
            ),
            "shop": lambda: effect.result_indicators(shop, period, silent_days) if only is None else None,
        }
        found = _run_parts(parts, store.parallel)
    (messages, entered, exits), (conversions, holdouts) = found["ledger"], found["runs"]
    return _Read(messages, entered, exits, conversions, holdouts, found["shop"])


def _with_unreceipted(
    counts: dict[tuple[str, str], dict[str, Any]], session: Session, period: Period, by: Grouping | None, only
) -> dict[tuple[str, str], dict[str, Any]]:
    """The ledger's counts with, per (journey, group), the messages sent to the local outbox
    (channels/outbox.py gives them the provider id `outbox:...`): no receipt comes for them."""
    m = MessageRow
    group = effect._group(by, m, m.at, period)
    where = [
        m.at >= effect._at(period.start),
        m.at < effect._at(period.end),
        m.provider_id.like("outbox:%"),
        m.status.in_([str(s) for s in SENT_STATUSES]),
    ]
    if only is not None:
        where.append(m.journey.in_(only))
    rows = session.execute(
        select(m.journey, group.label("grp"), func.count()).where(*where).group_by(*effect._keys(m.journey, group, by))
    )
    for journey, grp, n in rows:
        if (journey, grp) in counts:
            counts[journey, grp]["unreceipted"] = int(n)
    return counts


def _figured(read: _Read) -> set[str]:
    """The journeys the store has figures of for the report."""
    return (
        {j for j, _ in read.messages}
        | {j for j, _ in read.entered}
        | {j for j, _ in read.exits}
        | {j for j, groups in read.conversions.journeys.items() if groups}
    )


def _names(read: _Read, journey: str | None, known: dict[str, Journey]) -> list[str]:
    """The journeys reported on: `journey`, or those of the definitions and any the store has
    figures of."""
    return sorted(({journey} if journey else set(known)) | _figured(read))


def _folded(read: _Read, runs: dict[str, Run]) -> _Read:
    """`read` with each run's figures added into its recurring broadcast's: one row a campaign,
    its holdout's instances and conversions the runs' together."""
    if not runs:
        return read

    def to(journey: str) -> str:
        return runs[journey].broadcast if journey in runs else journey

    messages: dict[tuple[str, str], dict[str, Any]] = {}
    entered: dict[tuple[str, str], int] = {}
    exits: dict[tuple[str, str], dict[str, int]] = {}
    for (journey, group), counts in read.messages.items():
        _add(messages.setdefault((to(journey), group), {}), counts)
    for (journey, group), n in read.entered.items():
        entered[to(journey), group] = entered.get((to(journey), group), 0) + n
    for (journey, group), reasons in read.exits.items():
        _add(exits.setdefault((to(journey), group), {}), reasons)
    converted: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for journey, groups in read.conversions.journeys.items():
        for group, counts in groups.items():
            _add(converted[to(journey)].setdefault(group, {}), counts)
    holdouts: dict[str, tuple[int, int]] = {}
    for journey, (n, k) in read.holdouts.items():
        before = holdouts.get(to(journey), (0, 0))
        holdouts[to(journey)] = (before[0] + n, before[1] + k)
    conversions = effect.Conversions(converted, read.conversions.orders, read.conversions.revenue)
    return _Read(messages, entered, exits, conversions, holdouts, read.results)


def _add(into: dict[str, Any], counts: dict[str, Any]) -> None:
    for name, value in counts.items():
        into[name] = into.get(name, 0) + value


def _journey_effect(
    name: str, definition: Journey | None, rule: GoalRule | None, read: _Read, by: Grouping | None, prices: Prices
) -> JourneyEffect:
    """One journey's row: its total, its groups by `by`, and its uplift over its holdout."""
    converted = read.conversions.journeys[name]
    earns = rule is not None and rule.earns
    groups = sorted(
        {g for j, g in read.messages if j == name}
        | {g for j, g in read.entered if j == name}
        | {g for j, g in read.exits if j == name}
        | set(converted)
    )
    figures = {
        group: _figures(
            read.messages.get((name, group), {}),
            read.entered.get((name, group), 0),
            read.exits.get((name, group), {}),
            converted.get(group),
        )
        for group in groups
    }
    if by in ("step", "channel"):  # entries and exits belong to no step: the journey's total only
        unplaced = figures.pop("", Figures())
        total = _sum([*figures.values(), unplaced])
    else:
        total = _sum(list(figures.values()))
    holdout = read.holdouts.get(name)
    if holdout is not None and by == "variant":  # the holdout's own row: its conversions from entry
        held = figures.setdefault(HOLDOUT, Figures())
        held.reached, held.converted = holdout
    row = JourneyEffect(
        journey=name,
        title=definition.title if definition else None,
        goal=rule.event if rule else None,
        within=definition.conversion.within if rule and definition and definition.conversion else None,
        groups={group: f.finish(prices, earns) for group, f in figures.items()} if by else {},
        **total.finish(prices, earns).model_dump(),
    )
    if holdout is not None:
        row.uplift = uplift((total.converted, total.reached), (holdout[1], holdout[0]))
    return row


def _totals(journeys: dict[str, JourneyEffect], conversions: effect.Conversions) -> Totals:
    """Every journey together; each converted order counted once, however many claim it."""
    cost = round(sum(j.cost for j in journeys.values()), 4)
    revenue = conversions.revenue
    return Totals(
        sent=sum(j.sent for j in journeys.values()),
        cost=cost,
        converted_orders=conversions.orders,
        revenue=round(revenue, 2),
        roi=_ratio(revenue, cost, 2),
    )


def _results(results: dict[str, Any] | None) -> ResultIndicators | None:
    """The shop's result indicators with their rates."""
    if results is None:
        return None
    return ResultIndicators(
        **results,
        repeat_purchase_rate=_ratio(results["repeat_buyers"], results["buyers"]),
        retention_rate=_ratio(results["retained"], results["earlier_buyers"]),
        reactivation_rate=_ratio(results["reactivated"], results["silent_messaged"]),
    )


def _run_parts(parts: dict[str, Callable[[], Any]], parallel: bool) -> dict[str, Any]:
    """Each part's result; in threads when `parallel` (each part keeps to its own session)."""
    if not parallel:
        return {name: part() for name, part in parts.items()}
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="effect") as pool:
        futures = {name: pool.submit(part) for name, part in parts.items()}
        return {name: future.result() for name, future in futures.items()}


def _figures(counts: dict[str, Any], entered: int, exits: dict[str, int], converted: dict[str, Any] | None) -> Figures:
    plain = {k: v for k, v in counts.items() if ":" not in k}
    return Figures(
        entered=entered,
        exited=sum(exits.values()),
        exited_by_reason=dict(exits),
        skipped_by_reason={k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("skipped:")},
        deferred_by_reason={k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("deferred:")},
        failed_by_reason={k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("failed:")},
        **plain,
        **(converted or {}),
    )


def _sum(parts: list[Figures]) -> Figures:
    """Groups added up into the journey's figures."""
    total = Figures()
    for part in parts:
        for name, value in part:
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(total, name, getattr(total, name) + value)
            elif name == "revenue":
                total.revenue += value
            elif name.endswith("_by_reason"):
                mine = getattr(total, name)
                for reason, n in value.items():
                    mine[reason] = mine.get(reason, 0) + n
    return total


# ---------------------------------------------------------------------------------------------
# Periods and presentation


def period_of(start: str | None, end: str | None, timezone: str, now: datetime, days: int = 30) -> Period:
    """A period from the command line or a query string: dates are whole days in the shop's time
    zone (`--to` included), times (RFC 3339, with an offset) are instants; by default the last
    `days` days up to now. ValueError names the value at fault."""
    zone = ZoneInfo(timezone)

    def parse(text: str, what: str, end_of_day: bool) -> datetime:
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return datetime.combine(day + timedelta(days=1 if end_of_day else 0), time(), tzinfo=zone)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{what}: {text!r} is not a date (2026-02-01) or a time (2026-02-01T00:00:00+08:00)"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(f"{what}: {text!r} needs an offset (Z or +08:00), or give a date")
        return moment

    stop = parse(end, "to", True) if end else now
    begin = parse(start, "from", False) if start else stop - timedelta(days=days)
    if begin >= stop:
        raise ValueError(f"from ({begin.isoformat()}) must be before to ({stop.isoformat()})")
    return Period(begin.astimezone(UTC), stop.astimezone(UTC), timezone)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


TABLE_COLUMNS = (
    ("", 28), ("entered", 8), ("sent", 7), ("skipped", 8), ("deliv", 7), ("click", 7), ("conv", 6),
    ("rate", 7), ("revenue", 12), ("cost", 9), ("ROI", 8),
)  # fmt: skip


def _row(label: str, f: Figures) -> str:
    cells = (
        label, f.entered, f.sent, f.skipped, _percent(f.delivery_rate), _percent(f.click_rate), f.converted,
        _percent(f.conversion_rate), _money(f.revenue), _money(f.cost), "-" if f.roi is None else f"{f.roi:,.1f}",
    )  # fmt: skip
    return " ".join(
        str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
        for i, (cell, (_, width)) in enumerate(zip(cells, TABLE_COLUMNS, strict=True))
    )


def report_lines(report: EffectReport) -> list[str]:
    """The report as a readable table: a row per journey (and per group), then uplifts, totals
    and the result indicators."""
    local = ZoneInfo(report.timezone)
    lines = [
        f"effect {report.start.astimezone(local):%Y-%m-%d %H:%M} to {report.end.astimezone(local):%Y-%m-%d %H:%M} "
        f"({report.timezone}), money in {report.currency}" + (f", by {report.by}" if report.by else ""),
        " ".join(name.ljust(w) if i == 0 else name.rjust(w) for i, (name, w) in enumerate(TABLE_COLUMNS)),
    ]
    for name, journey in report.journeys.items():
        lines.append(_row(name, journey))
        for group, figures in journey.groups.items():
            lines.append(_row(f"  {group or '-'}", figures))
        for run, figures in journey.runs.items():
            lines.append(_row(f"  {run}", figures))
        skips = ", ".join(f"{reason} {n}" for reason, n in sorted(journey.skipped_by_reason.items()))
        if skips:
            lines.append(f"  skipped: {skips}")
        deferrals = ", ".join(f"{reason} {n}" for reason, n in sorted(journey.deferred_by_reason.items()))
        if deferrals:
            lines.append(f"  deferred: {deferrals}")
    lifts = [(name, j.uplift) for name, j in report.journeys.items() if j.uplift]
    for name, lift in lifts:
        interval = (
            f"95% CI {lift.interval[0] * 100:+.1f} to {lift.interval[1] * 100:+.1f} points"
            if lift.interval
            else "no interval"
        )
        lines.append(
            f"uplift {name}: {_percent(lift.treated.rate)} of {lift.treated.instances} reached vs "
            f"{_percent(lift.holdout.rate)} of {lift.holdout.instances} held out: "
            + (f"{lift.absolute * 100:+.1f} points" if lift.absolute is not None else "-")
            + (f" ({lift.relative * 100:+.0f}%)" if lift.relative is not None else "")
            + f", {interval}"
        )
    t, r = report.totals, report.results
    lines.append(
        f"total: sent {t.sent}, cost {_money(t.cost)}, {t.converted_orders} orders converted (each once), "
        f"revenue {_money(t.revenue)}, ROI {'-' if t.roi is None else f'{t.roi:,.1f}'}"
    )
    if r is None:
        return lines
    lines.append(
        f"results: {r.buyers} buyers, {r.orders} orders, {_money(r.amount)}; repeat purchase "
        f"{_percent(r.repeat_purchase_rate)} ({r.repeat_buyers} buyers, {_money(r.repeat_amount)}); retention "
        f"{_percent(r.retention_rate)} ({r.retained} of {r.earlier_buyers}); reactivation "
        f"{_percent(r.reactivation_rate)} ({r.reactivated} of {r.silent_messaged} silent {r.silent_days}+ days)"
    )
    return lines + repurchase_lines(report.repurchase)


def repurchase_lines(found: list[SkuPrediction]) -> list[str]:
    """Per SKU: repurchases, predicted moments and how far off they were (none without a catalogue)."""
    lines = ["repurchase timing (回购周期), predicted vs actual:"] if found else []
    for line in found:
        if not line.predicted:
            lines.append(f"  {line.sku}: {line.repurchases} repurchases, no cycle to predict from")
            continue
        sources = ", ".join(f"{source} {n}" for source, n in sorted(line.sources.items()))
        lines.append(
            f"  {line.sku}: {line.repurchases} repurchases, {line.predicted} predicted ({sources}); "
            f"median error {line.median_error_days:g} d, median actual - predicted {line.median_bias_days:+g} d, "
            f"{line.early} before the predicted day"
        )
    return lines


CSV_FIELDS = ("journey", "group", *[name for name in Figures.model_fields if not name.endswith("_by_reason")])


def csv_rows(report: EffectReport) -> list[list[Any]]:
    """One row per journey (group empty), per group and per run of a recurring broadcast (its
    run's name as the group: card_expiring@2026-12-03); skip and deferral reasons as
    `skipped:REASON` and `deferred:REASON` columns."""
    reasons = sorted({r for j in report.journeys.values() for r in j.skipped_by_reason})
    put_off = sorted({r for j in report.journeys.values() for r in j.deferred_by_reason})
    header = [*CSV_FIELDS, *[f"skipped:{r}" for r in reasons], *[f"deferred:{r}" for r in put_off]]
    rows: list[list[Any]] = [header]
    for name, journey in report.journeys.items():
        for group, figures in [("", journey), *journey.groups.items(), *journey.runs.items()]:
            values = figures.model_dump()
            rows.append(
                [
                    name,
                    group,
                    *[values[f] for f in CSV_FIELDS[2:]],
                    *[figures.skipped_by_reason.get(r, 0) for r in reasons],
                    *[figures.deferred_by_reason.get(r, 0) for r in put_off],
                ]
            )
    return rows
