"""No silent endings. An expression that fails on a customer's or an order's data ends that run
on the record: a `failed` ledger row with reason expression_error, the error, and an ERROR in the
worker's log naming the journey and key. An error from the runtime (the workflow sandbox refusing
an access, an import) is not the data's fault: it fails the workflow task, Temporal retries it,
and the instance goes on once the cause is gone. Both run sandboxed, as the worker runs them."""

from __future__ import annotations

import logging
import textwrap
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

from definitions import expressions
from definitions.loader import load_definitions
from instances.contract import JourneyResult
from journeys.simulate import Simulation
from tests.helpers import at, customer, event

DUE = """\
name: due_reminder
category: transactional
entry: {event: order.created, key: order}
vars:
  due: "time(order.due_at)"
steps:
  - send: {id: remind, template: note, deadline: "vars.due"}
"""

CHECKED = """\
name: checked
category: transactional
entry: {event: order.created, key: order}
steps:
  - wait: 5m
  - if:
      condition: "runtime_check()"
      then:
        - send: {id: note, template: note}
"""


@pytest.fixture
def custom(tmp_path):
    def make(text: str):
        folder = tmp_path / "definitions"
        (folder / "templates").mkdir(parents=True, exist_ok=True)
        (folder / "templates" / "note.yaml").write_text('sms:\n  zh-CN: "note {{ order.order_id }}"\n')
        (folder / "journey.yaml").write_text(textwrap.dedent(text))
        return load_definitions(folder)

    return make


async def test_an_expression_failing_on_the_data_is_recorded_not_silent(custom, sqlite_store, caplog):
    definitions = custom(DUE)
    begin = at("2026-02-02 10:00+08:00")
    caplog.set_level(logging.ERROR)
    async with Simulation(definitions, sqlite_store, begin) as sim:
        await sim.create_customer(customer(), begin)
        await sim.emit(event("order.created", begin, order="good", due_at="2026-02-03T10:00:00+08:00"))
        await sim.emit(event("order.created", begin, order="bad", due_at="next Tuesday"))
        await sim.advance_to(begin + timedelta(minutes=1))
        bad = await sim.client.get_workflow_handle("due_reminder:bad", result_type=JourneyResult).result()
        records = sim.records()

    assert bad.outcome.startswith("expression_error at vars.due: expression 'time(order.due_at)' failed")
    assert sorted((r["order_id"], r["step"], r["status"], r["reason"]) for r in records) == [
        ("bad", "vars.due", "failed", "expression_error"),
        ("good", "remind", "sent", None),
    ]
    with sqlite_store.transaction() as session:
        from store import queries

        row = next(m for m in queries.list_messages(session, order_id="bad"))
    assert "'next Tuesday' is not an RFC 3339 time" in row.error
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("journey due_reminder for order bad stopped at vars.due" in m for m in errors), errors


async def test_a_runtime_error_fails_the_workflow_task_and_the_journey_resumes(custom, sqlite_store, monkeypatch):
    """The incident: the sandbox refused `threading.Lock` inside an expression and the journey
    ended as if its data were wrong. Now the workflow task fails and is retried."""
    refusals = []

    def runtime_check() -> bool:
        if len(refusals) < 2:
            refusals.append(1)
            raise RestrictedWorkflowAccessError("threading.Lock.__call__")
        return True

    monkeypatch.setitem(expressions._CONDITIONS.globals, "runtime_check", runtime_check)
    definitions = custom(CHECKED)
    begin = at("2026-02-02 10:00+08:00")
    async with Simulation(definitions, sqlite_store, begin) as sim:
        await sim.create_customer(customer(), begin)
        await sim.emit(event("order.created", begin, order="o1"))
        await sim.advance_to(begin + timedelta(minutes=10))
        handle = sim.client.get_workflow_handle("checked:o1", result_type=JourneyResult)
        result = await handle.result()
        kinds = [e.event_type for e in (await handle.fetch_history()).events]
        records = sim.records()

    assert len(refusals) == 2
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) >= 1
    assert result.outcome == "completed" and result.sends == {"note": "sent"}
    assert [(r["step"], r["status"]) for r in records] == [("note", "sent")]


def test_expressions_compile_when_definitions_load(custom):
    """Evaluating is a lookup and a call: the loader compiled every expression already."""
    custom(DUE)
    assert "time(order.due_at)" in expressions._EXPRESSIONS
    assert "vars.due" in expressions._EXPRESSIONS
    assert ("note {{ order.order_id }}", False) in expressions._TEMPLATES
