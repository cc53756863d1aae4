"""Erasure on request, on the deployed processes and PostgreSQL: `DELETE /customers/{id}` stops
the customer's journeys and removes their personal data; afterwards their phone number, email and
name are nowhere in the store, no further message goes out, an erased number that had opted out
stays opted out, and only a new `customer.created` brings the customer back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from store import queries
from store.tables import Base, ErasureRow
from tests.helpers import daytime_zone
from tests.stack import Stack, api_event, pending, sent, wait_until

PHONE, EMAIL, NAME = "+8613911112222", "wang.fang@example.com", "王芳"
KEY = {"Authorization": "Bearer ops"}  # the privacy officer's admin key
ORDERS = {"Authorization": "Bearer order-system"}
VIEWER = {"Authorization": "Bearer viewer-key"}
API_KEYS = "ingest:order-system,support:read:viewer-key,dpo:admin:ops"


def everything_in(store) -> str:
    """Every row of every table, as text."""
    with store.transaction() as session:
        return "\n".join(
            repr(tuple(row)) for table in Base.metadata.sorted_tables for row in session.execute(select(table))
        )


def test_an_erased_customer_leaves_no_contact_data_and_gets_nothing_more(pg_store, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    created = now - timedelta(minutes=20)  # the first payment reminder is due at once
    person = {"name": NAME, "phone": PHONE, "email": EMAIL, "timezone": daytime_zone(now)}
    with Stack(tmp_path, pg_store.url, extra_env={"JOURNEYS_API_KEYS": API_KEYS, "JOURNEYS_SECRET": "salt"}) as stack:

        def post(*events) -> None:
            answer = httpx.post(f"{stack.api}/events", json=list(events), headers=ORDERS, timeout=30)
            assert answer.status_code == 202, answer.text

        post(
            api_event(now - timedelta(hours=1), "cust-1", "customer.created", "c1", **person),
            api_event(created, "order-1", "order.created", "c1", "o1", amount=99),
        )
        wait_until(lambda: sent(pg_store, "payment_reminder") == 1, 120, "the first payment reminder")
        with pg_store.transaction() as session:  # the customer replied STOP
            queries.add_suppression(session, "sms", PHONE, "all", "twilio STOP", now)
        assert PHONE in everything_in(pg_store) and NAME in everything_in(pg_store)

        for not_allowed in (ORDERS, VIEWER):  # a read-only key, and the order systems', cannot erase
            refused = httpx.delete(f"{stack.api}/customers/c1", headers=not_allowed, timeout=30)
            assert refused.status_code == 403 and "may not erase customers" in refused.json()["detail"]
        assert PHONE in everything_in(pg_store)
        erased = httpx.delete(f"{stack.api}/customers/c1", headers=KEY, timeout=60)
        assert erased.status_code == 200, erased.text
        assert "pre_close_reminder:o1" in erased.json()["terminated"]
        assert erased.json()["removed"] == {
            "customer_record": 1,
            "messages_scrubbed": 1,
            "events_scrubbed": 2,
            "suppressions_hashed": 1,
            "loyalty_rows": 0,
            "sms_replies": 0,
            "links_and_clicks": 0,
        }
        assert httpx.delete(f"{stack.api}/customers/c1", timeout=10).status_code == 401  # keys required

        # A later order of the erased customer: taken, applied to nothing, its data dropped.
        post(api_event(now - timedelta(minutes=20), "order-2", "order.created", "c1", "o2", amount=5, phone=PHONE))
        wait_until(lambda: pending(pg_store) == 0, 60, "the later event to be dispatched")
        stored = everything_in(pg_store)
        with pg_store.transaction() as session:
            messages = queries.list_messages(session)

    for secret in (PHONE, PHONE.removeprefix("+86"), EMAIL, NAME):
        assert secret not in stored, f"{secret!r} is still in the store"
    assert [(m.order_id, m.status, m.address, m.body) for m in messages] == [("o1", "sent", None, None)]
    queries.configure_salt("salt")  # as the worker does with JOURNEYS_SECRET
    try:
        with pg_store.transaction() as session:
            assert queries.suppression_scope(session, "sms", PHONE) == "all"  # still opted out, as a hash
    finally:
        queries.configure_salt(None)
    with pg_store.transaction() as session:
        assert queries.get_customer(session, "c1") is None
        record = session.get(ErasureRow, "c1")
        assert record.requested_by.startswith("dpo [") and "ops" not in record.requested_by
        queries.recreate_customer(session, "c1", now)
        assert queries.erased_at(session, "c1") is None  # a new customer.created brings them back
