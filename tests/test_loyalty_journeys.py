"""The shipped loyalty journeys end to end on the time-skipping server, with the production worker
(sandbox on): 升级提醒 (tier_upgrade), 积分到期提醒 (points_expiring), 会员卡到期关怀
(member_card_expiry), the win-back of sleeping customers (winback_sleeping) with its holdout and
goal, and the monthly 会员账单 broadcast (member_statement). The engine's own events are written
into the log as the engine writes them (core.loyalty.engine_event) and routed like any event.
Templates read `customer.points` and `customer.tier` from the store at the send; the entry
condition, vars and steps read them as of the entry event (revision 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.loyalty import engine_event
from definitions.loader import PACKAGE_DIR, Definitions, check_definitions, load_definitions
from journeys.simulate import Simulation
from store import queries
from store.db import Store
from store.effect import Period
from store.tables import MemberTierRow, PointsEntryRow
from tests.helpers import at, customer, event, shipped_definitions_with
from views.effect import Prices, effect_report
from views.preview import preview

BEGIN = at("2026-12-01 09:00+08:00")
PHONES = {"c1": "+8613800000001", "c2": "+8613800000002", "c9": "+8613800000009", "c31": "+8613800000031"}


def give_points(store: Store, customer_id: str, points: int, when: datetime, source: str) -> None:
    """A ledger entry as the points ledger writes one (an earn, or a redemption when negative)."""
    with store.transaction() as session:
        session.add(
            PointsEntryRow(
                customer_id=customer_id, kind="earn" if points > 0 else "redeem", points=points, reason=source,
                source=source, at=when, recorded_at=when,
            )
        )  # fmt: skip


def set_tier(store: Store, customer_id: str, tier: str, since: datetime, until: datetime) -> None:
    with store.transaction() as session:
        row = session.get(MemberTierRow, customer_id)
        if row is None:
            session.add(MemberTierRow(customer_id=customer_id, tier=tier, since=since, until=until, updated_at=since))
        else:
            row.tier, row.since, row.until, row.updated_at = tier, since, until, since


def sent(store: Store, journey: str) -> list[tuple[str, str, str, datetime, str]]:
    """The journey's messages as (customer, channel, address, when to the second, body), in time order;
    every one sent."""
    with store.transaction() as session:
        rows = [r for r in queries.list_messages(session) if r.journey.startswith(journey)]
        assert all(r.status == "sent" for r in rows), [(r.customer_id, r.status, r.reason, r.error) for r in rows]
        return [
            (r.customer_id, r.channel, r.address, r.at.astimezone(UTC).replace(microsecond=0), r.body) for r in rows
        ]


def sms_to(customer_id: str, when: str | datetime, body: str) -> tuple[str, str, str, datetime, str]:
    """One expected SMS as `sent` lists it."""
    return (customer_id, "sms", PHONES[customer_id], at(when) if isinstance(when, str) else when, body)


def own_journey(tmp_path: Path, name: str, journey: str, files: dict[str, str]) -> Definitions:
    """The shipped definitions with a shop's own journey `name` (its YAML) and other files."""
    header = "# yaml-language-server: $schema=journey.schema.json\n"
    return load_definitions(
        shipped_definitions_with(tmp_path / "definitions", {**files, f"{name}.yaml": header + journey})
    )


async def play(sim: Simulation, *customers: str) -> None:
    for customer_id in customers:
        await sim.create_customer(customer(customer_id, phone=PHONES[customer_id]), BEGIN)


# ------------------------------------------------------------------ 升级提醒


