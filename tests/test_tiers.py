"""Member tiers (VIP体系) on both databases, with injected times: an upgrade at once on a purchase,
no downgrade on a refund before the card's end, re-evaluation at the card's end (one level down,
or to what qualifies, or a renewal), member.card_expiring notices exactly once, an operator's
override, the member blacklist, and the report's migration matrix."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from activities import tiers as activity
from activities.loyalty import DailyReport, note_logged
from core.audience import Segment
from core.loyalty import Loyalty, Tiers
from definitions.loader import Definitions
from rules.tiers import Measures, at_card_end, qualifies
from store import queries
from store import tiers as tier_store
from store.tables import EventRow, PointsEntryRow
from tests.helpers import at, customer, event

T0 = at("2026-03-02 10:00+08:00")
TABLE = {
    "levels": [
        {"name": "normal", "title": "普通会员", "min": {"orders": 1, "spend": 3000}},
        {"name": "senior", "title": "高级会员", "min": {"orders": 3, "spend": 10000}},
        {"name": "vip", "title": "VIP会员", "min": {"orders": 5, "spend": 20000}},
    ]
}


def definitions(**changes) -> Definitions:
    members = {"customers": changes.pop("blacklist", []), "segments": changes.pop("blacklist_segments", [])}
    loyalty = Loyalty.model_validate({"tiers": {**TABLE, **changes}, "blacklists": {"members": members}})
    blocked = Segment.model_validate({"name": "blocked", "title": "拉黑客户", "where": {"tag": "拉黑"}})
    return Definitions(loyalty=loyalty, segments={"blocked": blocked})


def buy(store, defs, customer: str, order: str, when, amount: float, *, refund_at=None) -> list:
    """Log an order's creation and payment (and its refund) as the API does, loyalty applied."""
    events = [
        event("order.created", when, customer=customer, order=order, amount=amount),
        event("order.paid", when, customer=customer, order=order, amount=amount),
    ]
    if refund_at is not None:
        events.append(event("order.refunded", refund_at, customer=customer, order=order, amount=amount))
    return log(store, defs, events, max(e.occurred_at for e in events))


def log(store, defs, events, now) -> list:
    """Log events as the API does; the tier events they caused (points and lifecycle moves are
    theirs to test)."""
    with store.transaction() as session:
        written = queries.store_events(session, events, now)
        caused = note_logged(session, [e for e in events if e.event_id in written], defs, now)
    return [e for e in caused if e.type.startswith("member.")]


def logged(store, kind: str, customer: str = "c1") -> list[dict]:
    with store.transaction() as session:
        rows = session.scalars(
            select(EventRow).where(EventRow.type == kind, EventRow.customer_id == customer).order_by(EventRow.event_id)
        )
        return [{"id": row.event_id, **row.data} for row in rows]


def held(store, customer: str = "c1"):
    with store.transaction() as session:
        row = tier_store.current(session, customer)
        return None if row is None else (row.tier, row.since, row.until, row.overridden)


def log_of(store, customer: str = "c1") -> list[tuple]:
    with store.transaction() as session:
        return [(c.from_tier, c.to_tier, c.direction, c.by) for c in reversed(tier_store.changes(session, customer))]


def run_daily(store, defs, when) -> list:
    return list(activity.daily(store, defs, when, DailyReport(at=when)))


# ------------------------------------------------------------------ the rules


def test_the_highest_level_whose_every_minimum_is_reached():
    tiers = Tiers.model_validate(TABLE)
    assert qualifies(tiers, Measures(orders=1, spend=2999.99)) is None
    assert qualifies(tiers, Measures(orders=1, spend=3000)) == "normal"
    assert qualifies(tiers, Measures(orders=2, spend=50000)) == "normal"  # spend alone is not enough
    assert qualifies(tiers, Measures(orders=5, spend=20000)) == "vip"
    assert at_card_end(tiers, "vip", None).to == "senior"  # one level at most
    assert at_card_end(tiers, "normal", None).to is None
    assert at_card_end(Tiers.model_validate({**TABLE, "downgrade": "qualified"}), "vip", None).to is None
    assert at_card_end(tiers, "senior", "senior").direction == "renew"
    assert at_card_end(tiers, "senior", "vip").direction == "up"


# ------------------------------------------------------------------ purchases and refunds


