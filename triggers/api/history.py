"""What happened to a customer or an order: every journey instance and message, newest first
(the read model is views.history)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from core.access import Permission
from triggers.api.deps import Context, CustomerId, OrderId, Problem, Temporal, allowed
from views.history import History, history

router = APIRouter(dependencies=[Depends(allowed(Permission.READ_HISTORY))], tags=["history"])


_RESPONSES = {401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}}


@router.get(
    "/customers/{customer_id}/history",
    response_model=History,
    responses=_RESPONSES,
    summary="Every journey instance and message for a customer, newest first",
)
async def customer_history(customer_id: CustomerId, api: Context, client: Temporal) -> History:
    return await history(client, api.store, ui_url=api.ui_url, customer_id=customer_id)


@router.get(
    "/orders/{order_id}/history",
    response_model=History,
    responses=_RESPONSES,
    summary="Every journey instance and message for an order, newest first",
)
async def order_history(order_id: OrderId, api: Context, client: Temporal) -> History:
    return await history(client, api.store, ui_url=api.ui_url, order_id=order_id)