async def test_tier_upgrade_congratulates_with_the_tier_at_the_send_and_not_on_a_downgrade(store, definitions):
    """c1 goes up to 高级会员 at 23:30 (quiet hours): the congratulation goes at 08:00, with the card's
    end and the balance as the store has them then (an operator extended the card at 01:00). c2
    goes down: nothing."""
    up_at, down_at = at("2026-12-01 23:30+08:00"), at("2026-12-01 12:00+08:00")
    async with Simulation(definitions, store, BEGIN) as sim:
        await play(sim, "c1", "c2")
        give_points(store, "c1", 3200, BEGIN, "order:o1")
        set_tier(store, "c1", "senior", up_at, at("2027-12-01 23:30+08:00"))
        set_tier(store, "c2", "normal", down_at, at("2027-12-01 12:00+08:00"))
        await sim.emit(
            engine_event(
                "member.tier_changed", "c2", "o9", down_at,
                {"from": "senior", "to": "normal", "direction": "down", "reason": "card ended", "until": "2027-12-01"},
            )
        )  # fmt: skip
        await sim.emit(
            engine_event(
                "member.tier_changed", "c1", "o2", up_at,
                {"from": "normal", "to": "senior", "direction": "up", "reason": "order o2", "until": "2027-12-01"},
            )
        )  # fmt: skip
        await sim.advance_to(at("2026-12-02 01:00+08:00"))
        set_tier(store, "c1", "senior", up_at, at("2028-01-31 12:00+08:00"))  # extended before the send
        give_points(store, "c1", 100, at("2026-12-02 01:00+08:00"), "review:o2")
        await sim.advance_to(at("2026-12-03 00:00+08:00"))
    assert sent(store, "tier_upgrade") == [
        sms_to("c1", "2026-12-02 08:00+08:00", "【Journeys】王芳，恭喜您升级为高级会员！会员卡有效期至2028-01-31，当前积分3300。")
    ]  # fmt: skip


async def test_the_tier_s_title_is_the_shop_s_loyalty_yaml_s(sqlite_store, tmp_path):
    """A shop that calls its senior tier 金卡 gets 金卡 in the message."""
    loyalty = (PACKAGE_DIR / "loyalty.yaml").read_text().replace("title: 高级会员", "title: 金卡")
    definitions = load_definitions(shipped_definitions_with(tmp_path / "definitions", {"loyalty.yaml": loyalty}))
    up_at = BEGIN + timedelta(hours=1)
    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await play(sim, "c1")
        set_tier(sqlite_store, "c1", "senior", up_at, at("2027-12-01 10:00+08:00"))
        change = {"from": None, "to": "senior", "direction": "up", "reason": "order o1", "until": "2027-12-01"}
        await sim.emit(engine_event("member.tier_changed", "c1", "o1", up_at, change))
        await sim.advance_to(up_at + timedelta(hours=1))
    assert [m[4] for m in sent(sqlite_store, "tier_upgrade")] == [
        "【Journeys】王芳，恭喜您升级为金卡！会员卡有效期至2027-12-01，当前积分0。"
    ]


# ------------------------------------------------------------------ 积分到期提醒


async def test_points_expiring_names_the_points_the_date_and_the_balance_at_the_send(sqlite_store, definitions):
    """The notice at 23:00 waits for 08:00; a redemption at 02:00 shows in the balance it names."""
    notice_at = at("2026-12-01 23:00+08:00")
    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await play(sim, "c1")
        give_points(sqlite_store, "c1", 500, BEGIN - timedelta(days=300), "order:o1")
        await sim.emit(
            engine_event(
                "points.expiring", "c1", "2026-12-31:30", notice_at,
                {"points": 120, "expires_on": "2026-12-31", "days": 30, "balance": 500},
            )
        )  # fmt: skip
        await sim.advance_to(at("2026-12-02 02:00+08:00"))
        give_points(sqlite_store, "c1", -200, at("2026-12-02 02:00+08:00"), "redeem:r1")
        await sim.advance_to(at("2026-12-03 00:00+08:00"))
    assert sent(sqlite_store, "points_expiring") == [
        sms_to("c1", "2026-12-02 08:00+08:00", "【Journeys】王芳，您有120积分将于2026-12-31到期，当前积分300，记得及时使用哦。")
    ]  # fmt: skip


# ------------------------------------------------------------------ 会员卡到期关怀


