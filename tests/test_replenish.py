"""Repurchase timing (回购周期): cycles learned from a generated order history with known intervals,
the fallback order of replenish_at case by case (the customer's own interval, the shop's learned
cycle on enough pairs, the catalogue's cycle_days, nothing), the daily relearning workflow on the
production worker, the shipped `replenish_reminder` journey end to end, and the effect report's
predicted moments against the actual repurchases; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import statistics
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from activities.product_cycles import CyclesPolicy
from core.orders import order_context
from core.products import MAX_ORDER_PRODUCTS, READING, Product, ProductFacts, replenish_at, replenish_item
from core.records import Event
from definitions.loader import DefinitionsError, load_definitions
from definitions.render import render_message
from definitions.schema import Template
from journeys.simulate import TASK_QUEUE, Simulation
from store import queries
from store.products import cycle_lines, order_facts, prediction_errors, relearn_cycles, save_products
from tests.helpers import at, customer, event
from workflows.product_cycles import ProductCyclesWorkflow

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
CREAM = Product(sku="cream-30", title="保湿面霜 30ml", category="skincare", price=129, cycle_days=30)
SERUM = Product(sku="serum-1", title="精华液", category="skincare", price=299)
VITAMIN = Product(sku="vit-90", title="复合维生素", category="supplement", price=199, cycle_days=90)
SOAP = Product(sku="soap-1", title="手工皂", category="bath", price=19)  # no cycle_days


def purchase(customer_id: str, order: str, paid_at: datetime, skus: list[str], **extra) -> list[Event]:
    """An order created an hour before its payment, with its items."""
    created = event(
        "order.created", paid_at - timedelta(hours=1), customer=customer_id, order=order,
        items=[{"sku": sku, "qty": 1} for sku in skus],
    )  # fmt: skip
    found = [created]
    if extra.get("paid", True):
        found.append(event("order.paid", paid_at, customer=customer_id, order=order))
    if extra.get("refunded"):
        found.append(event("order.refunded", paid_at + timedelta(days=2), customer=customer_id, order=order))
    return found


def log(store, events: list[Event]) -> None:
    with store.transaction() as session:
        queries.store_events(session, events, T)


# ------------------------------------------------------------------ learning


def generated_history(seed: int = 7) -> tuple[list[Event], dict[str, list[float]]]:
    """40 customers buying the cream every 24 to 36 days (3 to 6 times), 3 buying the vitamins
    twice 85 to 95 days apart, noise that is no repurchase (a second order the same day, a refunded
    order, an unpaid one), and soap bought once each. Returns the events and each SKU's intervals
    as generated."""
    rng = random.Random(seed)
    events: list[Event] = []
    gaps: dict[str, list[float]] = {"cream-30": [], "vit-90": []}
    for n in range(40):
        moment = T - timedelta(days=400) + timedelta(hours=rng.randrange(0, 500))
        for k in range(rng.randrange(3, 7)):
            if k:
                gap = rng.randrange(24 * 24, 36 * 24) / 24  # whole hours, as days
                gaps["cream-30"].append(gap)
                moment += timedelta(days=gap)
            events += purchase(f"c{n}", f"c{n}-o{k}", moment, ["cream-30", "soap-1"] if k == 0 else ["cream-30"])
        events += purchase(f"c{n}", f"c{n}-same-day", moment + timedelta(hours=3), ["cream-30"])  # one trip
        events += purchase(f"c{n}", f"c{n}-refunded", moment + timedelta(days=10), ["cream-30"], refunded=True)
        events += purchase(f"c{n}", f"c{n}-unpaid", moment + timedelta(days=12), ["cream-30"], paid=False)
    for n in range(3):
        first = T - timedelta(days=300 - n)
        gap = 85.0 + 5 * n
        gaps["vit-90"].append(gap)
        events += purchase(f"v{n}", f"v{n}-a", first, ["vit-90"]) + purchase(
            f"v{n}", f"v{n}-b", first + timedelta(days=gap), ["vit-90"]
        )
    return events, gaps


def test_learned_cycles_come_out_right_on_a_known_history(store):
    events, gaps = generated_history()
    log(store, events)
    with store.transaction() as session:
        save_products(session, [CREAM, VITAMIN, SOAP], T)
        learned = {cycle.sku: cycle for cycle in relearn_cycles(session, T, min_pairs=5)}
    assert set(learned) == {"cream-30", "vit-90"}  # soap was never bought again
    cream, vitamin = learned["cream-30"], learned["vit-90"]
    assert cream.pairs == len(gaps["cream-30"]) and cream.customers == 40
    assert cream.median_days == pytest.approx(statistics.median(gaps["cream-30"]), abs=0.01)
    assert 24 <= cream.median_days <= 36
    assert (vitamin.pairs, vitamin.customers, vitamin.median_days) == (3, 3, 90.0)
    with store.transaction() as session:
        lines = {line.sku: line for line in cycle_lines(session)}
    assert lines["cream-30"].usable and not lines["vit-90"].usable  # 3 pairs are under 5
    assert lines["soap-1"].learned_days is None and lines["soap-1"].pairs == 0
    with store.transaction() as session:  # a second run replaces the figures, it does not add to them
        relearn_cycles(session, T, min_pairs=2)
        again = {line.sku: line for line in cycle_lines(session)}
    assert again["cream-30"].pairs == cream.pairs and again["vit-90"].usable


# ------------------------------------------------------------------ the fallback order

NOW_ORDER = "now"


def facts_for(store, customer_id: str, skus: list[str]):
    """What the router gives an instance entering on the payment of `customer_id`'s order now."""
    events = purchase(customer_id, f"{customer_id}-{NOW_ORDER}", T, skus)
    log(store, events)
    with store.transaction() as session:
        facts = order_facts(session, customer_id, events, T)
    order = order_context(f"{customer_id}-{NOW_ORDER}", events, facts)
    return facts, order


