"""The store on SQLite and PostgreSQL: migrations, customers, the event log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, select

from store import broadcast_pages as pages
from store import queries
from store.tables import ErasureRow, InstanceRow, SuppressionRow
from tests.helpers import at, customer, event


def test_migrations_create_the_tables_and_run_twice(store):
    store.migrate()  # already at head: nothing to do, no error
    assert {"customers", "events", "messages", "suppressions", "alembic_version"} <= set(
        inspect(store.engine).get_table_names()
    )


def test_customer_round_trip(store):
    person = customer(tags=["vip"], unsubscribed=["email"], birthday="--02-29", timezone="America/New_York")
    with store.transaction() as session:
        queries.upsert_customer(session, person, datetime.now(UTC), "CN")
    with store.transaction() as session:
        assert queries.get_customer(session, "c1") == person
        queries.upsert_customer(session, person.model_copy(update={"blacklisted": True}), datetime.now(UTC), "CN")
    with store.transaction() as session:
        assert queries.get_customer(session, "c1").blacklisted is True
        assert queries.get_customer(session, "nobody") is None


def test_event_log_takes_each_event_id_once(store):
    first = event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="e1", amount=99)
    with store.transaction() as session:
        assert queries.store_event(session, first, datetime.now(UTC)) is True
    with store.transaction() as session:
        assert queries.store_event(session, first, datetime.now(UTC)) is False


def test_events_known_for_a_key_since_a_time(store):
    items = [
        event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="created"),
        event("order.paid", "2026-02-01 10:05+08:00", order="o1", event_id="paid"),
        event("order.paid", "2026-02-01 09:00+08:00", order="o1", event_id="earlier"),
        event("order.paid", "2026-02-01 10:05+08:00", order="o2", event_id="other-order"),
    ]
    with store.transaction() as session:
        for item in items:
            queries.store_event(session, item, datetime.now(UTC))
    with store.transaction() as session:
        found = queries.events_for_key_since(
            session, key_field="order", key="o1", types=["order.paid"], since=at("2026-02-01 10:00+08:00"),
            exclude_id="created",
        )  # fmt: skip
    assert [e.event_id for e in found] == ["paid"]
    assert found[0].occurred_at == at("2026-02-01 10:05+08:00")


def test_times_come_back_aware_utc(store):
    with store.transaction() as session:
        queries.store_event(
            session, event("order.created", "2026-02-01 10:00+08:00", order="o1", event_id="t"), datetime.now(UTC)
        )
    with store.transaction() as session:
        [found] = queries.events_for_key_since(
            session, key_field="customer", key="c1", types=["order.created"], since=at("2026-01-01 00:00+00:00"), exclude_id="-"
        )  # fmt: skip
    assert found.occurred_at.utcoffset() == timedelta(0)


def test_dispatch_leases(store):
    now = datetime.now(UTC)
    minute = timedelta(minutes=1)
    with store.transaction() as session:
        assert queries.claim_customer(session, "c1", "a", now, minute) is True
    with store.transaction() as session:
        assert queries.claim_customer(session, "c1", "b", now, minute) is False  # a holds it
        assert queries.claim_customer(session, "c1", "a", now, minute) is True  # a extends it
        assert queries.claim_customer(session, "c2", "b", now, minute) is True  # other customers are free
    with store.transaction() as session:
        assert queries.claim_customer(session, "c1", "b", now + 2 * minute, minute) is True  # expired: b takes it
        assert queries.claim_customer(session, "c1", "a", now + 2 * minute, minute) is False
    with store.transaction() as session:
        queries.release_customer(session, "c1", "a")  # not a's any more: nothing happens
        assert queries.claim_customer(session, "c1", "a", now + 2 * minute, minute) is False
        queries.release_customer(session, "c1", "b")
        assert queries.claim_customer(session, "c1", "a", now + 2 * minute, minute) is True


def test_a_runs_end_is_put_on_its_instance_row_or_on_a_new_one(store):
    """record_exit: the run's row gets its end and reason; a run with no row (restarted, or started
    before instances were recorded) gets one, with both; the reason is cut to its column."""
    entered = datetime(2026, 2, 1, 2, tzinfo=UTC)

    def record(workflow_id: str, reason: str) -> dict:
        return {
            "workflow_id": workflow_id,
            "run_id": "r1",
            "journey": "payment_reminder",
            "journey_version": "v1",
            "customer_id": "c1",
            "order_id": "o1",
            "variant": None,
            "entered_at": entered,
            "ended_at": entered + timedelta(hours=1),
            "reason": reason,
        }

    with store.transaction() as session:
        started = {k: v for k, v in record("payment_reminder:o1", "").items() if k not in ("ended_at", "reason")}
        session.add(InstanceRow(**started))
    with store.transaction() as session:
        queries.record_exit(session, record("payment_reminder:o1", "exit:order.paid"))
        queries.record_exit(session, record("payment_reminder:o2", "x" * 80))
    with store.transaction() as session:
        rows = {row.workflow_id: row for row in session.scalars(select(InstanceRow))}
    assert set(rows) == {"payment_reminder:o1", "payment_reminder:o2"}
    assert (rows["payment_reminder:o1"].exit_reason, rows["payment_reminder:o1"].ended_at) == (
        "exit:order.paid",
        entered + timedelta(hours=1),
    )
    assert rows["payment_reminder:o2"].exit_reason == "x" * 60
    assert rows["payment_reminder:o2"].entered_at == entered


def test_of_an_address_s_own_suppression_and_its_erased_hash_the_stronger_decides(store):
    """An erased number that sent STOP stays out of every SMS whatever its own row says later (a TD
    reply writes 'marketing'); an own 'all' is not weakened by a hash's 'marketing' either."""
    at_ = datetime(2026, 2, 1, tzinfo=UTC)
    with store.transaction() as session:
        session.add(
            SuppressionRow(
                channel="sms", address=queries.suppression_hash("sms", "+8613800000001"), scope="all",
                reason="erased", created_at=at_,
            )
        )  # fmt: skip
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", "+8613800000001") == "all"
        assert queries.suppression_scope(session, "sms", "+8613800000002") is None
        queries.add_suppression(session, "sms", "+8613800000001", "marketing", "replied TD", at_)
    with store.transaction() as session:
        assert queries.suppression_of(session, "sms", "+8613800000001").reason == "erased"
        assert queries.suppression_scope(session, "sms", "+8613800000001") == "all"
        assert pages.suppression_scopes(session, [("sms", "+8613800000001")]) == {("sms", "+8613800000001"): "all"}
        queries.add_suppression(session, "sms", "+8613800000003", "all", "STOP", at_)
        session.add(
            SuppressionRow(
                channel="sms", address=queries.suppression_hash("sms", "+8613800000003"), scope="marketing",
                reason="erased", created_at=at_,
            )
        )  # fmt: skip
    with store.transaction() as session:
        assert queries.suppression_of(session, "sms", "+8613800000003").reason == "STOP"
        assert pages.suppression_scopes(session, [("sms", "+8613800000003")]) == {("sms", "+8613800000003"): "all"}
        # A START from the number lifts both: its holder asks for messages again.
        assert queries.remove_suppression(session, "sms", "+8613800000001") is True
    with store.transaction() as session:
        assert queries.suppression_scope(session, "sms", "+8613800000001") is None