async def test_member_card_expiry_sends_7_days_and_1_day_before(sqlite_store, definitions):
    """Both notices of one card go, each its own message, on their days; an email-only customer
    gets them by email."""
    card_end = at("2026-12-12 00:00+08:00")
    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await play(sim, "c1")
        await sim.create_customer(customer("c2", phone=None, email="li.na@example.com", name="李娜"), BEGIN)
        for customer_id in ("c1", "c2"):
            set_tier(sqlite_store, customer_id, "vip", card_end - timedelta(days=365), card_end)
        for days in (7, 1):
            when = card_end - timedelta(days=days) + timedelta(hours=10)
            for customer_id in ("c1", "c2"):
                await sim.emit(
                    engine_event(
                        "member.card_expiring", customer_id, f"2026-12-12:{days}", when,
                        {"tier": "vip", "expires_on": "2026-12-12", "days": days},
                    )
                )  # fmt: skip
        await sim.advance_to(at("2026-12-13 00:00+08:00"))
    messages = sent(sqlite_store, "member_card_expiry")
    assert [(m[0], m[1], m[2], m[3]) for m in messages] == [
        ("c1", "sms", "+8613800000001", at("2026-12-05 10:00+08:00")),
        ("c2", "email", "li.na@example.com", at("2026-12-05 10:00+08:00")),
        ("c1", "sms", "+8613800000001", at("2026-12-11 10:00+08:00")),
        ("c2", "email", "li.na@example.com", at("2026-12-11 10:00+08:00")),
    ]
    assert (
        messages[0][4]
        == "【Journeys】王芳，您的VIP会员会员卡将于2026-12-12到期（还有7天），到期后将按近一年消费重新评定等级。"
    )
    assert "还有1天" in messages[2][4]
    assert "<p>李娜，您的VIP会员会员卡将于2026-12-12到期（还有1天）。</p>" in messages[3][4]


# ------------------------------------------------------------------ 睡眠客户唤醒


async def test_winback_sleeping_holds_out_a_tenth_and_the_effect_shows_the_goal(sqlite_store, definitions):
    """c1 and c2 fall asleep; c9 too, but its key is in the 10% holdout (split_draw 0.036): it
    gets nothing. c31 only becomes churned: nothing. c1 pays an order 5 days after the message:
    a conversion; c9 buys too, the holdout's conversion the uplift is measured against."""
    asleep = at("2026-12-01 10:00+08:00")
    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await play(sim, "c1", "c2", "c9", "c31")
        give_points(sqlite_store, "c1", 860, BEGIN - timedelta(days=200), "order:o0")
        for customer_id, to in (("c1", "sleeping"), ("c2", "sleeping"), ("c9", "sleeping"), ("c31", "churned")):
            frm = "churned" if to == "sleeping" else "old_once"
            await sim.emit(
                engine_event(
                    "lifecycle.changed", customer_id, f"{frm}:{to}:2026-12-01", asleep,
                    {"from": frm, "to": to, "direction": "backward"},
                )
            )  # fmt: skip
        for customer_id, order in (("c1", "o1"), ("c9", "o9")):
            paid = asleep + timedelta(days=5)
            await sim.emit(
                event("order.created", paid - timedelta(minutes=5), customer=customer_id, order=order, amount=300)
            )
            await sim.emit(event("order.paid", paid, customer=customer_id, order=order, amount=300))
        await sim.advance_to(at("2026-12-20 00:00+08:00"))
    assert sent(sqlite_store, "winback_sleeping") == [
        sms_to("c1", asleep, "【Journeys】王芳，好久不见！店里上了不少新品，您还有860积分可用，回来看看吧。 退订回T"),
        sms_to("c2", asleep, "【Journeys】王芳，好久不见！店里上了不少新品，您还有0积分可用，回来看看吧。 退订回T"),
    ]  # fmt: skip
    december = Period(at("2026-12-01 00:00+08:00"), at("2027-01-01 00:00+08:00"), "Asia/Shanghai")
    prices = Prices(sms=0.05, email=0.01, currency="CNY")
    winback = effect_report(sqlite_store, definitions, december, prices, journey="winback_sleeping").journeys[
        "winback_sleeping"
    ]
    assert (winback.entered, winback.reached, winback.converted, winback.revenue) == (3, 2, 1, 300.0)
    lift = winback.uplift
    assert (lift.treated.instances, lift.treated.converted) == (2, 1)
    assert (lift.holdout.instances, lift.holdout.converted) == (1, 1)


