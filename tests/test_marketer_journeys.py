"""A marketer's own journeys, end to end on the time-skipping server: a guard on a trait the
customer lacks takes its `else`; a `wait_for` branch reads the awaited event as `event` (the entry
event as `entry`); old events start nothing and late sends are skipped as `stale`; history
imported as backfill starts nothing; and a paid order is never asked to pay, whatever the clocks
of the systems that reported it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.simulate import Simulation
from store import queries
from store.tables import EventRow
from tests.helpers import at, customer, event, summary, write_definitions

TEMPLATES = {
    "points_vip": 'sms:\n  zh-CN: "尊敬的会员，您有 {{ customer.traits.points }} 积分"\n',
    "points_plain": 'sms:\n  zh-CN: "欢迎光临 {{ order.order_id }}"\n',
    "review_thanks": 'sms:\n  zh-CN: "感谢{{ event.data.rating }}星好评，订单{{ entry.order_id }}"\n',
    "review_sorry": 'sms:\n  zh-CN: "抱歉只有{{ event.data.rating }}星"\n',
    "review_nudge": 'sms:\n  zh-CN: "请评价订单{{ order.order_id }}"\n',
    "notice": 'sms:\n  zh-CN: "订单{{ order.order_id }}已处理"\n',
}

POINTS = """\
name: points_care
category: transactional
entry: {event: order.paid, key: order}
steps:
  - if:
      condition: "customer.traits.points > 1000"
      then:
        - send: {template: points_vip}
      else:
        - send: {template: points_plain}
"""

REVIEW_GIFT = """\
name: review_gift
title: 好评有礼
category: transactional
entry: {event: order.delivered, key: order}
steps:
  - wait_for:
      event: review.posted
      timeout: 7d
      on_event:
        - if:
            condition: "event.data.rating >= 4 and entry.type == 'order.delivered'"
            then:
              - send: {template: review_thanks}
            else:
              - send: {template: review_sorry}
      on_timeout:
        - send: {template: review_nudge}
"""

NOTICE = """\
name: instant_notice
category: transactional
entry: {event: order.shipped, key: order}
steps:
  - send: {template: notice}
"""


@pytest.fixture
def custom(tmp_path):
    return lambda *journeys: load_definitions(write_definitions(tmp_path / "definitions", TEMPLATES, journeys))


async def play(definitions, store, events, until, customers=None, begin=None, *, backfill=False):
    customers = customers if customers is not None else [customer()]
    begin = at(begin) if begin else min(e.occurred_at for e in events)
    async with Simulation(definitions, store, begin) as sim:
        for person in customers:
            await sim.create_customer(person, begin)
        for item in events:
            await sim.emit(item, backfill=backfill)
        await sim.advance_to(at(until))
        return sim.records()


def notes(store) -> dict[str, str | None]:
    with store.transaction() as session:
        return {row.event_id: row.note for row in session.scalars(select(EventRow))}


# ------------------------------------------------------------------ nothing is nothing


async def test_a_guard_on_a_missing_trait_takes_the_else_branch(custom, sqlite_store):
    records = await play(
        custom(POINTS),
        sqlite_store,
        [
            event("order.paid", "2026-02-02 12:00+08:00", customer="plain", order="o-plain"),
            event("order.paid", "2026-02-02 12:00+08:00", customer="rich", order="o-rich"),
        ],
        until="2026-02-03 00:00+08:00",
        customers=[customer("plain"), customer("rich", phone="+8613800000002", traits={"points": 1500})],
    )
    by_customer = {r["customer_id"]: (r["step"], r["status"], r["body"]) for r in records}
    assert by_customer == {
        "plain": ("points_plain", "sent", "【Journeys】欢迎光临 o-plain"),
        "rich": ("points_vip", "sent", "【Journeys】尊敬的会员，您有 1500 积分"),
    }


# ------------------------------------------------------------------ the awaited event


async def test_a_wait_for_branch_reads_the_awaited_event_as_event(custom, sqlite_store):
    records = await play(
        custom(REVIEW_GIFT),
        sqlite_store,
        [
            event("order.delivered", "2026-02-02 12:00+08:00", order="five"),
            event("order.delivered", "2026-02-02 12:00+08:00", order="two"),
            event("order.delivered", "2026-02-02 12:00+08:00", order="none"),
            event("review.posted", "2026-02-03 12:00+08:00", order="five", rating=5),
            event("review.posted", "2026-02-03 13:00+08:00", order="two", rating=2),
        ],
        until="2026-02-10 00:00+08:00",
    )
    assert [(r["order_id"], r["step"], r["at"], r["body"]) for r in records] == [
        ("five", "review_thanks", "2026-02-03T04:00:00Z", "【Journeys】感谢5星好评，订单five"),
        ("two", "review_sorry", "2026-02-03T05:00:00Z", "【Journeys】抱歉只有2星"),
        ("none", "review_nudge", "2026-02-09T04:00:00Z", "【Journeys】请评价订单none"),
    ]


# ------------------------------------------------------------------ old events don't send


def whole_order(order: str, day0: str, customer_id: str = "c1") -> list:
    """An order's life, created to confirmed, starting `day0` (Shanghai), as one batch."""
    start = at(day0)
    steps = ["order.created", "order.paid", "order.shipped", "order.delivered", "order.confirmed"]
    offsets = [timedelta(0), timedelta(minutes=5), timedelta(days=1), timedelta(days=3), timedelta(days=10)]
    return [
        event(kind, start + offset, customer=customer_id, order=order, amount=129, carrier="顺丰", tracking_no="SF9")
        for kind, offset in zip(steps, offsets, strict=True)
    ]


