"""The records that cross the project's boundaries: events from order systems and customer records.

Both are validated here once, so everything behind them (the router, the workflows, the store) can
trust their shape. Times are normalised to UTC.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

EventType = Literal[
    "order.created",
    "order.paid",
    "order.cancelled",
    "order.closed",
    "order.shipped",
    "order.delivered",
    "order.confirmed",
    "order.refunded",
    "review.posted",
    "customer.created",
    "customer.updated",
    "points.earned",
    "points.expiring",
    "member.tier_changed",
    "member.card_expiring",
    "lifecycle.changed",
    "sms.replied",
    "message.clicked",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
#: The engine's own events: the loyalty programme's (core/loyalty.py) and the messages' (an SMS
#: reply, a short link's click: core/message_events.py). Written into the log by the engine only,
#: exactly once each; the API refuses them from outside.
ENGINE_EVENT_TYPES: tuple[str, ...] = (
    "points.earned",
    "points.expiring",
    "member.tier_changed",
    "member.card_expiring",
    "lifecycle.changed",
    "sms.replied",
    "message.clicked",
)
#: The built-in order events (`order.*`).
ORDER_TYPES: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t.startswith("order."))
#: Event types that name an order: a journey keyed by order can be reached by these only.
ORDER_EVENT_TYPES: tuple[str, ...] = ORDER_TYPES + ("review.posted",)
CUSTOMER_EVENT_TYPES: tuple[str, ...] = ("customer.created", "customer.updated")
#: An event type's name: the built-in ones above, or a shop's own declared in
#: definitions/events.yaml (definitions.events): dotted lower-case words, e.g. `cart.abandoned`.
EventName = Annotated[str, Field(min_length=3, max_length=40, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")]

Locale = Literal["zh-CN", "en"]

DEFAULT_TIMEZONE = "Asia/Shanghai"


def known_timezone(name: str) -> bool:
    """Whether `name` is an IANA time zone this machine knows (tzdata ships with the project)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


#: A trait's name: what conditions and templates write after `customer.traits.`.
TRAIT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_TRAITS_BYTES = 16 * 1024
_BIRTHDAY = re.compile(r"^(?:(\d{4})-|--)(\d{2})-(\d{2})$")


#: The limits on an id (`event_id`, `customer_id`, `order_id`), so that everything downstream can
#: hold one: at most MAX_ID_CHARS characters (the store's columns) and MAX_ID_BYTES bytes of UTF-8.
#: Temporal refuses a search attribute over 2,048 bytes, and encodes one as JSON, where a character
#: takes at most 3 times its UTF-8 bytes (an emoji, 4 bytes, is escaped as 12: \uXXXX\uXXXX): an id
#: of 400 bytes is at most 1,202 as a search attribute, and a workflow id `journey:key` (a journey's
#: name is at most 60 characters) at most 461 bytes.
MAX_ID_CHARS = 200
MAX_ID_BYTES = 400
#: Times an event may carry: EARLIEST <= occurred_at < LATEST (UTC). The engine adds and subtracts
#: windows of days and years to them; far outside these it would overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def id_problem(value: str) -> str | None:
    """Why `value` is no id (empty, too long, a control character, not UTF-8), or None."""
    if not value:
        return "an id must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"an id is at most {MAX_ID_CHARS} characters; this one has {len(value)}"
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return "an id must not hold a control character"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "an id must not hold an unpaired surrogate"
    if size > MAX_ID_BYTES:
        return f"an id is at most {MAX_ID_BYTES} bytes of UTF-8; this one takes {size}"
    return None


def _checked_id(value: str) -> str:
    if problem := id_problem(value):
        raise ValueError(problem)
    return value


#: An id: 1 to 200 characters and at most 400 bytes of UTF-8, none of them a control character
#: (NUL and the like break stores, logs and visibility queries).
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
    AfterValidator(_checked_id),
]

#: How deep an event's `data` may nest: deeper is refused at intake, not stored to fail later.
MAX_DATA_DEPTH = 32


