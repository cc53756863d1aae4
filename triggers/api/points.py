"""Points (积分体系, docs/loyalty.md#points): a customer's balance, what lapses when and the log
(`GET /customers/{id}/points`); a redemption by the order system (`POST /points/redeem`, refused
past the balance, once per request id); an operator's adjustment (`POST /points/adjust`); and the
overview (`GET /points/overview`, 积分总览). The ledger's operations are activities/points.py's,
shared with `journeys points`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from activities import points as operations
from core.access import Permission
from core.records import EARLIEST, LATEST, Identifier
from rules.points import MAX_ENTRY_POINTS
from store import points as ledger
from triggers.api.deps import Context, CustomerId, Problem, allowed

router = APIRouter(tags=["points"])

_Points = Annotated[StrictInt, Field(ge=-MAX_ENTRY_POINTS, le=MAX_ENTRY_POINTS)]


def _utf8(text: str) -> str:
    text.encode("utf-8")  # a lone surrogate (JSON's "\ud800") raises: a 422, not a failed insert
    return text


_Reason = Annotated[
    str,
    Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"),
    AfterValidator(_utf8),
]


class AdjustRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"customer_id": "c-42", "points": 200, "reason": "客服补偿: 物流延误", "request_id": "adj-1001"}
            ]
        },
    )

    customer_id: Identifier
    points: _Points = Field(description="Points to add (positive) or take (negative, the oldest first); not 0.")
    reason: _Reason = Field(description="Why: shown in the customer's log.")
    request_id: Identifier = Field(description="The request's own id: the same id again adjusts nothing twice.")


class RedeemRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"customer_id": "c-42", "points": 500, "request_id": "pay-7-points", "order_id": "o-7"}]
        },
    )

    customer_id: Identifier
    points: Annotated[StrictInt, Field(gt=0, le=MAX_ENTRY_POINTS)] = Field(description="Points to spend.")
    request_id: Identifier = Field(description="The request's own id: the same id again spends nothing twice.")
    order_id: Identifier | None = Field(None, description="The order the points pay for.")
    reason: _Reason | None = None


def _invalid(where: str, name: str, message: str) -> JSONResponse:
    """A 422 shaped as FastAPI's own: where, the field, what is wrong."""
    return JSONResponse({"detail": [{"type": "value_error", "loc": [where, name], "msg": message}]}, status_code=422)


def _no_customer(customer_id: str) -> JSONResponse:
    return JSONResponse({"detail": f"no customer {customer_id!r}"}, status_code=404)


_ANSWERS = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}}


@router.get(
    "/customers/{customer_id}/points",
    response_model=operations.CustomerPoints,
    responses=_ANSWERS,
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="A customer's points: the balance, what lapses when, and the log (积分日志), the latest first",
)
async def customer_points(
    customer_id: CustomerId,
    api: Context,
    limit: Annotated[int, Query(ge=1, le=500, description="Entries in this page of the log.")] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="The page after: the previous page's `next_before`.")
    ] = None,
) -> operations.CustomerPoints | JSONResponse:
    zone = api.definitions.loyalty.zone

    def read(session) -> operations.CustomerPoints | None:
        if not ledger.known(session, customer_id):
            return None
        return operations.customer_points(session, customer_id, zone, limit=limit, before=before)

    found = await api.store.run(read)
    return _no_customer(customer_id) if found is None else found


async def _book(api, customer_id: str, work) -> JSONResponse:
    """Run a booking under the customer's lock: 201 for a new entry, 200 for a request id's repeat,
    404 for an unknown customer, 409 for a redemption past the balance or a request id reused."""

    def write(session) -> operations.Booked | None:
        if not ledger.known(session, customer_id):
            return None
        return work(session)

    try:
        booked = await api.store.run(write)
    except (operations.NotEnoughPoints, operations.RequestReused) as refused:
        return JSONResponse({"detail": str(refused)}, status_code=409)
    if booked is None:
        return _no_customer(customer_id)
    return JSONResponse(booked.model_dump(mode="json"), status_code=200 if booked.duplicate else 201)


_BOOKED = {
    200: {"model": operations.Booked, "description": "The request id was used before: its first result."},
    201: {"model": operations.Booked, "description": "Written."},
    409: {"model": Problem, "description": "Past the balance, or the request id was used for another request."},
    **_ANSWERS,
}


def _booking(path: str, permission: Permission, summary: str):
    """A route that books an entry once per request id (201, or 200 for a repeat)."""
    return router.post(
        path,
        response_model=operations.Booked,
        status_code=201,
        responses=_BOOKED,
        dependencies=[Depends(allowed(permission))],
        summary=summary,
    )


@_booking(
    "/points/redeem",
    Permission.REDEEM_POINTS,
    "Spend a customer's points (the oldest first): refused past the balance, once per request id",
)
async def redeem(body: RedeemRequest, api: Context) -> JSONResponse:
    zone = api.definitions.loyalty.zone
    return await _book(
        api,
        body.customer_id,
        lambda session: operations.redeem(
            session,
            body.customer_id,
            body.points,
            body.request_id,
            datetime.now(UTC),
            zone,
            order_id=body.order_id,
            reason=body.reason,
        ),  # fmt: skip
    )


@_booking(
    "/points/adjust",
    Permission.MANAGE_LOYALTY,
    "An operator's adjustment: add or take points, with a reason, once per request id",
)
async def adjust(body: AdjustRequest, api: Context) -> JSONResponse:
    if body.points == 0:
        return _invalid("body", "points", "points must not be 0")
    loyalty = api.definitions.loyalty
    return await _book(
        api,
        body.customer_id,
        lambda session: operations.adjust(
            session, body.customer_id, body.points, body.reason, body.request_id, datetime.now(UTC), loyalty
        ),
    )


@router.get(
    "/points/overview",
    response_model=operations.Overview,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="积分总览: points issued, redeemed, expired, adjusted, imported and reversed in a period; "
    "outstanding now and its liability",
)
async def points_overview(
    api: Context,
    since: Annotated[AwareDatetime | None, Query(description="From (inclusive), with an offset.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Until (exclusive), with an offset.")] = None,
) -> operations.Overview | JSONResponse:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and not EARLIEST <= moment < LATEST:
            return _invalid("query", name, f"a time from {EARLIEST.year} to {LATEST.year - 1}")
    if since is not None and until is not None and until <= since:
        return _invalid("query", "until", "until must be after since")
    loyalty = api.definitions.loyalty
    return await api.store.run(lambda session: operations.overview(session, loyalty, since, until))
