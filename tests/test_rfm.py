"""RFM as the shop-CRM practice defines it (客户等级划分), at every boundary of its table: R at
exactly 30, 90, 120, 210 and 365 days, M at 299/300, 499/500, 999/1,000, 1,999/2,000, F at each
count, refunded and unpaid orders, and a purchase's amount from order.paid else order.created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from core.rfm import DEFAULT_TABLE, Purchase, RfmTable, Tier, purchases_from, score
from tests.helpers import event

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def paid(days_ago: float, amount: float = 100, order: str | None = None, refunded_days_ago: float | None = None):
    order = order or f"o{days_ago}-{amount}"
    refunded = T - timedelta(days=refunded_days_ago) if refunded_days_ago is not None else None
    return Purchase(order_id=order, paid_at=T - timedelta(days=days_ago), paid_amount=amount, refunded_at=refunded)


@pytest.mark.parametrize(
    ("days", "r"),
    [(0, 5), (30, 5), (30.001, 4), (90, 4), (90.001, 3), (120, 3), (120.001, 2), (210, 2), (210.001, 1),
     (364.999, 1), (365, 0)],
)  # fmt: skip
def test_recency_at_each_boundary(days, r):
    """Exactly 365 days ago is outside the year (T-365 d, T]: no purchase, so 0 for each."""
    rfm = score([paid(days)], T)
    assert rfm.r == r
    if days >= 365:
        assert (rfm.f, rfm.m, rfm.score, rfm.purchases) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("amount", "m"),
    [(0.01, 1), (299, 1), (299.99, 1), (300, 2), (499, 2), (500, 3), (999, 3), (1000, 4), (1999, 4), (2000, 5),
     (15000, 5)],
)  # fmt: skip
def test_monetary_at_each_boundary(amount, m):
    assert score([paid(1, amount)], T).m == m


@pytest.mark.parametrize(("count", "f"), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (6, 5), (9, 5)])
def test_frequency_by_count(count, f):
    purchases = [paid(n + 1, 10, order=f"o{n}") for n in range(count)]
    assert score(purchases, T).f == f


def test_score_is_1r_3f_4m_and_the_tier_follows_it():
    purchases = [paid(2, 400, order="a"), paid(40, 400, order="b"), paid(100, 300, order="c")]
    rfm = score(purchases, T)
    assert (rfm.r, rfm.f, rfm.m) == (5, 3, 4)  # 2 days; 3 purchases; 1,100 in all
    assert rfm.score == 1 * 5 + 3 * 3 + 4 * 4 == 30
    assert rfm.tier == "loyal"  # >= 24, < 32
    assert rfm.amount == 1100 and rfm.last_purchase_at == T - timedelta(days=2)


def test_no_purchase_in_the_year_is_zero_for_each():
    rfm = score([], T)
    assert (rfm.r, rfm.f, rfm.m, rfm.score, rfm.tier) == (0, 0, 0, 0, "none")


def test_refunded_and_unpaid_orders_do_not_count():
    unpaid = Purchase(order_id="u", created_amount=5000)
    refunded = paid(3, 5000, order="r", refunded_days_ago=1)
    assert score([unpaid, refunded], T).purchases == 0
    # Refunded after T: still a purchase at T.
    assert score([paid(3, 5000, order="later", refunded_days_ago=-1)], T).m == 5
    # R decays with time alone: the same purchase read later.
    assert [score([paid(0, 100)], T + timedelta(days=d)).r for d in (0, 31, 91, 121, 211, 366)] == [5, 4, 3, 2, 1, 0]


def test_a_purchase_is_the_paid_amount_else_the_created_amount_from_the_events():
    events = [
        event("order.created", T - timedelta(days=5), order="o1", amount=800),
        event("order.paid", T - timedelta(days=4), order="o1"),  # no amount: order.created's
        event("order.created", T - timedelta(days=5), order="o2", amount=800),
        event("order.paid", T - timedelta(days=4), order="o2", amount=750),  # paid with a coupon
        event("order.paid", T - timedelta(days=3), order="o2", amount=1),  # a second payment: the first counts
        event("order.created", T - timedelta(days=2), order="o3", amount=9999),  # never paid
        event("order.created", T - timedelta(days=9), order="o4", amount="12.50"),
        event("order.paid", T - timedelta(days=8), order="o4"),
        event("order.refunded", T - timedelta(days=1), order="o4"),
    ]
    purchases = {p.order_id: p for p in purchases_from(events)}
    assert {o: p.amount for o, p in purchases.items()} == {"o1": 800, "o2": 750, "o3": 9999, "o4": 12.5}
    rfm = score(purchases.values(), T)
    assert (rfm.purchases, rfm.amount, rfm.m) == (2, 1550, 4)


def test_what_is_not_an_amount_makes_no_champion_and_no_negative_year():
    """The issue's order.paid amounts (core/amounts.py's rule): `1e308` and `-500` are no amount, so
    those payments are purchases of 0 (or of the created amount); a string of digits counts;
    `" 12"`, `"1e3"`, `"１２"` and `"-5"` are no amount here as in segments and the effect report."""
    events = [
        event("order.paid", T - timedelta(days=1), order="huge", amount=1e308),
        event("order.paid", T - timedelta(days=2), order="neg", amount=-500),
        event("order.created", T - timedelta(days=3), order="words", amount=99),
        event("order.paid", T - timedelta(days=3), order="words", amount="一百二十九元"),  # the created 99
        event("order.paid", T - timedelta(days=4), order="text", amount="129.00"),
        *(
            event("order.paid", T - timedelta(days=5), order=f"odd{n}", amount=value)
            for n, value in enumerate([" 12", "1e3", "１２", "-5", "NaN", True])
        ),
    ]
    purchases = {p.order_id: p.amount for p in purchases_from(events)}
    assert purchases == {"huge": 0, "neg": 0, "words": 99, "text": 129, **{f"odd{n}": 0 for n in range(6)}}
    rfm = score(purchases_from(events), T)
    assert (rfm.purchases, rfm.amount, rfm.m, rfm.tier) == (10, 228.0, 1, "loyal")  # F5, R5, M1: not champion


def test_a_table_of_the_shops_own_is_checked():
    table = RfmTable(
        monetary=[5000, 2000, 800, 200, 0], tiers=[Tier(name="vip", min_score=30), Tier(name="rest", min_score=0)]
    )
    assert score([paid(1, 1000)], T, table).m == 3
    assert score([paid(1, 1000)], T, table).tier == "rest"
    with pytest.raises(ValidationError, match="recency_days must rise"):
        RfmTable(recency_days=[90, 30, 120, 210, 365])
    with pytest.raises(ValidationError, match="the last with min_score 0"):
        RfmTable(tiers=[Tier(name="vip", min_score=30)])
    assert DEFAULT_TABLE.weights == {"r": 1, "f": 3, "m": 4}


# ------------------------------------------------------------------ as journeys read it

REPEAT_BUYER = """\
name: repeat_buyer_care
category: marketing
entry: {event: order.paid, key: order, reentry: once, condition: "customer.rfm.f >= 2"}
steps:
  - wait: 40d
  - if:
      condition: "customer.rfm.r == 4"
      then:
        - send: {id: care, channel: sms, template: rfm_care}
