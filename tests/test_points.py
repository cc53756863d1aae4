"""Points (积分体系, docs/loyalty.md#points): earning at payment or confirmation with each rounding,
multipliers, bonuses once per event/order/year/ever, the blacklist, refunds, expiry oldest first,
the daily run's lapses and points.expiring notices (each exactly once), and the import (积分导入).
On both databases; every scenario ends with the balance equal to the ledger's sum."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from activities import loyalty as loyalty_activities
from activities import points
from activities.loyalty import DailyReport
from core.audience import Segment
from core.loyalty import Loyalty, Multiplier
from core.products import Product
from definitions.loader import Definitions
from rules.points import Entry, Item, allocate, expires_on, lot_expiry, notices_due, purchase_points
from store import points as ledger
from store.products import save_products
from store.queries import store_events, upsert_customer
from store.tables import EventRow, PointsEntryRow
from tests.helpers import at, customer, event

NOW = at("2026-11-01 10:00+08:00")


def programme(**points_config) -> Loyalty:
    base = {"earning": {"points": 1, "per": 1}, "expiry": {"rolling_days": 365, "notice_days": [30, 7]}}
    return Loyalty.model_validate({"points": base | points_config})


def definitions_of(loyalty: Loyalty, segments: dict[str, Segment] | None = None) -> Definitions:
    return Definitions(loyalty=loyalty, segments=segments or {})


def log(store, events, definitions, now=NOW) -> list:
    """Log events as the API does: the read models, then the loyalty programme, in one transaction;
    the points events it caused (tiers and lifecycle moves are theirs to test)."""
    with store.transaction() as session:
        written = store_events(session, events, now)
        fresh = [e for e in events if e.event_id in written]
        caused = loyalty_activities.note_logged(session, fresh, definitions, now)
    return [e for e in caused if e.type.startswith("points.")]


def ledger_of(store, customer="c1") -> list[tuple[str, int, str]]:
    with store.transaction() as session:
        return [(row.kind, row.points, row.source) for row in ledger.entries(session, customer)]


def balance_checked(store, customer="c1") -> int:
    """The balance, after checking it is the sum of the ledger's entries (summed here in SQL)."""
    with store.transaction() as session:
        summed = session.scalar(
            select(func.coalesce(func.sum(PointsEntryRow.points), 0)).where(PointsEntryRow.customer_id == customer)
        )
        held = ledger.balance(session, customer)
        shown = points.customer_points(session, customer, "Asia/Shanghai").balance
    assert held == summed == shown
    return held


# ---------------------------------------------------------------------------------------------
# The arithmetic, pure


@pytest.mark.parametrize(
    ("rounding", "amount", "expected"),
    [("down", 199.99, 199), ("half_up", 199.5, 200), ("half_up", 199.49, 199), ("up", 199.01, 200), ("up", 199, 199)],
)
def test_a_purchase_earns_per_unit_rounded_as_said(rounding, amount, expected):
    earning = programme(earning={"points": 1, "per": 1, "rounding": rounding}).points.earning
    assert purchase_points(amount, earning, [], NOW).points == expected


def test_points_per_ten_yuan_in_decimal_arithmetic():
    earning = programme(earning={"points": 3, "per": 10}).points.earning
    assert purchase_points(99.9, earning, [], NOW).points == 29  # 29.97 down
    assert purchase_points(0.3 + 0.6, earning, [], NOW).points == 0


def _double(**extra) -> Multiplier:
    window = {"start": "2026-11-01T00:00:00+08:00", "end": "2026-11-12T00:00:00+08:00"}
    return Multiplier.model_validate({"name": "double_11", "factor": 2} | window | extra)


def test_a_multiplier_counts_inside_its_window_only():
    earning = programme().points.earning
    double = _double()
    assert purchase_points(100, earning, [double], at("2026-11-01 00:00+08:00")).points == 200  # start: inclusive
    assert purchase_points(100, earning, [double], at("2026-11-11 23:59+08:00")).points == 200
    assert purchase_points(100, earning, [double], at("2026-11-12 00:00+08:00")).points == 100  # end: exclusive
    assert purchase_points(100, earning, [double], at("2026-10-31 23:59+08:00")).points == 100


