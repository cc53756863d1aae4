"""The Broadcast workflow's side effects: count and page through its segment in the store
(store.segments, as of the start), start each member's instance (instances.start, as the router
does), and cancel the instances still waiting when a broadcast is cancelled."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.payloads import PageRequest, StartedInstances, StartInstances
from core.records import Customer, Event
from core.rfm import Purchase
from core.vocabulary import JOURNEY_NAME
from definitions.broadcasts import BROADCAST_EVENT
from instances.start import JourneyStart, Registration, start_journey
from store import queries, segments
from store.db import Store
from store.tables import InstanceRow


class BroadcastActivities:
    def __init__(self, store: Store, client: Client | None):
        self.store = store
        self.client = client  # for starting and cancelling instances; the worker's own
        self.registration = Registration()

    @activity.defn(name="broadcast_size")
    def broadcast_size(self, request: PageRequest) -> int:
        with self.store.transaction() as session:
            return segments.count_members(session, request.segment, request.at, request.rfm_table)

    @activity.defn(name="broadcast_page")
    def broadcast_page(self, request: PageRequest) -> list[str]:
        """The ids of the next page of members, by id, after `request.after`."""
        with self.store.transaction() as session:
            found = segments.members(
                session, request.segment, request.at, request.rfm_table, after=request.after, limit=request.limit
            )
        return [member.customer_id for member in found]

    @activity.defn(name="start_broadcast_instances")
    async def start_broadcast_instances(self, request: StartInstances) -> StartedInstances:
        """Start one instance of the broadcast's journey per customer, `{journey}:{customer}`,
        an id never reused (the journey is 'once': definitions.broadcasts.journey_of): a page
        started twice (a retry, a lost worker) starts nobody twice. The instances are not
        children of the Broadcast workflow, so its history does not grow with their endings."""
        if self.client is None:
            raise RuntimeError("this worker has no Temporal client to start instances with")
        client = self.client
        snapshot = request.snapshot
        name = snapshot.definition.name
        gate = asyncio.Semaphore(50)
        outcome = StartedInstances()
        entered: list[InstanceRow] = []
        # Each instance gets its customer and purchases with it (customer.rfm in its template),
        # read for the whole page in one transaction.
        known = await asyncio.to_thread(self._customers, request.customer_ids, request.at)

        async def start(customer_id: str) -> None:
            customer, purchases = known[customer_id]
            entry = Event(
                event_id=f"{BROADCAST_EVENT}:{name}:{customer_id}"[:200],
                type=BROADCAST_EVENT,
                occurred_at=request.at,
                customer_id=customer_id,
            )
            instance = JourneyStart(
                snapshot=snapshot,
                key=customer_id,
                entry_event=entry,
                customer=customer,
                purchases=purchases,
                rfm_table=request.rfm_table,
                clock_offset=request.clock_offset,
                broadcast=request.broadcast,
            )
            async with gate:
                row = await start_journey(client, request.task_queue, instance, self.registration)
            if row is None:
                outcome.already += 1
            else:
                outcome.started += 1
                entered.append(row)

        await asyncio.gather(*(start(customer_id) for customer_id in request.customer_ids))
        await asyncio.to_thread(self._record, entered)
        return outcome

    def _record(self, entered: list[InstanceRow]) -> None:
        """The instances this page started, for the effect report (a retry finds them there)."""
        with self.store.transaction() as session:
            queries.record_instances(session, entered)

    def _customers(self, customer_ids: list[str], at: datetime) -> dict[str, tuple[Customer | None, list[Purchase]]]:
        """The page's customers and their purchases, in two queries."""
        with self.store.transaction() as session:
            customers = queries.get_customers(session, customer_ids)
            purchases = queries.purchases_of_customers(session, customer_ids, at)
        return {customer_id: (customers[customer_id], purchases[customer_id]) for customer_id in customer_ids}

    @activity.defn(name="cancel_broadcast_instances")
    async def cancel_broadcast_instances(self, journey: str) -> int:
        """Ask every running instance of the broadcast's journey to cancel (a waiting one ends
        without sending); how many were asked. Safe to retry."""
        if self.client is None:
            raise RuntimeError("this worker has no Temporal client to cancel instances with")
        query = f"{JOURNEY_NAME.name} = '{journey}' AND ExecutionStatus = 'Running'"
        asked = 0
        async for execution in self.client.list_workflows(query):
            try:
                await self.client.get_workflow_handle(execution.id, run_id=execution.run_id).cancel()
                asked += 1
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
            if asked % 100 == 0:
                activity.heartbeat(asked)
        return asked