def test_the_fallback_order_case_by_case(store):
    with store.transaction() as session:
        save_products(session, [CREAM, SERUM, VITAMIN, SOAP], T)
    # The shop: 6 pairs of the cream at 40 days (usable on 5), 2 of the vitamins at 60 (not).
    for n in range(6):
        log(store, purchase(f"s{n}", f"s{n}-a", T - timedelta(days=200), ["cream-30"]))
        log(store, purchase(f"s{n}", f"s{n}-b", T - timedelta(days=160), ["cream-30"]))
    for n in range(2):
        log(store, purchase(f"w{n}", f"w{n}-a", T - timedelta(days=200), ["vit-90"]))
        log(store, purchase(f"w{n}", f"w{n}-b", T - timedelta(days=140), ["vit-90"]))
    with store.transaction() as session:
        relearn_cycles(session, T, min_pairs=5)

    # 1. The customer's own interval of the SKU: two repeats before (20 and 22 days), this the third.
    log(store, purchase("own", "own-1", T - timedelta(days=42), ["cream-30"]))
    log(store, purchase("own", "own-2", T - timedelta(days=22), ["cream-30"]))
    facts, order = facts_for(store, "own", ["cream-30"])
    assert order["items"][0]["replenish"] == {"days": 21.0, "source": "customer", "samples": 2}
    assert replenish_at(order) == T + timedelta(days=21)

    # 1b. ... of the category, when the SKU itself is new to them: serum twice 25 days apart.
    log(store, purchase("cat", "cat-1", T - timedelta(days=50), ["serum-1"]))
    log(store, purchase("cat", "cat-2", T - timedelta(days=25), ["serum-1"]))
    _, order = facts_for(store, "cat", ["cream-30"])
    assert order["items"][0]["replenish"] == {"days": 25.0, "source": "customer", "samples": 2}

    # 2. One repeat is not enough of their own: the shop's learned 40 days (6 pairs).
    log(store, purchase("once", "once-1", T - timedelta(days=10), ["cream-30"]))
    facts, order = facts_for(store, "once", ["cream-30"])
    assert facts["cream-30"].repurchase.own_sku_repeats == 1
    assert order["items"][0]["replenish"] == {"days": 40.0, "source": "shop", "samples": 6}

    # 3. The shop's figure on too few pairs (2 < 5): the catalogue's cycle_days.
    _, order = facts_for(store, "new1", ["vit-90"])
    assert order["items"][0]["replenish"] == {"days": 90.0, "source": "catalogue", "samples": 0}
    assert order["categories"] == ["supplement"]

    # 4. Nothing: no cycle anywhere, or a SKU the catalogue lacks. replenish_at gives nothing.
    _, order = facts_for(store, "new2", ["soap-1", "mystery"])
    assert "replenish" not in order["items"][0] and "product" not in order["items"][1]
    assert replenish_at(order) is None

    # Several items: the first to run out.
    _, order = facts_for(store, "new3", ["vit-90", "cream-30", "soap-1"])
    assert replenish_at(order) == T + timedelta(days=40)
    assert order["categories"] == ["supplement", "skincare", "bath"]


