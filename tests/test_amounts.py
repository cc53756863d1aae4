"""One rule for an amount and one for a purchase (core/amounts.py), in its Python form and its SQL
form, agree on SQLite and PostgreSQL; every reader uses it (RFM, `order.amount`, the `orders`
read model, segments), and the API refuses what is not an amount at intake, naming `data.amount`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import insert, select

from core.amounts import (
    MAX_AMOUNT,
    WINDOW,
    amount_number,
    amount_of,
    amount_problem,
    amount_sql,
    held,
    held_sql,
    in_period,
    in_period_sql,
    in_year,
    in_year_sql,
    order_amount,
    order_amount_sql,
)
from core.orders import order_context
from core.records import Event
from core.rfm import DEFAULT_TABLE, purchases_from, score
from store import queries
from store.orders import amount
from store.segments import rfm_columns
from store.tables import EventRow, OrderRow
from tests.helpers import event
from triggers.api import create_app

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

#: (data.amount, the amount by the rule). `...` stands for "no `amount` key at all".
CASES = [
    ("12", 12.0),
    (12, 12.0),
    (12.5, 12.5),
    ("12.50", 12.5),
    ("129.00", 129.0),
    ("007", 7.0),
    ("19.99", 19.99),
    (19.99, 19.99),
    (0, 0.0),
    ("0", 0.0),
    (0.0, 0.0),
    ("0.00", 0.0),
    (-0.0, 0.0),
    (1e3, 1000.0),  # a JSON number written with an exponent is a number
    (1_000_000_000_000, 1e12),  # the largest
    ("1000000000000", 1e12),
    (1e12, 1e12),
    (1_000_000_000_001, None),  # past 10^12
    ("1000000000000.01", None),
    (1e308, None),
    (10**20, None),
    (10**400, None),  # an integer past any double
    (" 12", None),  # spaces
    ("12 ", None),
    ("12\n", None),
    ("1e3", None),  # an exponent in a string
    ("１２", None),  # full-width digits
    ("NaN", None),
    ("nan", None),
    ("Infinity", None),
    ("-inf", None),
    ("-5", None),
    ("+5", None),
    (-500, None),
    (-0.01, None),
    (-1e-300, None),
    (None, None),
    (True, None),
    (False, None),
    ("1.2.3", None),
    ("一百二十九元", None),
    ("12元", None),
    ("¥12", None),
    ("1,299", None),
    ("", None),
    (".5", None),
    ("12.", None),
    ("0x10", None),
    ("1_000", None),
    ("9" * 32, None),  # 32 characters, over 10^12
    ("0." + "0" * 29 + "1", 1e-30),  # 32 characters: read
    ("0." + "0" * 30 + "1", None),  # 33: too long
    ([12], None),
    ({"value": 12}, None),
    (..., None),
]
IDS = [repr(value)[:30] for value, _ in CASES]


@pytest.mark.parametrize(("value", "expected"), CASES, ids=IDS)
def test_the_python_form(value, expected):
    given = None if value is ... else value
    assert amount_of(given) == expected
    # The intake takes exactly the amounts, and null (none given).
    assert (amount_problem(given) is None) == (expected is not None or given is None)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("1e400")])
def test_nan_and_infinities_are_no_amount_and_never_reach_a_database(value):
    assert amount_of(value) is None and amount_problem(value) is not None
    with pytest.raises(ValueError, match="finite"):  # the API refuses them before anything reads them
        event("order.paid", T, order="o1", amount=value)


def test_an_integer_stays_an_integer_for_templates():
    assert [amount_number(v) for v in (99, "99", "129.00", 12.5, -0.0)] == [99, 99, 129.0, 12.5, 0.0]
    assert isinstance(amount_number(99), int) and isinstance(amount_number("99"), int)
    assert str(amount_number(-0.0)) == "0.0"


def _case_events() -> list[tuple[Event, float | None]]:
    found = []
    for n, (value, expected) in enumerate(CASES):
        data = {} if value is ... else {"amount": value}
        found.append(
            (
                Event(
                    event_id=f"e{n}",
                    type="order.created",
                    occurred_at=T,
                    customer_id=f"c{n}",
                    order_id=f"o{n}",
                    data=data,
                ),
                expected,
            )
        )
    return found


def test_the_sql_form_and_the_read_model_agree_with_python_on_every_case(store):
    """The table of cases, logged as order.created events: the SQL form over the event log, the
    `orders` read model (filled by the Python form as events are written) and the order's amount
    in SQL all say what the Python form says, on this database."""
    cases = _case_events()
    with store.transaction() as session:
        queries.store_events(session, [e for e, _ in cases], T)
        in_sql = dict(session.execute(select(EventRow.event_id, amount_sql(EventRow.data))).all())
        rows = {row.order_id: row for row in session.scalars(select(OrderRow))}
        order_amounts = dict(session.execute(select(OrderRow.order_id, amount(OrderRow))).all())
    mismatches = {}
    for e, expected in cases:
        found = (in_sql[e.event_id], rows[e.order_id].created_amount, order_amounts[e.order_id])
        want = (expected, expected, expected if expected is not None else 0.0)
        if found != want:
            mismatches[repr(e.data.get("amount", "<none>"))] = (found, want)
    assert mismatches == {}


def test_sql_reads_what_other_writers_left_without_failing(store):
    """Data logged before the intake check, or by hand: a string of 200,000 digits or an integer
    of 400 digits must read as no amount, never make PostgreSQL's casts fail (segments read it)."""
    rows = [
        {"event_id": "long", "data": {"amount": "1" * 200_000}},
        {"event_id": "huge", "data": {"amount": 10**400}},
        {"event_id": "deep", "data": {"amount": {"a": [1]}}},
        {"event_id": "none", "data": {}},
    ]
    with store.transaction() as session:
        session.execute(
            insert(EventRow),
            [
                {
                    "type": "order.paid",
                    "customer_id": "c1",
                    "order_id": "o1",
                    "occurred_at": T,
                    "received_at": T,
                    "attempts": 0,
                    **row,
                }
                for row in rows
            ],
        )
        found = dict(session.execute(select(EventRow.event_id, amount_sql(EventRow.data))).all())
    assert found == {"long": None, "huge": None, "deep": None, "none": None}


