"""Replay saved histories of every shipped journey against today's interpreter.

A failure means a code change would make running instances non-deterministic: put the change
behind `workflow.patched()` (and keep the old path) instead of re-recording the histories.

The replayer runs the sandbox's default restrictions, under which the interpreter's module
(workflows/journey.py, which the worker passes through: journeys/worker.py PASSTHROUGH_MODULES) is
imported inside the sandbox: a non-deterministic call there (the wall clock, randomness, I/O)
fails these replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.journey import JourneyWorkflow

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_every_shipped_journey_has_a_saved_history(definitions):
    recorded = {path.name.split("__")[0] for path in HISTORIES}
    assert recorded == set(definitions.journeys)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path):
    workflow_id = path.stem.rsplit("__", 1)[0].replace("__", ":")
    history = WorkflowHistory.from_json(workflow_id, json.loads(path.read_text()))
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=pydantic_data_converter)
    assert "workflows.journey" not in replayer.config()["workflow_runner"].restrictions.passthrough_modules
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
