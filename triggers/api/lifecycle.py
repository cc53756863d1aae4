"""The customer lifecycle report (客户生命周期, store/lifecycle.py): the stages at a month's end and
the month's migration matrix (正向迁移/负向迁移), as JSON."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from core.access import Permission
from store.lifecycle import LifecycleReport, report
from triggers.api.deps import Context, Problem, allowed

router = APIRouter(dependencies=[Depends(allowed(Permission.READ_SEGMENTS))], tags=["lifecycle"])

_RESPONSES = {401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}}


@router.get(
    "/lifecycle/report",
    response_model=LifecycleReport,
    responses=_RESPONSES,
    summary="The lifecycle stages at a month's end and the migration matrix from its start (正向/负向迁移)",
)
async def lifecycle_report(
    api: Context,
    month: str = Query(max_length=40, description="YYYY-MM, in the shop's time zone; the current month runs to now."),
) -> LifecycleReport | JSONResponse:
    now = datetime.now(UTC)

    def read(session) -> LifecycleReport:
        return report(session, month, api.shop_timezone, api.definitions.rfm.lifecycle, now)

    try:
        return await api.store.run(read)
    except ValueError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
