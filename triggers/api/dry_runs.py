"""Dry runs of drafts (docs/publishing.md, docs/dry-runs.md): `POST /definitions/dry-runs` queues
a set of files to be simulated against the shop's own events of the last N days, beside what
runs now; `GET /definitions/dry-runs/{id}` answers its state, progress and result.

A dry run is a simulation of days of events, seconds to minutes of CPU: it runs in a process of
its own (`python -m journeys.dry_run JOB_ID`, spawned by module name: triggers may not import the
CLI's layer), with the API's environment and the API's store, its output in a log under the data
directory. At most `store.dry_runs.MAX_RUNNING` run at once; the others wait queued, and each
process takes the next when it ends (or the next request here starts it, after a crash).

`start_dry_run` is the plain function behind the POST, for the change's own route
(`POST /definitions/changes/{id}/dry-runs`) to call with the change's files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from core.access import Permission
from core.config import Settings
from definitions.drafts import MAX_FILE_BYTES, DraftError, kind_of
from store import definition_changes, dry_runs
from store.db import Store
from store.tables import DefinitionChangeRow, DryRunRow
from triggers.api.deps import Context, Problem, allowed, requester

log = logging.getLogger(__name__)

router = APIRouter(tags=["definitions"])

#: Most files one dry run takes (a journey with its templates is a handful).
MAX_FILES = 50
MAX_DAYS = 90
_ID = re.compile(r"^[0-9a-f]{32}$")


class DryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] = Field(
        description="The draft: {path inside the definitions directory: text}, laid over what runs."
    )
    days: int = Field(7, ge=1, le=MAX_DAYS, description="How many days of the shop's events, up to now.")
    change_id: str | None = Field(None, max_length=36, description="The change these files are from, if any.")


class ChangeDryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(7, ge=1, le=MAX_DAYS, description="How many days of the shop's events, up to now.")


class DryRunJob(BaseModel):
    """A dry run, as docs/publishing.md answers it."""

    id: str
    change_id: str | None
    state: Literal["queued", "running", "done", "failed"]
    progress: float = Field(description="0..1, across both simulations (what runs now, then the draft).")
    message: str | None = Field(description="Why it failed.")
    days: int
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None = Field(
        description="When done: {window: {from, to}, events, customers, seconds, current, draft, diff}, each of the "
        "last three {journey: {sent, skipped: {reason: n}, deferred: {reason: n}, failed, cost, converted, revenue}}."
    )


class DryRunRefused(ValueError):
    """A request for a dry run that cannot be: the message names what is wrong; `status` its HTTP code."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def job_of(row: DryRunRow) -> DryRunJob:
    return DryRunJob(
        id=row.id, change_id=row.change_id, state=row.state, progress=round(row.progress, 3), message=row.message,
        days=row.days, requested_by=row.requested_by, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, result=row.result,
    )  # fmt: skip


def check_files(files: dict[str, str]) -> None:
    """DryRunRefused naming the first file a draft may not hold."""
    if not files:
        raise DryRunRefused("files: a dry run needs at least one file ({path: text})")
    if len(files) > MAX_FILES:
        raise DryRunRefused(f"files: {len(files)} files; a dry run takes at most {MAX_FILES}")
    for path, text in files.items():
        try:
            kind_of(path)
        except DraftError as err:
            raise DryRunRefused(f"files: {err}") from err
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as err:  # a lone surrogate (\ud800 in JSON): no file and no store holds it
            raise DryRunRefused(f"files: {path}: not text (character {err.start} cannot be UTF-8)") from err
        if "\x00" in text:
            raise DryRunRefused(f"files: {path}: holds a NUL character, which no definition file may")
        if size > MAX_FILE_BYTES:
            raise DryRunRefused(f"files: {path}: longer than {MAX_FILE_BYTES // 1024} KiB")


def log_path(settings: Settings, job_id: str) -> Path:
    """Where a dry run's process writes its output."""
    return settings.data_dir / "dry-runs" / f"{job_id}.log"


def start_dry_run(
    store: Store,
    settings: Settings,
    files: dict[str, str],
    days: int,
    change_id: str | None,
    requested_by: str,
) -> DryRunJob:
    """Queue a dry run of `files` over the last `days` days and start it if fewer than
    MAX_RUNNING run (else it waits, queued). DryRunRefused for what the caller can mend."""
    check_files(files)
    if not 1 <= days <= MAX_DAYS:
        raise DryRunRefused(f"days: {days}; a dry run covers 1 to {MAX_DAYS} days")
    if change_id is not None:
        try:
            definition_changes.check_id(change_id)
        except definition_changes.ChangeError as err:
            raise DryRunRefused(f"change_id: {err}") from err
    now = datetime.now(UTC)
    with store.transaction() as session:
        if change_id is not None and session.get(DefinitionChangeRow, change_id) is None:
            raise DryRunRefused(f"change_id: no change {change_id}", status=404)
        if change_id is not None and definition_changes.change_files(session, change_id) != files:
            raise DryRunRefused(
                f"change_id: these files are not change {change_id}'s as it is now (its figures would be "
                "another version's): send its files unchanged, or POST /definitions/changes/{id}/dry-runs"
            )
        job_id = dry_runs.queue(session, files, days, requested_by, change_id, now).id
    dispatch(store, settings)
    with store.transaction() as session:
        return job_of(dry_runs.get(session, job_id))


