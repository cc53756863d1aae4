"""Route an event to the journey instances it concerns.

For each definition the router asks: does this event start it (signal-with-start, with the
id-reuse policy of its re-entry rule), or does a running instance exit on or wait for it (a plain
signal, dropped quietly when no instance runs)? Both go through instances.start, the one way an
instance starts. The instance id is `{journey}:{key}`, the key being the event's order or
customer. A late event never starts a run: only entry events use signal-with-start, and 'once'
journeys refuse to reuse an id.

Old events start nothing: an entry event older than its journey's `entry.max_age` when it arrives
(in the router's clock) is `stale` for that journey, and says so on the event log. History
(`backfill`) starts nothing at all: it only ends the instances that exit on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from temporalio.client import Client

from core.durations import format_duration
from core.orders import order_context, order_history
from core.products import ProductFacts
from core.records import CUSTOMER_EVENT_TYPES, Customer, Event, apply_customer_event
from core.rfm import Purchase, customer_context
from definitions.expressions import ExpressionError, build_context, evaluate, zone
from definitions.loader import Definitions
from definitions.render import loyalty_facts, reads_loyalty, reads_segments
from instances.contract import workflow_id
from instances.start import JourneyStart, Registration, signal_journey, start_journey
from store import points as ledger
from store import products as catalogue
from store import queries
from store import tiers as member_tiers
from store.db import Store
from store.segments import segments_of
from store.tables import InstanceRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatch:
    action: Literal["start", "signal"]
    journey: str
    workflow_id: str
    key: str


@dataclass(frozen=True)
class DispatchResult:
    dispatch: Dispatch
    #: started: signal-with-start (a running instance just gets the signal); already_ran: a 'once'
    #: journey whose instance for this key has ended; not_running: nothing to signal.
    #: condition_false: the entry condition does not hold, nothing started. stale: the event is
    #: older than the journey's entry.max_age. (History, `backfill`, plans no start at all.)
    outcome: Literal["started", "signalled", "already_ran", "not_running", "condition_false", "stale"]
    #: For a start: the instance's record for the effect report (written by `route` when it marks
    #: the event, else by the caller with its marks).
    entered: InstanceRow | None = None
    #: For a stale event: how old it was, against the journey's max_age.
    detail: str | None = None


@dataclass(frozen=True)
class Heard:
    """What the instances of a journey may still hear, over every version of it that may still
    run (the base's and every published one, triggers/live.py `LiveDefinitions.heard`): an
    instance started on an older version keeps that version's waits and exits, so a publication
    that drops `exit_on: [order.paid]` must not leave it deaf to the payment."""

    #: `order` or `customer` for each version (the instance id's key).
    keys: frozenset[str]
    #: The event types some version exits on or waits for.
    listened: frozenset[str]
    #: The event types some version exits on (history, `backfill`, only ends instances).
    exits: frozenset[str]

    def union(self, other: Heard) -> Heard:
        return Heard(self.keys | other.keys, self.listened | other.listened, self.exits | other.exits)


NOTHING_HEARD = Heard(frozenset(), frozenset(), frozenset())


def plan(
    event: Event, definitions: Definitions, backfill: bool = False, heard: Mapping[str, Heard] | None = None
) -> list[Dispatch]:
    """What this event means for each journey, without touching Temporal. History (`backfill`)
    only ends the instances that exit on it: it starts nothing, and a wait never hears it. With
    `heard`, an instance is signalled when any version of its journey that may still run (the
    current base's and every published one) listens to the event, and so are the instances of a
    journey no longer defined. A running instance whose version does not listen still takes the
    signal (signalled) and folds the event into its state; only an ended one answers not_running."""
    heard = heard or {}
    out = []
    for snapshot in definitions:
        definition = snapshot.definition
        also = heard.get(definition.name, NOTHING_HEARD)
        keys = {definition.entry.key} | also.keys
        for key_kind in sorted(keys):
            key = event.order_id if key_kind == "order" else event.customer_id
            if not key:
                continue
            wid = workflow_id(definition.name, key)
            current = key_kind == definition.entry.key
            if backfill:
                if (current and event.type in definition.exit_on) or event.type in also.exits:
                    out.append(Dispatch("signal", definition.name, wid, key))
            elif current and event.type in definition.entry.events:
                out.append(Dispatch("start", definition.name, wid, key))
            elif (current and event.type in definition.listened_events) or event.type in also.listened:
                out.append(Dispatch("signal", definition.name, wid, key))
    for name in sorted(set(heard) - set(definitions.journeys)):  # a journey no longer defined
        gone = heard[name]
        if event.type not in (gone.exits if backfill else gone.listened):
            continue
        for key_kind in sorted(gone.keys):
            key = event.order_id if key_kind == "order" else event.customer_id
            if key:
                out.append(Dispatch("signal", name, workflow_id(name, key), key))
    return out


def note_of(results: list[DispatchResult], backfill: bool = False) -> str | None:
    """What routing an event did of note, for its line in the event log: that it was history, or
    the journeys it was too old to start."""
    if backfill:
        return "backfill: history, started nothing"
    stale = [f"{r.dispatch.journey} ({r.detail})" for r in results if r.outcome == "stale"]
    return f"stale: not started, too old for {', '.join(stale)}" if stale else None


@dataclass(frozen=True)
class EntryFacts:
    """What the router reads of a customer at an entry event only for the journeys that name it:
    `customer.points` and `customer.tier` (`loyalty`), `customer.segments` (`segments`)."""

    loyalty: dict[str, Any] | None = None
    segments: list[str] | None = None

    def seen(self, customer: dict[str, Any]) -> dict[str, Any]:
        """The customer's context with these facts (an unknown customer stays unknown)."""
        if not customer:
            return customer
        return customer | (self.loyalty or {}) | ({"segments": self.segments} if self.segments is not None else {})


NO_FACTS = EntryFacts()


class Router:
    def __init__(
        self,
        client: Client,
        definitions: Definitions,
        store: Store,
        task_queue: str,
        clock_offset: timedelta = timedelta(0),
        clock: Callable[[], Awaitable[datetime]] | None = None,
        *,
        default_region: str,
    ):
        self.client = client
        self.default_region = default_region  # where national phone numbers are read, to store them in E.164
        self.definitions = definitions
        self.store = store
        self.task_queue = task_queue
        self.clock_offset = clock_offset
        #: The journeys' clock, for an entry event's age: the wall clock less the offset, or a
        #: simulation's (the time-skipping server's) clock.
        self.clock = clock or self._wall_clock
        self.registration = Registration()
        #: What every version of each journey that may still run listens to (plan's `heard`).
        self.heard: Mapping[str, Heard] = {}
        self._fact_readers: dict[tuple[str, str], tuple[bool, bool]] = {}  # (journey, version): see _reads_facts

    async def _wall_clock(self) -> datetime:
        return datetime.now(UTC) - self.clock_offset

    async def route(self, event: Event, mark: bool = True, backfill: bool = False) -> list[DispatchResult]:
        """Apply one (already logged) event: update the customer record, then signal or start
        every instance it concerns (concurrently: they are different workflows). With `mark`, the
        event is marked dispatched here (with its note, `note_of`); the dispatcher marks a
        customer's events together. A `backfill` event (history) starts nothing."""
        dispatches = plan(event, self.definitions, backfill, self.heard)
        aged = [d for d in dispatches if d.action == "start" and self.definitions[d.journey].definition.entry.oldest]
        now = await self.clock() if aged else None  # a simulation's clock is a call to its server
        stale = {d.journey: why for d in aged if (why := self._too_old(d, event, now))}
        starts = [d for d in dispatches if d.action == "start" and d.journey not in stale]
        prepared = await asyncio.to_thread(self._prepare, event, starts)
        if prepared is None:  # the customer was erased: nothing may start or go on for them
            if mark:
                await asyncio.to_thread(self._record, event, [], None)
            return []
        customer, prior, history, purchases, products = prepared
        wanted = [self._reads_facts(d.journey) for d in starts]
        facts = NO_FACTS
        if customer is not None and any(any(pair) for pair in wanted):
            loyalty, segments = any(pair[0] for pair in wanted), any(pair[1] for pair in wanted)
            facts = await asyncio.to_thread(self._entry_facts, event, loyalty, segments)
        entered: list[InstanceRow] = []

        async def dispatch(d: Dispatch) -> str:
            if d.journey in stale:
                return "stale"
            return await self._dispatch(
                d, event, customer, prior.get(d.journey), history, purchases, products, facts, entered
            )

        outcomes = await asyncio.gather(*(dispatch(d) for d in dispatches))
        rows = {row.workflow_id: row for row in entered}
        results = [
            DispatchResult(d, outcome, rows.get(d.workflow_id) if outcome == "started" else None, stale.get(d.journey))
            for d, outcome in zip(dispatches, outcomes, strict=True)
        ]
        if mark:
            await asyncio.to_thread(self._record, event, entered, note_of(results, backfill))
        return results

    def _too_old(self, dispatch: Dispatch, event: Event, now: datetime) -> str | None:
        """Why `event` is stale for the journey at `now` (past its entry.max_age), or None."""
        entry = self.definitions[dispatch.journey].definition.entry
        age = now - event.occurred_at
        if entry.oldest is None or age <= entry.oldest:
            return None
        return f"{format_duration(age)} old, max_age {entry.max_age}"

    async def _dispatch(
        self,
        dispatch: Dispatch,
        event: Event,
        customer: Customer | None,
        prior: list[Event] | None,
        history: list[Event],
        purchases: list[Purchase],
        products: dict[str, ProductFacts],
        facts: EntryFacts,
        entered: list[InstanceRow],
    ):
        if dispatch.action == "signal":
            return await self._signal(dispatch, event)
        if self._entry_condition_holds(dispatch, event, customer, history, purchases, products, facts):
            return await self._start(
                dispatch, event, customer, prior or [], history, purchases, products, facts, entered
            )
        if self.definitions[dispatch.journey].definition.entry.reentry == "restart":
            # A running instance still hears it: it starts over, finds the condition false and ends
            # (a customer whose birthday was removed gets no greeting for the old date).
            outcome = await self._signal(dispatch, event)
            return "condition_false" if outcome == "not_running" else outcome
        return "condition_false"

    def _entry_condition_holds(
        self,
        dispatch: Dispatch,
        event: Event,
        customer: Customer | None,
        history: list[Event],
        purchases: list[Purchase],
        products: dict[str, ProductFacts],
        facts: EntryFacts,
    ) -> bool:
        """The definition's entry condition at the event's time (with `customer.points`,
        `customer.tier` and `customer.segments` as of then, for a definition that reads them). A condition
        that fails to evaluate counts as true: the instance starts and ends with the error on record."""
        source = self.definitions[dispatch.journey].definition.entry.condition
        if not source:
            return True
        tz = zone(customer.timezone if customer else None)
        seen = facts.seen(customer_context(customer, purchases, self.definitions.rfm, event.occurred_at))
        context = build_context(
            tz=tz,
            now=event.occurred_at,
            event=event.model_dump(mode="json"),
            order=order_context(event.order_id, [*history, event], products),
            customer=seen,
        )
        try:
            return bool(evaluate(source, context))
        except ExpressionError as err:
            log.warning("entry condition of %s failed for event %s: %s", dispatch.journey, event.event_id, err)
            return True

    def _reads_facts(self, journey: str) -> tuple[bool, bool]:
        """Whether the journey may read the loyalty facts, and `customer.segments` (a name that
        merely looks so costs a query, never a wrong answer); once per journey version."""
        snapshot = self.definitions[journey]
        key = (journey, snapshot.version)
        if key not in self._fact_readers:
            text = snapshot.model_dump_json()
            self._fact_readers[key] = (reads_loyalty(text), reads_segments(text))
        return self._fact_readers[key]

    def _entry_facts(self, event: Event, loyalty: bool, segments: bool) -> EntryFacts:
        """The facts as the store has them at the entry event (logged, with what it earned): the
        points and tier now, the segments as of the event's time."""
        customer_id, definitions = event.customer_id, self.definitions
        found = EntryFacts()
        with self.store.transaction() as session:
            if loyalty:
                points, tier = ledger.balance(session, customer_id), member_tiers.current(session, customer_id)
                found = EntryFacts(loyalty=loyalty_facts(points, tier, definitions.loyalty))
            if segments:
                every = list(definitions.segments.values())
                names = segments_of(session, customer_id, every, event.occurred_at, definitions.rfm)
                found = EntryFacts(loyalty=found.loyalty, segments=names)
        return found

    def _prepare(
        self, event: Event, starts: list[Dispatch]
    ) -> tuple[Customer | None, dict[str, list[Event]], list[Event], list[Purchase], dict[str, ProductFacts]] | None:
        """In one transaction: apply a customer event to the record; for the journeys the event
        starts, read the customer, the events each instance must already know about, the order's
        history up to the event (for its `order` context; core.orders.order_history) and the
        catalogue's facts of its SKUs as of the event (store.products.order_facts: the workflow
        gets them in its input, as it reads nothing itself).
        None for an erased customer: the event is kept without its data and applied to nothing,
        unless it is a new `customer.created`, which brings the customer back."""
        with self.store.transaction() as session:
            changes_customer = event.type in CUSTOMER_EVENT_TYPES
            if starts or changes_customer:
                customer, erased = queries.customer_and_erasure(session, event.customer_id, lock=changes_customer)
            else:
                customer, erased = None, queries.erased_at(session, event.customer_id)
            if erased is not None:
                if event.type != "customer.created":
                    queries.scrub_event(session, event.event_id)
                    return None
                queries.recreate_customer(session, event.customer_id, event.occurred_at)
            if not (starts or changes_customer):
                return None, {}, [], [], {}
            if changes_customer:  # the record as it stands after the event, read once
                customer = apply_customer_event(customer, event)
                customer = queries.upsert_customer(session, customer, event.occurred_at, self.default_region)
            if not starts:
                return None, {}, [], [], {}
            order = queries.events_of_order(session, event.order_id) if event.order_id else []
            prior = self._prior_events(session, starts, event, order)
            reads_rfm = any(self.definitions[d.journey].reads_rfm for d in starts)
            purchases = queries.purchases_of(session, event.customer_id, event.occurred_at) if reads_rfm else []
            history = order_history(order, until=event)
            products = (
                catalogue.order_facts(session, event.customer_id, [*history, event], event.occurred_at)
                if event.order_id
                else {}
            )
            return customer, prior, history, purchases, products

    def _record(self, dispatched: Event, entered: list[InstanceRow], note: str | None) -> None:
        """In one transaction: the instances just started (for the effect report), and the event
        marked dispatched, with its note."""
        with self.store.transaction() as session:
            queries.record_instances(session, entered)
            notes = {dispatched.event_id: note} if note else None
            queries.mark_all_dispatched(session, [dispatched.event_id], datetime.now(UTC), notes)

    def _prior_events(
        self, session, starts: list[Dispatch], event: Event, order: list[Event]
    ) -> dict[str, list[Event]]:
        """For each journey `event` starts, the logged events its instance must know about (a
        payment logged before the order's creation was dispatched). An order's are among its
        events, read already (`order`); a customer's take one query per key, not per journey.
        Events at or after the entry event count; for a once-per-order journey, the order's exit
        events count whatever their time: a payment system's clock behind the order system's
        must not leave a paid order asking to be paid."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for dispatch in starts:
            definition = self.definitions[dispatch.journey].definition
            wanted.setdefault((definition.entry.key, dispatch.key), set()).update(definition.listened_events)
        found = {}
        for (key_field, key), types in wanted.items():
            if key_field == "order":  # the key is the event's order, whose events `order` holds
                found[key_field, key] = [
                    e for e in order
                    if e.type in types and e.occurred_at >= event.occurred_at and e.event_id != event.event_id
                ]  # fmt: skip
            else:
                found[key_field, key] = queries.events_for_key_since(
                    session, key_field=key_field, key=key, types=sorted(types), since=event.occurred_at,
                    exclude_id=event.event_id,
                )  # fmt: skip
        prior = {}
        for dispatch in starts:
            definition = self.definitions[dispatch.journey].definition
            events = found[(definition.entry.key, dispatch.key)]
            if definition.entry.key == "order" and definition.entry.reentry == "once":
                exits = set(definition.exit_on)
                skewed = [e for e in order if e.type in exits and e.occurred_at < event.occurred_at]
                events = sorted([*skewed, *events], key=lambda e: e.occurred_at)
            prior[dispatch.journey] = [e for e in events if e.type in definition.listened_events]
        return prior

    async def _start(
        self,
        dispatch: Dispatch,
        event: Event,
        customer: Customer | None,
        prior: list[Event],
        history: list[Event],
        purchases: list[Purchase],
        products: dict[str, ProductFacts],
        facts: EntryFacts,
        entered: list[InstanceRow],
    ):
        """Start (or signal, if it runs) the instance; a started one is added to `entered`."""
        start = JourneyStart(
            snapshot=self.definitions[dispatch.journey],
            key=dispatch.key,
            entry_event=event,
            customer=customer,
            purchases=purchases,
            rfm_table=self.definitions.rfm,
            clock_offset=self.clock_offset,
            prior_events=prior,
            order_history=history,
            products=products,
            loyalty=facts.loyalty,
            segments=facts.segments,
            signal_entry=True,
        )
        row = await start_journey(self.client, self.task_queue, start, self.registration)
        if row is None:
            return "already_ran"
        entered.append(row)
        return "started"

    async def _signal(self, dispatch: Dispatch, event: Event):
        return "signalled" if await signal_journey(self.client, dispatch.workflow_id, event) else "not_running"