# ------------------------------------------------------------------ 会员账单


async def test_member_statement_runs_monthly_with_each_member_s_points_and_tier(sqlite_store, definitions):
    """The recurring broadcast's December run reaches the member who bought this year (c1, her
    balance and her tier at the send) and not the customer who never bought (c2); January's run
    shows her balance as it is by then."""
    begin = at("2026-11-20 09:00+08:00")
    async with Simulation(definitions, sqlite_store, begin) as sim:
        for customer_id in ("c1", "c2"):
            await sim.create_customer(customer(customer_id, phone=PHONES[customer_id]), begin)
        await sim.emit(event("order.created", begin, order="o1", amount=3500))
        await sim.emit(event("order.paid", begin + timedelta(minutes=5), order="o1", amount=3500))
        give_points(sqlite_store, "c1", 3500, begin, "order:o1")
        set_tier(sqlite_store, "c1", "normal", begin, at("2027-11-20 09:05+08:00"))
        await sim.start_broadcast("member_statement")
        await sim.advance_to(at("2026-12-15 00:00+08:00"))
        give_points(sqlite_store, "c1", -500, at("2026-12-15 00:00+08:00"), "redeem:r1")
        await sim.advance_to(at("2027-01-02 00:00+08:00"))
    assert sent(sqlite_store, "member_statement") == [
        sms_to("c1", "2026-12-01 10:00+08:00", "【Journeys】王芳，您的会员账单：当前积分3500，会员等级普通会员（有效期至2027-11-20）。"),
        sms_to("c1", "2027-01-01 10:00+08:00", "【Journeys】王芳，您的会员账单：当前积分3000，会员等级普通会员（有效期至2027-11-20）。"),
    ]  # fmt: skip


# ------------------------------------------------------------------ where the facts are seen


def test_the_preview_shows_the_points_and_the_tier_the_store_has(sqlite_store, definitions):
    with sqlite_store.transaction() as session:
        queries.upsert_customer(session, customer(), BEGIN, "CN")
    give_points(sqlite_store, "c1", 1234, BEGIN, "import:row1")
    set_tier(sqlite_store, "c1", "vip", BEGIN, at("2027-12-01 09:00+08:00"))
    shown = preview(
        definitions, sqlite_store, journey="tier_upgrade", step="congratulate", customer_id="c1",
        shop_name="Journeys", default_region="CN", now=BEGIN,
    )  # fmt: skip
    sms = next(c for c in shown.channels if c.channel == "sms")
    assert sms.body == "【Journeys】王芳，恭喜您升级为VIP会员！会员卡有效期至2027-12-01，当前积分1234。"


OWN_JOURNEY = """\
name: big_balance
category: transactional
entry: {event: points.earned, key: customer, reentry: after_exit, condition: "customer.points >= 1000"}
steps:
  - wait: 1h
  - if: {condition: 'customer.tier.name == "vip"', then: [send: {id: vip, channel: sms, template: big_balance_vip}],
         else: [send: {id: other, channel: sms, template: big_balance}]}
"""


OWN_TEMPLATES = {
    "templates/big_balance.yaml": 'sms:\n  zh-CN: "您的积分已达{{ customer.points }}。"\n',
    "templates/big_balance_vip.yaml": 'sms:\n  zh-CN: "尊敬的VIP，您的积分已达{{ customer.points }}。"\n',
}


