"""The contact policy as a shop configures it (防骚扰, `definitions/policy.yaml`) and as a journey
or one of its send steps overrides it (`policy:`):

    quiet_hours:                       # the most specific rule wins:
      - hours: 22:00-08:00             #   category+channel > channel > category > this default
      - {channel: sms, hours: 21:00-09:00}
      - {channel: email, hours: none}
      - {category: transactional, channel: sms, hours: 23:00-07:00}
    caps:                              # every window at once; a category has at most one cap
      - name: marketing
        category: marketing
        windows:
          - {max: 1, per: 1d}
          - {max: 2, per: 7d}
          - {max: 6, per: 30d, per_channel: true}
    send_windows:                      # when a send may go, by weekday (a day not named: all day)
      - category: marketing
        days: {sun: [12:00-22:00]}
    priorities: {transactional: 60, marketing: 20}

Values only, pydantic as at every boundary: definitions/loader.py reads and checks the file (its
line numbers), rules/policy.py applies it (the hours' arithmetic, the counting), and the send
activity hands the rule the shop's policy with the send's overrides (`SendPolicy`). Without the
file, `ContactPolicy()` is what the engine always did: 22:00-08:00 for every send, at most 2
marketing messages per 7 days across channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import Annotated, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.durations import Duration, parse_duration
from core.vocabulary import CategoryName, ChannelName

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)

_CLOCK = r"(?:[01]\d|2[0-3]):[0-5]\d"
#: Quiet hours as written: from-to in the customer's time zone, past midnight when to < from.
QuietRange = Annotated[
    str,
    Field(
        pattern=rf"^{_CLOCK}-{_CLOCK}$",
        description="HH:MM-HH:MM in the customer's time zone (22:00-08:00 runs past midnight); or `none`.",
        examples=["22:00-08:00", "none"],
    ),
]
#: A send window as written: from-to within one day, to up to 24:00.
DayRange = Annotated[
    str,
    Field(
        pattern=rf"^{_CLOCK}-(?:{_CLOCK}|24:00)$",
        description="HH:MM-HH:MM within the day, in the customer's time zone (up to 24:00).",
        examples=["09:00-21:00", "12:00-24:00"],
    ),
]
NO_QUIET_HOURS = "none"
QuietHoursValue = QuietRange | Literal["none"]
CapName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]
#: A send step's `cap:` that lets it pass a full cap (with a `reason`).
EXEMPT = "exempt"
Priority = Annotated[int, Field(ge=0, le=100, description="0-100; higher goes first when slots are scarce.")]


def minutes(clock: str) -> int:
    """`'21:30'` → 1290, the minute of the day (`'24:00'` → 1440)."""
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


def span(text: str) -> tuple[int, int]:
    """`'12:00-22:00'` → (720, 1320), minutes of the day."""
    start, end = text.split("-")
    return minutes(start), minutes(end)


def clock(minute: int) -> time:
    return time(minute // 60, minute % 60)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Scoped(_Strict):
    """A rule for some messages: of a category, on a channel, both, or (neither) all of them."""

    category: CategoryName | None = Field(default=None, description="Only messages of this category.")
    channel: ChannelName | None = Field(default=None, description="Only messages sent on this channel.")

    @property
    def scope(self) -> tuple[str | None, str | None]:
        return self.category, self.channel

    def applies(self, category: str, channel: str | None) -> bool:
        return self.category in (None, category) and self.channel in (None, channel)

    @property
    def specificity(self) -> int:
        """category+channel (3) > channel (2) > category (1) > neither (0)."""
        return (self.category is not None) + 2 * (self.channel is not None)


R = TypeVar("R", bound=_Scoped)


def most_specific(rules: Sequence[R], category: str, channel: str | None) -> R | None:
    """The rule that applies to a message of `category` on `channel`; None when none does."""
    applying = [rule for rule in rules if rule.applies(category, channel)]
    return max(applying, key=lambda rule: rule.specificity, default=None)


class QuietHoursRule(_Scoped):
    hours: QuietHoursValue = Field(description="Nothing is sent then: HH:MM-HH:MM, or `none`.")


class CapWindow(_Strict):
    max: int = Field(ge=1, description="At most this many messages counted by the cap...")
    per: Duration = Field(description="... within this long (rolling), e.g. 1d, 7d, 30d.")
    per_channel: bool = Field(
        default=False, description="Count each channel on its own (false: all channels together)."
    )

    @cached_property
    def length(self) -> timedelta:
        return parse_duration(self.per)

    def label(self, cap: str, channel: str | None) -> str:
        """How a refusal names the window: `cap marketing 2/7d`, `cap marketing 1/1d on sms`."""
        return f"cap {cap} {self.max}/{self.per}" + (f" on {channel}" if self.per_channel and channel else "")


class Cap(_Strict):
    name: CapName = Field(description="Named in the ledger and the skip's detail; a send step may name it (`cap:`).")
    title: str | None = None
    category: CategoryName | None = Field(
        default=None,
        description="The category whose messages it caps and counts. None: only the sends that name it (`cap: NAME`).",
    )
    windows: list[CapWindow] = Field(min_length=1, description="Every window holds at once.")
    hold: Duration | None = Field(
        default=None,
        description="A message about to take a window's last free slot first waits this long (once), if its "
        "deadline allows, so that a higher-priority message due meanwhile takes the slot ahead of it. None: the "
        "first message to ask takes a free slot; messages waiting for one still go in priority order.",
        exclude_if=lambda value: value is None,
    )

    @cached_property
    def hold_length(self) -> timedelta:
        return parse_duration(self.hold) if self.hold else timedelta(0)


@dataclass(frozen=True)
class CapWait:
    """A message waiting for a slot of a full cap (the store's open deferrals for the customer and
    the cap): how it ranks, since when it waits, when it comes back, until when it may still go;
    `held`: it is waiting out the cap's `hold` before taking a last free slot."""

    priority: int
    waiting_since: datetime
    resume_at: datetime
    deadline: datetime
    held: bool = False
    cap: str | None = None  # the cap it waits for