def dispatch(store: Store, settings: Settings) -> list[str]:
    """Start a process for each queued job while fewer than MAX_RUNNING run: the ids started.
    Each job is claimed (running, no pid yet) before its process is spawned, so two API
    processes never start the same one; the process records its pid when it starts."""
    started = []
    while True:
        with store.transaction() as session:
            job_id = dry_runs.claim_next(session, datetime.now(UTC), None)
        if job_id is None:
            return started
        try:
            pid = _spawn(store, settings, job_id)
        except OSError as err:
            with store.transaction() as session:
                dry_runs.fail(session, job_id, f"the dry run's process could not start: {err}", datetime.now(UTC))
            log.error("dry run %s: could not start its process: %s", job_id, err)
            continue
        with store.transaction() as session:
            row = session.get(DryRunRow, job_id)
            if row is not None and row.pid is None:
                dry_runs.set_pid(session, job_id, pid)
        started.append(job_id)


def _spawn(store: Store, settings: Settings, job_id: str) -> int:
    """`python -m journeys.dry_run JOB_ID` with this process's environment and this API's store
    and definitions, detached (its own session: it outlives a restart of the API), its output in
    its log. A thread reaps it when it ends (no zombie to pass for a running process)."""
    log_file = log_path(settings, job_id)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, Settings.variable("database_url"): store.url}
    if settings.definitions_dir is not None:
        environment[Settings.variable("definitions_dir")] = str(Path(settings.definitions_dir).resolve())
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "journeys.dry_run", job_id],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    threading.Thread(target=process.wait, name=f"dry-run-{job_id[:8]}", daemon=True).start()
    return process.pid


def _settings(request: Request) -> Settings:
    """The API's settings (`app.state.settings` when the app was given them), else the environment's."""
    found = getattr(request.app.state, "settings", None)
    return found if isinstance(found, Settings) else Settings()


def _refused(err: DryRunRefused) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=err.status)


@router.post(
    "/definitions/dry-runs",
    response_model=DryRunJob,
    status_code=202,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem, "description": "change_id names no change."},
        422: {"model": Problem, "description": "A file a draft may not hold, or days outside 1..90."},
    },
    dependencies=[Depends(allowed(Permission.WRITE_DRAFTS))],
    summary="Dry-run a draft against the shop's events of the last N days, beside what runs now",
)
async def post_dry_run(body: DryRunRequest, request: Request, api: Context) -> Any:
    try:
        return await asyncio.to_thread(
            start_dry_run, api.store, _settings(request), body.files, body.days, body.change_id, requester(request)
        )
    except DryRunRefused as err:
        return _refused(err)


@router.post(
    "/definitions/changes/{change_id}/dry-runs",
    response_model=DryRunJob,
    status_code=202,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem, "description": "No such change."},
    },
    dependencies=[Depends(allowed(Permission.WRITE_DRAFTS))],
    summary="Dry-run a change's files against the shop's events of the last N days, beside what runs now",
)
async def post_change_dry_run(change_id: str, body: ChangeDryRunRequest, request: Request, api: Context) -> Any:
    try:
        files = await api.store.run(lambda session: definition_changes.change_files(session, change_id))
    except definition_changes.ChangeError as err:
        return JSONResponse({"detail": str(err)}, status_code=err.status)
    try:
        return await asyncio.to_thread(
            start_dry_run, api.store, _settings(request), files, body.days, change_id, requester(request)
        )
    except DryRunRefused as err:
        return _refused(err)


@router.get(
    "/definitions/dry-runs/{job_id}",
    response_model=DryRunJob,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="A dry run's state, progress and, when done, its result",
)
async def get_dry_run(job_id: str, request: Request, api: Context) -> Any:
    if not _ID.match(job_id):
        return JSONResponse({"detail": f"{job_id!r} is not a dry run's id (32 hex digits)"}, status_code=422)

    def read() -> DryRunJob | None:
        with api.store.transaction() as session:
            row = dry_runs.get(session, job_id)  # a running job whose process is gone: failed here
            queued = session.scalar(select(DryRunRow.id).where(DryRunRow.state == "queued").limit(1)) is not None
        if row is not None and queued:  # a slot may be free (a job ended, or its process died): start the next
            dispatch(api.store, _settings(request))
            with api.store.transaction() as session:
                row = dry_runs.get(session, job_id)
        return job_of(row) if row is not None else None

    job = await asyncio.to_thread(read)
    if job is None:
        return JSONResponse({"detail": f"no dry run {job_id}"}, status_code=404)
    return job
