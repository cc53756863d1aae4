"""Segments: their counts and members, evaluated in the store (store/segments.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.access import Permission
from store.segments import Member, count_members, members
from triggers.api.deps import ApiContext, Context, Problem, allowed
from views.history import check_id

router = APIRouter(dependencies=[Depends(allowed(Permission.READ_SEGMENTS))], tags=["segments"])

_RESPONSES = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}}


class SegmentCount(BaseModel):
    name: str
    title: str | None
    count: int
    at: datetime


class SegmentPage(BaseModel):
    name: str
    at: datetime
    members: list[Member]
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last.")


def _missing(api: ApiContext, name: str) -> JSONResponse:
    known = ", ".join(sorted(api.definitions.segments))
    return JSONResponse({"detail": f"no segment {name!r}; segments: {known or 'none'}"}, status_code=404)


@router.get("/segments", response_model=list[SegmentCount], responses=_RESPONSES, summary="Every segment, counted")
async def list_segments(api: Context) -> list[SegmentCount]:
    now = datetime.now(UTC)
    segments = list(api.definitions.segments.values())

    def count_all(session) -> list[SegmentCount]:
        return [
            SegmentCount(name=s.name, title=s.title, count=count_members(session, s, now, api.definitions.rfm), at=now)
            for s in segments
        ]

    return await api.store.run(count_all)


@router.get("/segments/{name}", response_model=SegmentCount, responses=_RESPONSES, summary="One segment, counted")
async def segment_count(name: str, api: Context) -> SegmentCount | JSONResponse:
    segment = api.definitions.segments.get(name)
    if segment is None:
        return _missing(api, name)
    now = datetime.now(UTC)
    count = await api.store.run(lambda session: count_members(session, segment, now, api.definitions.rfm))
    return SegmentCount(name=segment.name, title=segment.title, count=count, at=now)


@router.get(
    "/segments/{name}/members",
    response_model=SegmentPage,
    responses=_RESPONSES,
    summary="A page of a segment's members (ids and RFM, no contact data), by customer id",
)
async def segment_members(
    name: str,
    api: Context,
    after: str | None = Query(None, max_length=200, description="The last customer id of the previous page."),
    limit: int = Query(1000, ge=1, le=10_000),
) -> SegmentPage | JSONResponse:
    segment = api.definitions.segments.get(name)
    if segment is None:
        return _missing(api, name)
    if after is not None:
        check_id(customer_id=after)  # a 422 for an id no query may carry (NUL, control characters)
    now = datetime.now(UTC)
    found = await api.store.run(
        lambda session: members(session, segment, now, api.definitions.rfm, after=after, limit=limit)
    )
    return SegmentPage(
        name=name,
        at=now,
        members=found,
        next_after=found[-1].customer_id if len(found) == limit else None,
    )