class SendWindowRule(_Scoped):
    days: dict[Weekday, list[DayRange]] = Field(
        description="When a send may go, by weekday (mon ... sun): a list of HH:MM-HH:MM; [] closes the day. A "
        "day not named is open all day. A send outside is deferred to the next opening (skipped past its deadline)."
    )


#: What the engine did before the file existed, and does without one.
DEFAULT_QUIET_HOURS = "22:00-08:00"
DEFAULT_CAP = Cap(name="marketing", category="marketing", windows=[CapWindow(max=2, per="7d")])
DEFAULT_PRIORITIES: dict[str, int] = {"transactional": 60, "marketing": 20}


class ContactPolicy(_Strict):
    """The shop's contact policy (`definitions/policy.yaml`); every field has today's default."""

    quiet_hours: list[QuietHoursRule] = Field(
        default_factory=lambda: [QuietHoursRule(hours=DEFAULT_QUIET_HOURS)],
        description="Hours nothing is sent in, in the customer's time zone; the most specific rule wins "
        "(category+channel > channel > category > neither). A send due then is deferred to their end.",
    )
    caps: list[Cap] = Field(
        default_factory=lambda: [DEFAULT_CAP],
        description="At most so many messages per window to one customer, all journeys together.",
    )
    send_windows: list[SendWindowRule] = Field(
        default_factory=list, description="When sends may go by weekday; the most specific rule wins."
    )
    priorities: dict[CategoryName, Priority] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITIES),
        description="Default priority by category (a journey's or a step's `policy.priority` overrides it).",
    )

    def problems(self) -> list[tuple[tuple, str]]:
        """What pydantic cannot see, as (where in the file, message): two rules for one scope,
        two caps of one name or of one category, quiet hours that never end."""
        found: list[tuple[tuple, str]] = []
        for field, rules in (("quiet_hours", self.quiet_hours), ("send_windows", self.send_windows)):
            seen: dict[tuple, int] = {}
            for i, rule in enumerate(rules):
                if rule.scope in seen:
                    first = f"{field}[{seen[rule.scope]}]"
                    found.append(((field, i), f"a second rule for {_describe(rule.scope)} (the first is {first})"))
                seen.setdefault(rule.scope, i)
        for i, rule in enumerate(self.quiet_hours):
            if rule.hours != NO_QUIET_HOURS and len(set(span(rule.hours))) == 1:
                found.append((("quiet_hours", i, "hours"), f"{rule.hours!r} never ends; `none` means no quiet hours"))
        names: dict[str, int] = {}
        categories: dict[str, int] = {}
        for i, cap in enumerate(self.caps):
            if cap.name == EXEMPT:
                found.append((("caps", i, "name"), f"{EXEMPT!r} is what a send step writes to pass the caps"))
            if cap.name in names:
                found.append((("caps", i, "name"), f"cap {cap.name!r} is declared twice"))
            names.setdefault(cap.name, i)
            if cap.category is not None and cap.category in categories:
                found.append(
                    (("caps", i, "category"), f"{cap.category} already has a cap (caps[{categories[cap.category]}]); "
                                              "put every window in one cap")
                )  # fmt: skip
            if cap.category is not None:
                categories.setdefault(cap.category, i)
        for i, rule in enumerate(self.send_windows):
            for day, ranges in rule.days.items():
                for j, text in enumerate(ranges):
                    start, end = span(text)
                    if start >= end:
                        found.append((("send_windows", i, "days", day, j), f"{text!r} ends before it starts"))
        return found

    def cap_named(self, name: str) -> Cap | None:
        return next((cap for cap in self.caps if cap.name == name), None)

    def cap_of(self, category: str) -> Cap | None:
        return next((cap for cap in self.caps if cap.category == category), None)

    def for_send(self, override: PolicyOverride | None = None) -> SendPolicy:
        return SendPolicy(self, override or PolicyOverride())


