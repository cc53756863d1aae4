"""A customer: their profile, their SMS replies (回复记录), and erasure on request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from core.access import Permission
from triggers.api.deps import Context, CustomerId, Problem, Temporal, allowed, requester
from triggers.erasure import Erasure, NoSuchCustomer, erase
from views.history import Timeline, customer_timeline
from views.profile import CustomerMatch, Profile, Reply, profile, replies, search_customers

router = APIRouter(tags=["customers"])


@router.get(
    "/customers",
    response_model=list[CustomerMatch],
    responses={401: {"model": Problem}, 403: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="Find customers by id, phone or email (contacts masked)",
)
async def find_customers(api: Context, q: Annotated[str, Query(max_length=320)] = "") -> list[CustomerMatch]:
    return await api.store.run(lambda session: search_customers(session, q, api.default_region))


@router.get(
    "/customers/{customer_id}",
    response_model=Profile,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="A customer's profile: record, traits, tags, RFM now, segments and suppressions",
)
async def customer_profile(customer_id: CustomerId, api: Context) -> Profile | JSONResponse:
    table, segments = api.definitions.rfm, list(api.definitions.segments.values())
    now = datetime.now(UTC)
    tiers = api.definitions.loyalty.tiers
    found = await api.store.run(
        lambda session: profile(session, customer_id, table, now, api.default_region, segments, tiers=tiers)
    )
    if found is None:
        return JSONResponse({"detail": f"no customer {customer_id!r}"}, status_code=404)
    return found


@router.get(
    "/customers/{customer_id}/replies",
    response_model=list[Reply],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="A customer's SMS replies (回复记录), newest first: what they said, the message answered, what was done",
)
async def customer_replies(
    customer_id: CustomerId, api: Context, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[Reply]:
    # An unknown or erased customer has none (erasure deletes them): an empty list, not a 404.
    return await api.store.run(lambda session: replies(session, customer_id, limit))


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=Timeline,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.READ_HISTORY))],
    summary="A customer's one timeline, newest first: events, instance starts and ends, messages with their "
    "delivery updates, clicks, replies, points and tier changes",
)
async def customer_timeline_of(
    customer_id: CustomerId, api: Context, limit: Annotated[int, Query(ge=1, le=2000)] = 500
) -> Timeline:
    # From the store alone (no Temporal): an unknown customer has an empty timeline, not a 404.
    return await api.store.run(lambda session: customer_timeline(session, customer_id, limit))


@router.delete(
    "/customers/{customer_id}",
    response_model=Erasure,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem, "description": "No such customer: nothing erased, nothing recorded."},
        422: {"model": Problem},
        503: {"model": Problem},
    },
    dependencies=[Depends(allowed(Permission.ERASE))],
    summary="Erase a customer: stop their journeys and remove their personal data (PIPL, GDPR)",
)
async def erase_customer(
    customer_id: CustomerId, request: Request, api: Context, client: Temporal
) -> Erasure | JSONResponse:
    try:
        return await erase(
            client, api.store, customer_id, requester(request), default_region=api.default_region, outbox=api.outbox
        )
    except NoSuchCustomer as err:
        return JSONResponse({"detail": str(err)}, status_code=404)
