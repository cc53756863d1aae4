"""Two journeys contending for a customer's last free slot (issue 25), as deployed: a Temporal dev
server, the API and two worker processes over PostgreSQL. Each customer's order ships; a
high-priority and a low-priority marketing journey start on it at the same moment, and the cap
(1 per 60 s, `hold: 5s`) has one slot.

- The high one goes now (after the hold), whichever worker decides first.
- The low one waits for the window to free: it goes then if that is before its deadline (3
  minutes), and is skipped with `frequency_cap` otherwise (1 minute).
- The order of a third group is cancelled while its low message waits: it never goes.
- Each message goes exactly once (the ledger and the outbox), and no wait is left open.

The cap windows are short so the real clock can run them; the waits are bounds against hanging."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import select

from store.tables import DeferralRow, InstanceRow, MessageRow
from tests.helpers import daytime_zone
from tests.stack import Stack, api_event, wait_until
from tests.test_resources import copy_definitions

CUSTOMERS = 12
LONG, SHORT, CANCELLED = 0, 1, 2  # the groups, by customer number % 3

POLICY = """\
caps:
  - name: marketing
    category: marketing
    windows: [{max: 1, per: 60s}]
    hold: 5s
"""

HIGH = """\
name: contend_high
title: 物流通知（营销）
category: marketing
policy: {priority: 60}
entry: {event: order.shipped, key: order}
steps:
  - send: {id: high, channel: sms, template: contend, deadline: "event.occurred_at + minutes(3)"}
"""

LOW = """\
name: contend_low
title: 促销
category: marketing
entry: {event: order.shipped, key: order}
exit_on: [order.cancelled]
steps:
  - send: {id: low, channel: sms, template: contend, deadline: "event.occurred_at + minutes(event.data.wait)"}
"""

TEMPLATE = """\
sms:
  zh-CN: "订单{{ order.order_id }}"
  en: "Order {{ order.order_id }}"
"""


def contention_definitions(tmp_path):
    """The shipped definitions without their journeys (nothing else reacts to the events), with
    the two contending journeys and the short cap."""
    folder = copy_definitions(tmp_path)
    for journey in folder.glob("*.yaml"):
        if journey.name not in ("events.yaml", "resources.yaml", "rfm.yaml"):
            journey.unlink()
    shutil.rmtree(folder / "broadcasts")
    (folder / "policy.yaml").write_text(POLICY)
    (folder / "contend_high.yaml").write_text(HIGH)
    (folder / "contend_low.yaml").write_text(LOW)
    (folder / "templates" / "contend.yaml").write_text(TEMPLATE)
    return folder


def ledger(store) -> dict[tuple[str, str], list[MessageRow]]:
    with store.transaction() as session:
        found: dict[tuple[str, str], list[MessageRow]] = {}
        for row in session.scalars(select(MessageRow)):
            found.setdefault((row.journey, row.customer_id), []).append(row)
        return found


def waits(store, **where) -> list[DeferralRow]:
    with store.transaction() as session:
        return list(session.scalars(select(DeferralRow).filter_by(**where)))


def test_the_higher_priority_message_takes_the_last_slot_and_the_lower_one_waits(pg_store, tmp_path):
    folder = contention_definitions(tmp_path)
    group = {f"c{n}": n % 3 for n in range(CUSTOMERS)}
    with Stack(tmp_path, pg_store.url, workers=2, extra_env={"JOURNEYS_DEFINITIONS": str(folder)}) as stack:
        # The clock starts once the stack is up: its start-up, slow on a loaded machine, is no
        # part of how soon the high message goes.
        now = datetime.now(UTC).replace(microsecond=0)
        event = partial(api_event, now)
        customers = [
            event(f"cust-{c}", "customer.created", c, phone=f"+86139{n:08d}", timezone=daytime_zone(now))
            for n, c in enumerate(group)
        ]
        shipped = [
            event(f"ship-{c}", "order.shipped", c, f"o-{c}", wait=1 if g == SHORT else 3) for c, g in group.items()
        ]
        stack.post(customers)
        stack.post(shipped)

        # The cancelled group's low messages wait for the window: cancel their orders now.
        def waiting_for_the_window():
            found = waits(pg_store, journey="contend_low", open=True, held=False)
            return {w.customer_id for w in found} >= {c for c, g in group.items() if g == CANCELLED}

        wait_until(waiting_for_the_window, 120, "the low messages to wait for the window")
        stack.post(
            [
                api_event(datetime.now(UTC), f"cancel-{c}", "order.cancelled", c, f"o-{c}")
                for c, g in group.items()
                if g == CANCELLED
            ]
        )
        longs = {c for c, g in group.items() if g == LONG}

        def all_decided():
            rows = ledger(pg_store)
            high = sum(1 for c in group if ("contend_high", c) in rows)
            low = sum(1 for c, g in group.items() if g != CANCELLED and ("contend_low", c) in rows)
            return high == CUSTOMERS and low == len(longs) + CUSTOMERS // 3

        wait_until(all_decided, 240, "every message to be decided")
        wait_until(lambda: not waits(pg_store, open=True), 60, "no wait left open")
        logs = stack.worker_logs()

    rows = ledger(pg_store)
    assert all(len(found) == 1 for found in rows.values()), "a message decided twice"
    for c, g in group.items():
        [high] = rows["contend_high", c]
        assert high.status == "sent"
        assert high.at - now < timedelta(seconds=40), (c, high.at - now)  # now: after the hold, not a window later
        if g == LONG:
            [low] = rows["contend_low", c]
            assert low.status == "sent", (c, low.status, low.reason, low.error)
            assert low.at >= high.at + timedelta(seconds=60)  # when the window freed
        elif g == SHORT:
            [low] = rows["contend_low", c]
            assert (low.status, low.reason) == ("skipped", "frequency_cap"), (c, low.error)
        else:
            assert ("contend_low", c) not in rows  # never sent after its instance exited
    with pg_store.transaction() as session:
        exits = dict(
            session.execute(
                select(InstanceRow.customer_id, InstanceRow.exit_reason).where(InstanceRow.journey == "contend_low")
            ).all()
        )
    assert {c: exits.get(c) for c, g in group.items() if g == CANCELLED} == {
        c: "exit:order.cancelled" for c, g in group.items() if g == CANCELLED
    }
    # Exactly once at the channel: each sent ledger row one outbox line, nothing else.
    lines = [json.loads(line) for line in stack.outbox.read_text().splitlines()]
    taken = Counter(line["message_id"] for line in lines)
    sent_ids = {row.id for found in rows.values() for row in found if row.status == "sent"}
    assert set(taken) == sent_ids and max(taken.values()) == 1
    # The deferrals were recorded with their reason: the holds, and the low ones' waits.
    reasons = Counter((w.journey, w.held) for w in waits(pg_store, reason="frequency_cap"))
    assert reasons[("contend_low", False)] >= len(longs) + CUSTOMERS // 3
    assert reasons[("contend_high", True)] >= 1
    for alarm in ("TMPRL1101", "Potential deadlock", " ERROR ", "Traceback"):
        assert alarm not in logs, alarm