async def test_an_order_posted_whole_forty_days_late_sends_nothing(definitions, sqlite_store):
    old = whole_order("o-old", "2026-01-01 12:00+08:00")
    async with Simulation(definitions, sqlite_store, at("2026-01-01 00:00+08:00")) as sim:
        await sim.create_customer(customer(), at("2026-01-01 00:00+08:00"))
        await sim.advance_to(at("2026-02-10 12:00+08:00"))  # 40 days on, the order system replays it
        for item in old:
            await sim.emit(item)
        await sim.advance_to(at("2026-04-01 00:00+08:00"))  # past every journey's waits
        records = sim.records()
    assert records == []
    logged = notes(sqlite_store)
    shipped, delivered = old[2].event_id, old[3].event_id
    assert logged[old[0].event_id].startswith("stale: not started, too old for payment_reminder (")
    assert "shipped_notice (" in logged[shipped] and "max_age 12h" in logged[shipped]
    for journey in ("delivered_care", "review_request", "revisit_28d"):
        assert journey in logged[delivered]
    assert logged[old[4].event_id] is None  # confirming starts no journey: nothing to note


async def test_the_same_order_on_time_is_served(definitions, sqlite_store):
    """The control: the order above, reported as it happens, gets its notices."""
    records = await play(
        definitions, sqlite_store, whole_order("o-new", "2026-02-10 12:00+08:00"), until="2026-02-14 00:00+08:00"
    )
    assert [(r["journey"], r["status"]) for r in records] == [
        ("shipped_notice", "sent"),
        ("delivered_care", "sent"),
        ("review_request", "sent"),
    ]


async def test_a_send_past_its_max_lateness_is_skipped_as_stale(custom, sqlite_store):
    """No max_age on the entry: the instance starts, and the send, planned for the event's
    moment, goes only within its category's lateness (transactional: 30 minutes)."""
    async with Simulation(custom(NOTICE), sqlite_store, at("2026-02-02 12:00+08:00")) as sim:
        await sim.create_customer(customer(), at("2026-02-02 12:00+08:00"))
        await sim.advance_to(at("2026-02-02 13:00+08:00"))
        await sim.emit(event("order.shipped", "2026-02-02 12:40+08:00", order="twenty"))  # 20 minutes late
        await sim.emit(event("order.shipped", "2026-02-02 12:15+08:00", order="forty-five"))  # 45 minutes late
        await sim.advance_to(at("2026-02-03 00:00+08:00"))
        records = sim.records()
    assert {r["order_id"]: (r["status"], r["reason"]) for r in records} == {
        "twenty": ("sent", None),
        "forty-five": ("skipped", "stale"),
    }
    with sqlite_store.transaction() as session:
        [stale] = [row for row in queries.list_messages(session) if row.reason == "stale"]
    assert stale.error == "planned for 2026-02-02T04:15:00+00:00, 45m late; max_lateness 30m"


