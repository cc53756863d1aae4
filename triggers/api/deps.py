"""What the API's routes share, as FastAPI dependencies: the store, the Temporal client (or a
503), the API keys, and the answer models every route may give."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel
from temporalio.client import Client

from core.encryption import EncryptionCodec
from definitions.loader import Definitions
from store.db import Store
from views.history import check_id


@dataclass
class ApiContext:
    store: Store
    temporal: Callable[[], Awaitable[Client]] | None
    definitions: Definitions | None
    ui_url: str
    keys: list[bytes]
    max_body_bytes: int
    on_accepted: Callable[[], None] | None
    codec: EncryptionCodec | None = None


class Problem(BaseModel):
    detail: str


class Unauthorised(Exception):
    pass


class TemporalDown(Exception):
    pass


def context(request: Request) -> ApiContext:
    return request.app.state.journeys


Context = Annotated[ApiContext, Depends(context)]


def authorised(request: Request) -> None:
    """With API keys configured, `Authorization: Bearer KEY` with one of them."""
    keys = context(request).keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # Compare with every key, in constant time, whatever matches first.
    if not (scheme.lower() == "bearer" and sum(hmac.compare_digest(token.encode(), key) for key in keys) > 0):
        raise Unauthorised()


async def temporal_client(request: Request) -> Client:
    """The Temporal client, or a 503 naming why there is none."""
    temporal = context(request).temporal
    if temporal is None:
        raise TemporalDown("this API has no Temporal connection configured")
    try:
        return await asyncio.wait_for(temporal(), timeout=5)
    except Exception as err:
        raise TemporalDown(f"Temporal is unreachable: {err}") from err


Temporal = Annotated[Client, Depends(temporal_client)]


def _customer_id(customer_id: str) -> str:
    check_id(customer_id=customer_id)  # a 422 before Temporal or the store is asked anything
    return customer_id


def _order_id(order_id: str) -> str:
    check_id(order_id=order_id)
    return order_id


#: Path parameters checked as ids no event can break a query with (views.history.check_id).
CustomerId = Annotated[str, Depends(_customer_id)]
OrderId = Annotated[str, Depends(_order_id)]
