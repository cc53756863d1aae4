"""The `order` a journey sees: the whole order, built from its events by one function,
`order_context`, which the router (entry conditions), the workflow (conditions, vars, templates)
and `journeys preview` all call, so they cannot disagree.

The data of every event of the order, merged in event-time order (a later value wins, `null`
deletes a field), then the derived fields, which win over data of the same name:

- `order_id`;
- `status`: created, paid, shipped, delivered, confirmed, cancelled, closed or refunded (the
  latest order event that changes it; a review does not);
- `created_at`, `paid_at`, `shipped_at`, `delivered_at`, `closed_at`: when those events occurred
  (RFC 3339, UTC);
- `amount`: the paid amount (`order.paid`'s `data.amount`) once paid, else the created amount.

Temporal payloads are limited (2 MB each), so an instance starts with at most `MAX_ORDER_EVENTS`
earlier events of its order (the latest), each with at most `MAX_EVENT_DATA_BYTES` of data; an
event over that keeps only its small fields and says `_trimmed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from numbers import Number
from typing import Any

from core.records import Event

STATUS_OF_EVENT = {
    "order.created": "created",
    "order.paid": "paid",
    "order.shipped": "shipped",
    "order.delivered": "delivered",
    "order.confirmed": "confirmed",
    "order.cancelled": "cancelled",
    "order.closed": "closed",
    "order.refunded": "refunded",
}
TIME_OF_EVENT = {
    "order.created": "created_at",
    "order.paid": "paid_at",
    "order.shipped": "shipped_at",
    "order.delivered": "delivered_at",
    "order.closed": "closed_at",
}
DERIVED_FIELDS = ("order_id", "status", *TIME_OF_EVENT.values(), "amount")

MAX_ORDER_EVENTS = 50
MAX_EVENT_DATA_BYTES = 16_384
MAX_FIELD_BYTES = 1_024


def order_context(order_id: str | None, events: Iterable[Event]) -> dict[str, Any]:
    """The order `order_id` as its `events` (in any order; others are ignored) tell it; `{}`
    when no order applies."""
    if not order_id:
        return {}
    context: dict[str, Any] = {}
    status: str | None = None
    times: dict[str, str] = {}
    amounts: dict[str, Any] = {}
    for event in sorted((e for e in events if e.order_id == order_id), key=lambda e: e.occurred_at):
        for name, value in event.data.items():
            if value is None:
                context.pop(name, None)
            else:
                context[name] = value
        status = STATUS_OF_EVENT.get(event.type, status)
        if event.type in TIME_OF_EVENT:
            times[TIME_OF_EVENT[event.type]] = event.occurred_at.isoformat()
        amount = event.data.get("amount")
        if (
            event.type in ("order.created", "order.paid")
            and isinstance(amount, Number)
            and not isinstance(amount, bool)
        ):
            amounts[event.type] = amount
    context.update(times)
    context["order_id"] = order_id
    context["status"] = status
    if "order.paid" in amounts:
        context["amount"] = amounts["order.paid"]
    elif "order.created" in amounts:
        context["amount"] = amounts["order.created"]
    return context


def order_history(events: Iterable[Event], *, until: Event) -> list[Event]:
    """The events of `until`'s order that occurred up to it (not it), trimmed to fit a workflow's
    input: the latest `MAX_ORDER_EVENTS`, each with bounded data."""
    earlier = [
        e
        for e in events
        if e.order_id == until.order_id and e.event_id != until.event_id and e.occurred_at <= until.occurred_at
    ]
    earlier.sort(key=lambda e: e.occurred_at)
    return [_bounded(e) for e in earlier[-MAX_ORDER_EVENTS:]]


def _bounded(event: Event) -> Event:
    if len(json.dumps(event.data, ensure_ascii=False)) <= MAX_EVENT_DATA_BYTES:
        return event
    kept: dict[str, Any] = {"_trimmed": True}
    budget = MAX_EVENT_DATA_BYTES
    for name, value in event.data.items():
        size = len(json.dumps(value, ensure_ascii=False)) + len(name)
        if size <= MAX_FIELD_BYTES and size <= budget:
            kept[name] = value
            budget -= size
    return event.model_copy(update={"data": kept})
