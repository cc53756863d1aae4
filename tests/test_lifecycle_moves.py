"""Lifecycle moves (activities/lifecycle.py) as a CRM team would see them in the event log, on both
databases, with injected times: a purchase or a refund posted to the API moves the customer at
once (prospect -> new_once -> new_repeat, and back on a refund), the daily run writes churned,
sleeping and silent as the last purchase ages, each lifecycle.changed exactly once however often
the events are posted or the run is repeated; a shop's existing customers get their stage
silently on the first daily run; erasure removes the loyalty rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jsonschema
import pytest
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities import lifecycle
from activities.loyalty import DailyReport, DailyRequest, LoyaltyActivities
from core.loyalty import ENGINE_EVENT_SCHEMAS
from definitions.loader import PACKAGE_DIR, Definitions, load_definitions
from store import queries
from store.lifecycle import direction
from store.tables import EventRow, LifecycleStageRow
from tests.helpers import event
from triggers.api import create_app
from triggers.api import events as events_api

T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Clock:
    """The API's clock, set by the test."""

    def __init__(self, now: datetime):
        self.now = now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(T)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return clock.now

    monkeypatch.setattr(events_api, "datetime", Frozen)
    return clock


def body(event_id: str, type: str, when: datetime, order: str, customer: str = "c1", **data) -> dict:
    return {"event_id": event_id, "type": type, "occurred_at": when.isoformat(), "customer_id": customer,
            "order_id": order, "data": data}  # fmt: skip


def purchase(order: str, when: datetime, customer: str = "c1") -> list[dict]:
    return [
        body(f"{order}-created", "order.created", when - timedelta(hours=1), order, customer, amount=99),
        body(f"{order}-paid", "order.paid", when, order, customer, amount=99),
    ]


async def post(
    store, clock: Clock, now: datetime, batch: list[dict], times: int = 2, definitions: Definitions | None = None
) -> None:
    """Post the batch at `now`, `times` times (a retrying order system), a second apart."""
    app = create_app(store, definitions=definitions or Definitions())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        for n in range(times):
            clock.now = now + n * timedelta(seconds=1)
            answer = await api.post("/events", json=batch)
            assert answer.status_code == (202 if n == 0 else 200), answer.text  # 200: all duplicates


def moves(store, customer: str | None = None) -> list[tuple]:
    """The lifecycle.changed events logged: (customer, from, to, direction, when), oldest first."""
    with store.transaction() as session:
        query = select(EventRow).where(EventRow.type == "lifecycle.changed")
        query = query.order_by(EventRow.occurred_at, EventRow.customer_id)
        rows = [row for row in session.scalars(query) if customer is None or row.customer_id == customer]
        for row in rows:  # what journeys may read of them: the declared data
            jsonschema.validate(row.data, ENGINE_EVENT_SCHEMAS["lifecycle.changed"][1])
        return [(r.customer_id, r.data["from"], r.data["to"], r.data["direction"], r.occurred_at) for r in rows]


def stored(store) -> dict[str, tuple[str, datetime]]:
    with store.transaction() as session:
        return {row.customer_id: (row.stage, row.since) for row in session.scalars(select(LifecycleStageRow))}


def history(store, *events) -> None:
    """Events written as an import writes history: no loyalty programme applied."""
    with store.transaction() as session:
        for item in events:
            queries.store_event(session, item, item.occurred_at, backfill=True)


def paid(order: str, when: datetime, customer: str) -> list:
    return [
        event("order.created", when - timedelta(hours=1), customer=customer, order=order, amount=50),
        event("order.paid", when, customer=customer, order=order),
    ]


def run_daily(store, at: datetime) -> list[tuple]:
    report = DailyReport(at=at)
    return [(e.customer_id, e.data["from"], e.data["to"]) for e in lifecycle.daily(store, Definitions(), at, report)]


def test_direction_of_each_kind_of_move():
    assert direction("prospect", "new_once") == "forward"
    assert direction("new_once", "new_repeat") == "forward"
    assert direction("sleeping", "old_once") == "forward"  # a lapsed customer buys again
    assert direction("new_repeat", "new_once") == "backward"  # a refund takes one back
    assert direction("new_once", "churned") == "backward"
    assert direction("churned", "sleeping") == "backward"
    assert direction("silent", "prospect") == "backward"  # every purchase refunded
    assert direction("new_repeat", "old_repeat") == "sideways"  # the first purchase aged, buying as often
    assert direction("new_once", "old_once") == "sideways"


