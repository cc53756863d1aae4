"""The event types Journeys knows: the built-in ones and those a shop declares in
`definitions/events.yaml` (`cart.abandoned`, `member.card_expiring`, `coupon.redeemed`...).

Each declaration names the type, its key (`customer`, or `order`: then events need an
`order_id` and reach order-keyed journeys) and optionally a JSON Schema (draft 2020-12) for its
`data`. The API takes a declared type after checking `data` against the schema, formats included:
`date` (2026-03-31), `date-time` (RFC 3339, with an offset), `email`, `uri` (absolute, with a
scheme) and `uuid` (8-4-4-4-12 hex) are asserted, so `expires_on: "明天"` is refused naming
`data.expires_on`; other formats stay annotations. Journeys may use declared types wherever they
name an event; `journeys validate` checks that every type a journey names is known.

Built-in order events (`order.*`) that carry a `data.amount` must carry an amount by
core/amounts.py's rule (a number from 0 to 10^12, or a string of digits such as "129.00"; a
refund's more than 0), else the problem names `data.amount`.

    events:
      - name: cart.abandoned
        key: customer
        title: 购物车放弃
        schema:
          type: object
          required: [cart_value]
          properties:
            cart_value: {type: number, minimum: 0}
            items: {type: array}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.amounts import AMOUNT_CHECKED_TYPES, amount_problem
from core.loyalty import ENGINE_EVENT_SCHEMAS
from core.message_events import MESSAGE_EVENT_SCHEMAS
from core.records import EVENT_TYPES, ORDER_EVENT_TYPES, Event, EventName

EVENTS_FILE = "events.yaml"

# ---------------------------------------------------------------------------------------------
# Formats a declared schema asserts. jsonschema's own checkers for date-time and uri need extra
# packages (rfc3339-validator, rfc3987), and its email check is only "has an @": these are ours,
# on the standard library and email-validator. Each takes a string; other types pass (JSON
# Schema: a format applies to strings only).

FORMATS = ("date", "date-time", "email", "uri", "uuid")
FORMAT_CHECKER = FormatChecker(formats=())

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<hms>[0-9]{2}:[0-9]{2}):(?P<s>[0-9]{2})(?P<frac>\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: What RFC 3986 lets a URI hold: unreserved and reserved characters, and %HH escapes.
_URI_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


@FORMAT_CHECKER.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    """RFC 3339 full-date: YYYY-MM-DD, a real day (2026-02-30 is not)."""
    if not isinstance(value, str):
        return True
    return bool(_DATE.fullmatch(value)) and bool(date.fromisoformat(value))


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time: a date, `T`, a time with optional fractions, and `Z` or an offset
    (a leap second, :60, is taken)."""
    if not isinstance(value, str):
        return True
    found = _DATE_TIME.fullmatch(value)
    if found is None:
        return False
    seconds = found["s"] if found["s"] != "60" else "59"
    offset = "+00:00" if found["offset"] in "Zz" else found["offset"]
    datetime.fromisoformat(f"{found['date']}T{found['hms']}:{seconds}{offset}")
    return True


@FORMAT_CHECKER.checks("email", raises=EmailNotValidError)
def _is_email(value: object) -> bool:
    """An address as RFC 5321 writes it (ASCII; `idn-email` is for others), not looked up."""
    if not isinstance(value, str):
        return True
    validate_email(value, check_deliverability=False, allow_smtputf8=False)
    return True


@FORMAT_CHECKER.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    """An absolute URI (RFC 3986): a scheme, then a host (`https://shop.example/a`) or a path
    (`mailto:a@b.example`, `urn:isbn:...`); only URI characters (spaces and Chinese are an IRI's)."""
    if not isinstance(value, str):
        return True
    if not _URI_TEXT.fullmatch(value):
        return False
    parts = urlsplit(value)
    if not _SCHEME.fullmatch(parts.scheme) or not value.startswith(parts.scheme + ":"):
        return False
    if value[len(parts.scheme) + 1 :].startswith("//") or parts.scheme.lower() in ("http", "https"):
        return bool(parts.hostname)
    return bool(parts.path)


