"""The `order` a journey sees: the whole order, built from its events by one function,
`order_context`, which the router (entry conditions), the workflow (conditions, vars, templates)
and `journeys preview` all call, so they cannot disagree.

The data of every event of the order, merged in event-time order (a later value wins, `null`
deletes a field), then the derived fields, which win over data of the same name:

- `order_id`;
- `status`: how far the order has gone, which only moves forward, whatever order its events
  arrive in and whatever their timestamps say: created -> paid -> shipped -> delivered ->
  confirmed. `cancelled` and `closed` apply only before payment (an order with any `order.paid`
  is never cancelled or closed by them; of the two, the first counts); `refunded` follows any
  stage after payment. So the status is the furthest stage any of its events reached, in the
  order created < cancelled, closed < paid < shipped < delivered < confirmed < refunded: an
  `order.paid` timed 16 minutes before its `order.created` (a payment system's clock behind)
  still makes the order `paid`. A review does not change it;
- `created_at`, `shipped_at`, `delivered_at`, `closed_at`: when the latest such event occurred,
  and `paid_at`: when the first `order.paid` did (the payment RFM and the effect report count),
  RFC 3339, UTC;
- `amount`: the order's amount by core/amounts.py's rule: the first payment's `data.amount` when
  it is an amount, else the latest creation's; a JSON integer stays an integer, a string amount
  becomes its number (`"129.00"` -> 129.0); absent when neither is an amount (`-500`,
  `"一百二十九元"` and the like never show as `order.amount`).

Given the catalogue's facts of its SKUs (core/products.py `ProductFacts`, looked up by the caller:
the router for the entry condition and the instance's input, preview), each item with a known SKU
carries `product` and `replenish`, and `categories` lists the products' categories
(core.products.enrich). Without them (None: an instance started before the catalogue) the context
is as it was, so running instances replay unchanged.

Temporal payloads are limited (2 MB each), so an instance starts with at most `MAX_ORDER_EVENTS`
earlier events of its order (the latest), each with at most `MAX_EVENT_DATA_BYTES` of data; an
event over that keeps only its small fields and says `_trimmed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from core.amounts import amount_number
from core.products import ProductFacts, enrich, skus_of
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
#: How far each status is along the order's life: the status is the furthest any event reached.
#: `cancelled` and `closed` rank below `paid`, so a payment, whenever it is timed, wins over them.
STAGE = {
    "created": 0,
    "cancelled": 1,
    "closed": 1,
    "paid": 2,
    "shipped": 3,
    "delivered": 4,
    "confirmed": 5,
    "refunded": 6,
}
#: Event times kept from the first event of the type rather than the latest.
FIRST_TIME_OF = frozenset({"order.paid"})

MAX_ORDER_EVENTS = 50
MAX_EVENT_DATA_BYTES = 16_384
MAX_FIELD_BYTES = 1_024


def order_context(
    order_id: str | None, events: Iterable[Event], products: Mapping[str, ProductFacts] | None = None
) -> dict[str, Any]:
    """The order `order_id` as its `events` (in any order; others are ignored) tell it, its items
    joined with `products` when given; `{}` when no order applies."""
    if not order_id:
        return {}
    context: dict[str, Any] = {}
    status: str | None = None
    times: dict[str, str] = {}
    created_amount: Any = None
    paid: Event | None = None
    for event in sorted((e for e in events if e.order_id == order_id), key=lambda e: e.occurred_at):
        for name, value in event.data.items():
            if value is None:
                context.pop(name, None)
            else:
                context[name] = value
        reached = STATUS_OF_EVENT.get(event.type)
        if reached is not None and (status is None or STAGE[reached] > STAGE[status]):
            status = reached  # forward only; of equal stages (cancelled, closed) the first stays
        field = TIME_OF_EVENT.get(event.type)
        if field is not None and not (event.type in FIRST_TIME_OF and field in times):
            times[field] = event.occurred_at.isoformat()
        if event.type == "order.created":
            created_amount = event.data.get("amount")
        elif event.type == "order.paid" and paid is None:
            paid = event
    context.update(times)
    context["order_id"] = order_id
    context["status"] = status
    amount = amount_number(paid.data.get("amount")) if paid is not None else None
    if amount is None:
        amount = amount_number(created_amount)
    if amount is None:
        context.pop("amount", None)
    else:
        context["amount"] = amount
    if products is not None:
        enrich(context, products)
    return context


def order_skus(events: Iterable[Event]) -> list[str]:
    """Every SKU the items of these events name, each once: what to look up in the catalogue."""
    found: dict[str, None] = {}
    for event in events:
        found.update(dict.fromkeys(skus_of(event.data.get("items"))))
    return list(found)


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