def check_storable(value: Any, path: str = "data", depth: int = 0) -> None:
    """Refuse JSON the store and the engine cannot keep as it is: nesting deeper than
    MAX_DATA_DEPTH, numbers that are not finite (NaN, Infinity, 1e400), and text with NUL or
    unpaired surrogates (PostgreSQL refuses both). The error names the place, e.g. `data.items[2]`."""
    if depth > MAX_DATA_DEPTH:
        raise ValueError(f"{path} nests deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key), f"{path} key {str(key)[:40]!r}")
            check_storable(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_storable(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} is {value}: JSON numbers must be finite")


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise ValueError(f"{path} holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{path} holds an unpaired surrogate ({err.reason})") from err


class Event(BaseModel):
    """One event from an order system. `event_id` is the idempotency key."""

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    type: EventName = Field(
        description="A built-in type (" + ", ".join(EVENT_TYPES) + ") or one declared in definitions/events.yaml."
    )
    occurred_at: AwareDatetime
    customer_id: Identifier
    order_id: Identifier | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            value = value.astimezone(UTC)
        except OverflowError as err:
            raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from err
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}-01-01 to {LATEST.year}-01-01 (UTC)")
        return value

    @field_validator("data")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_storable(value)
        return value

    @model_validator(mode="after")
    def _order_id_where_needed(self) -> Event:
        if self.type in ORDER_EVENT_TYPES and not self.order_id:
            raise ValueError(f"order_id is required for {self.type} events")
        return self


class Customer(BaseModel):
    """A customer record, as docs/journeys.md ("The customer") describes it."""

    model_config = ConfigDict(extra="ignore")

    customer_id: Identifier
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=320)
    birthday: str | None = None
    timezone: str = Field(default=DEFAULT_TIMEZONE, max_length=64)
    locale: Locale = "zh-CN"
    region: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="ISO 3166 country the customer's phone number is read in when it has no +country code "
        "(default: the locale's country, else JOURNEYS_DEFAULT_REGION).",
    )
    tags: list[str] = Field(default_factory=list)
    unsubscribed: list[Literal["sms", "email"]] = Field(default_factory=list)
    blacklisted: bool = False
    traits: dict[str, Any] = Field(
        default_factory=dict,
        description="The shop's own attributes (member level, points, preferred store...): JSON, at most "
        "16 KB, names of letters, digits and _. Read as customer.traits.NAME.",
    )

    @field_validator("traits")
    @classmethod
    def _checked_traits(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not TRAIT_KEY.match(key):
                raise ValueError(
                    f"trait name {key[:70]!r} must start with a letter or _ and hold only letters, digits "
                    "and _ (at most 64)"
                )
        check_storable(value, "traits")
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > MAX_TRAITS_BYTES:
            raise ValueError(f"traits take {size} bytes as JSON; at most {MAX_TRAITS_BYTES}")
        return value

    @field_validator("birthday")
    @classmethod
    def _birthday_format(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        match = _BIRTHDAY.match(value)
        if not match:
            raise ValueError(f"birthday {value!r} is not YYYY-MM-DD or --MM-DD")
        year = int(match.group(1) or 2000)  # 2000 is a leap year, so --02-29 is accepted
        try:
            datetime(year, int(match.group(2)), int(match.group(3)))
        except ValueError as err:
            raise ValueError(f"birthday {value!r} is not a real date") from err
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str:
        if not value:
            return DEFAULT_TIMEZONE
        if not known_timezone(value):
            raise ValueError(f"timezone {value!r} is not an IANA time zone")
        return value

    @field_validator("phone", "email")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value else None


#: The record's own fields, which a `customer.*` event's `data` sets by name; any other key of
#: `data` is a trait.
RECORD_FIELDS = frozenset(Customer.model_fields) - {"customer_id", "traits"}


def apply_customer_event(current: Customer | None, event: Event) -> Customer:
    """The customer record after a `customer.*` event. `customer.created` gives the whole record
    (what `data` leaves out takes its default); `customer.updated` changes only what `data`
    names, over `current`. A field set to null goes back to its default (no phone, no tags).
    Traits are the keys of `data` that are not record fields, and those of `data.traits`; they
    merge into the current traits, and a null value deletes one. Raises ValidationError naming
    the field at fault."""
    changes = {key: value for key, value in event.data.items() if key not in ("traits", "customer_id")}
    trait_changes = {key: changes.pop(key) for key in list(changes) if key not in RECORD_FIELDS}
    given = event.data.get("traits")
    if given is not None and not isinstance(given, dict):
        Customer.model_validate({"customer_id": event.customer_id, "traits": given})  # raises, naming traits
    trait_changes.update(given or {})
    replace = event.type == "customer.created" or current is None
    base = {} if replace else current.model_dump(exclude={"customer_id", "traits"})
    fields = {**base, **{key: value for key, value in changes.items() if value is not None}}
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)  # back to its default
    traits = {} if replace else dict(current.traits)
    for key, value in trait_changes.items():
        if value is None:
            traits.pop(key, None)
        else:
            traits[key] = value
    return Customer.model_validate({**fields, "customer_id": event.customer_id, "traits": traits})
