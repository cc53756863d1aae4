"""`GET /reports/sms`: the SMS report (短信报表, views.sms_report) as JSON, for the role that reads
the effect report."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from core.access import Permission
from triggers.api.deps import Context, Problem, allowed
from views.sms_report import SmsReport, sms_period, sms_report

router = APIRouter(dependencies=[Depends(allowed(Permission.READ_JOURNEYS))], tags=["effect"])


@router.get(
    "/reports/sms",
    response_model=SmsReport,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}},
    summary="SMS per day, signature and template: submitted, delivered, failed by code, replied, clicked, parts, cost",
)
async def report_sms(
    api: Context,
    since: Annotated[
        str | None,
        Query(max_length=40, description="A date (the shop's time zone) or an RFC 3339 time; 30 days ago."),
    ] = None,
    until: Annotated[
        str | None, Query(max_length=40, description="A date (included) or an RFC 3339 time; now.")
    ] = None,
) -> SmsReport | JSONResponse:
    try:
        period = sms_period(since, until, api.shop_timezone, datetime.now(UTC))
    except ValueError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    return await asyncio.to_thread(
        sms_report,
        api.store,
        period.start,
        period.end,
        api.shop_timezone,
        api.shop_name,
        api.definitions.sms,
        api.prices,
    )