def test_a_segment_multiplier_counts_for_its_members_only():
    earning = programme().points.earning
    vip = _double(name="vip_triple", factor=3, segment="vips")
    inside = at("2026-11-05 12:00+08:00")
    assert purchase_points(100, earning, [vip], inside, segments={"vips"}).points == 300
    assert purchase_points(100, earning, [vip], inside, segments={"others"}).points == 100
    # The highest factor that applies counts; factors do not multiply.
    both = purchase_points(100, earning, [vip, _double()], inside, segments={"vips"})
    assert both.points == 300 and both.multipliers == ("vip_triple",)


def test_a_category_multiplier_counts_for_that_categorys_items_only():
    earning = programme().points.earning
    tea = _double(name="tea_week", factor=3, category="tea")
    inside = at("2026-11-05 12:00+08:00")
    items = [Item("tea", 60.0), Item("cups", 40.0)]
    assert purchase_points(100, earning, [tea], inside, items=items).points == 60 * 3 + 40
    # A discount is shared: items worth 200 paid 100, tea's share is 60 of 100.
    assert purchase_points(100, earning, [tea], inside, items=[Item("tea", 120.0), Item("cups", 80.0)]).points == 220
    # No price known: the whole order is tea's only when every item is tea.
    assert purchase_points(100, earning, [tea], inside, items=[Item("tea", None)]).points == 300
    assert purchase_points(100, earning, [tea], inside, items=[Item("tea", None), Item("cups", None)]).points == 100


def test_expiry_rolling_or_end_of_next_year_in_the_zone():
    rolling = programme().points.expiry
    assert lot_expiry(NOW, rolling, "Asia/Shanghai") == NOW + timedelta(days=365)
    yearly = Loyalty.model_validate({"points": {"expiry": {"end_of_next_year": True}}}).points.expiry
    # 2026-12-31 23:30 in Shanghai is still 2026 there (15:30 UTC): it lapses at the end of 2027.
    ends = lot_expiry(at("2026-12-31 23:30+08:00"), yearly, "Asia/Shanghai")
    assert ends == at("2028-01-01 00:00+08:00")
    assert expires_on(ends, "Asia/Shanghai") == date(2027, 12, 31)
    assert lot_expiry(at("2027-01-01 00:00+08:00"), yearly, "Asia/Shanghai") == at("2029-01-01 00:00+08:00")


def test_debits_take_the_oldest_lots_first_and_a_deficit_is_paid_by_the_next_lot():
    day = timedelta(days=1)
    found = allocate(
        [
            Entry(1, 100, NOW, NOW + 10 * day),
            Entry(2, 50, NOW + day, NOW + 20 * day),
            Entry(3, -120, NOW + 2 * day),  # all of lot 1, 20 of lot 2
        ]
    )
    assert [(lot.entry_id, lot.remaining) for lot in found.lots] == [(1, 0), (2, 30)]
    found = allocate([Entry(1, 100, NOW), Entry(2, -150, NOW), Entry(3, 80, NOW)])
    assert [(lot.entry_id, lot.remaining) for lot in found.lots] == [(1, 0), (3, 30)] and found.deficit == 0
    # An expiry takes from the lot it names, whatever is older.
    found = allocate([Entry(1, 100, NOW), Entry(2, 40, NOW + day, NOW + 2 * day), Entry(3, -40, NOW, lot=2)])
    assert [(lot.entry_id, lot.remaining) for lot in found.lots] == [(1, 100), (2, 0)]


def test_only_the_nearest_notice_due_is_given():
    lots = allocate([Entry(1, 100, NOW, NOW + timedelta(days=20))]).lots
    assert notices_due(lots, NOW, [30, 7], "Asia/Shanghai")[0].days == 30
    assert notices_due(lots, NOW + timedelta(days=14), [30, 7], "Asia/Shanghai")[0].days == 7
    assert notices_due(lots, NOW + timedelta(days=20), [30, 7], "Asia/Shanghai") == []  # lapsed: no notice


# ---------------------------------------------------------------------------------------------
# Earning as events are logged