"""

RFM_TEMPLATE = """\
sms:
  zh-CN: "{{ customer.rfm.tier }} {{ customer.rfm.score }} R{{ customer.rfm.r }}F{{ customer.rfm.f }}M{{ customer.rfm.m }}"
"""


async def test_journeys_read_rfm_at_the_moment_of_reading_on_the_production_worker(tmp_path, store):
    """The router's entry condition counts the purchase that starts the journey; forty days
    later, with no new event, R has decayed from 5 to 4, and the template says so."""
    from journeys.simulate import Simulation
    from tests.helpers import at, customer
    from tests.test_order_context import definitions_from, text_of

    begin = at("2026-03-02 12:00+08:00")
    definitions = definitions_from(tmp_path, {"rfm_care": RFM_TEMPLATE}, repeat_buyer_care=REPEAT_BUYER)
    start = begin - timedelta(days=30)
    async with Simulation(definitions, store, start) as sim:
        for customer_id in ("loyal", "once"):
            await sim.create_customer(customer(customer_id, phone=f"+861380000000{len(customer_id)}"), start)
        earlier = begin - timedelta(days=20)  # "loyal" bought once before (F 1: the journey does not start)
        await sim.emit(event("order.created", earlier, customer="loyal", order="a", amount=150))
        await sim.emit(event("order.paid", earlier + timedelta(minutes=5), customer="loyal", order="a"))
        for customer_id in ("loyal", "once"):
            await sim.emit(event("order.created", begin, customer=customer_id, order=f"{customer_id}-new", amount=100))
            await sim.emit(
                event("order.paid", begin + timedelta(minutes=5), customer=customer_id, order=f"{customer_id}-new")
            )
        await sim.advance_to(begin + timedelta(days=41))
        records = [r for r in sim.records() if r["journey"] == "repeat_buyer_care"]
    # 40 days after the last purchase: R 4; two purchases: F 2; 250 in all: M 1; 4 + 6 + 4 = 14.
    assert [(r["customer_id"], r["status"], text_of(r["body"])) for r in records] == [
        ("loyal", "sent", "potential 14 R4F2M1")
    ]


def test_a_shops_rfm_file_is_checked_with_its_line(tmp_path):
    from definitions.loader import check_definitions

    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True)
    (folder / "rfm.yaml").write_text("recency_days: [30, 90, 120, 210, 365]\nmonetary: [1, 2, 3, 4, 5]\n")
    (folder / "x.yaml").write_text(
        "name: x\ncategory: marketing\nentry: {event: order.paid, key: order}\nsteps:\n  - wait: 1d\n"
    )
    loaded, problems = check_definitions(folder)
    assert problems == [f"{folder / 'rfm.yaml'}:1: (top): Value error, monetary must fall from the bound for 5 "
                        "to the one for 1, at least 0"]  # fmt: skip
    assert list(loaded.journeys) == ["x"]  # rfm.yaml is not a journey