async def test_purchases_and_a_refund_move_the_customer_once_each(store, clock):
    await post(store, clock, T, purchase("o1", T - timedelta(minutes=5)))
    assert moves(store) == [("c1", "prospect", "new_once", "forward", T)]
    assert stored(store) == {"c1": ("new_once", T)}

    # A second payment event of the same order (another id): the first payment counts, nothing moves.
    again = [body("o1-paid-again", "order.paid", T + DAY, "o1", amount=99)]
    await post(store, clock, T + DAY, again)
    assert len(moves(store)) == 1

    second = T + 10 * DAY
    await post(store, clock, second, purchase("o2", second - timedelta(minutes=5)))
    refund = T + 20 * DAY
    await post(store, clock, refund, [body("o2-refund", "order.refunded", refund - timedelta(minutes=1), "o2")])
    assert moves(store) == [
        ("c1", "prospect", "new_once", "forward", T),
        ("c1", "new_once", "new_repeat", "forward", second),
        ("c1", "new_repeat", "new_once", "backward", refund),
    ]
    assert stored(store) == {"c1": ("new_once", refund)}
    with store.transaction() as session:  # no journey here listens: logged as dispatched, saying so
        logged = session.scalars(select(EventRow).where(EventRow.type == "lifecycle.changed")).all()
        assert {(row.dispatched_at, row.note) for row in logged} == {
            (at, "no journey starts on, waits for or exits on it") for at in (T, second, refund)
        }
        assert [row.event_id for row in logged if row.occurred_at == second] == [
            f"lifecycle.changed:c1:new_once>new_repeat@{second.isoformat()}"
        ]


async def test_a_move_some_journey_starts_on_waits_for_the_dispatcher(store, clock):
    """With the shipped journeys, winback_sleeping starts on lifecycle.changed: the move is pending,
    for the dispatcher to route like any event; points.earned, which no shipped journey uses, is
    logged as dispatched."""
    await post(store, clock, T, purchase("o1", T - timedelta(minutes=5)), definitions=load_definitions(PACKAGE_DIR))
    with store.transaction() as session:
        logged = {
            row.type: (row.dispatched_at, row.note)
            for row in session.scalars(
                select(EventRow).where(EventRow.type.in_(["lifecycle.changed", "points.earned"]))
            )
        }
    assert logged == {
        "lifecycle.changed": (None, None),
        "points.earned": (T, "no journey starts on, waits for or exits on it"),
    }


async def test_an_order_created_unpaid_moves_nobody(store, clock):
    await post(store, clock, T, purchase("o1", T)[:1], times=1)
    assert moves(store) == [] and stored(store) == {}


async def test_a_customer_without_a_row_is_compared_with_the_stage_before_the_purchase(store, clock):
    """History imported before the engine ran (no rows): a purchase moves each customer from the
    stage their history gave them, not from prospect."""
    history(store, *paid("h1", T - 200 * DAY, "sleeper"), *paid("h2", T - 30 * DAY, "recent"))
    batch = purchase("s1", T - timedelta(minutes=5), "sleeper") + purchase("r1", T - timedelta(minutes=5), "recent")
    await post(store, clock, T, batch)
    assert sorted(moves(store)) == [
        ("recent", "new_once", "new_repeat", "forward", T),
        ("sleeper", "sleeping", "old_once", "forward", T),
    ]


async def test_the_daily_run_writes_churned_sleeping_and_silent_once_each(store, clock):
    last = T - timedelta(minutes=5)
    await post(store, clock, T, purchase("o1", last), times=1)
    assert run_daily(store, last + 90 * DAY) == []  # exactly 90 days after: still within
    for days, stage in ((91, "churned"), (181, "sleeping"), (366, "silent")):
        moment = last + days * DAY
        before = stored(store)["c1"][0]
        assert run_daily(store, moment) == [("c1", before, stage)]
        assert run_daily(store, moment) == []  # run twice at the same moment (a retry): nothing twice
        assert stored(store) == {"c1": (stage, moment)}
    assert [(m[1], m[2], m[3]) for m in moves(store)] == [
        ("prospect", "new_once", "forward"),
        ("new_once", "churned", "backward"),
        ("churned", "sleeping", "backward"),
        ("sleeping", "silent", "backward"),
    ]
    assert run_daily(store, last + 800 * DAY) == []