# ------------------------------------------------------------------ the daily workflow


async def test_the_daily_workflow_relearns_on_the_production_worker(sqlite_store, definitions):
    events, gaps = generated_history(seed=3)
    log(sqlite_store, events)
    async with Simulation(definitions, sqlite_store, T) as sim:
        report = await sim.env.client.execute_workflow(
            ProductCyclesWorkflow.run, CyclesPolicy(min_pairs=4), id="cycles-test", task_queue=TASK_QUEUE
        )
    assert (report.skus, report.usable) == (2, 1)  # the cream on many pairs; the vitamins on 3 < 4
    assert report.pairs == len(gaps["cream-30"]) + 3
    with sqlite_store.transaction() as session:
        lines = {line.sku: line for line in cycle_lines(session)}
    assert lines["cream-30"].min_pairs == 4 and lines["cream-30"].usable


# ------------------------------------------------------------------ the shipped journey

BEGIN = at("2026-03-02 10:00+08:00")


async def reminders(store, definitions, products: list[Product], played: list[Event], days: int) -> list[dict]:
    """The shipped journey's sends over `days` of simulated time, its customers c1, c2, ... as
    the played events name them."""
    with store.transaction() as session:
        save_products(session, products, BEGIN)
    async with Simulation(definitions, store, BEGIN) as sim:
        for n, customer_id in enumerate(dict.fromkeys(e.customer_id for e in played), start=1):
            await sim.create_customer(customer(customer_id, phone=f"+86138000000{n:02}"), BEGIN)
        for item in sorted(played, key=lambda e: e.occurred_at):
            await sim.emit(item)
        await sim.advance_to(BEGIN + timedelta(days=days))
        return [r for r in sim.records() if r["journey"] == "replenish_reminder"]


async def test_replenish_reminder_reminds_three_days_before_the_cream_runs_out(store, definitions):
    played = [
        *purchase("c1", "o1", BEGIN + timedelta(hours=2), ["cream-30"]),
        *purchase("c2", "o2", BEGIN + timedelta(hours=2), ["soap-1"]),  # no cycle: no reminder
        # c3 orders again after 10 days: the new order ends the first countdown, its payment
        # starts the next (one repeat of her own is not enough: the catalogue's 30 days again).
        *purchase("c3", "o3", BEGIN + timedelta(hours=2), ["cream-30"]),
        *purchase("c3", "o4", BEGIN + timedelta(days=10, hours=2), ["cream-30"]),
    ]
    records = await reminders(store, definitions, [CREAM, SOAP], played, 50)
    assert [(r["customer_id"], r["order_id"], r["status"]) for r in records] == [
        ("c1", "o1", "sent"),
        ("c3", "o4", "sent"),
    ]
    assert datetime.fromisoformat(records[0]["at"]) == BEGIN + timedelta(hours=2) + timedelta(days=27)
    assert datetime.fromisoformat(records[1]["at"]) == BEGIN + timedelta(days=10, hours=2) + timedelta(days=27)
    assert "保湿面霜 30ml快用完了吧" in records[0]["body"]


# ------------------------------------------------------------------ predicted against actual


