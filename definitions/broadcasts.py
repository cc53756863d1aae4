"""Broadcasts (批量发送): one message to every member of a segment, at a time in each customer's
own zone or at one moment. One file each in `definitions/broadcasts/`:

    name: spring_festival_care
    title: 春节关怀
    segment: lapsing_valuable
    send: {channel: sms, fallback: email, template: holiday_care}
    schedule: {local_time: "2027-02-10T10:00"}     # or {at: "2027-02-10T10:00:00+08:00"}
    holdout: 0.1
    goal: order.created

or recurring, one run a day (or on given weekdays, or on a day of the month) at a local time:

    schedule: {every: day, time: "10:00"}                       # each customer's own zone
    schedule: {every: week, weekdays: [mon, thu], time: "10:00", zone: Asia/Shanghai}
    schedule: {every: month, day: 31, time: "10:00"}            # a shorter month: its last day
    once_per: 30d        # nobody gets this campaign twice within 30 days (of run dates)

A broadcast runs as one Broadcast workflow that pages through the segment and starts, for each
member, an instance of the journey `journey_of` builds from the file (wait until the time, then
the send step, behind the holdout): the same interpreter, contact policy and ledger as every
journey, one instance per customer per broadcast (its workflow id).

A recurring broadcast's run on a date is a one-off broadcast of its own (`run_of`): named
`{name}@{date}`, its journey `{name}_{yyyymmdd}` (a journey's name is an identifier), at the
schedule's time on that date. Which dates run, and when each run starts, is worked out here
(`BroadcastSchedule.next_run`, `run_starts`), pure, for the RecurringBroadcast workflow, the
simulation and the tests alike.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from datetime import time as Time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NaiveDatetime, field_validator, model_validator

from core.contact_policy import WEEKDAYS, Weekday
from core.durations import Duration, parse_duration
from core.records import EventName, known_timezone
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

#: How long after its scheduled moment a broadcast stays open: the spread of time zones (a local
#: time is reached last at UTC-12) and a quiet-hours deferral to the next morning. A recurring
#: run whose moment is further behind than this (its workflow woke that late) is missed, not sent.
LATE_MARGIN = timedelta(hours=36)
#: A run's journey is `{name}_{yyyymmdd}` in a journey's 60 characters.
RECURRING_NAME_MAX = 60 - len("_20261203")
_RUN = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)@(?P<day>\d{4}-\d{2}-\d{2})$")


class BroadcastSchedule(BaseModel):
    """Once (`local_time` or `at`), or recurring (`every`, with `time`)."""

    model_config = ConfigDict(extra="forbid")

    local_time: NaiveDatetime | None = Field(
        default=None, description="A wall-clock time in each customer's own time zone, e.g. 2027-02-10T10:00."
    )
    at: AwareDatetime | None = Field(default=None, description="One moment for everyone, with its offset.")
    every: Literal["day", "week", "month"] | None = Field(
        default=None, description="Recurring: a run every day, on `weekdays` each week, or on `day` each month."
    )
    time: Time | None = Field(default=None, description="A recurring run's wall-clock time, e.g. 10:00.")
    weekdays: list[Weekday] | None = Field(default=None, min_length=1, description="every: week: mon ... sun.")
    day: int | None = Field(
        default=None, ge=1, le=31, description="every: month: the day of the month; a shorter month runs on its last."
    )
    zone: str | None = Field(
        default=None,
        description="A recurring run's time in this IANA zone for everyone (the shop's, e.g. Asia/Shanghai); "
        "without it, in each customer's own zone as local_time.",
    )
    start: date | None = Field(default=None, description="Recurring: the first date a run may fall on.")
    end: date | None = Field(default=None, description="Recurring: the last date a run may fall on.")

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and not known_timezone(value):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)")
        return value

    @model_validator(mode="after")
    def _one(self) -> BroadcastSchedule:
        if sum(given is not None for given in (self.local_time, self.at, self.every)) != 1:
            raise ValueError(
                "give one of local_time (each customer's zone), at (one moment, with an offset) "
                "or every (day, week or month, with a time)"
            )
        if self.every is None:
            recurring = [name for name in ("time", "weekdays", "day", "zone", "start", "end") if getattr(self, name)]
            if recurring:
                raise ValueError(f"{', '.join(recurring)}: only for a recurring schedule (every: day, week or month)")
            return self
        if self.time is None:
            raise ValueError(f'every: {self.every} needs a time, e.g. time: "10:00"')
        if (self.every == "week") != (self.weekdays is not None):
            raise ValueError("weekdays (mon ... sun) go with every: week, and every: week needs them")
        if (self.every == "month") != (self.day is not None):
            raise ValueError("day (1 to 31) goes with every: month, and every: month needs it")
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    @property
    def recurring(self) -> bool:
        return self.every is not None

    def runs_on(self, day: date) -> bool:
        """Whether a recurring schedule has a run on `day`."""
        if (self.start and day < self.start) or (self.end and day > self.end):
            return False
        if self.every == "week":
            return WEEKDAYS[day.weekday()] in (self.weekdays or [])
        if self.every == "month":  # the 31st in a 30-day month (or February): its last day
            return day.day == min(self.day or 1, calendar.monthrange(day.year, day.month)[1])
        return True

    def next_run(self, after: date) -> date | None:
        """The first date after `after` with a run; None past `end`."""
        day = max(after + timedelta(days=1), self.start or date.min)
        for _ in range(366 if self.every != "month" else 31 * 13):  # a year holds a run of any rule
            if self.end and day > self.end:
                return None
            if self.runs_on(day):
                return day
            day += timedelta(days=1)
        return None

    def run_schedule(self, day: date) -> BroadcastSchedule:
        """The one-off schedule of the run on `day`: the time in each customer's zone, or in `zone`."""
        moment = datetime.combine(day, self.time or Time())
        if self.zone is None:
            return BroadcastSchedule(local_time=moment)
        return BroadcastSchedule(at=moment.replace(tzinfo=ZoneInfo(self.zone)))

    def run_starts(self, day: date) -> datetime:
        """When the run on `day` starts: its first send anywhere (UTC+14 for each customer's zone),
        with the segment's members as of then."""
        return self.run_schedule(day).earliest

    def runs_between(self, begin: datetime, until: datetime) -> list[date]:
        """The dates whose runs start from `begin` up to `until`, as a schedule started at `begin`
        runs them."""
        found: list[date] = []
        day = self.next_run((begin - timedelta(days=2)).date())
        while day is not None and self.run_starts(day) <= until:
            if self.run_starts(day) >= begin:
                found.append(day)
            day = self.next_run(day)
        return found

    def describe(self) -> str:
        """`every day at 10:00 (each customer's zone)`, `every week on mon, thu at ...`."""
        if not self.recurring:
            return self.local_time.isoformat() + " local" if self.local_time else self.at.isoformat()  # type: ignore[union-attr]
        on = {"day": "", "week": f" on {', '.join(self.weekdays or [])}", "month": f" on day {self.day}"}[self.every]  # type: ignore[index]
        where = self.zone or "each customer's zone"
        return f"every {self.every}{on} at {self.time:%H:%M} ({where})"

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
    once_per: Duration | None = Field(
        default=None,
        description="A recurring broadcast: a customer an earlier run reached within this many days (e.g. 30d, "
        "counted in run dates) is not started again; held out counts as reached, a skipped send does not.",
    )
    path: Literal["auto", "batched", "instances"] = Field(
        default="auto",
        description="How it runs: `batched` (pages of members decided and sent by one activity each), `instances` "
        "(one journey instance per member), or `auto`: batched unless its send needs an instance "
        "(`broadcast_path` says which, and why; `journeys validate` prints it).",
    )
    page: int = Field(
        default=1000,
        ge=1,
        le=5000,
        description="Members per page: a batched page is decided, written and handed to the channel at once.",
    )

    @model_validator(mode="after")
    def _recurring(self) -> Broadcast:
        if self.once_per is not None:
            if not self.schedule.recurring:
                raise ValueError("once_per is for a recurring schedule (every: day, week or month)")
            length = parse_duration(self.once_per)
            if length < timedelta(days=1) or length % timedelta(days=1):
                raise ValueError(f"once_per: {self.once_per!r} is not a whole number of days, e.g. 30d")
        if self.path == "batched" and (needs := _needs_instances(self.send)) is not None:
            raise ValueError(f"path: batched cannot run this broadcast: {needs}")
        if self.schedule.recurring and len(self.name) > RECURRING_NAME_MAX:
            raise ValueError(
                f"a recurring broadcast's name has at most {RECURRING_NAME_MAX} characters (its runs' journeys "
                "add _yyyymmdd)"
            )
        return self

    @property
    def path_taken(self) -> tuple[Literal["batched", "instances"], str]:
        """`broadcast_path` of this broadcast."""
        return broadcast_path(self)

    @property
    def once_per_days(self) -> int | None:
        return parse_duration(self.once_per).days if self.once_per else None


