"""How a journey instance starts, and how a running one hears an event.

`start_journey` is the one place that builds an instance's id, input, search attributes and memo,
starts it and returns its record for the effect report. The router starts instances with it (an
entry event) and so does the broadcast activity (a member of the broadcast's segment). It starts
the interpreter by its registered name (contract.JOURNEY_WORKFLOW), so neither needs the workflow's
code; `signal_journey` reaches a running instance by the registered signal name the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import Priority, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.products import ProductFacts
from core.records import Customer, Event
from core.rfm import Purchase, RfmTable
from core.temporal import ensure_search_attributes
from core.vocabulary import CUSTOMER_ID, JOURNEY_NAME, JOURNEY_VERSION, ORDER_ID
from definitions.schema import Journey, JourneySnapshot
from instances.contract import EVENT_SIGNAL, JOURNEY_WORKFLOW, REVISION, JourneyInput, workflow_id
from store.tables import InstanceRow

#: The id-reuse policy of a definition's re-entry rule: a 'once' journey never runs twice for a key.
#: Tries of a signal-with-start answered NOT_FOUND because the run it reached was closing.
CLOSING_ATTEMPTS = 3

REUSE_POLICY = {
    "once": WorkflowIDReusePolicy.REJECT_DUPLICATE,
    "after_exit": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    "restart": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
}


#: The task priority of an instance (Temporal's priority key: 1 goes first, 3 is the server's
#: default), so that what a customer waits for is never stuck behind a backlog. A sale-day burst of
#: new orders starts thousands of instances whose first task only arms a timer; a shipping notice
#: posted meanwhile must go out at once. The instance's activities (the decision, the channel's
#: delivery) inherit its priority. One queue with priorities, rather than a queue per urgency: the
#: same workers serve both, so nothing idles while the other queue is backlogged, and no
#: deployment needs another queue to configure, watch and scale.
PRIORITY = {
    "transactional at once": 1,  # a shipping notice, a payment confirmation
    "marketing at once": 2,  # a cart nudge when the cart is abandoned
    "waits first": 3,  # a payment reminder in 30 minutes: its first task only arms a timer
    "broadcast": 4,  # a campaign to a segment: thousands at once, none waited for
}


def priority_of(definition: Journey, *, broadcast: bool = False) -> Priority:
    """The task priority of an instance of `definition` (PRIORITY)."""
    if broadcast:
        return Priority(priority_key=PRIORITY["broadcast"])
    if not definition.sends_at_once:
        return Priority(priority_key=PRIORITY["waits first"])
    return Priority(priority_key=PRIORITY[f"{definition.category} at once"])


@dataclass(frozen=True, kw_only=True)
class JourneyStart:
    """One instance to start: what its starter knows (the rest follows from it)."""

    snapshot: JourneySnapshot
    #: The entry event's order or customer (the definition's entry.key): the id is `{journey}:{key}`.
    key: str
    entry_event: Event
    #: The customer as the starter read them (the instance loads nobody), and their purchases.
    customer: Customer | None
    purchases: list[Purchase] = field(default_factory=list)
    rfm_table: RfmTable = field(default_factory=RfmTable)
    clock_offset: timedelta = timedelta(0)
    #: Logged events for the key the instance must know about from the start.
    prior_events: list[Event] = field(default_factory=list)
    #: The order's events up to the entry event; those among `prior_events` are left out here.
    order_history: list[Event] = field(default_factory=list)
    #: The catalogue's facts of the order's SKUs (store.products.order_facts), joined into `order`.
    products: dict[str, ProductFacts] = field(default_factory=dict)
    #: `customer.points` and `customer.tier` at the entry event, for a definition that reads them.
    loyalty: dict[str, Any] | None = None
    #: `customer.segments` at the entry event, for a definition that reads them.
    segments: list[str] | None = None
    #: Signal-with-start with the entry event (the router's): an instance already running under the
    #: id hears the event instead of failing the start.
    signal_entry: bool = False
    #: The broadcast this instance is a member's of: its name goes in the memo, and the start is
    #: bulk work, after anything a customer waits for (PRIORITY).
    broadcast: str | None = None


class Registration:
    """The search attributes instances start with, which the server must know: registered once by
    each starter (a router, a worker's broadcast activities), and again when the server says it
    does not know them (a fresh dev server on the same address)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._ready = False

    async def ensure(self, client: Client, again: bool = False) -> None:
        if self._ready and not again:
            return
        async with self._lock:
            if again or not self._ready:
                await ensure_search_attributes(client)
                self._ready = True


def journey_input(start: JourneyStart) -> JourneyInput:
    """What the instance runs on: the current REVISION, with its search attributes given at the start."""
    prior = {event.event_id for event in start.prior_events}
    return JourneyInput(
        snapshot=start.snapshot,
        key=start.key,
        entry_event=start.entry_event,
        prior_events=start.prior_events,
        order_history=[event for event in start.order_history if event.event_id not in prior],
        products=start.products,
        customer=start.customer,
        customer_given=True,
        purchases=start.purchases,
        rfm_table=start.rfm_table,
        loyalty=start.loyalty,
        segments=start.segments,
        clock_offset=start.clock_offset,
        revision=REVISION,
    )


def search_attributes(start: JourneyStart) -> TypedSearchAttributes:
    """What an instance is found by: its journey, customer, version and order (when it has one)."""
    event = start.entry_event
    return TypedSearchAttributes(
        [
            SearchAttributePair(JOURNEY_NAME, start.snapshot.definition.name),
            SearchAttributePair(CUSTOMER_ID, event.customer_id),
            SearchAttributePair(JOURNEY_VERSION, start.snapshot.version),
            *([SearchAttributePair(ORDER_ID, event.order_id)] if event.order_id else []),
        ]
    )


def memo(start: JourneyStart) -> dict[str, str]:
    """What an instance shows beside its search attributes: its journey version, and its broadcast."""
    return {"journey_version": start.snapshot.version, **({"broadcast": start.broadcast} if start.broadcast else {})}


async def start_journey(
    client: Client, task_queue: str, start: JourneyStart, registration: Registration
) -> InstanceRow | None:
    """Start the instance (with `signal_entry`, or signal it if it runs) with the id-reuse policy of
    its definition's re-entry rule. Its record for the effect report, or None when the id refuses
    a new run (a 'once' journey that already ran for the key: the caller's 'already ran')."""
    definition = start.snapshot.definition
    event = start.entry_event
    instance_id = workflow_id(definition.name, start.key)

    async def attempt() -> str:
        handle = await client.start_workflow(
            JOURNEY_WORKFLOW,
            journey_input(start),
            id=instance_id,
            task_queue=task_queue,
            id_reuse_policy=REUSE_POLICY[definition.entry.reentry],
            search_attributes=search_attributes(start),
            memo=memo(start),
            start_signal=EVENT_SIGNAL if start.signal_entry else None,
            start_signal_args=[event] if start.signal_entry else [],
            priority=priority_of(definition, broadcast=start.broadcast is not None),
        )
        return handle.first_execution_run_id or handle.result_run_id or ""

    async def attempts() -> str:
        """Signal-with-start that reached a run as it closed (a `restart` journey's run ending on
        the previous entry event) is answered NOT_FOUND `Completed workflow`: nothing was signalled
        or started, and the next attempt finds the run closed, so the reuse policy decides."""
        for _ in range(CLOSING_ATTEMPTS - 1):
            try:
                return await attempt()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.05)
        return await attempt()

    try:
        await registration.ensure(client)
        try:
            run_id = await attempts()
        except RPCError as err:
            # A server that lost its registrations (a fresh dev server on the same address):
            # register them again and retry once; anything else goes to the caller.
            if err.status != RPCStatusCode.INVALID_ARGUMENT or "search attribute" not in str(err):
                raise
            await registration.ensure(client, again=True)
            run_id = await attempts()
    except WorkflowAlreadyStartedError:
        return None
    # The run the start reached: a new one, or (signal-with-start) the one running, recorded when it
    # started: the row is kept, not counted twice.
    return InstanceRow(
        workflow_id=instance_id,
        run_id=run_id,
        journey=definition.name,
        journey_version=start.snapshot.version,
        customer_id=event.customer_id,
        order_id=event.order_id,
        variant=definition.variant_of(start.key),
        entered_at=event.occurred_at,
    )


async def signal_journey(client: Client, instance_id: str, event: Event) -> bool:
    """Hand `event` to the instance running under `instance_id`; False when none runs."""
    try:
        await client.get_workflow_handle(instance_id).signal(EVENT_SIGNAL, event)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