def test_the_effect_report_compares_predicted_moments_with_repurchases(store):
    """The cream's catalogue says 30 days; customers come back after 33, 36 and 30 (their second
    purchase, predicted from the catalogue), then, with two repeats of their own, as they did."""
    with store.transaction() as session:
        save_products(session, [CREAM], T)
    start = T - timedelta(days=200)
    for n, gap in enumerate([33, 36, 30]):
        log(store, purchase(f"c{n}", f"c{n}-1", start, ["cream-30"]))
        log(store, purchase(f"c{n}", f"c{n}-2", start + timedelta(days=gap), ["cream-30"]))
    # One customer with her own rhythm: every 20 days (the catalogue's 30 predicted twice, too
    # late by 10), then from her own two repeats 20 (right), and 26 (6 later than predicted).
    for k, day in enumerate([0, 20, 40, 60, 86]):
        log(store, purchase("own", f"own-{k}", start + timedelta(days=day), ["cream-30"]))
    with store.transaction() as session:
        [line] = prediction_errors(session, start, T)
    assert (line.sku, line.repurchases, line.predicted) == ("cream-30", 7, 7)
    actual_less_predicted = [3, 6, 0, -10, -10, 0, 6]
    assert line.sources == {"catalogue": 5, "customer": 2}
    assert line.median_error_days == statistics.median(abs(e) for e in actual_less_predicted)
    assert line.median_bias_days == statistics.median(actual_less_predicted)
    assert line.early == 2
    with store.transaction() as session:
        assert prediction_errors(session, T, T + timedelta(days=30)) == []  # none in that period


def test_the_daily_schedule_follows_the_setting(tmp_path):
    """Against a dev server: every worker's start registers the schedule; the same setting again
    leaves it as it is, another minimum of pairs updates it; it runs once a day."""
    from activities.product_cycles import product_cycles_schedule_id
    from core.config import Settings
    from core.temporal import connect
    from journeys.product_cycles import EVERY, ensure_product_cycles_schedule
    from tests.stack import Stack

    stack = Stack(tmp_path, "sqlite://")
    stack.start_server()
    try:

        async def scenario() -> list:
            settings = Settings.from_env(stack.env, temporal_address=stack.address, repurchase_min_pairs=5)
            client = await connect(settings)
            seen = [await ensure_product_cycles_schedule(client, settings)]
            handle = client.get_schedule_handle(product_cycles_schedule_id("journeys"))
            first = await handle.describe()
            await ensure_product_cycles_schedule(client, settings)  # a restart
            seen.append((await handle.describe()).info.last_updated_at == first.info.last_updated_at)
            await ensure_product_cycles_schedule(client, settings.model_copy(update={"repurchase_min_pairs": 8}))
            described = await handle.describe()
            seen.append(await described.data_converter.decode(list(described.schedule.action.args)))
            seen.append([interval.every for interval in described.schedule.spec.intervals])
            return seen

        created, untouched, decoded, every = asyncio.run(scenario())
    finally:
        stack.stop()
    assert created == (
        "repurchase cycles relearned daily at 04:00 UTC on at least 5 pairs (schedule journeys-product-cycles:journeys)"
    )
    assert untouched
    assert decoded == [{"min_pairs": 8}]
    assert every == [EVERY]


# ------------------------------------------------------------------ review fixes (issue 26, second review)

PHONE_CASE = Product(sku="case-1", title="手机壳", category="accessory", price=39)
CASE_WITH_CYCLE = PHONE_CASE.model_copy(update={"cycle_days": 365})


def catalogue_order(items: list[dict], products: list[Product], reading: int = READING) -> dict:
    """The order context as the router builds it now (facts of READING), or as an older input has it."""
    paid = event("order.paid", T, order="o1")
    created = event("order.created", T - timedelta(minutes=5), order="o1", items=items)
    facts = {p.sku: ProductFacts(product=p, reading=reading) for p in products}
    return order_context("o1", [created, paid], facts)