#: Why a send needs an instance per member, whatever the file asks: what only a running instance does.
def _needs_instances(send: SendSpec) -> str | None:
    if send.deadline is not None:
        return (
            "its send has a deadline: a full frequency cap makes each member's message wait for a slot, ranked "
            "with the customer's other waiting messages, which an instance per member does"
        )
    return None


def broadcast_path(broadcast: Broadcast) -> tuple[Literal["batched", "instances"], str]:
    """How a broadcast runs, and why. A broadcast is one send (after its schedule's time), so it
    goes in pages (`batched`): one activity decides a page of members under the same contact
    policy, writes their ledger rows in one statement and hands the messages to the channel in
    bulk, and members whose send moment differs wait on one timer of the Broadcast workflow per
    moment. It takes an instance per member when its file asks for it (`path: instances`), or when
    its send does what only an instance does (`_needs_instances`)."""
    needs = _needs_instances(broadcast.send)
    if broadcast.path == "instances":
        return "instances", "the file asks for it (path: instances)"
    if needs is not None:
        if broadcast.path == "batched":
            raise ValueError(f"path: batched cannot run it: {needs}")
        return "instances", needs
    why = "one send to each member: decided a page at a time, one timer per send moment"
    return "batched", why + (" (path: batched)" if broadcast.path == "batched" else "")


