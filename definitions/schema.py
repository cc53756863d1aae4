"""The pydantic schema of a journey definition (one YAML file in definitions/).

A journey is an entry (event, key, condition, re-entry rule), exit events, a goal and a list of
steps. Each step is a mapping with exactly one key naming its kind:

    - wait: 15m
    - wait_until: {at: "time(order.closes_at)", offset: -2h}
    - wait_for: {event: review.posted, timeout: 3d, on_event: [...], on_timeout: [...]}
    - send: {id: remind, channel: sms, fallback: email, template: payment_reminder}
    - send: {id: coupon, channel: sms, template: care_coupon, resource: coupon_10off}
    - if: {condition: "customer.tags and 'vip' in customer.tags", then: [...], else: [...]}
    - split: {holdout: 0.1, branches: [{weight: 1, steps: [...]}, {weight: 1, steps: [...]}]}
    - exit: "reason"
    - repeat: true        # start the journey over as a fresh run (continue-as-new)

The schema is also published as JSON Schema (`journeys schema`) so editors check YAML as it is typed.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from core.contact_policy import PolicyOverride
from core.durations import Duration, parse_duration
from core.records import EventName, Locale
from core.vocabulary import CategoryName, ChannelName

Expression = Annotated[
    str,
    Field(
        min_length=1,
        description="A sandboxed Jinja2 expression over event, order, customer and now.",
    ),
]
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]
Category = CategoryName


#: How long after its planned moment a message of each category is still sent (a send's
#: `max_lateness` overrides it): a payment or delivery notice an hour late is noise, a marketing
#: message a day late may still be welcome.
MAX_LATENESS: dict[str, str] = {"transactional": "30m", "marketing": "1d"}

#: The group of a split's `holdout` share, in the ledger and the effect report.
HOLDOUT = "holdout"


def split_draw(journey: str, key: str) -> float:
    """Where a key falls in a journey's splits, in [0, 1): deterministic per journey and key, so a
    key is in the same group on re-entry, and a dry run or the effect report can tell who a
    holdout holds."""
    digest = hashlib.sha256(f"{journey}:{key}:split".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Entry(_Strict):
    event: EventName | list[EventName] = Field(description="The event type (or types) that start an instance.")
    key: Literal["order", "customer"] = Field(
        description="One instance per order or per customer: the workflow id is '{journey}:{key}'."
    )
    condition: Expression | None = Field(
        default=None, description="Start only when this is true (evaluated when the instance starts)."
    )
    reentry: Literal["once", "after_exit", "restart"] = Field(
        default="once",
        description=(
            "once: one instance per key ever; after_exit: a new instance after the last one ended; "
            "restart: also start over when triggered while running."
        ),
    )
    max_age: Duration | None = Field(
        default=None,
        description="An entry event older than this when it arrives starts nothing (recorded `stale` in the "
        "event log): a back-dated or replayed order does not send notices days late. None: any age.",
        exclude_if=lambda value: value is None,  # so journeys without one keep their content hash
    )

    @property
    def events(self) -> list[str]:
        return [self.event] if isinstance(self.event, str) else list(self.event)

    @cached_property
    def oldest(self) -> timedelta | None:
        """The greatest age an entry event may have when it arrives, if any (`max_age`)."""
        return parse_duration(self.max_age) if self.max_age else None


class SendSpec(_Strict):
    id: Identifier | None = Field(
        default=None,
        description="Stable step id (the exactly-once key); defaults to the template name.",
    )
    channel: ChannelName = "sms"
    fallback: ChannelName | None = None
    template: Identifier
    category: Category | None = Field(default=None, description="Defaults to the journey's category.")
    deadline: Expression | None = Field(
        default=None,
        description="A time after which the message is pointless; a quiet-hours deferral past it skips.",
    )
    resource: Identifier | None = Field(
        default=None,
        description="What the message hands out (a coupon type), declared in resources.yaml with its limits.",
        exclude_if=lambda value: value is None,  # so journeys without one keep their content hash
    )
    max_lateness: Duration | None = Field(
        default=None,
        description="How long after its planned moment (the end of the waits before it) the message is still worth "
        "sending; later, it is skipped with reason `stale`. Defaults by category: transactional 30m, marketing 1d.",
        exclude_if=lambda value: value is None,
    )
    policy: PolicyOverride | None = Field(
        default=None,
        description="This message's changes to the contact policy (policy.yaml), over the journey's `policy`: "
        "quiet_hours, cap (another named cap, or `exempt` with a `reason`), priority.",
        exclude_if=lambda value: value is None,  # so journeys without one keep their content hash
    )

    def lateness(self, category: str) -> timedelta:
        """How late this message may go: its own `max_lateness`, else its category's default."""
        return parse_duration(self.max_lateness or MAX_LATENESS[category])

    @property
    def step_id(self) -> str:
        return self.id or self.template

    def policy_over(self, journey: PolicyOverride | None) -> PolicyOverride | None:
        """The contact-policy override of this send: its own over its journey's."""
        return self.policy.over(journey) if self.policy else journey


