"""Capped messages waiting for a slot, in running journeys on the time-skipping test server (issue
25): a cap of 1 marketing message per 7 days; `care` (priority 60) on order.shipped, `promo`
(priority 20) on order.delivered, each with a deadline. Over two weeks of one customer's orders:

- a promo that finds the cap full waits for the window to free, and goes then when that is
  before its deadline;
- a higher-priority message waiting for the same moment takes the slot first;
- a promo whose slot frees only after its deadline is skipped with `frequency_cap`;
- a promo whose order is refunded while it waits is never sent, and holds nothing.

The decisions across worker processes are tests/test_cap_contention.py's."""

from __future__ import annotations

from sqlalchemy import select

from definitions.loader import load_definitions
from journeys.simulate import Simulation
from store.tables import DeferralRow, InstanceRow, MessageRow
from tests.helpers import at, customer, event, summary, write_definitions

TEMPLATES = {"note": 'sms:\n  zh-CN: "订单{{ order.order_id }}"\n'}
POLICY = """\
caps:
  - name: marketing
    category: marketing
    windows: [{max: 1, per: 7d}]
"""
CARE = """\
name: care
category: marketing
policy: {priority: 60}
entry: {event: order.shipped, key: order}
steps:
  - send: {id: care, channel: sms, template: note, deadline: "event.occurred_at + days(10)"}
"""
PROMO = """\
name: promo
category: marketing
entry: {event: order.delivered, key: order}
exit_on: [order.refunded]
steps:
  - send: {id: promo, channel: sms, template: note, deadline: "event.occurred_at + days(event.data.days)"}
"""


async def test_capped_messages_wait_for_the_window_in_priority_order(tmp_path, sqlite_store):
    folder = write_definitions(tmp_path / "definitions", TEMPLATES, [CARE, PROMO])
    (folder / "policy.yaml").write_text(POLICY)
    definitions = load_definitions(folder)
    events = [
        event("order.shipped", "2026-02-02 10:00+08:00", order="o1"),  # Monday: care o1 takes the week's slot
        event("order.delivered", "2026-02-03 10:00+08:00", order="o1", days=10),  # waits; until the 13th
        event("order.delivered", "2026-02-03 11:00+08:00", order="o4", days=20),  # waits; until the 23rd
        event("order.shipped", "2026-02-04 10:00+08:00", order="o2"),  # waits, priority 60
        event("order.delivered", "2026-02-05 10:00+08:00", order="o3", days=20),  # waits ...
        event("order.refunded", "2026-02-06 10:00+08:00", order="o3"),  # ... and exits
    ]
    async with Simulation(definitions, sqlite_store, at("2026-02-02 09:00+08:00")) as sim:
        await sim.create_customer(customer(), at("2026-02-02 09:00+08:00"))
        for item in events:
            await sim.emit(item)
        await sim.advance_to(at("2026-02-20 00:00+08:00"))
        records = sim.records()
    assert sorted(summary(records)) == [
        ("2026-02-02T02:00:00Z", "care", "o1", "sms", "sent", None),
        # The slot frees on the 9th at 10:00: care o2 (60) takes it ahead of the promos waiting for it;
        # promo o1 would get the next on the 16th, past its deadline: skipped.
        ("2026-02-09T02:00:00Z", "care", "o2", "sms", "sent", None),
        ("2026-02-09T02:00:00Z", "promo", "o1", "sms", "skipped", "frequency_cap"),
        ("2026-02-16T02:00:00Z", "promo", "o4", "sms", "sent", None),  # the next slot, before its deadline
    ]
    with sqlite_store.transaction() as session:
        [skipped] = session.scalars(select(MessageRow).where(MessageRow.status == "skipped"))
        assert skipped.error.startswith("cap marketing 1/7d")
        assert "no slot before its deadline 2026-02-13T10:00:00+08:00" in skipped.error
        deferrals = list(session.scalars(select(DeferralRow).order_by(DeferralRow.id)))
        exits = {row.order_id: row.exit_reason for row in session.scalars(select(InstanceRow))}
    assert not any(row.open for row in deferrals)  # no wait left, the exited one's included
    waited = {(row.journey, row.workflow_id.split(":")[1]) for row in deferrals}
    assert waited == {("promo", "o1"), ("promo", "o3"), ("promo", "o4"), ("care", "o2")}
    assert all(row.reason == "frequency_cap" for row in deferrals)
    assert exits["o3"] == "exit:order.refunded"
