"""What journeys earn (views.effect): the effect report as JSON, for every journey or one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from core.access import Permission
from store.effect import Grouping
from triggers.api.deps import ApiContext, Context, Problem, allowed
from views.effect import EffectReport, effect_report, journeys_of, period_of

router = APIRouter(dependencies=[Depends(allowed(Permission.READ_JOURNEYS))], tags=["effect"])

_RESPONSES = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}}


@dataclass
class ReportQuery:
    """The period and grouping a report is asked for, from the query string."""

    start: str | None = Query(
        None, alias="from", max_length=40, description="A date (the shop's time zone) or an RFC 3339 time; 30 days ago."
    )
    end: str | None = Query(None, alias="to", max_length=40, description="A date (included) or an RFC 3339 time; now.")
    by: Grouping | None = Query(None, description="Also per day (in the shop's time zone), step, channel or variant.")
    silent_days: int = Query(
        90, ge=1, le=3650, description="Reactivation: customers silent this many days before a message."
    )


async def _report(api: ApiContext, query: ReportQuery, journey: str | None) -> EffectReport | JSONResponse:
    try:
        period = period_of(query.start, query.end, api.shop_timezone, datetime.now(UTC))
    except ValueError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    return await asyncio.to_thread(
        effect_report,
        api.store,
        api.definitions,
        period,
        api.prices,
        by=query.by,
        journey=journey,
        silent_days=query.silent_days,
    )


@router.get(
    "/effect",
    response_model=EffectReport,
    responses=_RESPONSES,
    summary="Every journey's effect over a period: sends, delivery, conversions, revenue, cost, ROI, uplift",
)
async def effect(api: Context, query: Annotated[ReportQuery, Depends()]) -> EffectReport | JSONResponse:
    return await _report(api, query, None)


@router.get(
    "/journeys/{name}/effect",
    response_model=EffectReport,
    responses=_RESPONSES,
    summary="One journey's (or broadcast's) effect over a period",
)
async def journey_effect(
    name: str, api: Context, query: Annotated[ReportQuery, Depends()]
) -> EffectReport | JSONResponse:
    known = journeys_of(api.definitions)
    if name not in known:
        return JSONResponse({"detail": f"no journey {name!r}; journeys: {', '.join(sorted(known))}"}, status_code=404)
    return await _report(api, query, name)