def test_the_reminder_names_the_product_that_runs_out_first():
    """[phone case (a year), cream-30]: the reminder is timed by the cream, and names the cream."""
    order = catalogue_order([{"sku": "case-1"}, {"sku": "cream-30"}], [CASE_WITH_CYCLE, CREAM])
    assert replenish_at(order) == T + timedelta(days=30)
    assert replenish_item(order)["product"]["title"] == order["replenish_item"]["product"]["title"] == "保湿面霜 30ml"
    template = Template.model_validate(
        yaml.safe_load((DEFINITIONS / "templates" / "replenish_reminder.yaml").read_text(encoding="utf-8"))
    )
    for channel in ("sms", "email"):
        message = render_message(
            template, name="replenish_reminder", channel=channel, locale="zh-CN",
            context={"order": order, "customer": {"name": "王芳"}}, shop_name="小店", marketing=True,
        )  # fmt: skip
        assert "您上次购买的保湿面霜 30ml快用完了吧" in message.body and "手机壳" not in message.body
    nothing = render_message(
        template, name="replenish_reminder", channel="sms", locale="zh-CN", context={"order": {}, "customer": {}},
        shop_name="小店", marketing=True,
    )  # fmt: skip
    assert "您上次购买的宝贝快用完了吧" in nothing.body


@pytest.mark.parametrize(("qty", "days"), [(3, 90), ("3", 90), (1, 30), (None, 30), (0, 30), (-2, 30), (True, 30)])
def test_three_creams_last_three_times_as_long(qty, days):
    item = {"sku": "cream-30"} | ({} if qty is None else {"qty": qty})
    assert replenish_at(catalogue_order([item], [CREAM])) == T + timedelta(days=days)
    assert replenish_at(catalogue_order([{"sku": "cream-30", "quantity": qty}], [CREAM])) == T + timedelta(days=days)
    # an instance started before (its input's facts of reading 1) keeps timing as it did: its history replays
    assert replenish_at(catalogue_order([item], [CREAM], reading=1)) == T + timedelta(days=30)


@pytest.mark.parametrize("sent", [True, -40, 1e9, "30", 5])
def test_what_the_order_system_says_of_products_is_not_believed(sent):
    """An item's own `replenish`/`product` is dropped, known SKU or not: only the catalogue times it."""
    unknown = catalogue_order([{"sku": "x-9", "replenish": {"days": sent}, "product": {"title": "假"}}], [CREAM])
    assert replenish_at(unknown) is None and "product" not in unknown["items"][0]
    no_cycle = catalogue_order([{"sku": "case-1", "replenish": {"days": sent}}], [PHONE_CASE])
    assert replenish_at(no_cycle) is None
    assert no_cycle["items"][0]["product"]["title"] == "手机壳"  # the catalogue's, not the sender's


@pytest.mark.parametrize(("days", "runs_out"), [(True, None), (-40, None), (0.5, None), (float("nan"), None),
                                                (float("inf"), None), (1e9, None), ("30", None), (5, 5)])  # fmt: skip
def test_a_cycle_is_read_only_when_it_is_a_number_of_days(days, runs_out):
    """A context built by hand (an older instance's order) never fails, nor goes back in time."""
    order = {"paid_at": "2026-01-01T00:00:00Z", "items": [{"replenish": {"days": days}}]}
    assert replenish_at(order) == (None if runs_out is None else datetime(2026, 1, 1 + runs_out, tzinfo=UTC))


def test_a_full_width_sku_joins_its_product_everywhere(store):
    """ＳＫ００１ in the CSV, the API, an order's items and a bought: segment is one SKU, SK001."""
    product = Product(sku="ＳＫ００１", title="面霜", category="skincare", cycle_days=30)
    assert product.sku == "SK001"
    order = catalogue_order([{"sku": " ＳＫ００１ "}], [product])
    assert order["items"][0]["product"]["title"] == "面霜" and replenish_at(order) == T + timedelta(days=30)


