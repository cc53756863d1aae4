"""`POST /imports`: a platform's order export uploaded, then imported as history by a background
job (triggers/imports.py, the same as `journeys import orders`); `GET /imports/{id}`: its progress,
counts and the rows it skipped. The upload streams to a file on disk, up to a size limit, and its
header is checked before the answer, so a wrong format is said at once; the job's progress is kept
in the store after every batch, so any API process can answer for it."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.access import Permission
from core.order_exports import FORMATS, ExportError, ExportReader, parse_mapping
from core.records import known_timezone
from store import imports
from store.imports import ImportCounts
from store.tables import ImportRow
from triggers.api.deps import ApiContext, Context, Problem, allowed
from triggers.imports import ImportState, ImportStopped, run_import

log = logging.getLogger(__name__)

#: The largest upload taken by default (`create_app(max_import_bytes=...)`): 2 GiB, some 5 million
#: rows of a Taobao order report.
MAX_IMPORT_BYTES = 2 << 30
_ID = re.compile(r"^[0-9a-f]{32}$")

router = APIRouter(tags=["imports"])


class ImportStarted(BaseModel):
    import_id: str
    status: Literal["running"] = "running"
    url: str = Field(description="Where its progress is: GET it.")


class ImportJob(BaseModel):
    import_id: str
    file: str
    format: str
    dry_run: bool
    status: Literal["running", "done", "failed"] = Field(
        description="done: every row read (skipped rows are listed); failed: stopped, `error` says where, and "
        "uploading the same file again completes it."
    )
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    bytes_total: int
    bytes_read: int
    rows: int
    rows_per_second: float
    seconds_left: float | None = Field(description="At the pace so far, while running.")
    counts: ImportCounts
    problems: list[str] = Field(description="Rows skipped, `file:line: column: problem` (the first 1,000).")
    problem_count: int
    error: str | None


def _job_of(row: ImportRow) -> ImportJob:
    elapsed = max((row.updated_at - row.started_at).total_seconds(), 1e-9)
    fraction = row.bytes_read / row.bytes_total if row.bytes_total else 1.0
    left = elapsed * (1 - fraction) / fraction if row.status == "running" and fraction > 0 else None
    return ImportJob(
        import_id=row.import_id, file=row.file, format=row.format, dry_run=row.dry_run, status=row.status,
        started_at=row.started_at, updated_at=row.updated_at, finished_at=row.finished_at,
        bytes_total=row.bytes_total, bytes_read=row.bytes_read, rows=row.rows,
        rows_per_second=round(row.rows / elapsed, 1), seconds_left=None if left is None else round(left, 1),
        counts=ImportCounts.model_validate(row.counts or {}), problems=list(row.problems or []),
        problem_count=row.problem_count, error=row.error,
    )  # fmt: skip


_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/imports",
    response_model=ImportStarted,
    status_code=202,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        413: {"model": Problem, "description": "The file is over the upload limit."},
        415: {"model": Problem, "description": "Not sent as text/csv or application/octet-stream."},
        422: {"model": Problem, "description": "The file cannot be imported at all: `file:1: column: problem`."},
        503: {"model": Problem, "description": "The store is unavailable; retry."},
    },
    openapi_extra=_UPLOAD,
    dependencies=[Depends(allowed(Permission.SEND_EVENTS, body="file"))],
    summary="Upload an order export (Taobao, JD or any CSV) to import as history, in the background",
)
async def post_import(
    request: Request,
    api: Context,
    format: Annotated[Literal["taobao", "jd", "generic"], Query(description="The export's format")] = "taobao",
    map: Annotated[
        list[str] | None, Query(description="COLUMN=FIELD: read FIELD from the file's COLUMN (repeatable)")
    ] = None,
    dry_run: Annotated[
        bool, Query(description="Read and check everything, write nothing; count what would change")
    ] = False,
    timezone: Annotated[
        str | None, Query(description="Where the file's times were written (default: the shop's)")
    ] = None,
    name: Annotated[str, Query(max_length=300, description="The file's name, for its problems' lines")] = "upload.csv",
) -> JSONResponse:
    try:
        mapping = parse_mapping(map or [])
    except ExportError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    zone = timezone or api.shop_timezone
    if not known_timezone(zone):
        return JSONResponse({"detail": f"timezone {zone[:80]!r} is not an IANA time zone"}, status_code=422)
    shown = name if name.isprintable() else "upload.csv"
    limit = getattr(request.app.state, "max_import_bytes", MAX_IMPORT_BYTES)
    folder = Path(tempfile.mkdtemp(prefix="journeys-import-"))
    path = folder / "upload.csv"
    try:
        if not await _save(request, path, limit):
            shutil.rmtree(folder, ignore_errors=True)
            return JSONResponse({"detail": f"the file is over the upload limit of {limit:,} bytes"}, status_code=413)
        reader = ExportReader(
            path, FORMATS[format], mapping, timezone=zone, default_region=api.default_region, name=shown
        )
        await asyncio.to_thread(reader.check_header)
    except ExportError as err:
        shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse({"detail": str(err)}, status_code=422)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    import_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    try:
        await api.store.run(
            lambda session: imports.start_job(session, import_id, shown, format, dry_run, reader.tally.bytes_total, now)
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    jobs: set[asyncio.Task] | None = getattr(request.app.state, "import_jobs", None)
    if jobs is None:  # the running jobs, held so that none is collected before it ends
        jobs = request.app.state.import_jobs = set()
    task = asyncio.create_task(_run(api, import_id, reader, dry_run, folder))
    jobs.add(task)
    task.add_done_callback(jobs.discard)
    return JSONResponse(
        ImportStarted(import_id=import_id, url=f"/imports/{import_id}").model_dump(mode="json"), status_code=202
    )


async def _save(request: Request, path: Path, limit: int) -> bool:
    """Stream the body to `path`; False (and the file partial) when it goes over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return False
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return False
            out.write(chunk)
    return True


