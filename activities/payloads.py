"""What workflows and activities hand each other (pydantic, through temporalio.contrib.pydantic)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.audience import Segment
from core.contact_policy import PolicyOverride
from core.rfm import RfmTable
from definitions.schema import JourneySnapshot, Resource, Template
from instances.contract import BatchCounts, RecurringInput, SendGroup


class SendRequest(BaseModel):
    """One send step of one journey run, at a given (journey) time."""

    workflow_id: str
    run_id: str
    journey: str
    journey_version: str
    step: str
    customer_id: str
    order_id: str | None = None
    category: Literal["transactional", "marketing"]
    channel: str
    fallback: str | None = None
    template_name: str
    template: Template
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="The message context for the template (definitions.expressions.message_context): the event, "
        "the entry event (from revision 4), the order, the vars and the customer's RFM",
    )
    at: datetime = Field(description="The time of the send in the journey's clock (never wall-clock).")
    deadline: datetime | None = Field(
        default=None,
        description="After this the message is pointless: a deferral past it skips. Until then a message that finds "
        "a cap full waits for a slot; without one, a full cap skips it.",
    )
    planned_at: datetime | None = Field(
        default=None,
        description="When the journey meant to send it (the end of the waits before it, in the journey's clock); "
        "None for instances before revision 4.",
    )
    max_lateness: timedelta | None = Field(
        default=None, description="How long after `planned_at` it is still sent; later, it is skipped as `stale`."
    )
    exit_on: list[str] = Field(
        default_factory=list,
        description="The journey's exit events: one already logged for the instance's key (since `exit_since`, "
        "or whatever its time when that is None) skips the send as `exited`, dispatched yet or not.",
    )
    exit_key: Literal["order", "customer"] | None = None
    exit_since: datetime | None = None
    resource: Resource | None = Field(default=None, description="What the message hands out, with its limits.")
    variant: str | None = Field(default=None, description="The instance's group at the journey's split.")
    waiting: bool = Field(
        default=False,
        description="Its last deferral was a wait for a cap's slot (an open deferral that ranks it).",
    )
    policy: PolicyOverride | None = Field(
        default=None,
        description="The send's changes to the shop's contact policy (the step's `policy` over its journey's), as "
        "the instance's snapshot has them; the shop's policy.yaml is the worker's.",
    )
    deliver: bool = Field(
        default=True,
        description="False: decide and record only, answering `ready`, and the workflow hands the message "
        "to its channel's task queue (rate-limited) with deliver_message; a channel the worker runs without a "
        "rate limit is delivered at once all the same (the answer is then `sent`).",
    )


class SendOutcome(BaseModel):
    status: Literal["sent", "skipped", "failed", "unknown", "deferred", "ready"]
    reason: str | None = None
    channel: str | None = None
    message_id: str | None = None
    defer_until: datetime | None = None
    detail: str | None = Field(default=None, description="What the policy said, e.g. which cap is full.")


class FailureRecord(BaseModel):
    """A journey run that could not go on because an expression failed on its data: recorded in
    the ledger as a `failed` row with the reason and the error, where operators look."""

    workflow_id: str
    run_id: str
    journey: str
    journey_version: str
    step: str = Field(description="Where it failed: a send step's id, or e.g. `vars.closes_at`, `steps[1].if`.")
    customer_id: str
    order_id: str | None = None
    category: Literal["transactional", "marketing"]
    template: str | None = None
    reason: str = "expression_error"
    error: str
    at: datetime = Field(description="The journey's time of the failure.")


class ExitRecord(BaseModel):
    """How one journey run ended, for the effect report: its instance row gets the end and the
    reason (one is written if the run was not recorded when it started, a restarted run say)."""

    workflow_id: str
    run_id: str
    journey: str
    journey_version: str
    customer_id: str
    order_id: str | None = None
    variant: str | None = None
    entered_at: datetime
    ended_at: datetime = Field(description="The journey's time of the end.")
    reason: str = Field(description="completed, exit:EVENT, exit_step, holdout, entry_condition, restarted, ...")
    waited_for_cap: bool = Field(
        default=True, description="A send of the run waited for a cap's slot: a wait still open is closed."
    )


class RetentionRequest(BaseModel):
    """Remove personal data recorded before `before` (fixed by the workflow, so a retry removes
    the same)."""

    before: datetime
    batch: int = Field(1000, ge=1)


class RetentionReport(BaseModel):
    """What one retention run removed."""

    before: datetime
    messages: int = Field(0, description="Message rows that lost address, body, subject, template data and error.")
    provider_events: int = Field(0, description="Provider webhook events deleted.")
    events: int = Field(0, description="customer.* events that lost their data.")
    outbox_lines: int = Field(0, description="Lines of the local outbox file (JOURNEYS_OUTBOX) removed.")
    links: int = Field(0, description="Short links past their expires_at deleted.")
    link_clicks: int = Field(0, description="Link clicks older than the period deleted (their user agents).")
    sms_replies: int = Field(0, description="SMS replies received before the period deleted (回复记录).")
    reply_events: int = Field(0, description="sms.replied events that lost their data (the reply's text).")


class PageRequest(BaseModel):
    """One page of a segment's members, as of `at`, after a customer id."""

    segment: Segment
    rfm_table: RfmTable
    at: datetime
    after: str | None = None
    limit: int = 500


