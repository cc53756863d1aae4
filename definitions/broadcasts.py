"""Broadcasts (批量发送): one message to every member of a segment, at a time in each customer's
own zone or at one moment. One file each in `definitions/broadcasts/`:

    name: spring_festival_care
    title: 春节关怀
    segment: lapsing_valuable
    send: {channel: sms, fallback: email, template: holiday_care}
    schedule: {local_time: "2027-02-10T10:00"}     # or {at: "2027-02-10T10:00:00+08:00"}
    holdout: 0.1
    goal: order.created

A broadcast runs as one Broadcast workflow that pages through the segment and starts, for each
member, an instance of the journey `journey_of` builds from the file (wait until the time, then
the send step, behind the holdout): the same interpreter, contact policy and ledger as every
journey, one instance per customer per broadcast (its workflow id).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NaiveDatetime, model_validator

from core.records import EventName
from definitions.schema import (
    Branch,
    Category,
    Entry,
    Goal,
    Identifier,
    IfSpec,
    IfStep,
    Journey,
    SendSpec,
    SendStep,
    SplitSpec,
    SplitStep,
    WaitUntilSpec,
    WaitUntilStep,
)

BROADCASTS_DIR = "broadcasts"
#: The event type a broadcast's instances start with (never sent by order systems).
BROADCAST_EVENT = "broadcast.started"


class BroadcastSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_time: NaiveDatetime | None = Field(
        default=None, description="A wall-clock time in each customer's own time zone, e.g. 2027-02-10T10:00."
    )
    at: AwareDatetime | None = Field(default=None, description="One moment for everyone, with its offset.")

    @model_validator(mode="after")
    def _one(self) -> BroadcastSchedule:
        if (self.local_time is None) == (self.at is None):
            raise ValueError("give one of local_time (each customer's zone) or at (one moment, with an offset)")
        return self

    @property
    def earliest(self) -> datetime:
        """The first moment anyone's send is due: a local time is reached first at UTC+14."""
        if self.at is not None:
            return self.at.astimezone(UTC)
        return self.local_time.replace(tzinfo=UTC) - timedelta(hours=14)  # type: ignore[union-attr]

    @property
    def latest(self) -> datetime:
        """The last moment anyone's send is due: a local time is reached last at UTC-12."""
        if self.at is not None:
            return self.at.astimezone(UTC)
        return self.local_time.replace(tzinfo=UTC) + timedelta(hours=12)  # type: ignore[union-attr]

    @property
    def expression(self) -> str:
        """The wait_until expression: a naive time is read in the customer's zone."""
        moment: datetime = self.local_time if self.local_time is not None else self.at  # type: ignore[assignment]
        return f"'{moment.isoformat()}'"


class Broadcast(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Identifier
    title: str | None = None
    segment: Identifier
    send: SendSpec
    category: Category = "marketing"
    schedule: BroadcastSchedule
    holdout: float = Field(default=0, ge=0, lt=1, description="Share of members who get nothing (the control).")
    goal: EventName | Goal | None = Field(
        default=None, description="The conversion event, as a journey's: `order.created` or {event, within}."
    )


def journey_of(broadcast: Broadcast) -> Journey:
    """The journey each member's instance runs: wait until the time (if it is still ahead), then
    send (unless held out)."""
    send = SendStep(send=broadcast.send.model_copy(update={"id": broadcast.send.id or "send"}))
    steps = [send] if not broadcast.holdout else [
        SplitStep(split=SplitSpec(holdout=broadcast.holdout, branches=[Branch(name="send", steps=[send])]))
    ]  # fmt: skip
    return Journey(
        name=broadcast.name,
        title=broadcast.title,
        category=broadcast.category,
        entry=Entry(event=BROADCAST_EVENT, key="customer", reentry="once"),
        goal=broadcast.goal,
        steps=[
            # Wait for the time, unless it has passed (a broadcast started late sends at once).
            IfStep(
                if_=IfSpec(
                    condition=f"time({broadcast.schedule.expression}) > now",
                    then=[WaitUntilStep(wait_until=WaitUntilSpec(at=broadcast.schedule.expression))],
                )
            ),
            *steps,
        ],
    )