class WaitUntilSpec(_Strict):
    at: Expression = Field(
        description=(
            "A time computed from the data: a datetime, an RFC 3339 string, or a naive time read in "
            "the customer's time zone."
        )
    )
    offset: Duration | None = None


class WaitForSpec(_Strict):
    event: EventName
    timeout: Duration
    on_event: list[Step] = Field(default_factory=list)
    on_timeout: list[Step] = Field(default_factory=list)


class IfSpec(_Strict):
    condition: Expression
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class Branch(_Strict):
    name: Identifier | None = None
    weight: float = Field(default=1, gt=0)
    steps: list[Step] = Field(default_factory=list)


class SplitSpec(_Strict):
    holdout: float = Field(default=0, ge=0, lt=1, description="Share of keys that get nothing.")
    branches: list[Branch] = Field(default_factory=list)

    def choose(self, draw: float) -> int | None:
        """The branch a key's draw (split_draw) falls in; None for the holdout."""
        if draw < self.holdout:
            return None
        if not self.branches:
            return -1  # no branch to run: the steps after the split
        point = (draw - self.holdout) / (1 - self.holdout) * sum(b.weight for b in self.branches)
        for b, branch in enumerate(self.branches):
            point -= branch.weight
            if point < 0:
                return b
        return len(self.branches) - 1

    def group(self, draw: float) -> str:
        """The name of the group a draw falls in: `holdout`, the branch's name, or `branch_N`."""
        chosen = self.choose(draw)
        if chosen is None:
            return HOLDOUT
        if chosen < 0:
            return "treated"
        return self.branches[chosen].name or f"branch_{chosen + 1}"


class WaitStep(_Strict):
    wait: Duration


class WaitUntilStep(_Strict):
    wait_until: WaitUntilSpec


class WaitForStep(_Strict):
    wait_for: WaitForSpec


class SendStep(_Strict):
    send: SendSpec


class IfStep(_Strict):
    if_: IfSpec = Field(alias="if")


class SplitStep(_Strict):
    split: SplitSpec


class ExitStep(_Strict):
    exit: str | None = Field(default=None, description="Why the journey ends here (for readers).")


class RepeatStep(_Strict):
    repeat: Literal[True] = Field(description="Start the journey over as a fresh run.")


# The step kinds, listed once: the union below. To add a kind:
#   1. its model above and a tagged line here (the tag is its YAML key);
#   2. a `case` in workflows/journey.py `_run_steps` (its `match` ends in assert_never);
#   3. `walk_steps` below if it holds steps of its own;
#   4. regenerate definitions/journey.schema.json (`journeys schema`; a test compares them);
#   5. the steps table in docs/journeys.md (docs/architecture.md lists every place to touch).
_TaggedStep = (
    Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitUntilStep, Tag("wait_until")]
    | Annotated[WaitForStep, Tag("wait_for")]
    | Annotated[SendStep, Tag("send")]
    | Annotated[IfStep, Tag("if")]
    | Annotated[SplitStep, Tag("split")]
    | Annotated[ExitStep, Tag("exit")]
    | Annotated[RepeatStep, Tag("repeat")]
)
_KIND_OF_MODEL: dict[type, str] = {get_args(member)[0]: get_args(member)[1].tag for member in get_args(_TaggedStep)}
STEP_KINDS = tuple(_KIND_OF_MODEL.values())


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = [k for k in value if k in STEP_KINDS]
        return keys[0] if len(keys) == 1 and len(value) == 1 else None
    if isinstance(value, BaseModel):
        return _KIND_OF_MODEL.get(type(value))
    return None


Step = Annotated[
    _TaggedStep,
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step is a mapping with exactly one of: " + ", ".join(STEP_KINDS),
    ),
]