async def test_a_late_daily_run_does_not_undo_a_purchase_noted_after_its_moment(store, clock):
    await post(store, clock, T, purchase("o1", T - timedelta(minutes=5)), times=1)
    assert run_daily(store, T - DAY) == []  # the run of the day before, delayed until after the purchase
    assert stored(store) == {"c1": ("new_once", T)}
    assert len(moves(store)) == 1


def test_the_first_daily_run_writes_existing_customers_stages_silently(store):
    """A shop with history and no rows: the first run writes each stage as it is, no move from
    prospect; the next runs write the moves."""
    history(
        store,
        *paid("a1", T - 400 * DAY, "old"),
        *paid("b1", T - 10 * DAY, "new"),
        *paid("c1", T - 50 * DAY, "pair"),
        *paid("c2", T - 20 * DAY, "pair"),
        event("order.created", T - DAY, customer="unpaid", order="u1", amount=5),
        event("customer.created", T - DAY, customer="browser", name="李雷"),
    )
    assert run_daily(store, T) == []
    assert {c: s for c, (s, _) in stored(store).items()} == {"old": "silent", "new": "new_once", "pair": "new_repeat"}
    assert moves(store) == []
    assert run_daily(store, T) == []
    # 60 days on, pair's first purchase has left the 90 days and the second not: one purchase within.
    assert run_daily(store, T + 60 * DAY) == [("pair", "new_repeat", "old_once")]
    # 81 days on, new's only purchase is 91 days old, pair's last 101.
    assert run_daily(store, T + 81 * DAY) == [("new", "new_once", "churned"), ("pair", "old_once", "churned")]
    assert [(m[0], m[3]) for m in moves(store)] == [("pair", "backward"), ("new", "backward"), ("pair", "backward")]


def test_the_daily_activity_counts_the_moves(store, tmp_path):
    history(store, *paid("o1", T - 10 * DAY, "c1"), *paid("o2", T - 400 * DAY, "c2"))
    run = LoyaltyActivities(store, PACKAGE_DIR).run_loyalty_daily
    assert ActivityEnvironment().run(run, DailyRequest(at=T)).events.get("lifecycle.changed", 0) == 0
    report = ActivityEnvironment().run(run, DailyRequest(at=T + 85 * DAY))
    assert report.events["lifecycle.changed"] == 1  # c1 churned; c2 was silent already
    assert moves(store, "c1")[0][1:4] == ("new_once", "churned", "backward")


def test_the_daily_run_reads_every_customer_across_batches(store, monkeypatch):
    """Batches of two: customers with a paid order, and one whose only order was refunded (known
    by their stored stage alone), each evaluated once."""
    monkeypatch.setattr(lifecycle, "BATCH", 2)
    customers = [f"x{n}" for n in range(5)]
    history(store, *[item for c in customers for item in paid(f"o-{c}", T - 10 * DAY, c)])
    assert run_daily(store, T) == []
    assert sorted(stored(store)) == customers
    history(store, event("order.refunded", T + DAY, customer="x3", order="o-x3"))
    assert run_daily(store, T + 2 * DAY) == [("x3", "new_once", "prospect")]
    assert run_daily(store, T + 85 * DAY) == [(c, "new_once", "churned") for c in customers if c != "x3"]
    assert stored(store)["x3"] == ("prospect", T + 2 * DAY)


def test_a_run_cut_short_and_retried_writes_each_move_once(store, monkeypatch):
    """The activity fails after its first batch committed (a worker lost); the retry at the same
    moment writes only what the first attempt had not."""
    monkeypatch.setattr(lifecycle, "BATCH", 2)
    customers = [f"y{n}" for n in range(5)]
    history(store, *[item for c in customers for item in paid(f"o-{c}", T - 10 * DAY, c)])
    run_daily(store, T)
    later = T + 85 * DAY
    attempt = lifecycle.daily(store, Definitions(), later, DailyReport(at=later))
    first = next(attempt)
    attempt.close()  # nothing more of that attempt
    retried = run_daily(store, later)
    assert first.customer_id == "y0" and [c for c, _, _ in retried] == customers[2:]
    assert sorted(m[0] for m in moves(store)) == customers
