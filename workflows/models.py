"""The workflow's inputs, outputs and names, shared by the interpreter, the router and the tools."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio.common import SearchAttributeKey

from core.models import Customer, Event
from definitions.schema import JourneySnapshot

JOURNEY_NAME = SearchAttributeKey.for_keyword("JourneyName")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
#: Only upserted by revision-0 instances (see REVISION); the step is in the `status` query.
JOURNEY_STEP = SearchAttributeKey.for_keyword("JourneyStep")
#: Set by the router when it starts an instance (not by the workflow), so old histories replay.
JOURNEY_VERSION = SearchAttributeKey.for_keyword("JourneyVersion")
SEARCH_ATTRIBUTES = (JOURNEY_NAME, CUSTOMER_ID, ORDER_ID, JOURNEY_STEP, JOURNEY_VERSION)

EVENT_SIGNAL = "event"
#: The channels messages are delivered on, each from its own task queue (`channel_queue`).
CHANNELS = ("sms", "email", "webhook", "outbox")
#: Workflow patch: messages are delivered by deliver_message on the channel's queue. Only
#: revision-0 instances ask for it (see REVISION).
CHANNEL_QUEUES_PATCH = "deliver-on-channel-queue"

#: How new instances run, versioned through their input rather than through workflow patches (a
#: patch costs a marker and a search-attribute upsert in every history, each a billed action):
#: 0   search attributes upserted by the workflow, the step on every step; channel queues patched
#: 1   search attributes only with the start (the router's), none upserted; channel queues always
REVISION = 1


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
    customer: Customer | None = Field(
        default=None, description="The customer as the router saw it; loaded by an activity when not given."
    )
    customer_given: bool = False
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
