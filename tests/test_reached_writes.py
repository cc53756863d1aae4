"""Who writes the `reached` read model (store/reached.py): the Store's transactions and the named
points only, never a listener on every session; and settling has a lock of its own, apart from
the customers' locks."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from store import queries, reached
from store.tables import ReachedRow
from tests.test_effect import T, message


def runs(store) -> list[tuple[str, str]]:
    with store.transaction() as session:
        return list(session.execute(select(ReachedRow.workflow_id, ReachedRow.step).order_by(ReachedRow.workflow_id)))


def test_a_session_the_store_did_not_make_writes_no_reached_row(store):
    with Session(store.engine) as session, session.begin():  # a plain session on the same engine
        session.add(message("payment_reminder", "o1", T, customer="c1", order="o1"))
    assert runs(store) == []
    with store.transaction() as session:  # the Store's transaction notes what it sent
        session.add(message("payment_reminder", "o2", T, customer="c2", order="o2"))
        session.flush()  # collected at the flush, written before the commit
        session.add(message("payment_reminder", "o3", T, customer="c3", order="o3", status="sending"))
    assert runs(store) == [("payment_reminder:o2", "remind")]


def test_a_status_update_notes_the_message_that_becomes_sent(store):
    with store.transaction() as session:
        session.add(message("payment_reminder", "o4", T, customer="c4", order="o4", status="sending"))
    assert runs(store) == []
    with store.transaction() as session:
        row = queries.find_ledger_row(session, "payment_reminder:o4", "r1", "remind")
        assert queries.advance_status(row, "sent", T)
        assert session.scalars(select(ReachedRow.message_id)).all() == [row.id]  # at once, in this transaction
        assert queries.advance_status(row, "delivered", T)  # already reached: nothing more to note
    assert runs(store) == [("payment_reminder:o4", "remind")]


def test_settling_takes_its_own_lock_not_a_customers(pg_store):
    """A customer whose id is "settle" no longer shares its lock with the settler; two settlers
    still wait for each other."""
    store = pg_store
    with store.transaction() as holder:
        reached.lock_customers(holder, ["settle"])
        with store.transaction() as session:
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert reached.settle(session) == 0  # not blocked by the customer's lock
    with store.transaction() as settler:
        reached.settle(settler)
        with pytest.raises(OperationalError, match="lock timeout"), store.transaction() as session:
            session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            reached.settle(session)
