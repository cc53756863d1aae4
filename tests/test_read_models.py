"""The effect report's read models, on SQLite and PostgreSQL: `reached` keeps each run's first
sent message and its conversion as sends and goal events are written, in whatever order they
arrive, and a changed goal recomputes its journey; `orders` keeps each order's latest creation,
first payment and first refund, whatever order its events come in."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from store import queries
from store.reached import GoalRule, settle_all, sync_goals
from store.tables import MessageRow, OrderRow, ReachedRow
from tests.helpers import event
from tests.test_effect import FEB, PRICES, T, message, order_events
from views.effect import effect_report

H, D = timedelta(hours=1), timedelta(days=1)


def write(store, *rows):
    with store.transaction() as session:
        session.add_all(rows)


def log(store, *events):
    with store.transaction() as session:
        queries.store_events(session, list(events), T + 10 * D)


def run_of(store, workflow_id, settled: bool = True):
    """The run's row as a report reads it: after `settle` (the API does it every few seconds)."""
    if settled:
        settle_all(store)
    with store.transaction() as session:
        row = session.scalars(select(ReachedRow).where(ReachedRow.workflow_id == workflow_id)).one_or_none()
        return None if row is None else (row.at, row.step, row.converted_at, row.converted_order)


def advance(store, workflow_id, step, status):
    with store.transaction() as session:
        row = session.scalars(select(MessageRow).filter_by(workflow_id=workflow_id, step=step)).one()
        assert queries.advance_status(row, status, T + 5 * D)


def test_a_goal_after_the_send_converts_as_it_is_logged(store, definitions):
    effect_report(store, definitions, FEB, PRICES)  # records the definitions' goals
    write(store, message("payment_reminder", "o1", T, customer="c1", order="o1"))
    assert run_of(store, "payment_reminder:o1") == (T, "remind", None, None)
    log(store, *order_events("o1", "c1", created=T - H, paid=T + H, amount=120))
    assert run_of(store, "payment_reminder:o1") == (T, "remind", T + H, "o1")
    pr = effect_report(store, definitions, FEB, PRICES).journeys["payment_reminder"]
    assert (pr.reached, pr.converted, pr.revenue) == (1, 1, 120.0)


def test_a_send_confirmed_after_the_goal_was_logged_still_converts(store, definitions):
    effect_report(store, definitions, FEB, PRICES)
    write(store, message("payment_reminder", "o2", T, customer="c2", order="o2", status="sending"))
    log(store, *order_events("o2", "c2", created=T - H, paid=T + H, amount=80))
    assert run_of(store, "payment_reminder:o2") is None  # not sent yet: not reached
    advance(store, "payment_reminder:o2", "remind", "sent")
    assert run_of(store, "payment_reminder:o2", settled=False) == (T, "remind", None, None)  # the send only records it
    assert run_of(store, "payment_reminder:o2") == (T, "remind", T + H, "o2")


def test_an_earlier_goal_logged_late_takes_over_and_one_before_the_send_never_counts(store, definitions):
    effect_report(store, definitions, FEB, PRICES)  # revisit_28d: order.created by the customer, 3 days
    write(store, message("revisit_28d", "c3", T, customer="c3", step="visit"))
    log(store, *order_events("o32", "c3", created=T + 2 * H, amount=10))
    assert run_of(store, "revisit_28d:c3")[2:] == (T + 2 * H, "o32")
    log(store, *order_events("o31", "c3", created=T + H, amount=20))  # earlier, arriving later
    log(store, *order_events("o30", "c3", created=T - H, amount=30))  # before the send
    log(store, *order_events("o33", "c3", created=T + H + timedelta(seconds=1), amount=40))
    assert run_of(store, "revisit_28d:c3")[2:] == (T + H, "o31")
    revisit = effect_report(store, definitions, FEB, PRICES).journeys["revisit_28d"]
    assert (revisit.converted, revisit.revenue) == (1, 20.0)


def test_an_earlier_message_reported_sent_later_moves_the_run_and_its_window(store, definitions):
    effect_report(store, definitions, FEB, PRICES)
    write(
        store,
        message("payment_reminder", "o4", T, customer="c4", order="o4", status="unknown"),  # answer lost
        message("payment_reminder", "o4", T + 4 * D, customer="c4", order="o4", step="again"),
    )
    log(store, *order_events("o4", "c4", created=T - H, paid=T + 2 * H, amount=60))
    assert run_of(store, "payment_reminder:o4") == (T + 4 * D, "again", None, None)  # paid before it
    advance(store, "payment_reminder:o4", "remind", "delivered")  # the provider's report settles it
    assert run_of(store, "payment_reminder:o4") == (T, "remind", T + 2 * H, "o4")


def test_a_changed_goal_recomputes_its_journey(store, definitions):
    write(store, message("payment_reminder", "o5", T, customer="c5", order="o5"))
    log(store, *order_events("o5", "c5", created=T - H, paid=T + 2 * H, amount=70))
    with store.transaction() as session:
        assert sync_goals(session, {"payment_reminder": GoalRule("order.paid", H, "order")}) == ["payment_reminder"]
    assert run_of(store, "payment_reminder:o5")[2:] == (None, None)  # two hours is past one
    pr = effect_report(store, definitions, FEB, PRICES).journeys["payment_reminder"]  # back to 3 days
    assert (pr.converted, pr.revenue) == (1, 70.0)
    assert run_of(store, "payment_reminder:o5")[2:] == (T + 2 * H, "o5")
    with store.transaction() as session:
        assert sync_goals(session, {"payment_reminder": GoalRule("order.paid", 3 * D, "order")}) == []


def test_an_order_keeps_its_latest_creation_and_first_payment_and_refund_in_any_arrival_order(store):
    def order_row():
        with store.transaction() as session:
            row = session.get(OrderRow, "o7")
            return (row.customer_id, row.created_at, row.created_amount, row.paid_at, row.paid_amount, row.refunded_at)

    log(store, event("order.paid", T + 2 * H, customer="c7", order="o7", amount="88.50"))  # before its creation
    assert order_row() == ("c7", None, None, T + 2 * H, 88.5, None)
    log(
        store,
        event("order.created", T, customer="c7", order="o7", amount=100),
        event("order.created", T - H, customer="c7", order="o7", amount=90),  # older: not the order now
        event("order.paid", T + H, customer="c7", order="o7", amount=80),  # the first payment, late
        event("order.paid", T + H + D, customer="c7", order="o7", amount="n/a"),
    )
    assert order_row() == ("c7", T, 100.0, T + H, 80.0, None)
    log(store, event("order.refunded", T + 3 * D, customer="c7", order="o7"))
    log(store, event("order.refunded", T + 2 * D, customer="c7", order="o7"))
    assert order_row()[5] == T + 2 * D


def test_a_converted_orders_revenue_follows_its_payment(store, definitions):
    effect_report(store, definitions, FEB, PRICES)  # revisit_28d converts on order.created
    write(store, message("revisit_28d", "c8", T, customer="c8", step="visit"))
    log(store, *order_events("o80", "c8", created=T + H, amount=50))
    revisit = effect_report(store, definitions, FEB, PRICES).journeys["revisit_28d"]
    assert (revisit.converted, revisit.revenue) == (1, 50.0)
    log(store, event("order.paid", T + 2 * H, customer="c8", order="o80", amount=45))  # a coupon at checkout
    revisit = effect_report(store, definitions, FEB, PRICES).journeys["revisit_28d"]
    assert (revisit.converted, revisit.revenue) == (1, 45.0)
