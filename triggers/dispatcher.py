"""Drain the event log into Temporal.

The API stores every event before it answers; this loop dispatches what is pending through the
router, oldest first and one at a time per customer (every journey key, order or customer,
belongs to one customer, so that keeps each key's events in order), many customers at once.
Several dispatchers (several API processes) share the log: a lease per customer in the store
lets one at a time work on a customer.
Customers are taken up as slots free, not a pass at a time: a customer whose events arrive while
a burst is dispatched waits for a free slot, not for the burst's end. Customers with an urgent
event waiting (one that starts a journey sending at once: a shipping notice) take the free slots
first; the instances they start go ahead of the burst's on Temporal's task queue too (their task
priority, instances/start.py).

While Temporal is unreachable the events stay pending and are tried again with backoff; a
restart loses nothing because the log is the queue. An error Temporal will repeat forever
(a rejected request) closes the event with its error recorded instead of blocking its customer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.records import Event
from definitions.loader import Definitions
from store import queries
from store.db import Store
from store.tables import InstanceRow
from triggers.live import LiveDefinitions
from triggers.router import Router, note_of

log = logging.getLogger(__name__)

#: After a customer is done, how long `run` waits for others to finish before it looks for the
#: next customers (one query for several free slots, not one per customer).
TAKE_UP_PAUSE = 0.02

#: How long a dispatcher holds a customer without renewing (renewed before each event).
LEASE = timedelta(minutes=2)

#: Temporal answers that mean "not now": the event stays pending.
TRANSIENT = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.ABORTED,
    RPCStatusCode.INTERNAL,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.CANCELLED,
}


class Dispatcher:
    def __init__(
        self,
        store: Store,
        definitions: Definitions | LiveDefinitions,
        connect: Callable[[], Awaitable[Client]],
        task_queue: str,
        *,
        batch: int = 500,  # customers per pass
        concurrency: int = 32,
        max_backoff: float = 30.0,
        default_region: str,
    ):
        self.store = store
        self.default_region = default_region
        #: What runs (triggers/live.py), read for each customer dispatched: a newly published
        #: change starts the instances of events dispatched after it loads. Or fixed definitions.
        self.live = definitions if isinstance(definitions, LiveDefinitions) else LiveDefinitions.fixed(definitions)
        self.connect = connect
        self._urgent: tuple[Definitions | None, frozenset[str]] = (None, frozenset())
        self.task_queue = task_queue
        self.batch = batch
        self.slots = concurrency  # customers dispatched at once by `run`
        self.concurrency = asyncio.Semaphore(concurrency)
        self.max_backoff = max_backoff
        self.wake = asyncio.Event()
        self.router: Router | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def definitions(self) -> Definitions:
        return self.live.current

    @property
    def urgent(self) -> frozenset[str]:
        """Event types whose customers go first (they start a journey that sends at once)."""
        definitions = self.definitions
        if self._urgent[0] is not definitions:  # worked out once per version of the definitions
            self._urgent = (definitions, definitions.urgent_events)
        return self._urgent[1]

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set: take up waiting customers whenever a slot is free, the
        urgent ones first (`_take_up`); `wake` (set by the API on new events) looks at once. After
        a passing failure (Temporal or the database unreachable) no customer is taken up for a
        backoff, doubling up to `max_backoff`. On `stop`, the customers being dispatched finish
        their events before it returns."""
        backoff = 0.5
        working: dict[str, asyncio.Task[tuple[int, bool]]] = {}
        paused_until = 0.0

        def pause(err: BaseException | None = None) -> None:
            nonlocal backoff, paused_until
            if err is not None:  # Temporal or the database unreachable: connect again after the pause
                log.warning("dispatch paused: %s", err)
                self.router = None
            paused_until = time.monotonic() + backoff
            backoff = min(backoff * 2, self.max_backoff)

        try:
            while not stop.is_set():
                self.wake.clear()
                if time.monotonic() >= paused_until:
                    try:
                        await self._take_up(working)
                    except Exception as err:
                        pause(err)
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.wake.wait())]
                timeout = max(0.0, paused_until - time.monotonic()) or (5.0 if not working else None)
                await asyncio.wait([*waiters, *working.values()], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
                finished = [working.pop(customer_id) for customer_id, task in list(working.items()) if task.done()]
                errors = [err for task in finished if (err := task.exception()) is not None]
                blocked = any(task.result()[1] for task in finished if task.exception() is None)
                if errors or blocked:  # the store unreachable mid-customer, or a customer's events must wait
                    pause(errors[0] if errors else None)
                elif finished:
                    backoff = 0.5
                    await asyncio.sleep(TAKE_UP_PAUSE)  # let a few slots free up: one look for them all
        finally:
            # The customers being dispatched finish their events first, as a whole pass did: a run
            # cut short would leave events it had dispatched unmarked, to be dispatched again.
            await asyncio.gather(*working.values(), return_exceptions=True)

    async def _take_up(self, working: dict[str, asyncio.Task[tuple[int, bool]]]) -> None:
        """Start dispatching as many waiting customers as there are free slots, urgent ones first."""
        free = self.slots - len(working)
        if free <= 0:
            return
        customers = await asyncio.to_thread(self._customers_waiting, free, frozenset(working))
        if customers:
            await self._connect()
        for customer_id in customers:
            working[customer_id] = asyncio.create_task(self._dispatch_customer(customer_id))

    async def dispatch_pending(self) -> tuple[int, bool]:
        """One pass over what is pending: how many were dispatched, and whether any had to wait."""
        customers = await asyncio.to_thread(self._customers_waiting)
        if not customers:
            return 0, False
        await self._connect()
        results = await asyncio.gather(*(self._dispatch_customer(customer_id) for customer_id in customers))
        return sum(n for n, _ in results), any(blocked for _, blocked in results)

    async def _connect(self) -> None:
        """The router, on a client made when first needed (again after Temporal was unreachable)."""
        if self.router is None:
            self.router = Router(
                await self.connect(), self.definitions, self.store, self.task_queue, default_region=self.default_region
            )

    def _customers_waiting(self, limit: int | None = None, busy: frozenset[str] = frozenset()) -> list[str]:
        with self.store.transaction() as session:
            return queries.customers_with_pending_events(
                session, limit or self.batch, datetime.now(UTC), urgent=self.urgent, busy=busy
            )

    async def _dispatch_customer(self, customer_id: str) -> tuple[int, bool]:
        """Dispatch one customer's pending events in order, under a lease so that no other
        dispatcher (another API process) works on this customer at the same time. The store is
        touched three times for the whole run of events, not per event: the claim with the read,
        each event's own reads in the router, and the marks with the release."""
        async with self.concurrency:
            # This task's own view of the definitions, set once: tasks share the router, and a
            # publication swapped in while another task's event is routed must not change what
            # that route reads between its awaits (a journey gone mid-route would dead-letter it).
            router = copy.copy(self.router)
            if router is None:  # Temporal went away while this customer waited for a slot
                return 0, True  # nothing claimed: taken up again after the pause
            router.definitions = self.definitions  # a newly published change: new instances run it
            router.heard = self.live.heard  # what instances of every version still running hear
            events = await asyncio.to_thread(self._claim, customer_id)
            if events is None:
                return 0, False  # another dispatcher has this customer now
            run = _Run()
            try:
                await self._dispatch_in_order(customer_id, events, run, router)
            finally:
                await asyncio.to_thread(self._finish, customer_id, run)
            return len(run.done), run.blocked

    def _claim(self, customer_id: str) -> list[tuple[Event, bool]] | None:
        with self.store.transaction() as session:
            if not queries.claim_customer(session, customer_id, self.owner, datetime.now(UTC), LEASE):
                return None
            # Read after the claim: each statement sees what was committed before it began.
            return queries.pending_events_of(session, customer_id)

    async def _dispatch_in_order(
        self, customer_id: str, events: list[tuple[Event, bool]], run: _Run, router: Router
    ) -> None:
        renewed = time.monotonic()
        for event, backfill in events:
            if time.monotonic() - renewed > LEASE.total_seconds() / 2:
                if not await asyncio.to_thread(self._renew, customer_id, run):
                    return  # the lease ran out and another dispatcher took over
                renewed = time.monotonic()
            try:
                results = await router.route(event, mark=False, backfill=backfill)
            except Exception as err:
                transient = passing(err)
                run.failed(event, describe(err), transient)
                if transient:
                    return  # keep this customer's order: the rest waits, and others go on meanwhile
                continue  # a dead letter: the customer's later events go on
            run.done.append(event.event_id)
            run.entered.extend(result.entered for result in results if result.entered is not None)
            if note := note_of(results, backfill):
                run.notes[event.event_id] = note

    def _renew(self, customer_id: str, run: _Run) -> bool:
        """Extend the lease on a long run of events, closing those done so far."""
        with self.store.transaction() as session:
            self._record(session, run)
            return queries.claim_customer(session, customer_id, self.owner, datetime.now(UTC), LEASE)

    def _finish(self, customer_id: str, run: _Run) -> None:
        with self.store.transaction() as session:
            self._record(session, run)
            queries.release_customer(session, customer_id, self.owner)

    def _record(self, session, run: _Run) -> None:
        now = datetime.now(UTC)
        queries.record_instances(session, run.entered)  # the instances started, for the effect report
        run.entered.clear()
        queries.mark_all_dispatched(session, run.done[run.recorded :], now, run.notes)
        run.recorded = len(run.done)
        run.notes.clear()
        for event, error, transient in run.failures:
            if transient:
                log.warning("event %s (%s) waits for a retry: %s", event.event_id, event.type, error)
            else:
                log.error(
                    "event %s (%s) of customer %s cannot be dispatched, kept as a dead letter "
                    "(journeys events --failed; --replay after a fix): %s",
                    event.event_id, event.type, event.customer_id, error,
                )  # fmt: skip
            queries.record_dispatch_failure(
                session, event.event_id, error, now, permanent=not transient, backoff=customer_backoff
            )
        run.failures.clear()


#: Errors that pass: Temporal or the database unreachable or overloaded. Anything else (a
#: rejected request, data the router cannot apply, a bug) will fail the same way every time.
PASSING_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def passing(err: BaseException) -> bool:
    """Whether a dispatch error may go away by itself (the event stays pending)."""
    if isinstance(err, RPCError):
        return err.status in TRANSIENT
    return isinstance(err, PASSING_ERRORS)


def describe(err: BaseException) -> str:
    if isinstance(err, RPCError):
        return f"{err.status.name}: {err}"
    return f"{type(err).__name__}: {err}"


def customer_backoff(attempts: int) -> timedelta:
    """How long a customer waits after its event's `attempts`-th failure for a passing reason:
    1 s, doubling, at most 5 minutes. Other customers' events go on meanwhile."""
    return timedelta(seconds=min(2**attempts, 300))


class _Run:
    """What one pass did with one customer's events, recorded together."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.entered: list[InstanceRow] = []
        self.recorded = 0
        self.failures: list[tuple[Event, str, bool]] = []
        self.notes: dict[str, str] = {}  # what dispatching an event did of note, by its id
        self.blocked = False

    def failed(self, event: Event, error: str, transient: bool) -> None:
        self.failures.append((event, error, transient))
        self.blocked = self.blocked or transient
