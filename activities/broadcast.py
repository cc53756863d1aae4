"""The Broadcast workflow's side effects: count and page through its segment in the store
(store.segments, as of the start), start each member's instance (instances.start, as the router
does) but for those an earlier run reached within a recurring broadcast's once_per, and cancel
the instances still waiting when a broadcast is cancelled. And the RecurringBroadcast workflow's:
start a run (a Broadcast workflow of its own, `broadcast:{name}@{date}`, never started twice)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import date, datetime, timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.payloads import PageRequest, RunRequest, StartedInstances, StartInstances
from core.audience import Segment
from core.records import Customer, Event
from core.rfm import Purchase, RfmTable
from core.vocabulary import JOURNEY_NAME
from definitions.broadcasts import (
    BROADCAST_EVENT,
    LATE_MARGIN,
    Broadcast,
    broadcast_path,
    journey_of,
    not_again,
    run_name,
    run_of,
)
from definitions.loader import snapshot_of
from definitions.schema import JourneySnapshot
from instances.contract import BROADCAST_WORKFLOW, BroadcastInput, broadcast_workflow_id
from instances.start import JourneyStart, Registration, start_journey
from store import queries, segments
from store.db import Store
from store.tables import InstanceRow

#: A batched broadcast's pages before its workflow continues as new: two activities a page, so
#: a run's history stays a few hundred events.
BATCHED_PAGES_PER_RUN = 20


def run_definition(broadcast: Broadcast, snapshot: JourneySnapshot, day: date) -> tuple[Broadcast, JourneySnapshot]:
    """A recurring broadcast's run on `day` and the journey snapshot its members run, with the
    templates and resources of the broadcast's own snapshot."""
    run = run_of(broadcast, day)
    return run, snapshot_of(journey_of(run), snapshot.templates, snapshot.resources)


def broadcast_input(
    name: str,
    broadcast: Broadcast,
    snapshot: JourneySnapshot,
    segment: Segment,
    rfm_table: RfmTable,
    now: datetime,
    clock_offset: timedelta = timedelta(0),
    not_again: Iterable[str] = (),
) -> BroadcastInput:
    """The Broadcast workflow's input for a one-off broadcast or a run (`broadcast` its one-off
    form), its members as of `now`: open until its latest send anywhere has passed."""
    batched = broadcast_path(broadcast)[0] == "batched"
    return BroadcastInput(
        name=name,
        snapshot=snapshot,
        segment=segment,
        rfm_table=rfm_table,
        members_at=now,
        page=broadcast.page,
        pages_per_run=BATCHED_PAGES_PER_RUN if batched else BroadcastInput.model_fields["pages_per_run"].default,
        open_until=max(broadcast.schedule.latest + LATE_MARGIN, now),
        clock_offset=clock_offset,
        not_again=list(not_again),
        batched=batched,
    )


def recurring_run_input(
    base: Broadcast, snapshot: JourneySnapshot, segment: Segment, rfm_table: RfmTable, day: date, now: datetime,
    clock_offset: timedelta = timedelta(0),
) -> BroadcastInput:  # fmt: skip
    """The input of recurring broadcast `base`'s run on `day`, started at `now`."""
    run, run_snapshot = run_definition(base, snapshot, day)
    return broadcast_input(
        run_name(base.name, day), run, run_snapshot, segment, rfm_table, now, clock_offset, not_again(base, day)
    )


def entry_event(journey: str, customer_id: str, at: datetime) -> Event:
    """The entry event of a member's instance of a broadcast's journey (`event` and `entry` in its
    expressions), the broadcast (or run) started at `at`."""
    return Event(
        event_id=f"{BROADCAST_EVENT}:{journey}:{customer_id}"[:200],
        type=BROADCAST_EVENT,
        occurred_at=at,
        customer_id=customer_id,
    )


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
        # read for the whole page in one transaction, with those an earlier run reached (once_per).
        known, reached = await asyncio.to_thread(self._customers, request.customer_ids, request.at, request.not_again)
        outcome.not_again = len(reached)

        async def start(customer_id: str) -> None:
            customer, purchases = known[customer_id]
            entry = entry_event(name, customer_id, request.at)
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

        await asyncio.gather(
            *(start(customer_id) for customer_id in request.customer_ids if customer_id not in reached)
        )
        await asyncio.to_thread(self._record, entered)
        return outcome

    def _record(self, entered: list[InstanceRow]) -> None:
        """The instances this page started, for the effect report (a retry finds them there)."""
        with self.store.transaction() as session:
            queries.record_instances(session, entered)

    def _customers(
        self, customer_ids: list[str], at: datetime, not_again: list[str]
    ) -> tuple[dict[str, tuple[Customer | None, list[Purchase]]], set[str]]:
        """The page's customers and their purchases, in two queries; and those of them an
        instance of `not_again` reached (a third, with once_per)."""
        with self.store.transaction() as session:
            reached = queries.reached_by_runs(session, customer_ids, not_again)
            wanted = [customer_id for customer_id in customer_ids if customer_id not in reached]
            customers = queries.get_customers(session, wanted)
            purchases = queries.purchases_of_customers(session, wanted, at)
        return {customer_id: (customers[customer_id], purchases[customer_id]) for customer_id in wanted}, reached

    @activity.defn(name="start_broadcast_run")
    async def start_broadcast_run(self, request: RunRequest) -> bool:
        """Start a recurring broadcast's run on `request.day` as a Broadcast workflow of its own,
        `broadcast:{name}@{date}`, an id never reused: False when it was started before (by
        hand, or this activity retried), so a run starts once whoever asks."""
        if self.client is None:
            raise RuntimeError("this worker has no Temporal client to start a broadcast's run with")
        recurring = request.recurring
        input = recurring_run_input(
            recurring.broadcast, recurring.snapshot, recurring.segment, recurring.rfm_table, request.day, request.at,
            recurring.clock_offset,
        )  # fmt: skip
        try:
            await self.client.start_workflow(
                BROADCAST_WORKFLOW,
                input,
                id=broadcast_workflow_id(input.name),
                task_queue=activity.info().task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                memo={"broadcast": input.name, "segment": input.segment.name, "recurring": recurring.name},
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

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
