"""A customer's record: erasure on request."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Depends, Request

from triggers.api.deps import Context, CustomerId, Problem, Temporal, authorised
from triggers.erasure import Erasure, erase

router = APIRouter(dependencies=[Depends(authorised)], tags=["customers"])


def _requester(request: Request) -> str:
    """Who asked, for the record: the API key's fingerprint (never the key), or the address."""
    token = request.headers.get("authorization", "").partition(" ")[2]
    if token:
        return "api-key:" + hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"unauthenticated:{request.client.host if request.client else '-'}"


@router.delete(
    "/customers/{customer_id}",
    response_model=Erasure,
    responses={401: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
    summary="Erase a customer: stop their journeys and remove their personal data (PIPL, GDPR)",
)
async def erase_customer(customer_id: CustomerId, request: Request, api: Context, client: Temporal) -> Erasure:
    return await erase(client, api.store, customer_id, _requester(request))
