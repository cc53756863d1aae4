"""`journeys events` lists the log newest first through store.queries.latest_events, whose
`pending` is the dispatcher's own (neither dispatched nor a dead letter), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from store import queries
from tests.helpers import event

T0 = datetime(2026, 2, 1, 2, 0, tzinfo=UTC)


def _log_three(store) -> None:
    """e1 dispatched, e2 a dead letter, e3 pending; received in that order."""
    with store.transaction() as session:
        for n, event_id in enumerate(["e1", "e2", "e3"]):
            item = event("order.created", T0, order=f"o{n}", event_id=event_id)
            queries.store_event(session, item, T0 + timedelta(minutes=n))
        queries.mark_all_dispatched(session, ["e1"], T0 + timedelta(minutes=5))
        queries.record_dispatch_failure(session, "e2", "bad data", T0 + timedelta(minutes=5), permanent=True)


def test_latest_events_newest_first_and_the_pending_ones(store):
    _log_three(store)
    with store.transaction() as session:
        assert [row.event_id for row in queries.latest_events(session, 10)] == ["e3", "e2", "e1"]
        assert [row.event_id for row in queries.latest_events(session, 2)] == ["e3", "e2"]
        assert [row.event_id for row in queries.latest_events(session, 10, pending=True)] == ["e3"]


def test_the_events_command_lists_them(sqlite_store, monkeypatch):
    from journeys.cli import app

    _log_three(sqlite_store)
    monkeypatch.setenv("DATABASE_URL", str(sqlite_store.engine.url))
    listed = CliRunner().invoke(app, ["events"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0] == "3 events (newest first, at most 50)"
    assert [line.split()[1] for line in lines[1:]] == ["e3", "e2", "e1"]
    pending = CliRunner().invoke(app, ["events", "--pending"])
    assert pending.output.splitlines()[0] == "1 pending events (newest first, at most 50)"
    assert "e3  order.created" in pending.output
