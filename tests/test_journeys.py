"""Every shipped journey end to end: the real workflows and activities on Temporal's time-skipping
test server, events played at their own times, and the message records checked (what went to
whom, when, through which channel, or why not). Times are Shanghai (+08:00) unless they say."""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import EventType

from journeys.simulate import Simulation
from tests.helpers import at, customer, event, summary
from workflows.journey import JourneyWorkflow


async def play(definitions, store, events, until, customers=None, begin=None):
    customers = customers if customers is not None else [customer()]
    begin = at(begin) if begin else min(e.occurred_at for e in events)
    async with Simulation(definitions, store, begin) as sim:
        for person in customers:
            await sim.create_customer(person, begin)
        for item in events:  # in the order given: out-of-order arrival is part of some tests
            await sim.emit(item)
        await sim.advance_to(at(until))
        return sim.records()


def only(records, journey):
    return [r for r in summary(records) if r[1] == journey]


# ------------------------------------------------------------------ payment reminders


async def test_paid_before_the_first_reminder_sends_nothing(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.created", "2026-02-01 10:00+08:00", order="o1"),
            event("order.paid", "2026-02-01 10:10+08:00", order="o1"),
        ],
        until="2026-02-06 00:00+08:00",
    )
    assert records == []


async def test_paid_after_the_first_reminder_ends_the_pre_close_reminder(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.created", "2026-02-01 10:00+08:00", order="o1", amount=99),
            event("order.paid", "2026-02-01 11:00+08:00", order="o1"),
        ],
        until="2026-02-06 00:00+08:00",
    )
    assert summary(records) == [("2026-02-01T02:15:00Z", "payment_reminder", "o1", "sms", "sent", None)]
    assert records[0]["body"].startswith("【Journeys】亲爱的王芳，您的订单o1还未付款")
    assert "02月04日 10:00" in records[0]["body"]  # closes 72 h after creation by default


async def test_unpaid_order_gets_both_reminders_on_time(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [event("order.created", "2026-02-01 10:00+08:00", order="o1")],
        until="2026-02-06 00:00+08:00",
    )
    assert summary(records) == [
        ("2026-02-01T02:15:00Z", "payment_reminder", "o1", "sms", "sent", None),
        # closes_at − 2 h = 4 Feb 08:00 local: the first minute after quiet hours
        ("2026-02-04T00:00:00Z", "pre_close_reminder", "o1", "sms", "sent", None),
    ]


async def test_night_order_waits_for_eight_in_the_morning(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [event("order.created", "2026-02-01 23:00+08:00", order="o1")],
        until="2026-02-06 00:00+08:00",
    )
    assert summary(records) == [
        ("2026-02-02T00:00:00Z", "payment_reminder", "o1", "sms", "sent", None),  # 08:00 local
        ("2026-02-04T13:00:00Z", "pre_close_reminder", "o1", "sms", "sent", None),  # 21:00 local
    ]


async def test_payment_during_the_quiet_hours_deferral_ends_the_journey_unrecorded(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.created", "2026-02-01 23:00+08:00", order="o1"),
            event("order.paid", "2026-02-02 07:00+08:00", order="o1"),
        ],
        until="2026-02-06 00:00+08:00",
    )
    assert records == []


async def test_night_order_closing_before_eight_is_skipped_for_quiet_hours(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [event("order.created", "2026-02-01 23:30+08:00", order="o1", closes_at="2026-02-02T00:00:00+08:00")],
        until="2026-02-03 00:00+08:00",
    )
    # The pre-close moment (22:00) is before the order was created: that journey ends unrecorded.
    assert summary(records) == [("2026-02-01T15:45:00Z", "payment_reminder", "o1", "sms", "skipped", "quiet_hours")]


async def test_flash_sale_order_closing_in_thirty_minutes(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.created", "2026-02-01 14:00+08:00", order="o1", closes_at="2026-02-01T14:30:00+08:00"),
            event("order.closed", "2026-02-01 14:30+08:00", order="o1"),
        ],
        until="2026-02-03 00:00+08:00",
    )
    assert summary(records) == [("2026-02-01T06:15:00Z", "payment_reminder", "o1", "sms", "sent", None)]
    assert "14:30" in records[0]["body"]


async def test_the_same_event_twice_is_processed_once(definitions, sqlite_store):
    created = event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="evt-dup")
    shipped = event("order.shipped", "2026-02-02 10:00+08:00", order="o1", event_id="evt-ship")
    records = await play(
        definitions,
        sqlite_store,
        [
            created,
            created,
            # a second order.created for the same order, with its own id, starts nothing either
            event("order.created", "2026-02-01 10:01+08:00", order="o1"),
            event("order.paid", "2026-02-01 12:00+08:00", order="o1"),
            shipped,
            shipped,
        ],
        until="2026-02-03 00:00+08:00",
    )
    assert summary(records) == [
        ("2026-02-01T02:15:00Z", "payment_reminder", "o1", "sms", "sent", None),
        ("2026-02-02T02:00:00Z", "shipped_notice", "o1", "sms", "sent", None),
    ]