@pytest.mark.parametrize(("rounding", "expected"), [("down", 199), ("half_up", 200), ("up", 200)])
def test_earning_at_payment_with_each_rounding(store, rounding, expected):
    defs = definitions_of(programme(earning={"points": 1, "per": 1, "rounding": rounding}))
    log(store, [event("order.created", "2026-11-01 09:00+08:00", order="o1", amount=99)], defs)
    caused = log(store, [event("order.paid", "2026-11-01 09:05+08:00", order="o1", amount="199.50")], defs)
    assert ledger_of(store) == [("earn", expected, "earn:order:o1")]
    (earned,) = caused
    assert earned.type == "points.earned" and earned.event_id == "points.earned:c1:earn:order:o1"
    assert earned.data == {
        "points": expected, "balance": expected, "reason": "order o1: 199.5 paid", "source": "earn:order:o1",
        "order_id": "o1",
    }  # fmt: skip
    assert balance_checked(store) == expected
    # A confirmation earns nothing when the shop counts at payment.
    assert log(store, [event("order.confirmed", "2026-11-05 09:00+08:00", order="o1")], defs) == []


def test_earning_at_confirmation_only(store):
    defs = definitions_of(programme(earning={"points": 1, "per": 10, "counted_at": "confirmed", "rounding": "up"}))
    log(store, [event("order.paid", "2026-11-01 09:05+08:00", order="o1", amount=95)], defs)
    assert ledger_of(store) == []
    caused = log(store, [event("order.confirmed", "2026-11-08 09:00+08:00", order="o1")], defs)
    assert ledger_of(store) == [("earn", 10, "earn:order:o1")]  # 9.5 rounded up
    assert [e.data["points"] for e in caused] == [10]
    with store.transaction() as session:
        (row,) = ledger.entries(session, "c1")
    assert row.at == at("2026-11-08 09:00+08:00") and row.expires_at == row.at + timedelta(days=365)
    assert balance_checked(store) == 10


def test_a_second_payment_event_of_an_order_earns_nothing(store):
    defs = definitions_of(programme())
    log(store, [event("order.paid", "2026-11-01 09:05+08:00", order="o1", amount=100)], defs)
    again = log(store, [event("order.paid", "2026-11-01 09:06+08:00", order="o1", amount=100)], defs)
    assert again == [] and ledger_of(store) == [("earn", 100, "earn:order:o1")]
    assert balance_checked(store) == 100


def test_multipliers_by_segment_and_category_on_logged_orders(store):
    vips = Segment.model_validate({"name": "vips", "where": {"tag": "vip"}})
    loyalty = Loyalty.model_validate(
        {
            "points": {
                "multipliers": [
                    {"name": "vip_double", "factor": 2, "segment": "vips",
                     "start": "2026-11-01T00:00:00+08:00", "end": "2026-11-12T00:00:00+08:00"},
                    {"name": "tea_triple", "factor": 3, "category": "tea",
                     "start": "2026-11-01T00:00:00+08:00", "end": "2026-11-12T00:00:00+08:00"},
                ]
            }
        }
    )  # fmt: skip
    defs = definitions_of(loyalty, {"vips": vips})
    with store.transaction() as session:
        save_products(session, [Product(sku="tea-01", title="龙井", category="tea", price=50)], NOW)
    with store.transaction() as session:
        upsert_customer(session, customer("c2", tags=["vip"]), NOW, "CN")
    # c1 (no vip): 2 teas at the catalogue's 50 ×3, a cup of 40 at ×1: 340.
    items = [{"sku": "tea-01", "qty": 2}, {"sku": "cup", "price": 40}]
    log(store, [event("order.created", "2026-11-02 09:00+08:00", order="o1", amount=140, items=items)], defs)
    log(store, [event("order.paid", "2026-11-02 09:01+08:00", order="o1", amount=140)], defs)
    assert ledger_of(store) == [("earn", 340, "earn:order:o1")]
    # c2 (vip): everything ×2, tea ×3: 300 + 80.
    log(
        store,
        [event("order.created", "2026-11-02 09:00+08:00", customer="c2", order="o2", amount=140, items=items)],
        defs,
    )
    log(store, [event("order.paid", "2026-11-02 09:01+08:00", customer="c2", order="o2", amount=140)], defs)
    assert ledger_of(store, "c2") == [("earn", 380, "earn:order:o2")]
    # After the window: ×1.
    log(store, [event("order.paid", "2026-11-12 00:00+08:00", customer="c2", order="o3", amount=140)], defs)
    assert ledger_of(store, "c2")[-1] == ("earn", 140, "earn:order:o3")
    assert balance_checked(store) == 340 and balance_checked(store, "c2") == 520