async def _run(api: ApiContext, import_id: str, reader: ExportReader, dry_run: bool, folder: Path) -> None:
    """The job: the import in a thread, its progress in the store after each batch; whatever
    happens it ends `done` or `failed`, and its upload is removed."""

    def record(state: ImportState, status: str = "running", error: str | None = None) -> None:
        with api.store.transaction() as session:
            imports.record_job(
                session, import_id, datetime.now(UTC), bytes_read=state.tally.bytes_read, counts=state.counts,
                problems=state.problems, problem_count=state.problem_count, status=status, error=error,
            )  # fmt: skip

    def work() -> ImportState | None:
        state: ImportState | None = None

        def progress(current: ImportState) -> None:
            nonlocal state
            state = current
            record(current)

        try:
            state = run_import(api.store, reader, dry_run=dry_run, on_progress=progress)
        except (ImportStopped, ExportError) as err:
            _finish(record, state, reader, "failed", str(err))
            return None
        except Exception as err:  # never a job left running: say what stopped it
            log.exception("import %s stopped", import_id)
            _finish(record, state, reader, "failed", f"{type(err).__name__}: {err}")
            return None
        record(state, "done")
        return state

    try:
        state = await asyncio.to_thread(work)
        if state is not None and state.counts.left_for_exits and api.on_accepted is not None:
            api.on_accepted()  # the dispatcher routes the events an open instance may exit on
    except Exception:
        log.exception("import %s: its record could not be written", import_id)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _finish(record, state: ImportState | None, reader: ExportReader, status: str, error: str) -> None:
    if state is None:
        state = ImportState(tally=reader.tally, counts=ImportCounts())
    record(state, status, error)


@router.get(
    "/imports/{import_id}",
    response_model=ImportJob,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_EVENTS))],
    summary="An import's progress (rows/s, time left), counts and skipped rows",
)
async def get_import(import_id: str, api: Context) -> JSONResponse:
    row = await api.store.run(lambda session: imports.get_job(session, import_id)) if _ID.match(import_id) else None
    if row is None:
        return JSONResponse({"detail": f"no import {import_id[:40]!r}"}, status_code=404)
    return JSONResponse(_job_of(row).model_dump(mode="json"))