# ------------------------------------------------------------------ what a purchase is

MOMENTS = [None, *(T + timedelta(days=d) for d in (-400, -365, -364.99, -30, -1, 0, 0.001, 1, 30))]


def test_the_purchase_rule_in_python_and_sql_agree(store):
    """Every pair of first payment and first refund among boundary moments: held at T, counted
    for RFM at T (first paid in (T-365 d, T]), and a purchase of the period [T-30 d, T)."""
    pairs = [(paid, refunded) for paid in MOMENTS for refunded in MOMENTS]
    start, end = T - timedelta(days=30), T
    with store.transaction() as session:
        session.execute(
            insert(OrderRow),
            [
                {
                    "order_id": f"o{n}",
                    "customer_id": "c1",
                    "paid_at": p,
                    "refunded_at": r,
                    "paid_amount": None,
                    "created_amount": float(n) if n % 2 else None,
                }
                for n, (p, r) in enumerate(pairs)
            ],
        )
        o = OrderRow
        found = {
            row.order_id: (row.held, row.in_year, row.in_period, row.amount)
            for row in session.execute(
                select(
                    o.order_id,
                    held_sql(o.paid_at, o.refunded_at, T).label("held"),
                    in_year_sql(o.paid_at, o.refunded_at, T).label("in_year"),
                    in_period_sql(o.paid_at, o.refunded_at, start, end).label("in_period"),
                    order_amount_sql(o.paid_amount, o.created_amount).label("amount"),
                )
            )
        }
    expected = {
        f"o{n}": (
            held(p, r, T),
            in_year(p, r, T),
            in_period(p, r, start, end),
            order_amount(None, float(n) if n % 2 else None),
        )
        for n, (p, r) in enumerate(pairs)
    }
    # A NULL paid_at makes SQL's answer NULL (unknown) where Python's is False: both mean "no".
    assert {k: tuple(bool(x) if i < 3 else x for i, x in enumerate(v)) for k, v in found.items()} == expected
    assert sum(v[1] for v in expected.values()) > 5  # the grid has purchases, not only refusals


def test_a_refund_takes_back_the_whole_purchase_from_its_time_on():
    paid, refunded = T - timedelta(days=10), T - timedelta(days=5)
    assert held(paid, refunded, refunded - timedelta(seconds=1))
    assert not held(paid, refunded, refunded)  # refunded at T: not held at T
    assert not held(None, refunded, T)  # a refund before any payment takes back nothing: no purchase
    assert in_year(T - WINDOW + timedelta(seconds=1), None, T) and not in_year(T - WINDOW, None, T)


# ------------------------------------------------------------------ every reader


