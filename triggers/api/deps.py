"""What the API's routes share, as FastAPI dependencies: the store, the Temporal client (or a
503), the API keys, and the answer models every route may give."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel
from temporalio.client import Client

from core.access import ApiKey, Permission, find_key, least_role
from core.config import Settings
from core.encryption import EncryptionCodec
from core.records import DEFAULT_TIMEZONE
from definitions.loader import Definitions
from store.db import Store
from views.effect import Prices
from views.history import check_id


@dataclass
class ApiContext:
    store: Store
    temporal: Callable[[], Awaitable[Client]] | None
    #: The loaded definitions; empty (built-in event types, the default RFM table) without any.
    definitions: Definitions
    ui_url: str
    keys: list[ApiKey]
    max_body_bytes: int
    on_accepted: Callable[[], None] | None
    codec: EncryptionCodec | None = None
    default_region: str = "CN"
    task_queue: str = "journeys"
    prices: Prices = field(default_factory=lambda: Prices.of(Settings.embedded()))
    shop_timezone: str = DEFAULT_TIMEZONE


class Problem(BaseModel):
    detail: str


class Unauthorised(Exception):
    pass


class Forbidden(Exception):
    """A right key for the wrong thing: the message names what it may not do and the role that may."""


class TemporalDown(Exception):
    pass


def context(request: Request) -> ApiContext:
    return request.app.state.journeys


Context = Annotated[ApiContext, Depends(context)]


def allowed(permission: Permission) -> Callable[[Request], ApiKey | None]:
    """A dependency: with API keys configured, `Authorization: Bearer KEY` with a key whose role
    allows `permission` (core.access); 401 without a known key, 403 with one not allowed. It
    gives the key (None when no keys are configured: the API then listens on loopback only)."""

    def check(request: Request) -> ApiKey | None:
        keys = context(request).keys
        if not keys:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = find_key(keys, token.encode()) if scheme.lower() == "bearer" else None
        if key is None:
            raise Unauthorised()
        if not key.allows(permission):
            raise Forbidden(
                f"this API key ({key.name}, role {key.role.value}) may not {permission.value}; "
                f"that needs the role {least_role(permission).value} or above"
            )
        request.state.api_key = key
        return key

    return check


def requester(request: Request) -> str:
    """Who made the request, for records: the API key's name and fingerprint (never the key),
    or the client's address when no keys are configured."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is not None:
        return f"{key.name} [{key.fingerprint}]"
    return f"unauthenticated:{request.client.host if request.client else '-'}"


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