def test_a_purchase_upgrades_at_once_and_a_refund_lowers_nothing_before_the_card_ends(store):
    defs = definitions()
    assert buy(store, defs, "c1", "o1", T0, 2999) == []  # under 3000: no tier
    [up] = buy(store, defs, "c1", "o2", T0 + timedelta(hours=1), 1)
    assert up.type == "member.tier_changed"
    assert up.data == {
        "from": None, "to": "normal", "direction": "up", "until": "2027-03-02",
        "reason": "2 orders, 3000.00 spent in 365 days: reach 普通会员 (normal)",
    }  # fmt: skip
    for n, when in enumerate([T0 + timedelta(days=d) for d in (10, 11, 12)], start=3):
        buy(store, defs, "c1", f"o{n}", when, 6000)
    # 9000 in 3 orders is still normal; 15000 in 4 is senior; 21000 in 5 is vip.
    assert [e["to"] for e in logged(store, "member.tier_changed")] == ["normal", "senior", "vip"]
    tier, since, until, overridden = held(store)
    assert (tier, since, until, overridden) == ("vip", T0 + timedelta(days=12), T0 + timedelta(days=377), False)

    # Every order refunded: still vip (a refund lowers a tier only at the card's end).
    refunds = [event("order.refunded", T0 + timedelta(days=20), order=f"o{n}", amount=1) for n in range(1, 6)]
    assert log(store, defs, refunds, T0 + timedelta(days=20)) == []
    assert held(store)[0] == "vip"

    # The day before the card's end nothing moves; after it, down one level, though nothing qualifies.
    run_daily(store, defs, until - timedelta(days=1))
    assert held(store)[0] == "vip"
    [down] = [e for e in run_daily(store, defs, until + timedelta(hours=2)) if e.type == "member.tier_changed"]
    assert down.data["from"] == "vip" and down.data["to"] == "senior" and down.data["direction"] == "down"
    assert held(store)[2] == until + timedelta(hours=2) + timedelta(days=365)
    # A second run (a retry, the next day) changes nothing more until that card ends.
    assert [e for e in run_daily(store, defs, until + timedelta(days=1)) if e.type == "member.tier_changed"] == []
    assert log_of(store)[-1] == ("vip", "senior", "down", "engine")
    assert len(logged(store, "member.tier_changed")) == 4


def test_qualified_mode_drops_to_what_qualifies(store):
    defs = definitions(downgrade="qualified")
    for n in range(5):
        buy(store, defs, "c1", f"o{n}", T0 + timedelta(minutes=n), 4000)
    assert held(store)[0] == "vip"
    for n in range(5):
        log(store, defs, [event("order.refunded", T0 + timedelta(days=1), order=f"o{n}", amount=1)], T0)
    end = held(store)[2]
    [lost] = [e for e in run_daily(store, defs, end + timedelta(minutes=1)) if e.type == "member.tier_changed"]
    assert (lost.data["from"], lost.data["to"], lost.data["until"]) == ("vip", None, None)
    assert held(store) is None


def test_a_card_that_still_qualifies_is_renewed_without_an_event(store):
    defs = definitions(window_days=730)  # the year's purchases still count at the card's end
    buy(store, defs, "c1", "o1", T0, 5000)
    tier, since, until, _ = held(store)
    written = run_daily(store, defs, until + timedelta(hours=1))
    assert [e.type for e in written] == []
    assert held(store) == ("normal", since, until + timedelta(days=365), False)
    assert log_of(store) == [(None, "normal", "up", "engine"), ("normal", "normal", "renew", "engine")]


# ------------------------------------------------------------------ card expiry notices


def test_card_expiring_notices_at_7_and_1_days_each_once(store):
    defs = definitions()
    buy(store, defs, "c1", "o1", T0, 5000)
    until = held(store)[2]
    expiring = []
    for moment in [
        until - timedelta(days=8),  # too early
        until - timedelta(days=7),  # the 7-day notice
        until - timedelta(days=7),  # a retry of the same run
        until - timedelta(days=6),  # the next day
        until - timedelta(days=1),  # the 1-day notice
        until - timedelta(hours=12),  # a retry later that day
    ]:
        expiring += [e for e in run_daily(store, defs, moment) if e.type == "member.card_expiring"]
    assert [(e.data["days"], e.data["expires_on"], e.data["tier"]) for e in expiring] == [
        (7, "2027-03-02", "normal"),
        (1, "2027-03-02", "normal"),
    ]
    assert [e["id"] for e in logged(store, "member.card_expiring")] == [
        "member.card_expiring:c1:2027-03-02:1",
        "member.card_expiring:c1:2027-03-02:7",
    ]