class Goal(_Strict):
    """The conversion event: an instance converts when its first such event for the instance's key
    (its order, or its customer) occurs strictly after the instance's first sent message and at
    most `within` after it (views/effect.py)."""

    event: EventName
    within: Duration = Field(default="3d", description="How long after the first sent message a goal event counts.")

    @property
    def window(self) -> timedelta:
        return parse_duration(self.within)


class Journey(_Strict):
    """One journey definition."""

    name: Identifier = Field(description="Part of the contract: records, metrics and workflow ids use it.")
    title: str | None = Field(default=None, description="A human name, e.g. 首次催付.")
    description: str | None = None
    category: Category
    entry: Entry
    exit_on: list[EventName] = Field(default_factory=list, description="Events that end an instance.")
    goal: EventName | Goal | None = Field(
        default=None,
        description="The conversion event: `order.paid` (within conversion_window, 3d by default) or "
        "{event: order.paid, within: 3d}.",
    )
    vars: dict[Identifier, Expression] = Field(
        default_factory=dict,
        description="Named expressions evaluated once when an instance starts, in order; usable as vars.NAME.",
    )
    conversion_window: Duration = Field(
        default="3d", description="With a plain `goal: EVENT`: how long after the first sent message it counts."
    )
    policy: PolicyOverride | None = Field(
        default=None,
        description="Changes to the contact policy (policy.yaml) for every send of the journey (a send's own "
        "`policy` wins): quiet_hours, cap (another named cap, or `exempt` with a `reason`), priority.",
        exclude_if=lambda value: value is None,  # so journeys without one keep their content hash
    )
    steps: list[Step]

    @model_validator(mode="after")
    def _durations_parse(self) -> Journey:
        parse_duration(self.conversion_window)
        if isinstance(self.goal, Goal):
            parse_duration(self.goal.within)
        return self

    @property
    def conversion(self) -> Goal | None:
        """The goal with its window, whichever way it was written."""
        if self.goal is None or isinstance(self.goal, Goal):
            return self.goal
        return Goal(event=self.goal, within=self.conversion_window)

    @cached_property
    def first_split(self) -> SplitSpec | None:
        """The journey's first split in document order: the one its effect is grouped by."""
        return next((step.split for _, step in walk_steps(self.steps) if isinstance(step, SplitStep)), None)

    def variant_of(self, key: str) -> str | None:
        """The group a key falls in at the journey's first split (every split of a journey draws
        the same number for a key), or None without a split."""
        split = self.first_split
        return split.group(split_draw(self.name, key)) if split else None

    @cached_property
    def sends_at_once(self) -> bool:
        """Whether an instance may send as soon as it starts: a send before any wait, at the top or
        first in a branch of a leading `if` or `split` (a shipping notice, not a reminder that waits)."""

        def at_once(steps: list[Any]) -> bool:
            if not steps:
                return False
            first = steps[0]
            if isinstance(first, SendStep):
                return True
            if isinstance(first, IfStep):
                return at_once(first.if_.then) or at_once(first.if_.else_) or at_once(steps[1:])
            if isinstance(first, SplitStep):
                return any(at_once(branch.steps) for branch in first.split.branches) or at_once(steps[1:])
            return False

        return at_once(self.steps)

    @cached_property
    def listened_events(self) -> frozenset[str]:
        """The non-entry event types a running instance reacts to: exits and awaited events."""
        waits = {step.wait_for.event for _, step in walk_steps(self.steps) if isinstance(step, WaitForStep)}
        return frozenset(self.exit_on) | waits


class EmailTemplate(_Strict):
    subject: str
    body: str = Field(description="The email body; HTML is escaped in substituted values.")
    sendgrid_template_id: str | None = Field(
        default=None,
        pattern=r"^d-[0-9a-f]{32}$",
        description="A SendGrid dynamic template (d-...) to send instead of `body` when SendGrid is live. It "
        "gets `customer`, `order`, `event`, `vars`, `shop`, and the rendered `subject` and `body` as its "
        "dynamic_template_data; subject and body still render for the ledger, the preview and the outbox.",
    )