@FORMAT_CHECKER.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    """A UUID in its 8-4-4-4-12 hex form."""
    if not isinstance(value, str):
        return True
    return bool(_UUID.fullmatch(value))


class EventDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: EventName
    key: Literal["customer", "order"] = Field(description="What the event is about: its customer, or an order.")
    title: str | None = None
    data_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="A JSON Schema (draft 2020-12) its `data` must satisfy."
    )

    @field_validator("name")
    @classmethod
    def _not_built_in(cls, value: str) -> str:
        if value in EVENT_TYPES:
            raise ValueError(f"{value!r} is a built-in event type; declare only the shop's own")
        return value

    @field_validator("data_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as err:
                where = ".".join(str(p) for p in err.path)
                raise ValueError(f"not a valid JSON Schema{f' at {where}' if where else ''}: {err.message}") from None
        return value


@dataclass
class EventCatalog:
    """The known event types: built-ins and declarations, with their checks compiled once."""

    declared: dict[str, EventDeclaration] = field(default_factory=dict)
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, declarations: list[EventDeclaration]) -> EventCatalog:
        catalog = cls({d.name: d for d in declarations})
        for declaration in declarations:
            if declaration.data_schema is not None:
                catalog._validators[declaration.name] = Draft202012Validator(
                    declaration.data_schema, format_checker=FORMAT_CHECKER
                )
        return catalog

    def including(self, declaration: EventDeclaration) -> EventCatalog:
        """This catalogue and one more type (a broadcast's own entry event), sharing the compiled
        checks."""
        return EventCatalog({**self.declared, declaration.name: declaration}, dict(self._validators))

    def known(self, event_type: str) -> bool:
        return event_type in EVENT_TYPES or event_type in self.declared

    def names(self) -> list[str]:
        return [*EVENT_TYPES, *self.own()]

    def own(self) -> list[str]:
        """The shop's own types (events.yaml), without the engine's declared beside them."""
        return sorted(name for name in self.declared if name not in EVENT_TYPES)

    def keyed_by_order(self, event_type: str) -> bool:
        """Whether events of the type name an order (and so can reach order-keyed journeys)."""
        if event_type in self.declared:
            return self.declared[event_type].key == "order"
        return event_type in ORDER_EVENT_TYPES

    def problems(self, event: Event) -> list[tuple[str, str]]:
        """What is wrong with a validated event given the known types: (field, message) pairs;
        none for a good one."""
        if not self.known(event.type):
            return [("type", f"{event.type!r} is not a known event type; known: {', '.join(self.names())}")]
        found: list[tuple[str, str]] = []
        if self.keyed_by_order(event.type) and not event.order_id:
            found.append(("order_id", f"order_id is required for {event.type} events"))
        if event.type in AMOUNT_CHECKED_TYPES and "amount" in event.data:
            problem = amount_problem(event.data["amount"], refund=event.type == "order.refunded")
            if problem is not None:
                found.append(("data.amount", problem))
        validator = self._validators.get(event.type)
        if validator is not None:
            for error in sorted(validator.iter_errors(event.data), key=lambda e: list(e.absolute_path))[:20]:
                where = "data" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
                found.append((where, error.message[:300]))
        return found


#: The engine's own events (core/loyalty.py), declared with the schemas of their data.
ENGINE_DECLARATIONS: list[EventDeclaration] = [
    EventDeclaration.model_construct(name=name, key="customer", title=title, data_schema=schema)
    for name, (title, schema) in {**ENGINE_EVENT_SCHEMAS, **MESSAGE_EVENT_SCHEMAS}.items()
]
BUILT_IN = EventCatalog.of(ENGINE_DECLARATIONS)
