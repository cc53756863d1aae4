"""Broadcasts: start, cancel, follow (triggers.broadcasts)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from core.access import Permission
from triggers import broadcasts
from triggers.api.deps import ApiContext, Context, Problem, Temporal, allowed
from triggers.broadcasts import BroadcastError, BroadcastStatus, UnknownBroadcast

router = APIRouter(tags=["broadcasts"])

_RESPONSES = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem},
              503: {"model": Problem}}  # fmt: skip


def _refused(err: BroadcastError, name: str, api: ApiContext) -> JSONResponse:
    """404 for no such broadcast (or run of one), 409 for one that cannot do that now."""
    return JSONResponse({"detail": str(err)}, status_code=404 if isinstance(err, UnknownBroadcast) else 409)


@router.get(
    "/broadcasts",
    response_model=list[BroadcastStatus],
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_SEGMENTS))],
    summary="Every broadcast defined, with its progress",
)
async def list_broadcasts(api: Context, client: Temporal) -> list[BroadcastStatus]:
    definitions = api.definitions
    return [await broadcasts.status(client, api.store, definitions, name) for name in sorted(definitions.broadcasts)]


@router.get(
    "/broadcasts/{name}",
    response_model=BroadcastStatus,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_SEGMENTS))],
    summary="A broadcast's progress: members, instances started and waiting, sends and skips by reason",
)
async def broadcast_status(name: str, api: Context, client: Temporal) -> BroadcastStatus | JSONResponse:
    try:
        return await broadcasts.status(client, api.store, api.definitions, name)
    except BroadcastError as err:
        return _refused(err, name, api)


@router.get(
    "/broadcasts/{name}/runs",
    response_model=list[BroadcastStatus],
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_SEGMENTS))],
    summary="A recurring broadcast's runs (name@date), by date, each with its progress",
)
async def broadcast_runs(name: str, api: Context, client: Temporal) -> list[BroadcastStatus] | JSONResponse:
    try:
        return await broadcasts.runs(client, api.store, api.definitions, name)
    except BroadcastError as err:
        return _refused(err, name, api)


@router.get(
    "/broadcasts/{name}/dry-run",
    response_model=broadcasts.DryRun,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_SEGMENTS))],
    summary="What the broadcast would do if started now, member by member; sends nothing",
)
async def dry_run_broadcast(name: str, api: Context) -> broadcasts.DryRun | JSONResponse:
    now = datetime.now(UTC)
    try:
        return await asyncio.to_thread(
            broadcasts.dry_run, api.store, api.definitions, name, now, default_region=api.default_region
        )
    except BroadcastError as err:
        return _refused(err, name, api)


@router.post(
    "/broadcasts/{name}/start",
    response_model=BroadcastStatus,
    status_code=202,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.RUN_BROADCASTS))],
    summary="Start a broadcast (once): every member of its segment gets an instance that sends at its time",
)
async def start_broadcast(name: str, api: Context, client: Temporal) -> BroadcastStatus | JSONResponse:
    return await _then_status(broadcasts.start(client, api.definitions, name, api.task_queue), name, api, client)


@router.post(
    "/broadcasts/{name}/cancel",
    response_model=BroadcastStatus,
    status_code=202,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.RUN_BROADCASTS))],
    summary="Cancel a broadcast: no more instances start; those still waiting send nothing",
)
async def cancel_broadcast(name: str, api: Context, client: Temporal) -> BroadcastStatus | JSONResponse:
    return await _then_status(broadcasts.cancel(client, api.definitions, name), name, api, client)


async def _then_status(action, name: str, api: ApiContext, client) -> BroadcastStatus | JSONResponse:
    """Do `action` (a start or a cancel), then answer with the broadcast's status; a 404 or 409
    saying why it could not be done."""
    try:
        await action
        return await broadcasts.status(client, api.store, api.definitions, name)
    except BroadcastError as err:
        return _refused(err, name, api)