def test_a_missed_day_still_gets_its_notice_once(store):
    defs = definitions()
    buy(store, defs, "c1", "o1", T0, 5000)
    until = held(store)[2]
    run_daily(store, defs, until - timedelta(hours=20))  # the runs 7 to 1 days before were missed
    assert sorted(e["days"] for e in logged(store, "member.card_expiring")) == [1, 7]


# ------------------------------------------------------------------ history, override, blacklist


def test_imported_history_earns_a_tier_in_the_daily_run(store):
    defs = definitions()
    history = [
        event("order.paid", T0 - timedelta(days=d), customer="old", order=f"h{d}", amount=4000) for d in (10, 20, 30)
    ]
    with store.transaction() as session:
        queries.store_events(session, history, T0, backfill=True)  # history moves no tier by itself
    assert held(store, "old") is None
    [up] = [e for e in run_daily(store, defs, T0) if e.type == "member.tier_changed"]
    assert up.customer_id == "old" and up.data["to"] == "senior" and up.data["reason"].startswith("history: 3 orders")
    assert run_daily(store, defs, T0 + timedelta(hours=1)) == []


def test_an_override_is_recorded_with_who_and_why_and_purchases_only_raise_it(store):
    defs = definitions()
    with store.transaction() as session:
        changed = activity.override(session, defs, "c1", "senior", reason="老客户补偿", by="ops-li", until=None, now=T0)
        queries.store_events(session, [changed], T0)
    assert changed.data["direction"] == "up" and changed.data["reason"] == "老客户补偿"
    assert held(store) == ("senior", T0, T0 + timedelta(days=365), True)
    with store.transaction() as session:
        view = activity.show(session, defs, "c1", T0)
    assert [(c.direction, c.by, c.reason) for c in view.changes] == [("override", "ops-li", "老客户补偿")]
    buy(store, defs, "c1", "o1", T0 + timedelta(days=1), 3000)  # qualifies for normal only: kept at senior
    assert held(store)[0] == "senior"
    for n in range(2, 6):
        buy(store, defs, "c1", f"o{n}", T0 + timedelta(days=n), 5000)
    assert held(store)[0] == "vip" and held(store)[3] is False  # an upgrade above it still happens
    with store.transaction() as session, pytest.raises(activity.OverrideRefused) as refused:
        activity.override(session, defs, "c1", "gold", reason="x", by="ops", until=None, now=T0)
    assert str(refused.value) == "unknown tier 'gold'; the tiers are normal, senior, vip"


def test_a_blacklisted_holder_loses_the_tier_and_gains_none(store):
    buy(store, definitions(), "c1", "o1", T0, 5000)
    buy(store, definitions(), "c2", "o2", T0, 5000)
    defs = definitions(blacklist=["c1", "c2"])
    [lost] = buy(store, defs, "c1", "o3", T0 + timedelta(days=1), 5000)
    assert (lost.data["from"], lost.data["to"], lost.data["reason"]) == ("normal", None, "会员黑名单")
    assert held(store, "c1") is None
    [swept] = [e for e in run_daily(store, defs, T0 + timedelta(days=2)) if e.type == "member.tier_changed"]
    assert swept.customer_id == "c2" and held(store, "c2") is None
    assert buy(store, defs, "c1", "o4", T0 + timedelta(days=3), 50000) == []


def test_a_member_blacklist_segment_keeps_its_members_out(store):
    defs = definitions(blacklist_segments=["blocked"])
    with store.transaction() as session:
        queries.upsert_customer(session, customer("bad", tags=["拉黑"]), T0, "CN")
        queries.upsert_customer(session, customer("good"), T0, "CN")
    assert buy(store, defs, "bad", "o1", T0, 30000) == []
    [up] = buy(store, defs, "good", "o2", T0, 30000)
    assert (up.customer_id, up.data["to"]) == ("good", "normal")
    assert held(store, "bad") is None
    with store.transaction() as session, pytest.raises(activity.OverrideRefused) as refused:
        activity.override(session, defs, "bad", "vip", reason="x", by="ops", until=None, now=T0)
    assert refused.value.status == 409 and "会员黑名单" in str(refused.value)