def test_bonuses_once_per_event_order_year_and_ever(store):
    loyalty = programme(
        bonuses=[
            {"name": "review", "event": "review.posted", "points": 20, "once_per": "order"},
            {"name": "photo", "event": "review.posted", "points": 30, "match": {"has_photos": True}, "once_per": "event"},
            {"name": "birthday", "event": "customer.updated", "points": 100, "match": {"birthday_month": True},
             "once_per": "year"},
            {"name": "first", "event": "customer.created", "points": 5, "once_per": "ever"},
        ]
    )  # fmt: skip
    defs = definitions_of(loyalty)
    log(store, [event("customer.created", "2026-01-01 09:00+08:00")], defs)
    log(store, [event("customer.created", "2026-01-02 09:00+08:00")], defs)  # again: ever means once
    log(store, [event("review.posted", "2026-02-01 09:00+08:00", order="o1", has_photos=True)], defs)
    log(store, [event("review.posted", "2026-02-02 09:00+08:00", order="o1", has_photos=True)], defs)
    log(store, [event("review.posted", "2026-02-02 09:00+08:00", order="o1", has_photos=1)], defs)  # 1 is not true
    birthday = {"birthday_month": True}
    log(store, [event("customer.updated", "2026-03-01 09:00+08:00", **birthday)], defs)
    log(store, [event("customer.updated", "2026-12-31 23:30+08:00", **birthday)], defs)  # still 2026 in Shanghai
    log(store, [event("customer.updated", "2027-01-01 00:30+08:00", **birthday)], defs)
    kinds = [source.rsplit(":", 1)[0] if "event" in source else source for _, _, source in ledger_of(store)]
    assert kinds == [
        "bonus:first:ever",
        "bonus:review:order:o1",
        "bonus:photo:event",
        "bonus:photo:event",
        "bonus:birthday:year:2026",
        "bonus:birthday:year:2027",
    ]
    assert balance_checked(store) == 5 + 20 + 30 + 30 + 100 + 100


def test_the_points_blacklist_earns_nothing(store):
    staff = Segment.model_validate({"name": "staff", "where": {"tag": "staff"}})
    loyalty = Loyalty.model_validate(
        {
            "points": {"bonuses": [{"name": "review", "event": "review.posted", "points": 20}]},
            "blacklists": {"points": {"customers": ["c9"], "segments": ["staff"]}},
        }
    )
    defs = definitions_of(loyalty, {"staff": staff})
    with store.transaction() as session:
        upsert_customer(session, customer("c2", tags=["staff"]), NOW, "CN")
    for who in ("c9", "c2", "c1"):
        log(
            store,
            [event("order.paid", "2026-11-01 09:00+08:00", customer=who, order=f"o-{who}", amount=50)],
            defs,
        )
        log(store, [event("review.posted", "2026-11-02 09:00+08:00", customer=who, order=f"o-{who}")], defs)
    assert ledger_of(store, "c9") == [] and ledger_of(store, "c2") == []
    assert [kind for kind, _, _ in ledger_of(store, "c1")] == ["earn", "earn"]
    assert balance_checked(store, "c1") == 70 and balance_checked(store, "c9") == 0


def test_a_refund_reverses_what_the_order_earned_even_below_zero(store):
    defs = definitions_of(
        programme(bonuses=[{"name": "review", "event": "review.posted", "points": 20, "once_per": "order"}])
    )
    log(store, [event("order.paid", "2026-11-01 09:00+08:00", order="o1", amount=100)], defs)
    log(store, [event("review.posted", "2026-11-02 09:00+08:00", order="o1")], defs)
    with store.transaction() as session:
        points.redeem(session, "c1", 110, "spend-1", at("2026-11-03 09:00+08:00"), "Asia/Shanghai")
    caused = log(store, [event("order.refunded", "2026-11-04 09:00+08:00", order="o1", amount=100)], defs)
    assert caused == []  # a reversal is no points.earned
    log(store, [event("order.refunded", "2026-11-05 09:00+08:00", order="o1", amount=100)], defs)  # twice: once
    assert ledger_of(store) == [
        ("earn", 100, "earn:order:o1"),
        ("earn", 20, "bonus:review:order:o1"),  # the review's bonus stays
        ("redeem", -110, "redeem:spend-1"),
        ("reverse", -100, "reverse:order:o1"),
    ]
    assert balance_checked(store) == -90
    # A payment after its refund earns nothing.
    log(store, [event("order.paid", "2026-11-06 09:00+08:00", order="o1", event_id="late-pay", amount=100)], defs)
    assert len(ledger_of(store)) == 4