def test_rfm_counts_a_payment_without_an_amount_as_a_purchase_of_0():
    events = [
        event("order.created", T - timedelta(days=3), order="big", amount=1e308),
        event("order.paid", T - timedelta(days=3), order="big"),
        event("order.paid", T - timedelta(days=2), order="neg", amount=-500),
        event("order.created", T - timedelta(days=2), order="words", amount="一百二十九元"),
        event("order.paid", T - timedelta(days=1), order="words", amount="129.00"),
    ]
    rfm = score(purchases_from(events), T)
    assert (rfm.purchases, rfm.amount, rfm.m) == (3, 129.0, 1)  # 1e308 and -500: purchases of 0
    assert rfm.tier != "champion"


def test_order_amount_uses_the_rule():
    created = event("order.created", T, order="o1", event_id="c", amount="99")
    assert order_context("o1", [created])["amount"] == 99
    paid = event("order.paid", T + timedelta(minutes=1), order="o1", event_id="p", amount=-500)
    assert order_context("o1", [created, paid])["amount"] == 99  # the payment's is none: the creation's
    words = event("order.created", T, order="o2", event_id="w", amount="一百二十九元")
    assert "amount" not in order_context("o2", [words])  # never shows what is not an amount


def test_segments_read_the_same_amounts(store):
    """A customer per case, each with one paid order carrying that amount: the database's RFM
    (segments) and core.rfm give every customer the same M and amount."""
    cases = _case_events()
    with store.transaction() as session:
        for e, _ in cases:
            queries.store_event(session, e.model_copy(update={"occurred_at": T - timedelta(days=1)}), T)
            queries.store_event(
                session, event("order.paid", T - timedelta(days=1), customer=e.customer_id, order=e.order_id), T
            )
        in_sql = {row.customer_id: float(row.amount) for row in session.execute(select(rfm_columns(T, DEFAULT_TABLE)))}
        in_python = {e.customer_id: score(queries.purchases_of(session, e.customer_id, T), T).amount for e, _ in cases}
    assert in_sql == in_python
    assert in_python == {e.customer_id: round(expected or 0.0, 2) for e, expected in cases}


# ------------------------------------------------------------------ intake


def paid_body(event_id: str, value, type: str = "order.paid") -> dict:
    return {
        "event_id": event_id,
        "type": type,
        "occurred_at": "2026-02-01T10:00:00+08:00",
        "customer_id": "c1",
        "order_id": "o1",
        "data": {"amount": value},
    }


@pytest.mark.parametrize("value", [1e308, -500, "一百二十九元", " 12", "1e3", "１２", "-5", "1.2.3", True, "12元"])
async def test_the_api_refuses_an_order_amount_that_is_not_one(store, value):
    app = create_app(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        answer = await api.post("/events", json=paid_body("bad", value))
    assert answer.status_code == 422, answer.text
    [rejected] = answer.json()["rejected"]
    [problem] = rejected["problems"]
    assert problem["field"] == "data.amount"
    assert "not an amount" in problem["message"]


async def test_the_api_takes_amounts_and_refuses_a_refund_of_nothing(store):
    app = create_app(store)
    batch = [
        paid_body("string", "129.00"),
        paid_body("number", 129),
        paid_body("zero", 0),
        paid_body("top", MAX_AMOUNT),
        paid_body("null", None),
        {**paid_body("none", None), "data": {}},
        paid_body("refund", "129.00", "order.refunded"),
        paid_body("refund0", 0, "order.refunded"),
        paid_body("refund_neg", -1, "order.refunded"),
        paid_body("shipped", -1, "order.shipped"),
        {**paid_body("review", "一百二十九元", "review.posted")},  # not an order event's amount
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        answer = await api.post("/events", json=batch)
        nan = await api.post(
            "/events",
            content=b'{"event_id": "nan", "type": "order.paid", "occurred_at": "2026-02-01T10:00:00+08:00", '
            b'"customer_id": "c1", "order_id": "o1", "data": {"amount": NaN}}',
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 202
    assert answer.json()["accepted"] == ["string", "number", "zero", "top", "null", "none", "refund", "review"]
    problems = {r["event_id"]: r["problems"] for r in answer.json()["rejected"]}
    assert set(problems) == {"refund0", "refund_neg", "shipped"}
    assert problems["refund0"] == [{"field": "data.amount", "message": "a refund's amount must be more than 0, not 0"}]
    assert [p["field"] for p in problems["refund_neg"]] == ["data.amount"]
    assert nan.status_code == 422  # refused by the event's own check (core.records), which names the place
    [problem] = nan.json()["rejected"][0]["problems"]
    assert "data.amount is nan" in problem["message"], problem
