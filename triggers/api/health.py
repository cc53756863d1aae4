"""Health probes: `/healthz` (the process is up: a liveness probe) and `/readyz` (the store and
Temporal answer: a readiness probe). Neither needs an API key."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from triggers.api.deps import Context, Problem, temporal_client

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The API process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The store and Temporal answer", responses={503: {"model": Problem}})
async def readyz(request: Request, api: Context) -> JSONResponse:
    try:
        await api.store.run(lambda session: session.execute(text("select 1")))
    except OperationalError as err:
        return JSONResponse({"detail": f"store unavailable: {err.orig}"}, status_code=503)
    if api.temporal is not None:
        try:
            client = await temporal_client(request)
            await asyncio.wait_for(client.service_client.check_health(), timeout=5)
        except Exception as err:
            return JSONResponse({"detail": f"Temporal unavailable: {err}"}, status_code=503)
    return JSONResponse({"status": "ready"})