def test_an_erasure_never_weakens_what_an_earlier_erasure_of_the_address_left(store):
    """An address unsubscribed (marketing) and its customer was erased; a later customer with the
    same address hard-bounced (all) and was erased too: the hash keeps 'all'."""
    at_ = datetime(2026, 2, 1, tzinfo=UTC)
    for number, (customer_id, scope) in enumerate((("c1", "marketing"), ("c2", "all")), start=1):
        with store.transaction() as session:
            queries.upsert_customer(session, customer(customer_id, phone=None), at_, "CN")
            queries.add_suppression(session, "email", "wangfang@example.com", scope, f"reason {number}", at_)
        with store.transaction() as session:
            queries.erase_customer(session, customer_id, at_ + timedelta(days=number), "dpo", "CN")
        with store.transaction() as session:
            assert queries.suppression_scope(session, "email", "wangfang@example.com") == scope
    with store.transaction() as session:
        queries.upsert_customer(session, customer("c3", phone=None), at_, "CN")
        queries.add_suppression(session, "email", "wangfang@example.com", "marketing", "unsubscribe link", at_)
        queries.erase_customer(session, "c3", at_ + timedelta(days=5), "dpo", "CN")
    with store.transaction() as session:
        assert queries.suppression_scope(session, "email", "wangfang@example.com") == "all"
        # A resubscribe to the marketing group lifts an unsubscribe only, never the bounce.
        assert queries.remove_suppression(session, "email", "wangfang@example.com", scope="marketing") is False
        assert queries.suppression_scope(session, "email", "wangfang@example.com") == "all"


def test_a_customer_and_their_erasure_are_read_together(store):
    erased = datetime(2026, 2, 1, tzinfo=UTC)
    with store.transaction() as session:
        queries.upsert_customer(session, customer("c1"), erased, "CN")
        queries.upsert_customer(session, customer("c2"), erased, "CN")
        for customer_id in ("c2", "c3", "c4"):
            session.add(ErasureRow(customer_id=customer_id, erased_at=erased, requested_by="test", removed={}))
    with store.transaction() as session:
        queries.recreate_customer(session, "c4", erased + timedelta(days=1))
    with store.transaction() as session:
        assert queries.customer_and_erasure(session, "c1", lock=True) == (customer("c1"), None)
        assert queries.customer_and_erasure(session, "c2") == (customer("c2"), erased)  # a record kept, erased
        assert queries.customer_and_erasure(session, "c3") == (None, erased)  # no record, erased
        assert queries.customer_and_erasure(session, "c4") == (None, None)  # erased, then created again
        assert queries.customer_and_erasure(session, "nobody") == (None, None)
