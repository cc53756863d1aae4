"""The event types Journeys knows: the built-in ones and those a shop declares in
`definitions/events.yaml` (`cart.abandoned`, `member.card_expiring`, `coupon.redeemed`...).

Each declaration names the type, its key (`customer`, or `order`: then events need an
`order_id` and reach order-keyed journeys) and optionally a JSON Schema (draft 2020-12) for its
`data`. The API takes a declared type after checking `data` against the schema; journeys may use
declared types wherever they name an event; `journeys validate` checks that every type a
journey names is known.

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

from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.records import EVENT_TYPES, ORDER_EVENT_TYPES, Event, EventName

EVENTS_FILE = "events.yaml"


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
                catalog._validators[declaration.name] = Draft202012Validator(declaration.data_schema)
        return catalog

    def including(self, declaration: EventDeclaration) -> EventCatalog:
        """This catalogue and one more type (a broadcast's own entry event), sharing the compiled
        checks."""
        return EventCatalog({**self.declared, declaration.name: declaration}, dict(self._validators))

    def known(self, event_type: str) -> bool:
        return event_type in EVENT_TYPES or event_type in self.declared

    def names(self) -> list[str]:
        return [*EVENT_TYPES, *sorted(self.declared)]

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
        validator = self._validators.get(event.type)
        if validator is not None:
            for error in sorted(validator.iter_errors(event.data), key=lambda e: list(e.absolute_path))[:20]:
                where = "data" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
                found.append((where, error.message[:300]))
        return found


BUILT_IN = EventCatalog()