async def test_payment_that_arrives_before_its_order_sends_nothing(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.paid", "2026-02-01 10:05+08:00", order="o1"),
            event("order.created", "2026-02-01 10:00+08:00", order="o1"),  # delivered late by the order system
        ],
        until="2026-02-06 00:00+08:00",
    )
    assert records == []


async def test_late_payment_after_the_journey_ended_starts_nothing(definitions, sqlite_store):
    begin = at("2026-02-01 10:00+08:00")
    async with Simulation(definitions, sqlite_store, begin) as sim:
        await sim.create_customer(customer(), begin)
        await sim.emit(event("order.created", begin, order="o1"))
        await sim.advance_to(at("2026-02-05 00:00+08:00"))
        results = await sim.emit(event("order.paid", "2026-02-05 01:00+08:00", order="o1"))
        assert {(r.dispatch.journey, r.outcome) for r in results if r.dispatch.key == "o1"} == {
            ("payment_reminder", "not_running"),
            ("pre_close_reminder", "not_running"),
        }
        results = await sim.emit(event("order.created", "2026-02-05 02:00+08:00", order="o1"))
        assert {(r.dispatch.journey, r.outcome) for r in results if r.dispatch.key == "o1"} == {
            ("payment_reminder", "already_ran"),
            ("pre_close_reminder", "already_ran"),
        }
        await sim.advance_to(at("2026-02-10 00:00+08:00"))
        assert [r["journey"] for r in sim.records()] == ["payment_reminder", "pre_close_reminder"]


# ------------------------------------------------------------------ after the sale


async def test_shipped_delivered_review_and_revisit(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.created", "2026-02-01 10:00+08:00", order="o1"),
            event("order.paid", "2026-02-01 10:05+08:00", order="o1"),
            event("order.shipped", "2026-02-02 09:30+08:00", order="o1", carrier="顺丰", tracking_no="SF100"),
            event("order.delivered", "2026-02-04 15:00+08:00", order="o1"),
        ],
        until="2026-03-10 00:00+08:00",
    )
    assert summary(records) == [
        ("2026-02-02T01:30:00Z", "shipped_notice", "o1", "sms", "sent", None),
        ("2026-02-04T07:00:00Z", "delivered_care", "o1", "sms", "sent", None),
        ("2026-02-07T07:00:00Z", "review_request", "o1", "sms", "sent", None),
        ("2026-03-04T07:00:00Z", "revisit_28d", "o1", "sms", "sent", None),  # keyed by customer c1
    ]
    shipped, _, review, revisit = records
    assert "顺丰单号SF100" in shipped["body"]
    assert review["body"].endswith("退订回T") and review["category"] == "marketing"
    assert revisit["customer_id"] == "c1"


async def test_review_posted_before_the_request_cancels_it(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.delivered", "2026-02-04 15:00+08:00", order="o1"),
            event("review.posted", "2026-02-05 12:00+08:00", order="o1"),
        ],
        until="2026-02-10 00:00+08:00",
    )
    assert only(records, "review_request") == []


async def test_review_posted_after_the_request_changes_nothing_sent(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.delivered", "2026-02-04 15:00+08:00", order="o1"),
            event("review.posted", "2026-02-08 12:00+08:00", order="o1"),
        ],
        until="2026-02-10 00:00+08:00",
    )
    assert only(records, "review_request") == [("2026-02-07T07:00:00Z", "review_request", "o1", "sms", "sent", None)]


async def test_refund_cancels_the_review_request(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.delivered", "2026-02-04 15:00+08:00", order="o1"),
            event("order.refunded", "2026-02-06 09:00+08:00", order="o1"),
        ],
        until="2026-02-10 00:00+08:00",
    )
    assert only(records, "review_request") == []


async def test_repurchase_ends_the_revisit(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.delivered", "2026-02-04 15:00+08:00", order="o1"),
            event("order.created", "2026-02-14 12:00+08:00", order="o2"),
            event("order.paid", "2026-02-14 12:01+08:00", order="o2"),
        ],
        until="2026-03-20 00:00+08:00",
    )
    assert only(records, "revisit_28d") == []


async def test_second_delivery_restarts_the_revisit_clock_and_a_later_one_starts_anew(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [
            event("order.delivered", "2026-02-04 15:00+08:00", order="o1"),
            event("order.delivered", "2026-02-20 15:00+08:00", order="o2"),
            event("order.delivered", "2026-04-01 15:00+08:00", order="o3"),
        ],
        until="2026-05-10 00:00+08:00",
    )
    assert only(records, "revisit_28d") == [
        ("2026-03-20T07:00:00Z", "revisit_28d", "o2", "sms", "sent", None),  # 28 days after the 2nd
        ("2026-04-29T07:00:00Z", "revisit_28d", "o3", "sms", "sent", None),  # a new instance
    ]