async def test_a_quiet_hours_deferral_is_not_lateness(definitions, sqlite_store):
    """An order created at 23:00 gets its reminder at 08:00, nine hours after its planned moment
    and well past the step's max_lateness of 2h: the policy moved it, so it is not late."""
    records = await play(
        definitions,
        sqlite_store,
        [event("order.created", "2026-02-01 23:00+08:00", order="night")],
        until="2026-02-02 12:00+08:00",
    )
    assert summary(records) == [("2026-02-02T00:00:00Z", "payment_reminder", "night", "sms", "sent", None)]


async def test_history_imported_as_backfill_starts_nothing_and_updates_the_customer(definitions, sqlite_store):
    events = [
        *whole_order("o-hist", "2026-02-10 12:00+08:00"),
        event("customer.updated", "2026-02-10 12:00+08:00", traits={"points": 300}),
    ]
    records = await play(definitions, sqlite_store, events, until="2026-03-20 00:00+08:00", backfill=True)
    assert records == []
    with sqlite_store.transaction() as session:
        assert queries.get_customer(session, "c1").traits == {"points": 300}
        [purchase] = queries.purchases_of(session, "c1", at("2026-03-01 00:00+08:00"))
        assert purchase.order_id == "o-hist"
    assert set(notes(sqlite_store).values()) - {None} == {"backfill: history, started nothing"}


# ------------------------------------------------------------------ paid is paid


@pytest.mark.parametrize("paid_first", [True, False], ids=["paid-logged-first", "created-logged-first"])
async def test_a_payment_stamped_before_its_order_is_never_asked_to_pay(definitions, sqlite_store, paid_first):
    """A flash-sale order: the payment system's clock runs 16 minutes behind the order system's,
    so order.paid says 09:44 and order.created 10:00. Neither reminder goes, in either arrival order."""
    created = event("order.created", "2026-02-01 10:00+08:00", order="flash", amount=59)
    paid = event("order.paid", "2026-02-01 09:44+08:00", order="flash", amount=59)
    async with Simulation(definitions, sqlite_store, at("2026-02-01 09:00+08:00")) as sim:
        await sim.create_customer(customer(), at("2026-02-01 09:00+08:00"))
        await sim.advance_to(at("2026-02-01 10:01+08:00"))  # both reach the engine a minute after the order
        for item in (paid, created) if paid_first else (created, paid):
            await sim.emit(item)
        await sim.advance_to(at("2026-02-05 00:00+08:00"))
        records = sim.records()
    assert [r for r in records if r["journey"] in ("payment_reminder", "pre_close_reminder")] == []


# ------------------------------------------------------------------ preview


