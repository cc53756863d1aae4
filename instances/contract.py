"""The workflows' inputs, outputs, ids and registered names, shared by the interpreters
(`workflows`), the starters (instances.start, used by the router and the broadcast activity) and the
tools. The registered names are in every recorded history and reach the running instances: they
never change."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from core.audience import Segment
from core.products import ProductFacts
from core.records import Customer, Event
from core.rfm import Purchase, RfmTable
from definitions.broadcasts import Broadcast
from definitions.schema import JourneySnapshot

#: The journey interpreter's registered workflow type (workflows.journey.JourneyWorkflow): instances
#: are started by this name, so their starters need no import of the workflow.
JOURNEY_WORKFLOW = "Journey"
#: A broadcast's (or a recurring broadcast's run's) registered workflow type (workflows.broadcast).
BROADCAST_WORKFLOW = "Broadcast"
#: The signal an instance hears events by (the start's, too, with signal-with-start).
EVENT_SIGNAL = "event"
#: The query a running instance answers with its JourneyStatus (the history views ask it).
STATUS_QUERY = "status"
#: Workflow patch: messages are delivered by deliver_message on the channel's queue. Only
#: revision-0 instances ask for it (see REVISION).
CHANNEL_QUEUES_PATCH = "deliver-on-channel-queue"

#: How new instances run, versioned through their input rather than through workflow patches (a
#: patch costs a marker and a search-attribute upsert in every history, each a billed action):
#: 0   search attributes upserted by the workflow, the step on every step; channel queues patched
#: 1   search attributes only with the start (the router's), none upserted; channel queues always
#: 2   `order` is the whole order (core.orders.order_context over `order_history` and every event
#:     of the order signalled since); before, it was the entry event's data and later events' data
#: 3   a run records how it ended (record_exit, a local activity) for the effect report's exits
#: 4   inside a `wait_for`'s `on_event` branch `event` is the awaited event (the entry event is
#:     `entry` everywhere); a send carries its planned moment and `max_lateness`, so a message
#:     whose moment has passed by more than that is skipped as `stale`
#: 5   `customer.lifecycle` (core.lifecycle) is in the context, from `purchases`, which hold every
#:     purchase before the entry event (before, the year's only; a definition reading the name got
#:     nothing)
#: 6   `customer.points` and `customer.tier` (the loyalty facts, definitions.render.loyalty_facts) are
#:     in the context as the starter read them at the entry event (`loyalty`), for the re-checked
#:     entry condition, vars and steps; a send renders with them as of the send. And
#:     `customer.segments`, the names of the segments the customer was in at the entry event
#:     (`segments`), for conditions, steps and templates alike
REVISION = 6


def channel_queue(task_queue: str, channel: str) -> str:
    """The task queue a channel's deliveries run on: rate limits are set per task queue."""
    return f"{task_queue}-{channel}"


MAX_REMEMBERED_EVENT_IDS = 500


def workflow_id(journey: str, key: str) -> str:
    return f"{journey}:{key}"