def run_name(name: str, day: date) -> str:
    """A recurring broadcast's run on `day`: `card_expiring@2026-12-03`."""
    return f"{name}@{day.isoformat()}"


def parse_run(text: str) -> tuple[str, date] | None:
    """`card_expiring@2026-12-03` as (name, date); None for anything else."""
    match = _RUN.match(text)
    if match is None:
        return None
    try:
        return match["name"], date.fromisoformat(match["day"])
    except ValueError:
        return None


def run_journey(name: str, day: date) -> str:
    """The journey a run's instances run (in the ledger, the effect report and their workflow ids
    `{journey}:{customer}`): `card_expiring_20261203`, an identifier as every journey's name."""
    return f"{name}_{day:%Y%m%d}"


def journey_run(journey: str, broadcasts: Iterable[Broadcast]) -> tuple[Broadcast, date] | None:
    """The recurring broadcast and date whose run's journey is `journey` (`run_journey`'s
    inverse); None for any other journey (one named alike, or a date off the schedule)."""
    name, _, digits = journey.rpartition("_")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    for broadcast in broadcasts:
        if broadcast.name == name and broadcast.schedule.recurring and broadcast.schedule.runs_on(day):
            return broadcast, day
    return None


def run_of(broadcast: Broadcast, day: date) -> Broadcast:
    """A recurring broadcast's run on `day`, as the one-off broadcast it is: its journey's name,
    the schedule's time on that date."""
    return broadcast.model_copy(
        update={"name": run_journey(broadcast.name, day), "schedule": broadcast.schedule.run_schedule(day)}
    )


def not_again(broadcast: Broadcast, day: date) -> list[str]:
    """The journeys of the earlier runs whose members the run on `day` leaves out (`once_per`):
    those of the dates within the window before it."""
    days = broadcast.once_per_days
    if not days:
        return []
    earlier = (day - timedelta(days=back) for back in range(1, days))
    return [run_journey(broadcast.name, d) for d in earlier if broadcast.schedule.runs_on(d)]


def journey_of(broadcast: Broadcast) -> Journey:
    """The journey each member's instance runs: wait until the time (if it is still ahead), then
    send (unless held out). A recurring broadcast's own is its run on its first date (or an
    early one), checked as any and never run: each run has its own (`run_of`)."""
    if broadcast.schedule.recurring:
        return journey_of(run_of(broadcast, broadcast.schedule.start or date(2000, 1, 1))).model_copy(
            update={"name": broadcast.name}
        )
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