def test_no_points_configured_earns_nothing(store):
    assert log(store, [event("order.paid", "2026-11-01 09:00+08:00", order="o1", amount=100)], Definitions()) == []
    assert ledger_of(store) == [] and balance_checked(store) == 0


# ---------------------------------------------------------------------------------------------
# Redemption, expiry and the daily run


def test_redemption_refused_past_the_balance_and_idempotent_per_request(store):
    defs = definitions_of(programme())
    log(store, [event("order.paid", "2026-11-01 09:00+08:00", order="o1", amount=100)], defs)
    later = at("2026-11-02 09:00+08:00")
    with store.transaction() as session:
        first = points.redeem(session, "c1", 60, "r1", later, "Asia/Shanghai", order_id="o2")
    with store.transaction() as session:
        again = points.redeem(session, "c1", 60, "r1", later + timedelta(hours=1), "Asia/Shanghai", order_id="o2")
    assert (first.balance, first.duplicate) == (40, False)
    assert again.model_dump() == first.model_dump() | {"duplicate": True}
    refused = pytest.raises(points.NotEnoughPoints, match="customer 'c1' has 40 points; 41 cannot be redeemed")
    with refused, store.transaction() as session:
        points.redeem(session, "c1", 41, "r2", later, "Asia/Shanghai")
    reused = pytest.raises(points.RequestReused, match="request_id 'r1' was already used")
    with reused, store.transaction() as session:
        points.redeem(session, "c1", 10, "r1", later, "Asia/Shanghai")
    assert balance_checked(store) == 40


def test_a_redemption_takes_the_oldest_lot_and_the_later_lot_lapses_later(store):
    defs = definitions_of(programme())
    log(store, [event("order.paid", "2026-01-10 09:00+08:00", order="o1", amount=100)], defs)
    log(store, [event("order.paid", "2026-03-10 09:00+08:00", order="o2", amount=50)], defs)
    with store.transaction() as session:
        points.redeem(session, "c1", 80, "r1", at("2026-04-01 09:00+08:00"), "Asia/Shanghai")
    report = DailyReport(at=at("2027-01-10 09:00+08:00"))
    list(points.daily(store, defs, report.at, report))
    assert report.expired_points == 20  # what is left of the first lot
    assert ledger_of(store)[-1] == ("expire", -20, "expire:1")
    assert balance_checked(store) == 50
    report = DailyReport(at=at("2027-03-10 09:00+08:00"))
    list(points.daily(store, defs, report.at, report))
    assert report.expired_points == 50 and ledger_of(store)[-1] == ("expire", -50, "expire:2")
    assert balance_checked(store) == 0


def test_the_daily_run_twice_writes_nothing_twice_and_notices_come_once(store):
    defs = definitions_of(programme())  # rolling 365 days, notices 30 and 7 days before
    log(store, [event("order.paid", "2026-01-10 09:00+08:00", order="o1", amount=100)], defs)
    ends = at("2027-01-10 09:00+08:00")

    def run(when: datetime) -> tuple[int, list]:
        report = DailyReport(at=when)
        written = list(points.daily(store, defs, when, report))
        return report.expired_points, written

    assert run(ends - timedelta(days=31)) == (0, [])
    # The day of the 30-day notice was missed: the next run writes it.
    expired, (notice,) = run(ends - timedelta(days=29))
    assert expired == 0 and notice.type == "points.expiring"
    assert notice.event_id == "points.expiring:c1:2027-01-10:30"
    assert notice.data == {"points": 100, "expires_on": "2027-01-10", "days": 30, "balance": 100}
    assert run(ends - timedelta(days=29)) == (0, [])  # again: nothing
    assert run(ends - timedelta(days=20)) == (0, [])
    expired, (week,) = run(ends - timedelta(days=6))
    assert week.data["days"] == 7 and week.event_id == "points.expiring:c1:2027-01-10:7"
    assert run(ends) == (100, [])
    assert run(ends) == (0, [])
    assert run(ends + timedelta(days=1)) == (0, [])
    with store.transaction() as session:
        logged = session.scalars(select(EventRow.event_id).where(EventRow.type == "points.expiring")).all()
    assert sorted(logged) == ["points.expiring:c1:2027-01-10:30", "points.expiring:c1:2027-01-10:7"]
    assert ledger_of(store)[-1] == ("expire", -100, "expire:1") and balance_checked(store) == 0