# ------------------------------------------------------------------ the report


def test_the_report_counts_the_months_moves_and_the_distribution(store):
    defs = definitions(downgrade="qualified")
    march, april = at("2026-03-05 10:00+08:00"), at("2026-04-05 10:00+08:00")
    buy(store, defs, "a", "a1", march, 3000)  # none -> normal
    for n in range(3):
        buy(store, defs, "b", f"b{n}", march, 4000)  # none -> normal -> senior (two ups)
    buy(store, defs, "c", "c1", march, 25000)  # none -> normal
    with store.transaction() as session:
        activity.override(session, defs, "c", "vip", reason="大客户", by="ops", until=None, now=march)
        activity.override(session, defs, "a", None, reason="测试账号", by="ops", until=None, now=april)
    with store.transaction() as session:
        report = activity.report(session, defs, "2026-03", now=april)
    assert [(m.from_tier, m.to_tier, m.count) for m in report.matrix] == [
        (None, "normal", 3),
        ("normal", "senior", 1),
        ("normal", "vip", 1),
    ]
    assert (report.upward, report.downward, report.renewed) == (5, 0, 0)
    assert report.at_end.counts == {"normal": 1, "senior": 1, "vip": 1, "none": 0}
    assert report.now is None
    with store.transaction() as session:
        current = activity.report(session, defs, "2026-04", now=april + timedelta(hours=1))
    assert (current.upward, current.downward, current.at_end) == (0, 1, None)
    assert current.now.counts == {"normal": 0, "senior": 1, "vip": 1, "none": 1}
    with store.transaction() as session, pytest.raises(ValueError, match="is not a month"):
        activity.report(session, defs, "2026-13", now=april)


def test_the_daily_run_pages_through_every_card(store, monkeypatch):
    monkeypatch.setattr(activity, "BATCH", 2)  # five customers: three batches, each its own transaction
    defs = definitions()
    for n in range(5):
        buy(store, defs, f"c{n}", f"o{n}", T0, 5000)
    until = held(store, "c0")[2]
    notices = [e.customer_id for e in run_daily(store, defs, until - timedelta(days=7))]
    assert sorted(notices) == [f"c{n}" for n in range(5)]
    # A year on, the purchases have left the window: every normal card ends in no tier.
    lost = [e for e in run_daily(store, defs, until + timedelta(hours=1)) if e.type == "member.tier_changed"]
    assert sorted((e.customer_id, e.data["to"]) for e in lost) == [(f"c{n}", None) for n in range(5)]
    assert [held(store, f"c{n}") for n in range(5)] == [None] * 5


def test_items_and_points_count_where_orders_and_the_ledger_carry_them(store):
    defs = Definitions(loyalty=Loyalty.model_validate({"tiers": {"levels": [
        {"name": "collector", "title": "收藏家", "min": {"items": 5, "points": 50}},
    ]}}))  # fmt: skip
    events = [
        event("order.created", T0, order="o1", amount=100, items=[{"sku": "a", "quantity": 2}]),
        # The payment's items are the latest: 3 + 2 (a quantity written as digits) + 1 (none given).
        event("order.paid", T0 + timedelta(minutes=1), order="o1", amount=100,
              items=[{"sku": "a", "quantity": 3}, {"sku": "b", "qty": "2"}, {"sku": "c"}]),
        event("order.paid", T0, order="o2", amount=100),  # no items: counts none
    ]  # fmt: skip
    with store.transaction() as session:
        queries.store_events(session, events, T0)
        for points, kind, when in [(100, "earn", T0), (-30, "reverse", T0), (500, "earn", T0 - timedelta(days=400))]:
            session.add(PointsEntryRow(customer_id="c1", kind=kind, points=points, reason="r", source=f"{kind}:{points}",
                                       at=when, recorded_at=T0))  # fmt: skip
    with store.transaction() as session:
        [measures] = activity.measures_of(session, ["c1"], T0 + timedelta(hours=1), defs.loyalty.tiers).values()
    assert (measures.orders, measures.spend, measures.items, measures.points) == (2, 200.0, 6, 70)
    assert qualifies(defs.loyalty.tiers, measures) == "collector"