class StartInstances(BaseModel):
    """Start the broadcast journey's instance for each of these customers (one page)."""

    snapshot: JourneySnapshot
    customer_ids: list[str]
    rfm_table: RfmTable = Field(default_factory=RfmTable)
    at: datetime = Field(description="The entry event's time: when the page was reached, in workflow time.")
    task_queue: str
    broadcast: str
    clock_offset: timedelta = Field(default=timedelta(0), description="Handed to each instance (simulations).")
    not_again: list[str] = Field(
        default_factory=list, description="once_per: members with an instance of these journeys are not started."
    )


class StartedInstances(BaseModel):
    started: int = 0
    already: int = Field(0, description="Instances that existed already (the page was dealt with before).")
    not_again: int = Field(0, description="Members left out: an earlier run of the campaign reached them.")


class RunRequest(BaseModel):
    """Start a recurring broadcast's run on `day`, its members as of `at` (the run's start)."""

    recurring: RecurringInput
    day: date
    at: datetime


class PlanRequest(BaseModel):
    """A batched broadcast's send moments: its members' zones as of `at`, the schedule's moment
    in each (the wait_until of its journey, as an instance computes it)."""

    snapshot: JourneySnapshot
    segment: Segment
    rfm_table: RfmTable
    at: datetime


class CloseRequest(BaseModel):
    """A cancelled batched broadcast: its members still deferred get nothing."""

    journey: str
    run_id: str
    at: datetime


class MemberPage(BaseModel):
    """The next page of a batched broadcast's members due at `due`: in `zones`, by id after
    `after`, not decided yet (store.broadcast_pages.decided)."""

    segment: Segment
    rfm_table: RfmTable
    members_at: datetime = Field(description="Membership as of the broadcast's start.")
    zones: list[str]
    after: str | None = None
    limit: int = 500
    journey: str
    run_id: str
    step: str
    due: datetime


class SendPage(BaseModel):
    """Decide a page of a batched broadcast's members under the contact policy, write their rows
    and hand the messages to the channels in bulk."""

    snapshot: JourneySnapshot
    broadcast: str
    customer_ids: list[str]
    run_id: str = Field(description="The ledger rows' run_id: the Broadcast workflow's first run.")
    at: datetime = Field(description="The broadcast's clock now: the moment the page is decided at.")
    due: datetime = Field(description="The group's moment: the members' send is planned for it (max_lateness).")
    entered_at: datetime = Field(description="When the broadcast reached its members (its start).")
    rfm_table: RfmTable = Field(default_factory=RfmTable)
    not_again: list[str] = Field(default_factory=list)
    first_pass: bool = Field(default=True, description="False for a deferral's end: not_again was counted before.")


class PageResult(BaseModel):
    """A page's members as the store has them once it was dealt with (a retry counts the same)."""

    counts: BatchCounts = Field(default_factory=BatchCounts)
    deferred: list[SendGroup] = Field(default_factory=list, description="Members deferred, by when and zone.")
