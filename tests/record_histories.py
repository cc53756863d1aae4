"""Record workflow histories of every shipped journey for the replay test (tests/test_replay.py).

    .venv/bin/python -m tests.record_histories [JOURNEY ...]

With journey names, only their histories are written (a new journey's, leaving the others' as
they were recorded).

Run it when a journey is added, never to make a failing replay pass: a replay failure means an
interpreter change would break running instances; put that change behind a new
JourneyInput revision (instances/contract.py REVISION) or `workflow.patched()`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from core.loyalty import engine_event
from core.products import Product
from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.simulate import Simulation
from store.db import Store
from store.products import save_products
from store.tables import MemberTierRow, PointsEntryRow
from tests.helpers import at, customer, event

HISTORIES = Path(__file__).resolve().parent / "histories"

SCENARIO = [
    # a paid order that ships, is delivered and reviewed late; a night order; a repurchase
    event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="e1", items=[{"sku": "cream-30", "qty": 1}]),
    event("order.paid", "2026-02-01 11:00+08:00", order="o1", event_id="e2"),
    event("order.shipped", "2026-02-02 09:30+08:00", order="o1", event_id="e3", carrier="顺丰", tracking_no="SF1"),
    event("order.delivered", "2026-02-04 15:00+08:00", order="o1", event_id="e4"),
    event("order.created", "2026-02-05 23:00+08:00", order="o2", event_id="e5"),
    event("order.delivered", "2026-02-10 15:00+08:00", order="o9", event_id="e6"),
    event("review.posted", "2026-02-12 12:00+08:00", order="o1", event_id="e7"),
    event("order.delivered", "2026-02-15 15:00+08:00", order="o10", event_id="e8"),  # restarts revisit_28d
    # the engine's own events (core.loyalty): an upgrade, points and a card about to lapse, sleeping
    engine_event(
        "member.tier_changed", "c1", "o1", at("2026-02-01 11:00+08:00"),
        {"from": None, "to": "normal", "direction": "up", "reason": "order o1", "until": "2027-02-01"},
    ),
    engine_event(
        "points.expiring", "c1", "2026-03-22:30", at("2026-02-20 10:00+08:00"),
        {"points": 80, "expires_on": "2026-03-22", "days": 30, "balance": 3280},
    ),
    engine_event(
        "member.card_expiring", "c1", "2026-03-08:7", at("2026-03-01 10:00+08:00"),
        {"tier": "normal", "expires_on": "2026-03-08", "days": 7},
    ),
    engine_event(
        "member.card_expiring", "c1", "2026-03-08:1", at("2026-03-07 10:00+08:00"),
        {"tier": "normal", "expires_on": "2026-03-08", "days": 1},
    ),
    engine_event(
        "lifecycle.changed", "c1", "churned:sleeping:2026-03-10", at("2026-03-10 10:00+08:00"),
        {"from": "churned", "to": "sleeping", "direction": "backward"},
    ),
]  # fmt: skip
UNTIL = "2026-03-20 00:00+08:00"
#: The catalogue: o1's cream lasts 30 days (replenish_reminder).
PRODUCTS = [Product(sku="cream-30", title="保湿面霜 30ml", category="skincare", price=129, cycle_days=30)]


async def record(only: set[str] | None = None) -> list[Path]:
    definitions = load_definitions(PACKAGE_DIR)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(f"sqlite:///{scratch}/record.db").migrate()
        begin = SCENARIO[0].occurred_at
        with store.transaction() as session:
            save_products(session, PRODUCTS, begin)
            # c1's points and tier, which the loyalty journeys' templates show
            session.add(
                PointsEntryRow(
                    customer_id="c1",
                    kind="import",
                    points=3280,
                    reason="import",
                    source="import:1",
                    at=begin,
                    recorded_at=begin,
                )
            )
            session.add(
                MemberTierRow(
                    customer_id="c1", tier="normal", since=begin, until=at("2026-03-08 00:00+08:00"), updated_at=begin
                )
            )
        async with Simulation(definitions, store, begin) as sim:
            await sim.create_customer(customer(birthday="1990-02-20"), begin)
            for item in sorted(SCENARIO, key=lambda e: e.occurred_at):  # stable: in order as listed
                await sim.emit(item)
            await sim.advance_to(at(UNTIL))
            names = [name for name in definitions.journeys if not only or name in only]
            ids = {f"{name}:{key}" for name in names for key in ("o1", "o2", "o9", "o10", "c1")}
            for workflow_id in sorted(ids):
                handle = sim.client.get_workflow_handle(workflow_id)
                try:
                    description = await handle.describe()
                except Exception:
                    continue  # no such instance in this scenario
                runs = {description.run_id}
                first = description.raw_description.workflow_execution_info.first_run_id
                if first:
                    runs.add(first)
                for run_id in sorted(runs):
                    history = await sim.client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
                    path = HISTORIES / f"{workflow_id.replace(':', '__')}__{run_id[:8]}.json"
                    path.write_text(json.dumps(json.loads(history.to_json()), indent=1, ensure_ascii=False))
                    written.append(path)
        store.dispose()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record(set(sys.argv[1:]) or None)):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