def test_the_effect_report_predicts_as_replenish_at_does(store):
    """Serums on days 0 and 20, a cream on day 40 (her first), the next cream on day 85: at day 40
    replenish_at times the cream by her own skincare rhythm (20 days: two repeats of the
    category), not the catalogue's 30, and the report's prediction is that same 20 days."""
    with store.transaction() as session:
        save_products(session, [CREAM, SERUM], T)
    start = T - timedelta(days=100)
    log(store, purchase("c1", "o1", start, ["serum-1"]))
    log(store, purchase("c1", "o2", start + timedelta(days=20), ["serum-1"]))
    cream = purchase("c1", "o3", start + timedelta(days=40), ["cream-30"])
    log(store, cream)
    log(store, purchase("c1", "o4", start + timedelta(days=85), ["cream-30"]))
    with store.transaction() as session:
        facts = order_facts(session, "c1", cream, start + timedelta(days=40))
        lines = {line.sku: line for line in prediction_errors(session, start, T)}
    assert replenish_at(catalogue_order([{"sku": "cream-30"}], [CREAM])) == T + timedelta(days=30)  # catalogue alone
    timed = order_context("o3", cream, facts)
    assert timed["items"][0]["replenish"] == {"days": 20.0, "source": "customer", "samples": 2}
    assert (lines["cream-30"].sources, lines["cream-30"].median_bias_days) == ({"customer": 1}, 25.0)  # 45 - 20


def test_validate_refuses_restart_with_the_catalogues_facts(tmp_path):
    """A restarted instance keeps the first order's products: `restart` with replenish_at is refused,
    naming the fix; the same journey with after_exit loads."""
    journey = textwrap.dedent(
        """\
        name: restart_replenish
        category: marketing
        entry: {event: order.paid, key: customer, reentry: REENTRY, condition: "replenish_at(order)"}
        steps:
          - wait_until: {at: "replenish_at(order)", offset: -3d}
          - send: {id: r, channel: sms, template: replenish_reminder}
        """
    )
    folder = tmp_path / "definitions"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "replenish_reminder.yaml").write_text(
        (DEFINITIONS / "templates" / "replenish_reminder.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (folder / "restart_replenish.yaml").write_text(journey.replace("REENTRY", "restart"))
    with pytest.raises(DefinitionsError, match=r"entry\.reentry.*restart with the catalogue's facts"):
        load_definitions(folder)
    (folder / "restart_replenish.yaml").write_text(journey.replace("REENTRY", "after_exit"))
    assert "restart_replenish" in load_definitions(folder).journeys
    prose = journey.replace("REENTRY", "restart").replace('"replenish_at(order)"', '"order.paid_at"')
    prose = prose.replace("category: marketing", "category: marketing\ndescription: no order.product read here")
    (folder / "restart_replenish.yaml").write_text(prose)
    assert "restart_replenish" in load_definitions(folder).journeys  # restart without the facts is fine


async def test_a_refunded_order_gets_no_running_low_reminder(sqlite_store, definitions):
    played = [
        *purchase("c1", "o1", BEGIN + timedelta(hours=2), ["cream-30"], refunded=True),
        *purchase("c2", "o2", BEGIN + timedelta(hours=2), ["cream-30"]),
    ]
    records = await reminders(sqlite_store, definitions, [CREAM], played, 40)
    assert [(r["customer_id"], r["status"]) for r in records] == [("c2", "sent")]


def test_an_input_written_by_another_version_still_decodes():
    """ProductFacts travel in instances' inputs: a field added later, or a value a later rule
    refuses, must not make a worker fail to decode a running instance's input."""
    facts = ProductFacts.model_validate(
        {
            "product": {"sku": "ＳＫ 1", "title": "面霜\u0007", "category": "c", "cycle_days": 99999, "colour": "red"},
            "repurchase": {"own_sku_days": 20.0, "own_sku_repeats": 2, "seasonal": True},
            "forecast": {"days": 3},
        }
    )
    assert (facts.product.sku, facts.product.cycle_days, facts.reading) == ("ＳＫ 1", 99999, 1)
    assert facts.repurchase.own_sku_days == 20.0


def test_an_input_carries_the_facts_of_at_most_so_many_skus(sqlite_store):
    many = [Product(sku=f"sku-{n:03}", title=f"商品{n}", category="c", cycle_days=30) for n in range(150)]
    with sqlite_store.transaction() as session:
        save_products(session, many, T)
        order = purchase("c1", "o1", T, [p.sku for p in many])
        facts = order_facts(session, "c1", order, T)
    assert list(facts) == [f"sku-{n:03}" for n in range(MAX_ORDER_PRODUCTS)]