async def test_marketing_cap_across_journeys(definitions, sqlite_store):
    """Three orders delivered together: three review requests due at once, two may go."""
    records = await play(
        definitions,
        sqlite_store,
        [event("order.delivered", "2026-02-04 15:00+08:00", order=f"o{n}") for n in (1, 2, 3)],
        until="2026-02-10 00:00+08:00",
    )
    reviews = only(records, "review_request")
    assert sorted(r[4:] for r in reviews) == [("sent", None), ("sent", None), ("skipped", "frequency_cap")]
    assert {r[0] for r in reviews} == {"2026-02-07T07:00:00Z"}
    assert [r[4] for r in only(records, "delivered_care")] == ["sent"] * 3  # transactional: not capped


# ------------------------------------------------------------------ birthdays


async def test_birthday_across_a_year_boundary(definitions, sqlite_store):
    records = await play(
        definitions,
        sqlite_store,
        [],
        begin="2026-12-01 12:00+08:00",
        until="2028-01-10 00:00+08:00",
        customers=[customer(birthday="1990-01-02")],
    )
    # 3 days before 2 January is 30 December of the year before, 10:00 local; then every year.
    assert summary(records) == [
        ("2026-12-30T02:00:00Z", "birthday_greeting", "c1", "sms", "sent", None),
        ("2027-12-30T02:00:00Z", "birthday_greeting", "c1", "sms", "sent", None),
    ]
    assert "生日快乐" in records[0]["body"]


async def test_birthday_on_29_february(definitions, sqlite_store):
    amy = customer("c2", name="Amy", phone="+14155550100", birthday="--02-29", timezone="America/New_York", locale="en")
    records = await play(
        definitions, sqlite_store, [], begin="2027-01-01 12:00-05:00", until="2028-03-01 00:00-05:00", customers=[amy]
    )
    # Kept on 28 February in 2027 (greeting 25 Feb), 29 February in 2028 (greeting 26 Feb), 10:00 New York.
    assert [(r[0], r[4]) for r in summary(records)] == [
        ("2027-02-25T15:00:00Z", "sent"),
        ("2028-02-26T15:00:00Z", "sent"),
    ]
    assert records[0]["body"].startswith("[Journeys] Happy birthday, Amy!")


async def test_changed_birthday_moves_the_greeting(definitions, sqlite_store):
    begin = at("2026-03-01 12:00+08:00")
    async with Simulation(definitions, sqlite_store, begin) as sim:
        await sim.create_customer(customer(birthday="1990-06-10"), begin)
        changed = customer(birthday="1990-05-01").model_dump(mode="json", exclude={"customer_id"})
        await sim.emit(event("customer.updated", "2026-04-01 12:00+08:00", **changed))
        await sim.advance_to(at("2026-07-01 00:00+08:00"))
        assert summary(sim.records()) == [("2026-04-28T02:00:00Z", "birthday_greeting", "c1", "sms", "sent", None)]


# ------------------------------------------------------------------ what operators see


async def test_status_query_and_search_attributes(definitions, sqlite_store):
    begin = at("2026-02-01 10:00+08:00")
    async with Simulation(definitions, sqlite_store, begin) as sim:
        await sim.create_customer(customer(), begin)
        await sim.emit(event("order.created", begin, order="o1"))
        await sim.advance_to(begin + timedelta(minutes=5))
        handle = sim.client.get_workflow_handle("payment_reminder:o1")
        status = await handle.query(JourneyWorkflow.status)
        assert (status.journey, status.key, status.step) == ("payment_reminder", "o1", "wait")
        assert status.next_wake_up == begin + timedelta(minutes=15)
        attributes = (await handle.describe()).search_attributes
        assert attributes["JourneyName"] == ["payment_reminder"]
        assert attributes["CustomerId"] == ["c1"] and attributes["OrderId"] == ["o1"]
        assert attributes["JourneyVersion"] == [definitions["payment_reminder"].version]
        assert "JourneyStep" not in attributes  # the step is in the status query, not indexed
        await sim.advance_to(begin + timedelta(minutes=20))
        status = await handle.query(JourneyWorkflow.status)
        assert status.sends == {"first_reminder": "sent"}
        # The attributes came with the start: the history holds no upsert (each one is billed).
        kinds = [e.event_type for e in (await handle.fetch_history()).events]
        assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds
        assert EventType.EVENT_TYPE_TIMER_STARTED in kinds


async def test_engine_on_postgresql(definitions, pg_store):
    records = await play(
        definitions,
        pg_store,
        [event("order.created", "2026-02-01 23:00+08:00", order="o1")],
        until="2026-02-03 00:00+08:00",
    )
    assert summary(records) == [("2026-02-02T00:00:00Z", "payment_reminder", "o1", "sms", "sent", None)]


async def test_the_pre_close_reminder_counts_real_hours_across_daylight_saving(definitions, sqlite_store):
    """A New York order created 72 real hours before it closes, over the March change: the last
    call goes 2 hours before the close, at 00:04Z, not an hour early."""
    records = await play(
        definitions,
        sqlite_store,
        [event("order.created", "2026-03-06T02:04:00+00:00", order="o1")],
        until="2026-03-09T03:00:00+00:00",
        customers=[customer(timezone="America/New_York", locale="en", phone="+14155550100")],
    )
    assert only(records, "pre_close_reminder") == [
        ("2026-03-09T00:04:00Z", "pre_close_reminder", "o1", "sms", "sent", None)
    ]