def test_the_daily_activity_reports_what_it_wrote(store, tmp_path):
    defs = definitions_of(programme())
    log(store, [event("order.paid", "2026-01-10 09:00+08:00", order="o1", amount=100)], defs)
    activity = loyalty_activities.LoyaltyActivities(store, tmp_path)
    activity.definitions = lambda: defs  # the file's reading is the lead's; the run is what is tested
    report = activity.run_loyalty_daily(loyalty_activities.DailyRequest(at=at("2026-12-20 09:00+08:00")))
    assert report.events == {"points.expiring": 1} and report.expired_points == 0


# ---------------------------------------------------------------------------------------------
# Import (积分导入)


def test_import_reads_gbk_and_full_width_digits_and_adds_nothing_twice(store, tmp_path):
    from journeys.points import import_points_file

    loyalty = programme()
    text = (
        "customer_id,points,reason,at,id\n"
        "c1,１２０,老系统迁移,2025-12-01 10:00,\n"
        "c2,-５,扣减,,row-2\n"
        "c3,abc,坏行,,\n"
        "c4,0,零,,\n"
        "c5,10,时间,2026-13-01,\n"
    )
    path = tmp_path / "积分.csv"
    path.write_bytes(text.encode("gbk"))
    now = at("2026-11-01 10:00+08:00")
    found = import_points_file(store, path, loyalty, now)
    assert found.written == 2 and found.lines == 5
    assert found.problems == [
        f"{path}:4: points: 'abc' is not a whole number of points",
        f"{path}:5: points: '0': points must not be 0, and at most 1,000,000,000 either way",
        f"{path}:6: at: '2026-13-01' is not a time like 2026-11-11 20:05:00",
    ]
    with store.transaction() as session:
        (row,) = ledger.entries(session, "c1")
    assert (row.kind, row.points, row.reason) == ("import", 120, "老系统迁移")
    assert row.at == at("2025-12-01 10:00+08:00") and row.expires_at == row.at + timedelta(days=365)
    assert row.source.startswith("import:") and row.source.endswith(":2")
    assert ledger_of(store, "c2") == [("import", -5, "import:row-2")]
    assert import_points_file(store, path, loyalty, now + timedelta(days=1)).written == 0
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # the same rows in UTF-8 with a BOM: another file
    assert import_points_file(store, path, loyalty, now).written == 1  # only the row with an id is the same
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(EventRow)) == 0  # history: no points.earned
    assert balance_checked(store, "c1") == 240 and balance_checked(store, "c2") == -5


def test_the_overview_adds_up_each_kind(store):
    defs = definitions_of(programme())
    log(store, [event("order.paid", "2026-01-10 09:00+08:00", order="o1", amount=100)], defs)
    log(store, [event("order.paid", "2026-02-10 09:00+08:00", customer="c2", order="o2", amount=300)], defs)
    log(store, [event("order.refunded", "2026-02-11 09:00+08:00", customer="c2", order="o2", amount=300)], defs)
    with store.transaction() as session:
        points.redeem(session, "c1", 30, "r1", at("2026-03-01 09:00+08:00"), "Asia/Shanghai")
        points.adjust(session, "c1", 7, "补偿", "a1", at("2026-03-02 09:00+08:00"), defs.loyalty)
    report = DailyReport(at=at("2027-02-01 09:00+08:00"))
    list(points.daily(store, defs, report.at, report))
    with store.transaction() as session:
        everything = points.overview(session, defs.loyalty, None, None)
        march = points.overview(session, defs.loyalty, at("2026-03-01 00:00+08:00"), at("2026-04-01 00:00+08:00"))
    assert (everything.issued, everything.redeemed, everything.reversed, everything.adjusted) == (400, 30, 300, 7)
    assert everything.expired == 70 and everything.outstanding == 7 and everything.liability == 0.07
    assert (march.issued, march.redeemed, march.adjusted, march.expired) == (0, 30, 7, 0)
    assert balance_checked(store) + balance_checked(store, "c2") == everything.outstanding
