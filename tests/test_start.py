"""instances.start, the one way a journey instance starts (the router's and the broadcast's): what a
start carries (id, input, search attributes, memo) is on the server, a 'once' id is not started
twice, signal-with-start reaches the running instance, and a server that forgot the search
attributes gets them again. Temporal's time-skipping test server, with no worker: nothing runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from core.temporal import binary
from definitions.schema import Journey
from instances.contract import EVENT_SIGNAL, JOURNEY_WORKFLOW, REVISION, JourneyInput
from instances.start import PRIORITY, JourneyStart, Registration, priority_of, signal_journey, start_journey
from tests.helpers import customer, event

QUEUE = "start-test"
SEND = {"id": "s", "channel": "sms", "template": "t"}


@pytest.fixture
async def client():
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=binary("temporal-test-server")
    ) as env:
        yield env.client


async def test_a_start_carries_its_input_attributes_and_memo_and_a_once_id_is_not_started_twice(definitions, client):
    snapshot = definitions["payment_reminder"]
    entry = event("order.created", "2026-02-01 10:00+08:00", order="o1")
    paid = event("order.paid", "2026-02-01 10:05+08:00", order="o1")
    start = JourneyStart(
        snapshot=snapshot,
        key="o1",
        entry_event=entry,
        customer=customer(),
        prior_events=[paid],
        order_history=[paid],  # already among the prior events: not handed over twice
        broadcast="spring",
    )
    registration = Registration()
    row = await start_journey(client, QUEUE, start, registration)
    assert row is not None
    assert (row.workflow_id, row.journey, row.journey_version, row.customer_id, row.order_id, row.entered_at) == (
        "payment_reminder:o1", "payment_reminder", snapshot.version, "c1", "o1", entry.occurred_at
    )  # fmt: skip
    assert row.variant == snapshot.definition.variant_of("o1")

    handle = client.get_workflow_handle(row.workflow_id)
    described = await handle.describe()
    assert (described.run_id, described.workflow_type) == (row.run_id, JOURNEY_WORKFLOW)
    assert await described.memo() == {"journey_version": snapshot.version, "broadcast": "spring"}
    attributes = described.search_attributes
    assert (attributes["JourneyName"], attributes["CustomerId"], attributes["OrderId"]) == (
        ["payment_reminder"], ["c1"], ["o1"]
    )  # fmt: skip
    assert attributes["JourneyVersion"] == [snapshot.version]
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (given,) = await client.data_converter.decode(started.input.payloads, [JourneyInput])
    assert (given.revision, given.customer_given, given.customer, given.key) == (REVISION, True, customer(), "o1")
    assert [e.event_id for e in given.prior_events] == [paid.event_id] and given.order_history == []
    signalled = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert signalled == []  # a plain start (the broadcast's): no start signal

    assert await start_journey(client, QUEUE, start, registration) is None  # the id exists: already ran


async def test_signal_with_start_reaches_the_running_instance_and_a_signal_needs_one(definitions, client):
    snapshot = definitions["payment_reminder"]
    created = event("order.created", "2026-02-01 10:00+08:00", order="o2")
    again = event("order.created", "2026-02-01 10:01+08:00", order="o2")
    registration = Registration()

    def start(entry):
        return JourneyStart(snapshot=snapshot, key="o2", entry_event=entry, customer=None, signal_entry=True)

    first = await start_journey(client, QUEUE, start(created), registration)
    second = await start_journey(client, QUEUE, start(again), registration)
    assert first is not None and second is not None
    assert second.run_id == first.run_id  # the running instance heard the event: recorded once
    paid = event("order.paid", "2026-02-01 10:02+08:00", order="o2")
    assert await signal_journey(client, first.workflow_id, paid) is True
    assert await signal_journey(client, "payment_reminder:nobody", paid) is False

    history = await client.get_workflow_handle(first.workflow_id).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert [s.signal_name for s in signals] == [EVENT_SIGNAL] * 3
    decoded = [(await client.data_converter.decode(s.input.payloads, [type(paid)]))[0].event_id for s in signals]
    assert decoded == [created.event_id, again.event_id, paid.event_id]


class _Forgetful:
    """A client whose server has forgotten the search attributes: its first start is refused."""

    def __init__(self, message: str):
        self.message = message
        self.starts = 0

    async def start_workflow(self, workflow, arg, **options):
        self.starts += 1
        if self.starts == 1:
            raise RPCError(self.message, RPCStatusCode.INVALID_ARGUMENT, b"")
        return SimpleNamespace(first_execution_run_id="run-1", result_run_id="run-1")


class _Counting(Registration):
    def __init__(self):
        super().__init__()
        self.asked: list[bool] = []

    async def ensure(self, client, again=False):
        self.asked.append(again)


async def test_a_server_that_forgot_the_search_attributes_gets_them_again_and_the_start_is_retried(definitions):
    start = JourneyStart(
        snapshot=definitions["payment_reminder"],
        key="o3",
        entry_event=event("order.created", "2026-02-01 10:00+08:00", order="o3"),
        customer=None,
    )
    client, registration = _Forgetful("search attribute JourneyName is not defined"), _Counting()
    row = await start_journey(client, QUEUE, start, registration)
    assert row is not None and row.run_id == "run-1"
    assert (client.starts, registration.asked) == (2, [False, True])

    client, registration = _Forgetful("some other invalid argument"), _Counting()
    with pytest.raises(RPCError):
        await start_journey(client, QUEUE, start, registration)
    assert (client.starts, registration.asked) == (1, [False])


async def test_what_a_customer_waits_for_goes_first_and_a_broadcast_last(definitions, client):
    """A shipping notice sends at once (priority 1); a payment reminder's first task only arms a
    timer (3, the server's default); a broadcast's members are bulk (4). The server keeps the key
    with the start, and the instance's tasks and activities inherit it."""
    registration = Registration()

    async def priority_key(journey: str, order: str, **more) -> int:
        entry = event("order.shipped" if journey == "shipped_notice" else "order.created", "2026-02-01 10:00+08:00",
                      order=order)  # fmt: skip
        start = JourneyStart(snapshot=definitions[journey], key=order, entry_event=entry, customer=None, **more)
        row = await start_journey(client, QUEUE, start, registration)
        history = await client.get_workflow_handle(row.workflow_id).fetch_history()
        return history.events[0].workflow_execution_started_event_attributes.priority.priority_key

    assert await priority_key("shipped_notice", "p1") == PRIORITY["transactional at once"] == 1
    assert await priority_key("payment_reminder", "p2") == PRIORITY["waits first"] == 3
    assert await priority_key("payment_reminder", "p3", broadcast="spring") == PRIORITY["broadcast"] == 4


@pytest.mark.parametrize(
    ("steps", "at_once"),
    [
        ([{"send": SEND}], True),
        ([{"wait": "30m"}, {"send": SEND}], False),
        ([{"if": {"condition": "order.amount > 100", "then": [{"wait": "1h"}], "else": [{"send": SEND}]}}], True),
        ([{"if": {"condition": "order.amount > 100", "then": [{"wait": "1h"}]}}, {"send": SEND}], True),
        ([{"split": {"holdout": 0.1, "branches": [{"steps": [{"wait": "1d"}]}]}}, {"wait": "1h"}], False),
        ([{"split": {"branches": [{"steps": [{"wait": "1d"}]}, {"steps": [{"send": SEND}]}]}}], True),
        ([{"wait_for": {"event": "order.paid", "timeout": "1h", "on_timeout": [{"send": SEND}]}}], False),
    ],
)
def test_a_journey_sends_at_once_when_a_send_comes_before_any_wait(steps, at_once):
    journey = Journey.model_validate(
        {"name": "j", "category": "marketing", "entry": {"event": "order.created", "key": "order"}, "steps": steps}
    )
    assert journey.sends_at_once is at_once
    assert priority_of(journey).priority_key == (2 if at_once else 3)


def test_the_shipped_journeys_priorities(definitions):
    keys = {snapshot.definition.name: priority_of(snapshot.definition).priority_key for snapshot in definitions}
    assert keys == {
        "shipped_notice": 1, "delivered_care": 1, "payment_reminder": 3, "pre_close_reminder": 3,
        "review_request": 3, "revisit_28d": 3, "birthday_greeting": 3, "replenish_reminder": 3,
        "tier_upgrade": 1, "points_expiring": 1, "member_card_expiry": 1, "winback_sleeping": 2,
    }  # fmt: skip