class JourneyInput(BaseModel):
    snapshot: JourneySnapshot
    key: str
    entry_event: Event
    prior_events: list[Event] = Field(
        default_factory=list, description="Events for this key already known when the instance starts."
    )
    order_history: list[Event] = Field(
        default_factory=list,
        description="The order's logged events up to the entry event (trimmed to fit: core.orders.order_history).",
    )
    products: dict[str, ProductFacts] | None = Field(
        default=None,
        description="The catalogue's facts of the order's SKUs (product, repurchase figures) as the router read "
        "them, joined into `order` (core.orders.order_context); None for instances started before the catalogue, "
        "whose `order` stays as recorded. Data, not a revision: the interpreter reads no catalogue itself.",
    )
    customer: Customer | None = Field(
        default=None, description="The customer as the router saw it; loaded by an activity when not given."
    )
    customer_given: bool = False
    purchases: list[Purchase] = Field(
        default_factory=list,
        description="The customer's orders paid before the entry event (in the year before it for instances "
        "started before customer.lifecycle), for customer.rfm (core.rfm) and customer.lifecycle (core.lifecycle); "
        "order events of the customer signalled later are folded in.",
    )
    rfm_table: RfmTable = Field(default_factory=RfmTable, description="definitions/rfm.yaml as the router loaded it.")
    loyalty: dict[str, Any] | None = Field(
        default=None,
        description="`customer.points` and `customer.tier` as the starter read them at the entry event, for a "
        "definition that reads them (revision 6); None otherwise, and before.",
    )
    segments: list[str] | None = Field(
        default=None,
        description="`customer.segments`: the segments the customer was in at the entry event, for a definition "
        "that reads them (revision 6); None otherwise, and before.",
    )
    clock_offset: timedelta = timedelta(0)
    started_at: datetime | None = Field(default=None, description="Start of this run's clock (repeats).")
    seen_event_ids: list[str] = Field(default_factory=list)
    revision: int = Field(
        default=0,
        description="The interpreter revision the instance started on (REVISION for new instances); 0 for "
        "instances started before revisions, whose histories must replay as they were recorded.",
    )


class JourneyStatus(BaseModel):
    journey: str
    version: str
    key: str
    customer_id: str
    order_id: str | None
    step: str
    next_wake_up: datetime | None
    sends: dict[str, str]


class JourneyResult(BaseModel):
    outcome: str
    sends: dict[str, str] = Field(default_factory=dict, description="step id → sent/skipped:reason/failed")


def retention_schedule_id(task_queue: str) -> str:
    """The retention schedule of the deployment on `task_queue` (several may share a namespace);
    the workflows it starts have this id and their scheduled time."""
    return f"journeys-retention:{task_queue}"


class RetentionPolicy(BaseModel):
    """The retention schedule's argument: personal data older than `days` goes."""

    days: int = Field(ge=1)


def broadcast_workflow_id(name: str) -> str:
    """The Broadcast workflow of a broadcast: one per name (a name runs once). A recurring
    broadcast's RecurringBroadcast workflow has its name's, and each of its runs its run's
    (`name@2026-12-03`)."""
    return f"broadcast:{name}"


class SendGroup(BaseModel):
    """Members of a batched broadcast whose send is due at one moment: those of `zones` (the
    schedule's local time there, or a deferral's end there) not decided yet. The Broadcast
    workflow waits for `at` on one timer, then pages through them from `after`."""

    at: datetime
    zones: list[str]
    after: str | None = Field(default=None, description="The last customer id of the group dealt with.")
    members: int = Field(default=0, description="Members deferred to it (0 for a schedule's moment).")
    resumed: bool = Field(default=False, description="A deferral's end: its members were reached before.")
    begun: bool = Field(default=False, description="Its first page was asked for.")


class BatchCounts(BaseModel):
    """What a batched broadcast decided so far, member by member (each counted once)."""

    sent: int = 0
    skipped: dict[str, int] = Field(default_factory=dict, description="By reason.")
    failed: dict[str, int] = Field(default_factory=dict, description="By reason.")
    held_out: int = Field(default=0, description="The control group (holdout): no message, counted in the effect.")
    not_again: int = 0
    deferred: int = Field(default=0, description="Members waiting for a deferral's end (quiet hours, a send window).")
    unknown: int = Field(default=0, description="Messages whose provider's answer could not be settled.")

    @property
    def decided(self) -> int:
        return self.sent + sum(self.skipped.values()) + sum(self.failed.values()) + self.held_out + self.unknown

    def plus(self, other: BatchCounts) -> BatchCounts:
        def merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {key: a.get(key, 0) + b.get(key, 0) for key in sorted({*a, *b})}

        return BatchCounts(
            sent=self.sent + other.sent,
            skipped=merged(self.skipped, other.skipped),
            failed=merged(self.failed, other.failed),
            held_out=self.held_out + other.held_out,
            not_again=self.not_again + other.not_again,
            deferred=self.deferred + other.deferred,
            unknown=self.unknown + other.unknown,
        )


