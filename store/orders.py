"""The `orders` read model: each order's creation, first payment, first refund and amount, kept
as the event log is written, so the effect report's revenue and result indicators read one row
per order instead of searching the log.

- `order.created`: the latest (by `occurred_at`) gives `created_at` and `created_amount`;
- `order.paid`: the first gives `paid_at` and `paid_amount`;
- `order.refunded`: the first gives `refunded_at`;
- an order's amount is `paid_amount`, else `created_amount`, else 0 (`amount()`); each is the
  event's `data.amount` read by core/amounts.py's rule (`amount_of`) when the event is written,
  so readers of this table never parse JSON. Segments read the same rule from the event log in
  SQL (core/amounts.py `amount_sql`, its SQL form); a migration that fills this table from the
  log uses that form.

`store_events` (store/queries.py) hands every newly logged order event to `note_order_events`;
events may arrive in any order and any number of times.
"""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from core.amounts import amount_of, order_amount_sql
from core.records import Event
from store.portable import upsert_insert
from store.tables import OrderRow


def amount(row=OrderRow) -> ColumnElement:
    """An order's amount: its first payment's, else its latest creation's (0 without either):
    core/amounts.py `order_amount`, in SQL."""
    return order_amount_sql(row.paid_amount, row.created_amount)


#: Per event type: the columns it sets, and whether an event's time replaces the one recorded
#: (the latest creation, the first payment, the first refund).
_RULES = {
    "order.created": (("created_at", "created_amount"), True),
    "order.paid": (("paid_at", "paid_amount"), False),
    "order.refunded": (("refunded_at",), False),
}


def note_order_events(session: Session, events: list[Event]) -> tuple[set[str], set[str]]:
    """Fold newly logged order events into their orders' rows, one statement per event type;
    returns the orders whose row changed, and the customers whose orders' first payment is new or
    earlier."""
    changed_orders: set[str] = set()
    paid: set[str] = set()
    table = OrderRow.__table__
    for kind, (columns, latest) in _RULES.items():
        winners: dict[str, Event] = {}  # one row per order in a statement
        for e in events:
            if e.type != kind or not e.order_id:
                continue
            held = winners.get(e.order_id)
            if held is None or (e.occurred_at >= held.occurred_at if latest else e.occurred_at < held.occurred_at):
                winners[e.order_id] = e
        if not winners:
            continue
        rows = [
            {"order_id": e.order_id, "customer_id": e.customer_id, columns[0]: e.occurred_at}
            | ({columns[1]: amount_of(e.data.get("amount"))} if len(columns) > 1 else {})
            for e in winners.values()
        ]
        statement = upsert_insert(session, table)  # one cached statement for many rows
        new, old = statement.excluded[columns[0]], table.c[columns[0]]
        changed = session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.order_id],
                set_={column: statement.excluded[column] for column in columns},
                where=or_(old.is_(None), new >= old if latest else new < old),
            ).returning(table.c.order_id, table.c.customer_id),
            rows,
        )
        for order_id, customer_id in changed:
            changed_orders.add(order_id)
            if kind == "order.paid":
                paid.add(customer_id)
    return changed_orders, paid