def _describe(scope: tuple[str | None, str | None]) -> str:
    category, channel = scope
    parts = [f"category {category}" if category else "", f"channel {channel}" if channel else ""]
    return " and ".join(part for part in parts if part) or "every message"


class PolicyOverride(_Strict):
    """A journey's or a send step's changes to the shop's policy (`policy:`): other quiet hours,
    another cap to count against, none (`cap: exempt`, with the `reason`), another priority."""

    # Editors ask for the reason too (the validator below is what `journeys validate` runs).
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"cap": {"const": EXEMPT}}, "required": ["cap"]},
            "then": {"required": ["reason"]},
        }
    )

    quiet_hours: QuietHoursValue | None = Field(
        default=None, description="Quiet hours for these sends, over the shop's: HH:MM-HH:MM or `none`."
    )
    cap: CapName | None = Field(
        default=None,
        description="Count against this named cap of policy.yaml instead of the category's; `exempt`: pass a full "
        "cap (the message still counts), which needs a `reason`.",
    )
    reason: str | None = Field(
        default=None, min_length=1, description="Why these sends may pass a full cap (with `cap: exempt`)."
    )
    priority: Priority | None = Field(default=None, description="Over the category's default (policy.yaml).")

    @model_validator(mode="after")
    def _exemption_says_why(self) -> PolicyOverride:
        if self.cap == EXEMPT and not self.reason:
            raise ValueError(
                "`cap: exempt` needs a `reason`: why these messages may pass a full cap (a promised reward)"
            )
        return self

    def over(self, base: PolicyOverride | None) -> PolicyOverride:
        """This override on top of `base` (a step's over its journey's): what this one sets wins."""
        if base is None:
            return self
        return base.model_copy(update=self.model_dump(exclude_none=True))


@dataclass(frozen=True)
class SendPolicy:
    """The policy for one send: the shop's, with the journey's and the step's overrides."""

    shop: ContactPolicy
    override: PolicyOverride

    def quiet_hours(self, category: str, channel: str | None) -> str:
        """The quiet hours of a message of `category` on `channel` (HH:MM-HH:MM or `none`)."""
        if self.override.quiet_hours is not None:
            return self.override.quiet_hours
        rule = most_specific(self.shop.quiet_hours, category, channel)
        return rule.hours if rule else NO_QUIET_HOURS

    def send_window(self, category: str, channel: str | None) -> SendWindowRule | None:
        return most_specific(self.shop.send_windows, category, channel)

    @property
    def exempt(self) -> bool:
        return self.override.cap == EXEMPT

    def cap(self, category: str) -> Cap | None:
        """The cap the message counts against (and, unless exempt, is held to): the one the send
        names, else its category's; None: uncapped."""
        if self.override.cap not in (None, EXEMPT):
            return self.shop.cap_named(self.override.cap)
        return self.shop.cap_of(category)

    def priority(self, category: str) -> int:
        if self.override.priority is not None:
            return self.override.priority
        return self.shop.priorities.get(category, DEFAULT_PRIORITIES.get(category, 0))