class BroadcastInput(BaseModel):
    """What the Broadcast workflow runs, and where it has got to (carried over continue-as-new)."""

    name: str
    snapshot: JourneySnapshot = Field(description="The journey every member's instance runs (definitions.broadcasts).")
    segment: Segment
    rfm_table: RfmTable = Field(default_factory=RfmTable)
    members_at: datetime = Field(description="Membership is the segment's at this time (the start), for every page.")
    page: int = Field(default=500, ge=1, le=5000)
    pages_per_run: int = Field(default=10, ge=1, description="Pages before continue-as-new (bounded history).")
    after: str | None = Field(default=None, description="The last customer id dealt with.")
    total: int | None = Field(default=None, description="Members at the start; counted by the first run.")
    started: int = 0
    already: int = Field(default=0, description="Members whose instance existed (a page dealt with twice).")
    cancelled: bool = False
    open_until: datetime | None = Field(
        default=None,
        description="After starting every instance, the workflow stays open (to be cancelled, to show its "
        "progress) until the last member's time has passed: the schedule's latest moment in any zone.",
    )
    clock_offset: timedelta = Field(
        default=timedelta(0),
        description="Server time minus the broadcast's own time: zero but in simulations, as for journeys.",
    )
    not_again: list[str] = Field(
        default_factory=list,
        description="A recurring run's once_per: the journeys of earlier runs whose members it does not start.",
    )
    not_again_count: int = Field(default=0, description="Members left out so far for once_per.")
    batched: bool = Field(
        default=False,
        description="Run in pages (definitions.broadcasts.broadcast_path): each page decided and sent by one "
        "activity, members waiting on one timer per send moment; else one instance per member.",
    )
    groups: list[SendGroup] | None = Field(
        default=None, description="Batched: the send moments still to deal with, earliest first (None: not planned)."
    )
    counts: BatchCounts = Field(default_factory=BatchCounts, description="Batched: what was decided so far.")
    run_key: str | None = Field(
        default=None, description="Batched: the run_id of its members' ledger rows (the workflow's first run)."
    )


class RecurringInput(BaseModel):
    """What the RecurringBroadcast workflow runs, and where it has got to (carried over
    continue-as-new, once a run)."""

    name: str
    broadcast: Broadcast
    snapshot: JourneySnapshot = Field(description="The broadcast's templates and resources, for each run's journey.")
    segment: Segment
    rfm_table: RfmTable = Field(default_factory=RfmTable)
    since: datetime = Field(description="When the schedule was started: the first run is the first to start after.")
    after: date | None = Field(default=None, description="The last run date dealt with (started, or missed).")
    runs: list[str] = Field(default_factory=list, description="The latest runs it started (RECENT_RUNS of them).")
    already: int = Field(default=0, description="Runs that were started before (by hand, or a retry).")
    missed: list[str] = Field(default_factory=list, description="Runs whose time had passed when it woke.")
    cancelled: bool = False
    clock_offset: timedelta = Field(default=timedelta(0), description="As a broadcast's (simulations).")


class RecurringProgress(BaseModel):
    name: str
    state: str = Field(description="waiting (for its next run), done (past its end), cancelled")
    next_run: str | None
    next_at: datetime | None = Field(description="When the next run starts (its first send anywhere).")
    runs: list[str]
    already: int
    missed: list[str]


class BroadcastProgress(BaseModel):
    name: str
    state: str = Field(
        description="counting, starting, started (every instance started; open until the last send time), "
        "done, cancelling, cancelled"
    )
    total: int | None
    started: int
    already: int
    after: str | None
    cancelled_instances: int = 0
    not_again: int = Field(default=0, description="Members not started: an earlier run reached them (once_per).")
    path: str = Field(default="instances", description="batched (pages) or instances (one per member).")
    counts: BatchCounts | None = Field(default=None, description="Batched: sent, skipped and failed by reason, ...")
    next_at: datetime | None = Field(default=None, description="Batched: the next send moment it waits for.")