class AliyunSmsTemplate(_Strict):
    """How a template goes out through Aliyun SMS: a registered template code (definitions/sms.yaml)
    under a registered signature, with its `${name}` parameters filled from the message's context."""

    template_code: str = Field(pattern=r"^SMS_[0-9A-Za-z_]{1,40}$", description="The registered code (SMS_123456789).")
    sign_name: str = Field(min_length=1, max_length=40, description="A registered signature (签名), without 【】.")
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Each parameter the registered text declares, as a template expression "
        "(`name: \"{{ customer.name or '顾客' }}\"`).",
    )


class Template(_Strict):
    """One message template: an SMS text and an email per locale, and, for Aliyun SMS, the
    registered template it goes out as (Aliyun sends no free text)."""

    sms: dict[Locale, str] = Field(default_factory=dict)
    email: dict[Locale, EmailTemplate] = Field(default_factory=dict)
    webhook: dict[Locale, str] = Field(default_factory=dict)
    # Left out of the dump when absent: templates without it keep their journeys' versions.
    aliyun_sms: AliyunSmsTemplate | None = Field(default=None, exclude_if=lambda value: value is None)


class Resource(_Strict):
    """Something a send step hands out (a coupon type, a voucher, a gift) and the harassment limits
    on it (防骚扰), declared in `definitions/resources.yaml`:

        resources:
          - name: coupon_10off
            title: 满100减10券
            once_per: 30d            # at most one issued to a customer in any 30 days
            max_unredeemed: 2        # at most 2 issued and not yet redeemed (nor expired)
            redeemed_by: coupon.redeemed   # a declared event whose data.resource is "coupon_10off"
            expires_after: 30d       # an issued one stops counting as unredeemed after 30 days

    A send step names one with `resource: coupon_10off`. The limits are rules of the contact policy
    (rules/policy.py `decide`): a send that would break one is skipped with the reason
    `resource_limit`, recorded in the ledger like any other skip. One counts as issued when its
    message was sent (or may have been: the frequency cap's statuses); a redemption event redeems
    the oldest unexpired one issued before it. A journey's snapshot carries the declarations of
    the resources it hands out, so its instances apply the limits they started with."""

    name: Identifier
    title: str | None = None
    once_per: Duration | None = Field(
        default=None, description="At most one issued to a customer within this long (e.g. 30d)."
    )
    max_unredeemed: int | None = Field(
        default=None, ge=1, description="At most this many issued to a customer and not yet redeemed (nor expired)."
    )
    redeemed_by: EventName | None = Field(
        default=None,
        description="The event type that redeems one: its `data.resource` names this resource. Without it "
        "nothing is ever redeemed, so max_unredeemed caps the ones issued (within expires_after, if given).",
    )
    expires_after: Duration | None = Field(
        default=None, description="An issued one no longer counts as unredeemed this long after it was issued."
    )

    @property
    def window(self) -> timedelta | None:
        return parse_duration(self.once_per) if self.once_per else None

    @property
    def lifetime(self) -> timedelta | None:
        return parse_duration(self.expires_after) if self.expires_after else None


class JourneySnapshot(BaseModel):
    """What a journey instance runs: the definition, its templates and the resources it hands
    out, frozen at start."""

    definition: Journey
    templates: dict[str, Template]
    resources: dict[str, Resource] = Field(default_factory=dict)
    version: str = Field(description="Content hash of the definition and its templates.")

    @cached_property
    def reads_rfm(self) -> bool:
        """Whether any expression or template may read `customer.rfm` or `customer.lifecycle`:
        only then does the router read the customer's purchases for a new instance (a name that
        merely contains the word costs a query, never a wrong answer)."""
        return re.search(r"\b(rfm|lifecycle)\b", self.model_dump_json()) is not None


for _model in (WaitForSpec, IfSpec, Branch, SplitSpec, Journey):
    _model.model_rebuild()


def walk_steps(steps: list[Any], path: str = "steps"):
    """Yield `(path, step)` for every step, nested branches included, in document order."""
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        yield here, step
        if isinstance(step, WaitForStep):
            yield from walk_steps(step.wait_for.on_event, f"{here}.wait_for.on_event")
            yield from walk_steps(step.wait_for.on_timeout, f"{here}.wait_for.on_timeout")
        elif isinstance(step, IfStep):
            yield from walk_steps(step.if_.then, f"{here}.if.then")
            yield from walk_steps(step.if_.else_, f"{here}.if.else")
        elif isinstance(step, SplitStep):
            for b, branch in enumerate(step.split.branches):
                yield from walk_steps(branch.steps, f"{here}.split.branches[{b}].steps")