async def test_the_entry_condition_and_steps_read_the_facts_at_entry_and_templates_at_the_send(sqlite_store, tmp_path):
    """A shop's own journey: points.earned starts it for a balance of 1000 or more (c1, not c2);
    its `if` reads the tier as of the entry event (c1 was VIP then, and lost it during the hour's
    wait), and its message the balance at the send (100 more earned during the wait)."""
    definitions = own_journey(tmp_path, "big_balance", OWN_JOURNEY, OWN_TEMPLATES)
    earned_at = BEGIN + timedelta(hours=1)
    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await play(sim, "c1", "c2")
        set_tier(sqlite_store, "c1", "vip", BEGIN, at("2026-12-01 10:30+08:00"))
        for customer_id, points in (("c1", 1200), ("c2", 800)):
            source = f"order:o{customer_id[1]}"
            give_points(sqlite_store, customer_id, points, BEGIN, source)
            await sim.emit(
                engine_event(
                    "points.earned", customer_id, source, earned_at,
                    {"points": points, "balance": points, "reason": "order", "source": source},
                )
            )  # fmt: skip
        await sim.advance_to(earned_at + timedelta(minutes=30))
        with sqlite_store.transaction() as session:
            session.delete(session.get(MemberTierRow, "c1"))  # the card ended: no tier
        give_points(sqlite_store, "c1", 100, earned_at + timedelta(minutes=30), "review:o1")
        await sim.advance_to(earned_at + timedelta(hours=2))
    assert sent(sqlite_store, "big_balance") == [
        ("c1", "sms", "+8613800000001", earned_at + timedelta(hours=1), "【Journeys】尊敬的VIP，您的积分已达1300。")
    ]


GOLD_JOURNEY = """\
name: gold_thanks
category: transactional
entry: {event: order.paid, key: order, condition: "'gold' in customer.segments"}
steps: [wait: 1d, if: {condition: "'members' in customer.segments", then: [send: {id: thanks, template: gold_thanks}]}]
"""


async def test_customer_segments_are_those_of_the_entry_event(sqlite_store, tmp_path):
    """`customer.segments` in an entry condition, a step and a template: the segments the customer
    was in at the entry event. c1 (gold) pays and is then a member too (a purchase this year);
    c2, not gold, starts nothing; c1's trait removed during the wait changes nothing."""
    gold = {
        "segments/gold.yaml": "name: gold\nwhere: {trait: member_level, is: gold}\n",
        "templates/gold_thanks.yaml": "sms:\n  zh-CN: \"感谢您（{{ customer.segments|join('、') }}）的订单。\"\n",
    }
    definitions, paid_at = own_journey(tmp_path, "gold_thanks", GOLD_JOURNEY, gold), BEGIN + timedelta(hours=1)
    async with Simulation(definitions, sqlite_store, BEGIN) as sim:
        await sim.create_customer(customer("c1", traits={"member_level": "gold"}), BEGIN)
        await sim.create_customer(customer("c2", phone=PHONES["c2"], traits={"member_level": "silver"}), BEGIN)
        for customer_id in ("c1", "c2"):
            order = f"o{customer_id[1]}"
            await sim.emit(event("order.created", BEGIN, customer=customer_id, order=order, amount=500))
            await sim.emit(event("order.paid", paid_at, customer=customer_id, order=order, amount=500))
        await sim.emit(event("customer.updated", paid_at + timedelta(hours=1), traits={"member_level": None}))
        await sim.advance_to(paid_at + timedelta(days=2))
    assert sent(sqlite_store, "gold_thanks") == [
        sms_to("c1", paid_at + timedelta(days=1), "【Journeys】感谢您（gold、members）的订单。")
    ]


def test_validate_warns_of_a_field_the_loyalty_facts_do_not_have(tmp_path):
    journey = (
        "name: vip_only\ncategory: transactional\n"
        "entry: {event: points.earned, key: customer, condition: 'customer.tier.level == \"vip\"'}\n"
        "steps: [send: {template: points_expiring}]\n"
    )
    loaded, problems = check_definitions(shipped_definitions_with(tmp_path / "definitions", {"vip_only.yaml": journey}))
    assert problems == []
    assert [w for w in loaded.warnings if "vip_only" in w] == [
        f"{tmp_path / 'definitions' / 'vip_only.yaml'}:3: entry.condition: warning: customer.tier has no field 'level' "
        "(fields: name, title, until)"
    ]


def test_the_shipped_definitions_validate_clean():
    loaded, problems = check_definitions(PACKAGE_DIR)
    assert problems == [] and loaded.warnings == []
    assert {"tier_upgrade", "points_expiring", "member_card_expiry", "winback_sleeping"} <= set(loaded.journeys)
    assert "member_statement" in loaded.broadcasts
