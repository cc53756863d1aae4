"""An order's status only moves forward (core/orders.py): created -> paid -> shipped -> delivered ->
confirmed; `cancelled` and `closed` only before payment; `refunded` after it. A late or skewed
timestamp never moves an order back, and whatever order the events come in, the status is the
same."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from core.orders import order_context
from tests.helpers import at, event

BEGIN = at("2026-03-02 10:00+08:00")


def at_minutes(type: str, minutes: float, event_id: str | None = None, **data):
    return event(type, BEGIN + timedelta(minutes=minutes), order="o1", event_id=event_id or type, **data)


def test_a_payment_timed_before_its_creation_is_paid():
    """The held-out month's flash-sale order: the payment system's clock runs 16 minutes behind."""
    created = at_minutes("order.created", 0, amount=99, closes_at="2026-03-02T10:30:00+08:00")
    paid = at_minutes("order.paid", -16)
    for events in ([created, paid], [paid, created]):
        context = order_context("o1", events)
        assert context["status"] == "paid"
        assert context["paid_at"] == "2026-03-02T01:44:00+00:00"  # that payment's own time
        assert context["created_at"] == "2026-03-02T02:00:00+00:00"
        assert context["amount"] == 99


@pytest.mark.parametrize(
    ("types", "status"),
    [
        (["order.created"], "created"),
        (["order.created", "order.paid"], "paid"),
        (["order.created", "order.paid", "order.shipped"], "shipped"),
        (["order.created", "order.paid", "order.shipped", "order.delivered"], "delivered"),
        (["order.created", "order.paid", "order.shipped", "order.delivered", "order.confirmed"], "confirmed"),
        (["order.created", "order.cancelled"], "cancelled"),
        (["order.created", "order.closed"], "closed"),
        (["order.created", "order.closed", "order.cancelled"], "closed"),  # the first of the two counts
        (["order.created", "order.cancelled", "order.closed"], "cancelled"),
        (["order.created", "order.paid", "order.closed"], "paid"),  # closing applies only before payment
        (["order.created", "order.closed", "order.paid"], "paid"),  # a payment logged after closing still wins
        (["order.created", "order.paid", "order.cancelled"], "paid"),
        (["order.created", "order.paid", "order.refunded"], "refunded"),
        (["order.created", "order.paid", "order.shipped", "order.delivered", "order.refunded"], "refunded"),
        (["order.created", "order.paid", "order.refunded", "order.shipped"], "refunded"),  # nothing after a refund
        (["order.created", "order.paid", "order.delivered", "order.shipped"], "delivered"),  # a late shipment
        (["order.created", "order.paid", "order.shipped", "review.posted"], "shipped"),  # a review leaves it
        (["review.posted"], None),
    ],
)
def test_the_status_is_the_furthest_stage_reached_whatever_the_timestamps(types, status):
    events = [at_minutes(t, n, event_id=f"e{n}") for n, t in enumerate(types)]
    # In time order, in every arrival order, and with the timestamps reversed: the same status.
    for arrival in itertools.permutations(events):
        assert order_context("o1", list(arrival))["status"] == status
    if not {"order.cancelled", "order.closed"} <= set(types):  # of those two, time decides which is first
        reversed_times = [
            e.model_copy(update={"occurred_at": BEGIN - timedelta(minutes=n)}) for n, e in enumerate(events)
        ]
        assert order_context("o1", reversed_times)["status"] == status


def test_paid_at_is_the_first_payment_and_the_amount_its_amount():
    created = at_minutes("order.created", 0, amount=120)
    first = at_minutes("order.paid", 5, event_id="p1", amount=100)
    again = at_minutes("order.paid", 60, event_id="p2", amount=5)  # a payment system's duplicate
    context = order_context("o1", [again, created, first])
    assert (context["status"], context["paid_at"], context["amount"]) == ("paid", "2026-03-02T02:05:00+00:00", 100)
