"""A customer's record: erasure on request."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from core.access import Permission
from triggers.api.deps import Context, CustomerId, Problem, Temporal, allowed, requester
from triggers.erasure import Erasure, erase

router = APIRouter(tags=["customers"])


@router.delete(
    "/customers/{customer_id}",
    response_model=Erasure,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.ERASE))],
    summary="Erase a customer: stop their journeys and remove their personal data (PIPL, GDPR)",
)
async def erase_customer(customer_id: CustomerId, request: Request, api: Context, client: Temporal) -> Erasure:
    return await erase(client, api.store, customer_id, requester(request))
