"""What the console reads about a customer, an order and a journey's branches, through the API on
both databases: one timeline per customer (events, instance starts and ends, messages with their
delivery updates, clicks, replies, points and tier changes; newest first, each message with the
customer's own clock), an order with its amount, items and status, and how many instances wait
at each wait step of a journey with a split, an `if` and a `wait_for`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.config import Settings
from core.records import apply_customer_event
from core.temporal import binary
from definitions.loader import load_definitions
from journeys.worker import run_worker
from store import queries, tiers
from store.tables import InstanceRow, LinkClickRow, MessageRow, PointsEntryRow, ProviderEventRow, SmsReplyRow
from tests.ab_journey import AB_JOURNEY, AB_YAML, WAIT_FOR_ORDER, WAIT_SMALL, definitions_with_ab
from tests.helpers import DEV_SERVER_STARTUP, daytime_zone, event, free_port
from tests.test_history import eventually
from triggers.api import create_app
from triggers.dispatcher import Dispatcher
from views.waiting import place_of

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai, 07:00 in Berlin (the customer's zone)


def seed_customer(store) -> str:
    """A customer in Berlin with one of every kind of entry, a minute apart; returns the message id."""
    minute = timedelta(minutes=1)
    created = event("customer.created", T0, customer="c-tl", event_id="tl-1", name="Tim", timezone="Europe/Berlin")
    paid = event("order.paid", T0 + 9 * minute, customer="c-tl", order="o-tl", event_id="tl-2", amount=88)
    message_id = str(uuid.uuid4())
    with store.transaction() as session:
        queries.upsert_customer(session, apply_customer_event(None, created), created.occurred_at, "CN")
        queries.store_event(session, created, T0)
        queries.store_event(session, paid, paid.occurred_at)
        session.add(InstanceRow(workflow_id="review_request:o-tl", run_id="r1", journey="review_request",
                                journey_version="v1", customer_id="c-tl", order_id="o-tl", entered_at=T0 + minute,
                                ended_at=T0 + 10 * minute, exit_reason="exit:order.paid"))  # fmt: skip
        session.add(MessageRow(id=message_id, workflow_id="review_request:o-tl", run_id="r1", step="review_request",
                               journey="review_request", journey_version="v1", customer_id="c-tl", order_id="o-tl",
                               channel="sms", address="+8613800000009", template="review_request",
                               category="transactional", status="delivered", at=T0 + 2 * minute,
                               delivered_at=T0 + 3 * minute, updated_at=T0 + 3 * minute, segments=1,
                               body="Tim, how do you like order o-tl?"))  # fmt: skip
        session.add(ProviderEventRow(provider="aliyun", event_key="r-tl", kind="report:DELIVERED", message_id=message_id,
                                     received_at=T0 + 3 * minute))  # fmt: skip
        session.add(LinkClickRow(code="abc123", message_id=message_id, at=T0 + 4 * minute, user_agent="test"))
        session.add(SmsReplyRow(id=str(uuid.uuid4()), provider="aliyun", provider_key="k-tl", number="+8613800000009",
                                customer_id="c-tl", message_id=message_id, content="好的", received_at=T0 + 5 * minute,
                                action="ignore"))  # fmt: skip
        session.add(PointsEntryRow(customer_id="c-tl", kind="earn", points=88, reason="order o-tl", source="earn:o-tl",
                                   order_id="o-tl", at=T0 + 11 * minute, recorded_at=T0 + 11 * minute))  # fmt: skip
        tiers.log_change(session, {"customer_id": "c-tl", "from_tier": None, "to_tier": "senior", "direction": "up",
                                   "reason": "spent 88", "by": "engine", "source": "tier:o-tl",
                                   "at": T0 + 12 * minute})  # fmt: skip
    return message_id


async def test_a_customer_timeline_merges_every_kind_newest_first(store, definitions):
    message_id = seed_customer(store)
    app = create_app(store, definitions=definitions, api_keys=["support:read:k-read", "shop:ingest:k-ingest"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
        found = await api.get("/customers/c-tl/timeline", headers={"Authorization": "Bearer k-read"})
        nobody = await api.get("/customers/nobody/timeline", headers={"Authorization": "Bearer k-read"})
        refused = await api.get("/customers/c-tl/timeline", headers={"Authorization": "Bearer k-ingest"})
        bad = await api.get("/customers/c'1/timeline", headers={"Authorization": "Bearer k-read"})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["timezone"] == "Europe/Berlin"
    kinds = [(e["kind"], e["summary"]) for e in body["entries"]]
    assert kinds == [
        ("tier", "tier – → senior"),
        ("points", "points +88 (earn)"),
        ("instance_ended", "review_request ended"),
        ("event", "order.paid"),
        ("reply", "reply: 好的"),
        ("click", "review_request · review_request: link clicked"),
        ("delivery", "review_request · review_request: report:DELIVERED"),
        ("message", "review_request · review_request"),
        ("instance_started", "review_request started"),
        ("event", "customer.created"),
    ]
    moments = [e["at"] for e in body["entries"]]
    assert moments == sorted(moments, reverse=True)
    message = next(e for e in body["entries"] if e["kind"] == "message")
    # Sent at 06:02 UTC: 07:02 on the customer's own clock, where quiet hours are judged.
    assert (message["customer_time"], message["customer_zone"]) == ("2026-12-01 07:02", "Europe/Berlin")
    assert (message["status"], message["message_id"], message["channel"]) == ("delivered", message_id, "sms")
    ended = next(e for e in body["entries"] if e["kind"] == "instance_ended")
    assert ended["detail"] == "exit:order.paid"
    # The receipt says it was delivered: no second, made-up delivery entry from delivered_at.
    assert [e["status"] for e in body["entries"] if e["kind"] == "delivery"] == ["delivered"]
    assert nobody.status_code == 200 and nobody.json()["entries"] == []
    assert refused.status_code == 403
    assert bad.status_code == 422


def test_a_wait_is_placed_by_the_sends_made_before_it(tmp_path):
    journey = load_definitions(definitions_with_ab(tmp_path))[AB_JOURNEY].definition
    assert place_of(journey, "wait_for:order.created", {"nudge_a"}) == WAIT_FOR_ORDER
    assert place_of(journey, "wait", {"nudge_b"}) == WAIT_SMALL
    assert place_of(journey, "quiet_hours:thanks", {"nudge_a"}) == f"{WAIT_FOR_ORDER}.wait_for.on_event[0]"
    assert place_of(journey, "split", set()) is None


async def test_waiting_counts_and_the_order_record(store, tmp_path):
    directory = definitions_with_ab(tmp_path)
    definitions = load_definitions(directory)
    port = free_port()
    address = f"127.0.0.1:{port}"
    queue = f"waiting-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        temporal_address=address,
        database_url=store.url,
        task_queue=queue,
        definitions_dir=directory,
        outbox_path=tmp_path / "outbox.jsonl",
    )
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        port=port,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    ):
        client = await Client.connect(address, data_converter=pydantic_data_converter)

        async def temporal() -> Client:
            return client

        dispatcher = Dispatcher(store, definitions, temporal, queue, default_region="CN")
        app = create_app(store, temporal=temporal, definitions=definitions, on_accepted=dispatcher.wake.set)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_worker(settings, stop)), asyncio.create_task(dispatcher.run(stop))]
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://j") as api:
                now = datetime.now(UTC).replace(microsecond=0)
                zone = daytime_zone(now)
                carts = {"w1": 150, "w2": 180, "w3": 120, "w4": 40, "w5": 30, "w6": 250}
                batch = []
                for n, (who, value) in enumerate(carts.items()):
                    batch.append({"event_id": f"{who}-c", "type": "customer.created", "customer_id": who,
                                  "occurred_at": (now - timedelta(minutes=5)).isoformat(),
                                  "data": {"name": who, "phone": f"+86138000010{n:02d}", "timezone": zone}})  # fmt: skip
                    batch.append({"event_id": f"{who}-a", "type": "cart.abandoned", "customer_id": who,
                                  "occurred_at": now.isoformat(), "data": {"cart_value": value}})  # fmt: skip
                assert (await api.post("/events", json=batch)).status_code == 202

                def variants() -> dict[str, str | None]:
                    with store.transaction() as session:
                        rows = session.query(InstanceRow).filter(InstanceRow.journey == AB_JOURNEY).all()
                        return {row.customer_id: row.variant for row in rows}

                async def all_placed():
                    held = variants()
                    if len(held) < len(carts):
                        return None
                    treated = [who for who, v in held.items() if v != "holdout"]
                    expected = {
                        WAIT_FOR_ORDER: sum(1 for who in treated if carts[who] >= 100),
                        WAIT_SMALL: sum(1 for who in treated if carts[who] < 100),
                    }
                    found = (await api.get(f"/journeys/{AB_JOURNEY}/waiting")).json()
                    wanted = {k: v for k, v in expected.items() if v}
                    # A holdout instance ends at the split; Temporal's visibility may list it as
                    # running for a moment after, so the count settles rather than holds at once.
                    settled = found["running"] == found["answered"] == len(treated)
                    return (found, held) if settled and found["steps"] == wanted else None

                found, held = await eventually(all_placed, 60)
                assert found["running"] == found["answered"] == sum(1 for v in held.values() if v != "holdout")
                assert found["note"] is None
                # Once another version runs, these instances (still on theirs) are not placed on its steps.
                (directory / f"{AB_JOURNEY}.yaml").write_text(
                    AB_YAML.replace("title:", "title: v2", 1), encoding="utf-8"
                )
                newer = create_app(store, temporal=temporal, definitions=load_definitions(directory))
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=newer), base_url="http://j") as later:
                    assert (await later.get(f"/journeys/{AB_JOURNEY}/waiting")).json()["running"] == 0
                # Each arm's instances, as the console's diagram shows them beside the arm.
                effect = (await api.get(f"/journeys/{AB_JOURNEY}/effect", params={"by": "variant"})).json()
                groups = effect["journeys"][AB_JOURNEY]["groups"]
                entered = {g: f["entered"] for g, f in groups.items() if f["entered"]}
                expected_groups: dict[str, int] = {}
                for variant in held.values():
                    expected_groups[variant] = expected_groups.get(variant, 0) + 1
                assert entered == expected_groups
                assert set(entered) <= {"variant_a", "variant_b", "holdout"}
                # The goal is a purchase, and the outbox sends no receipts: delivery is unknown, not 0%.
                journey = effect["journeys"][AB_JOURNEY]
                assert journey["sent"] == found["running"]  # each treated instance's nudge, through the outbox
                assert journey["delivery_rate"] is None and journey["unreceipted"] == journey["sent"]

                # A big cart's order ends its wait_for; the order's page has its amount, items, status.
                buyer = next(who for who, v in held.items() if v != "holdout" and carts[who] >= 100)
                items = [{"sku": "tea-1", "title": "龙井", "quantity": 2, "price": 60}]
                order = [{"event_id": f"{buyer}-o", "type": "order.created", "customer_id": buyer, "order_id": "o-w",
                          "occurred_at": (now + timedelta(seconds=1)).isoformat(),
                          "data": {"amount": 120, "items": items}}]  # fmt: skip
                assert (await api.post("/events", json=order)).status_code == 202

                async def one_fewer():
                    again = (await api.get(f"/journeys/{AB_JOURNEY}/waiting")).json()
                    return (
                        again if again["steps"].get(WAIT_FOR_ORDER, 0) == found["steps"][WAIT_FOR_ORDER] - 1 else None
                    )

                await eventually(one_fewer, 60)
                history = (await api.get("/orders/o-w/history")).json()
                assert history["order"] == {
                    "order_id": "o-w", "customer_id": buyer, "status": "created", "amount": 120.0, "items": items,
                    "created_at": history["order"]["created_at"], "paid_at": None, "refunded_at": None,
                    "customers": [buyer],
                }  # fmt: skip
                paid = [{"event_id": f"{buyer}-p", "type": "order.paid", "customer_id": buyer, "order_id": "o-w",
                         "occurred_at": (now + timedelta(seconds=2)).isoformat(), "data": {"amount": 110}}]  # fmt: skip
                assert (await api.post("/events", json=paid)).status_code == 202

                async def paid_order():
                    record = (await api.get("/orders/o-w/history")).json()["order"]
                    return record if record["status"] == "paid" else None

                record = await eventually(paid_order, 30)
                assert record["amount"] == 110.0 and record["paid_at"] is not None  # the payment's amount counts
                assert (await api.get("/journeys/nothing/waiting")).status_code == 404
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=40)