async def test_preview_of_a_customer_keyed_step_without_an_order(sqlite_store, tmp_path, monkeypatch):
    """`journeys preview revisit_28d revisit --customer c1` printed a pydantic traceback: it now
    previews with an empty order when the customer has none, or their latest order, and says which."""
    from typer.testing import CliRunner

    from journeys.cli import app

    monkeypatch.setenv("DATABASE_URL", str(sqlite_store.engine.url))
    with sqlite_store.transaction() as session:
        queries.upsert_customer(session, customer(), at("2026-02-01 10:00+08:00"), "CN")
    runner = CliRunner()
    empty = runner.invoke(
        app, ["preview", "revisit_28d", "revisit", "--customer", "c1", "--definitions", str(PACKAGE_DIR)]
    )
    assert empty.exit_code == 0, empty.output
    assert "note: order: none (the customer has no order in the log): an empty order" in empty.output
    with sqlite_store.transaction() as session:
        queries.store_event(
            session, event("order.delivered", "2026-02-01 10:00+08:00", order="o7"), at("2026-02-01 10:00+08:00")
        )
    latest = runner.invoke(
        app, ["preview", "revisit_28d", "revisit", "--customer", "c1", "--definitions", str(PACKAGE_DIR)]
    )
    assert latest.exit_code == 0, latest.output
    assert "customer c1, order o7" in latest.output
    assert "note: order: the customer's latest, 'o7'" in latest.output
    other = runner.invoke(
        app,
        ["preview", "revisit_28d", "revisit", "--customer", "c9", "--order", "o7", "--definitions", str(PACKAGE_DIR)],
    )
    assert other.exit_code == 2
    assert other.output.strip() == "no customer 'c9' in the store (send a customer.created event first)"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_api_previews_a_customer_keyed_step_and_never_answers_500(backend, request, definitions):
    import httpx

    from triggers.api import create_app

    store = request.getfixturevalue(f"{backend}_store" if backend == "sqlite" else "pg_store")
    with store.transaction() as session:
        queries.upsert_customer(session, customer(), at("2026-02-01 10:00+08:00"), "CN")
        queries.upsert_customer(session, customer("c2"), at("2026-02-01 10:00+08:00"), "CN")
        queries.store_event(
            session,
            event("order.delivered", "2026-02-01 10:00+08:00", customer="c2", order="o-c2"),
            at("2026-02-01 10:00+08:00"),
        )
    app = create_app(store, definitions=definitions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        ok = await api.get("/journeys/revisit_28d/preview", params={"step": "revisit", "customer": "c1"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["order_id"] is None
        assert "order: none (the customer has no order in the log): an empty order" in ok.json()["notes"]
        theirs = await api.get("/journeys/revisit_28d/preview", params={"step": "revisit", "customer": "c2"})
        assert (theirs.status_code, theirs.json()["order_id"]) == (200, "o-c2")
        wrong = await api.get(
            "/journeys/revisit_28d/preview", params={"step": "revisit", "customer": "c1", "order": "o-c2"}
        )
        assert wrong.status_code == 422
        assert wrong.json()["detail"] == (
            "order 'o-c2' belongs to customer 'c2', not 'c1': pass one of 'c1''s orders (none in the log), or no order"
        )


async def test_backfill_through_the_api_is_kept_as_history(sqlite_store, definitions):
    import httpx

    from triggers.api import create_app

    app = create_app(sqlite_store, definitions=definitions)
    body = [item.model_dump(mode="json") for item in whole_order("o-import", "2025-11-01 12:00+08:00")]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://journeys") as api:
        answer = await api.post("/events?backfill=true", json=body)
        assert answer.status_code == 202, answer.text
        live = await api.post(
            "/events", json=event("order.created", "2026-02-01 10:00+08:00", order="o-live").model_dump(mode="json")
        )
        assert live.status_code == 202
        bad = await api.post("/events?backfill=maybe", json=body)
        assert bad.status_code == 422
    with sqlite_store.transaction() as session:
        flags = {row.order_id: row.backfill for row in session.scalars(select(EventRow))}
        pending = queries.pending_events_of(session, "c1")
    assert flags == {"o-import": True, "o-live": False}
    assert [(e.order_id, backfill) for e, backfill in pending][-1] == ("o-live", False)


async def test_a_payment_logged_but_not_yet_dispatched_stops_the_reminder(definitions, sqlite_store):
    """The dispatcher is behind: order.paid is in the log, not yet signalled, when the reminder is
    decided. The send activity sees it and skips, so the customer is not asked to pay."""
    async with Simulation(definitions, sqlite_store, at("2026-02-01 10:00+08:00")) as sim:
        await sim.create_customer(customer(), at("2026-02-01 10:00+08:00"))
        await sim.emit(event("order.created", "2026-02-01 10:00+08:00", order="lag", amount=59))
        await sim.advance_to(at("2026-02-01 10:10+08:00"))
        with sqlite_store.transaction() as session:  # logged, and left pending: never routed
            queries.store_event(
                session, event("order.paid", "2026-02-01 10:05+08:00", order="lag"), at("2026-02-01 10:10+08:00")
            )
        await sim.advance_to(at("2026-02-01 11:00+08:00"))
        records = sim.records()
    assert [(r["journey"], r["status"], r["reason"]) for r in records] == [("payment_reminder", "skipped", "exited")]


def test_preview_renders_a_template_that_reads_the_entry_event(tmp_path, sqlite_store):
    """Templates see `entry` in a running journey (revision 4); the preview gives it too."""
    from views.preview import preview

    templates = {"entry_note": 'sms:\n  zh-CN: "订单{{ entry.order_id }}已发货"\n'}
    definitions = load_definitions(
        write_definitions(tmp_path / "defs", templates, [NOTICE.replace("template: notice", "template: entry_note")])
    )
    with sqlite_store.transaction() as session:
        queries.upsert_customer(session, customer(), at("2026-02-01 10:00+08:00"), "CN")
        queries.store_event(
            session, event("order.shipped", "2026-02-01 10:00+08:00", order="o5"), at("2026-02-01 10:00+08:00")
        )
    found = preview(
        definitions,
        sqlite_store,
        journey="instant_notice",
        step="entry_note",
        customer_id="c1",
        order_id="o5",
        shop_name="Journeys",
        default_region="CN",
    )
    assert [(c.channel, c.body, c.error) for c in found.channels] == [("sms", "【Journeys】订单o5已发货", None)]
