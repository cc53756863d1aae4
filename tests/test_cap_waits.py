"""Priorities that defer instead of drop (issue 25): a message that finds a cap full waits for the
moment its window frees, if that is before its deadline (the step's `deadline`), else it is skipped
with `frequency_cap` as before; a waiting message of higher priority that is due takes the slot
ahead of lower ones; a cap's `hold` lets a higher-priority message due at the same moment take a
last free slot; a run's end clears its waits. The send activity on both databases; the workflow
side is tests/test_cap_contention.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from activities.journey import JourneyActivities
from activities.payloads import ExitRecord
from channels import build_channels
from core.contact_policy import ContactPolicy, PolicyOverride
from core.rfm import DEFAULT_TABLE
from rules.policy import decide
from store import queries
from store.lookups import StoreLookups
from store.tables import DeferralRow
from tests.helpers import at, attempt, customer
from tests.test_policy import request, rows, save
from views.profile import profile

MONDAY = at("2026-02-02 10:00+08:00")
DAY = timedelta(days=1)
HIGH = PolicyOverride(priority=60)


def promo(journey: str, when, *, priority: PolicyOverride | None = None, wait_days: float = 10):
    """A marketing SMS of `journey` (its own instance) to c1, which may wait `wait_days` for a slot."""
    return request(
        step="promo",
        category="marketing",
        when=when,
        fallback=None,
        workflow_id=f"{journey}:c1",
        journey=journey,
        policy=priority,
        deadline=when + wait_days * DAY if wait_days else None,
    )


def again(req, when):
    """The same send decided again at `when`, after a deferral for a cap (as the workflow asks)."""
    return req.model_copy(update={"at": when, "waiting": True})


@pytest.fixture
def full(store, send):
    """c1 has had two marketing messages (Monday and Tuesday 10:00): the shipped cap, 2 per 7
    days, is full until the next Monday 10:00, and then has one slot until Tuesday 10:00."""
    save(store, customer())
    for n, when in enumerate([MONDAY, MONDAY + DAY]):
        assert send(promo(f"earlier{n}", when, wait_days=0)).status == "sent"
    return store


def waits(store) -> list[tuple]:
    with store.transaction() as session:
        found = session.query(DeferralRow).order_by(DeferralRow.id).all()
        return [(row.journey, row.reason, row.open, row.at, row.resume_at) for row in found]


def test_a_full_cap_defers_a_message_with_a_deadline_to_the_moment_the_window_frees(full, send):
    wednesday = MONDAY + 2 * DAY
    req = promo("winback", wednesday)
    outcome = send(req)
    next_monday = MONDAY + 7 * DAY  # the Monday message leaves the 7-day window
    assert (outcome.status, outcome.reason, outcome.defer_until) == ("deferred", "frequency_cap", next_monday)
    assert outcome.detail == "cap marketing 2/7d: 2 sent since 2026-01-28T10:00:00+08:00"
    assert len(rows(full)) == 2  # no ledger row until it is decided
    assert waits(full) == [("winback", "frequency_cap", True, wednesday, next_monday)]
    sent = send(again(req, next_monday))
    assert sent.status == "sent"
    assert waits(full) == [("winback", "frequency_cap", False, wednesday, next_monday)]  # no longer waiting
    assert [row.journey for row in rows(full)] == ["earlier0", "earlier1", "winback"]


def test_past_its_deadline_it_is_skipped_with_frequency_cap(full, send):
    outcome = send(promo("winback", MONDAY + 2 * DAY, wait_days=3))  # the slot frees in 5 days
    assert (outcome.status, outcome.reason) == ("skipped", "frequency_cap")
    assert rows(full)[-1].error == (
        "cap marketing 2/7d: 2 sent since 2026-01-28T10:00:00+08:00; no slot before its deadline "
        "2026-02-07T10:00:00+08:00"
    )
    assert waits(full) == []


def test_without_a_deadline_a_full_cap_skips_as_before(full, send):
    outcome = send(promo("winback", MONDAY + 2 * DAY, wait_days=0))
    assert (outcome.status, outcome.reason) == ("skipped", "frequency_cap")
    assert waits(full) == []


def test_a_higher_priority_message_waiting_and_due_takes_the_slot_first(full, send):
    thursday, next_monday = MONDAY + 3 * DAY, MONDAY + 7 * DAY
    high = promo("logistics", thursday, priority=HIGH)
    assert send(high).defer_until == next_monday
    # Next Monday both are due; the low one (fresh, priority 20) asks first: the slot is the high
    # one's, so the low one waits for the next (the Tuesday message leaves the window).
    low = promo("promotion", next_monday)
    deferred = send(low)
    assert (deferred.status, deferred.reason, deferred.defer_until) == ("deferred", "frequency_cap", next_monday + DAY)
    assert deferred.detail == "cap marketing 2/7d; a higher-priority message holds the slot"
    assert send(again(high, next_monday)).status == "sent"
    assert send(again(low, next_monday + DAY)).status == "sent"
    assert [row.journey for row in rows(full)] == ["earlier0", "earlier1", "logistics", "promotion"]
    with full.transaction() as session:
        assert queries.cap_waits(session, "c1", "marketing") == []


def test_of_equal_priority_the_earlier_waiter_goes_first(full, send):
    first = promo("first", MONDAY + 2 * DAY)
    second = promo("second", MONDAY + 3 * DAY)
    next_monday = MONDAY + 7 * DAY
    assert send(first).defer_until == send(second).defer_until == next_monday
    assert send(again(second, next_monday)).defer_until == next_monday + DAY  # `first` waits longer
    assert send(again(first, next_monday)).status == "sent"


def test_a_lower_priority_waiter_does_not_hold_a_higher_one(full, send):
    low = promo("promotion", MONDAY + 2 * DAY)
    next_monday = MONDAY + 7 * DAY
    assert send(low).defer_until == next_monday
    assert send(promo("logistics", next_monday, priority=HIGH)).status == "sent"
    assert send(again(low, next_monday)).defer_until == next_monday + DAY  # the window is full again


def test_an_exit_clears_the_wait(full, store, outbox):
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN")
    high = promo("logistics", MONDAY + 2 * DAY, priority=HIGH)
    next_monday = MONDAY + 7 * DAY
    assert attempt(1).run(activities.decide_message, high).status == "deferred"
    record = ExitRecord(
        workflow_id=high.workflow_id,
        run_id=high.run_id,
        journey="logistics",
        journey_version="v1",
        customer_id="c1",
        entered_at=MONDAY + 2 * DAY,
        ended_at=MONDAY + 4 * DAY,
        reason="exit:order.paid",
    )
    attempt(1).run(activities.record_exit, record)
    with store.transaction() as session:
        assert queries.cap_waits(session, "c1", "marketing") == []
    # The slot it waited for is free for a lower-priority message.
    assert attempt(1).run(activities.decide_message, promo("promotion", next_monday)).status == "sent"


def test_a_wait_past_its_deadline_holds_nothing(full, send):
    high = promo("logistics", MONDAY + 2 * DAY, priority=HIGH, wait_days=4)  # until Sunday 10:00
    next_monday = MONDAY + 7 * DAY
    # Its slot frees after its deadline: skipped, no wait left behind.
    assert send(high).status == "skipped"
    with full.transaction() as session:  # a wait whose run vanished unrecorded (a terminated run)
        queries.record_deferral(
            session,
            {
                "workflow_id": "gone:c1", "run_id": "r", "step": "promo", "journey": "gone", "customer_id": "c1",
                "category": "marketing", "variant": None, "channel": "sms", "reason": "frequency_cap", "detail": None,
                "at": MONDAY + 2 * DAY, "resume_at": next_monday, "cap": "marketing", "priority": 90,
                "deadline": next_monday - timedelta(hours=1), "held": False, "open": False,
            },
        )  # fmt: skip
        assert len(queries.cap_waits(session, "c1", "marketing")) == 1
    assert send(promo("promotion", next_monday)).status == "sent"


HOLDING = ContactPolicy.model_validate(
    {"caps": [{"name": "marketing", "category": "marketing", "windows": [{"max": 1, "per": "1d"}], "hold": "1m"}]}
)


def test_a_hold_lets_a_higher_priority_message_due_at_the_same_moment_take_the_last_slot(store, outbox):
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN", policy=HOLDING)

    def send(req):
        return attempt(1).run(activities.decide_message, req)

    save(store, customer())
    minute = timedelta(minutes=1)
    low, high = promo("promotion", MONDAY, wait_days=1.5), promo("logistics", MONDAY, priority=HIGH)
    # The low one asks first: the last free slot; both wait out the hold.
    held = send(low)
    assert (held.status, held.defer_until) == ("deferred", MONDAY + minute)
    assert held.detail == "cap marketing: the last free slot, held 1m for a higher-priority message"
    assert send(high).defer_until == MONDAY + minute
    # Then the low one again first: the high one holds the slot; the low one waits for the next.
    later = send(again(low, MONDAY + minute))
    assert (later.status, later.defer_until) == ("deferred", MONDAY + DAY + minute)
    assert send(again(high, MONDAY + minute)).status == "sent"
    # When the slot frees, the low one takes it after the hold (a higher-priority one may come).
    low = again(again(low, MONDAY + minute), MONDAY + DAY + minute)
    assert send(low).defer_until == MONDAY + DAY + 2 * minute
    assert send(again(low, MONDAY + DAY + 2 * minute)).status == "sent"
    assert [row.journey for row in rows(store)] == ["logistics", "promotion"]


def test_preview_and_dry_runs_see_the_deferral(full):
    policy = ContactPolicy().for_send()
    with full.transaction() as session:
        decision = decide(
            queries.get_customer(session, "c1"),
            channel="sms",
            fallback=None,
            category="marketing",
            at=MONDAY + 2 * DAY,
            deadline=MONDAY + 9 * DAY,
            lookups=StoreLookups(session, "c1"),
            default_region="CN",
            policy=policy,
        )
    assert (decision.action, decision.resume_at, decision.waits_for) == ("defer", MONDAY + 7 * DAY, "marketing")


def test_a_message_deferred_again_keeps_its_place_in_the_queue(full, send):
    first = promo("first", MONDAY + 2 * DAY)
    second = promo("second", MONDAY + 3 * DAY)
    next_monday = MONDAY + 7 * DAY
    assert send(first).defer_until == send(second).defer_until == next_monday
    # `first` comes back early (a quiet-hours wake, say) and is deferred again: still the elder.
    first = again(first, MONDAY + 4 * DAY)
    assert send(first).defer_until == next_monday
    with full.transaction() as session:
        waiting = queries.open_wait(session, first.workflow_id, first.run_id, first.step)
    assert waiting.waiting_since == MONDAY + 2 * DAY
    assert send(again(second, next_monday)).defer_until == next_monday + DAY
    assert send(again(first, next_monday)).status == "sent"


def test_a_retry_after_a_lost_deferral_closes_the_wait_it_left(full, store, outbox, send):
    """The first attempt deferred the message for a cap and committed its wait, but its result was
    lost (a worker killed): the workflow, not knowing of the wait, retries the same decision. The
    retry finds the wait, and once it decides otherwise closes it, so it holds no slot after."""
    activities = JourneyActivities(store, build_channels(outbox), "小店", default_region="CN")
    thursday, next_monday = MONDAY + 3 * DAY, MONDAY + 7 * DAY
    high = promo("logistics", thursday, priority=HIGH)
    assert send(high).defer_until == next_monday
    low = promo("promotion", next_monday)
    assert send(low).defer_until == next_monday + DAY  # the high one holds the slot; this result is lost
    # Meanwhile the high one's run ends: its slot is free.
    record = ExitRecord(
        workflow_id=high.workflow_id, run_id=high.run_id, journey="logistics", journey_version="v1",
        customer_id="c1", entered_at=thursday, ended_at=next_monday, reason="exit:order.paid",
    )  # fmt: skip
    attempt(1).run(activities.record_exit, record)
    assert send(low, 2).status == "sent"  # the retry: `waiting` unset, as the workflow never heard
    with store.transaction() as session:
        assert queries.cap_waits(session, "c1", "marketing") == []
    assert [row.journey for row in rows(full)] == ["earlier0", "earlier1", "promotion"]


def test_an_erasure_ends_the_customers_waits(full, send):
    """Erasure terminates the customer's runs, which record no exit: their waits end with it."""
    assert send(promo("winback", MONDAY + 2 * DAY)).status == "deferred"
    with full.transaction() as session:
        queries.erase_customer(session, "c1", MONDAY + 3 * DAY, "test", default_region="CN")
    with full.transaction() as session:
        assert queries.cap_waits(session, "c1", "marketing") == []


def test_the_profile_lists_the_messages_waiting_for_a_slot_first_in_line_first(full, send):
    thursday, next_monday = MONDAY + 3 * DAY, MONDAY + 7 * DAY
    assert send(promo("promotion", MONDAY + 2 * DAY)).status == "deferred"
    assert send(promo("logistics", thursday, priority=HIGH)).status == "deferred"

    def waiting(at):
        with full.transaction() as session:
            return [(w.journey, w.cap, w.priority, w.until, w.detail)
                    for w in profile(session, "c1", DEFAULT_TABLE, at, "CN").waiting]  # fmt: skip

    detail = "cap marketing 2/7d: 2 sent since 2026-01-{}T10:00:00+08:00"  # 7 days before it asked
    assert waiting(thursday) == [
        ("logistics", "marketing", 60, next_monday, detail.format(29)),  # the higher priority first, though later
        ("promotion", "marketing", 20, next_monday, detail.format(28)),
    ]
    assert send(again(promo("logistics", thursday, priority=HIGH), next_monday)).status == "sent"
    assert [journey for journey, *_ in waiting(next_monday)] == ["promotion"]
    assert waiting(MONDAY + 13 * DAY) == []  # past the promotion's deadline it holds nothing
