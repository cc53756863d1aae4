"""What the API's routes share, as FastAPI dependencies: the store, the Temporal client (or a
503), the API keys, and the answer models every route may give."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel
from temporalio.client import Client

from core.access import (
    CONSOLE_PERMISSIONS,
    CSRF_HEADER,
    SESSION_COOKIE,
    ApiKey,
    Permission,
    csrf_token,
    find_key,
    key_of_session,
    least_role,
)
from core.config import Settings
from core.encryption import EncryptionCodec
from definitions.loader import Definitions
from store.db import Store
from triggers.http import cross_site_refusal, file_refusal, json_refusal
from triggers.live import LiveDefinitions
from views.effect import Prices
from views.history import check_id


@dataclass
class ApiContext:
    store: Store
    temporal: Callable[[], Awaitable[Client]] | None
    #: What runs (triggers/live.py): `definitions` below reads it at each request, so a newly
    #: published change counts from the next request without a restart.
    live: LiveDefinitions
    ui_url: str
    keys: list[ApiKey]
    max_body_bytes: int
    on_accepted: Callable[[], None] | None
    #: The shop's settings (Settings.default_region, .shop_timezone, .shop_name), as create_app is given them.
    default_region: str
    shop_timezone: str
    shop_name: str
    codec: EncryptionCodec | None = None
    task_queue: str = "journeys"
    prices: Prices = field(default_factory=lambda: Prices.of(Settings.embedded()))
    #: For the console's preview: the SMS opt-out line by locale (with the shop's name).
    sms_opt_out: dict[str, str] | None = None
    #: Signs the console's CSRF token when no keys are configured (one per process).
    console_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    #: Origins whose pages may call this API (the Temporal Web UI's, for /codec; CORS).
    ui_origins: tuple[str, ...] = ()
    #: The local outbox file the workers write (JOURNEYS_OUTBOX), for erasure to reach.
    outbox: Path | None = None
    #: Where short links point (Settings.short_link_base): the preview shows them as sent.
    link_base: str | None = None
    #: Whether a change's author may approve it (Settings.publish_own_changes).
    publish_own_changes: bool = False

    @property
    def definitions(self) -> Definitions:
        """The definitions that run now; empty (built-in event types, the default RFM table)
        without any."""
        return self.live.current


class Problem(BaseModel):
    detail: str


class Unauthorised(Exception):
    pass


class Forbidden(Exception):
    """A right key for the wrong thing: the message names what it may not do and the role that may."""


class TemporalDown(Exception):
    pass


class NotJson(Exception):
    """A body on a JSON endpoint with another Content-Type (a 415)."""


def context(request: Request) -> ApiContext:
    return request.app.state.journeys


Context = Annotated[ApiContext, Depends(context)]


#: The console's write actions: from a browser they need the session's CSRF token in a header.
BROWSER_ACTIONS = frozenset(
    {Permission.REPLAY_EVENTS, Permission.RUN_BROADCASTS, Permission.WRITE_DRAFTS, Permission.PUBLISH}
)


def _from_browser(request: Request) -> bool:
    """Browsers send these on every request a page makes; API clients such as curl do not."""
    return any(name in request.headers for name in ("origin", "sec-fetch-site", "cookie"))


def _check_csrf(request: Request, expected: str) -> None:
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), expected):
        raise Forbidden(f"this action needs the console's {CSRF_HEADER} header (reload the page and try again)")


def _check_json(request: Request, body: str = "json") -> None:
    if refusal := (file_refusal if body == "file" else json_refusal)(request):
        raise NotJson(refusal)


def allowed(permission: Permission, *, body: str = "json") -> Callable[[Request], ApiKey | None]:
    """A dependency: with API keys configured, `Authorization: Bearer KEY` with a key whose role
    allows `permission` (core.access), or the console's session cookie for a key whose role allows
    it and the console may use; 401 without a known key, 403 with one not allowed. A console
    action (`BROWSER_ACTIONS`) from a browser also needs the session's CSRF token. It gives the
    key (None when no keys are configured: the API then listens on loopback only and trusts every
    caller but a page of another site, triggers.http `cross_site_refusal`: a 403). Then a body
    that is not JSON gets a 415 (triggers.http `json_refusal`), after the key is judged; with
    `body="file"`, one that is not a file type (`file_refusal`: CSV or bytes) does."""

    def check(request: Request) -> ApiKey | None:
        api = context(request)
        keys = api.keys
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not keys:
            if refusal := cross_site_refusal(request, api.ui_origins):
                raise Forbidden(refusal)
            if permission in BROWSER_ACTIONS and not token and _from_browser(request):
                _check_csrf(request, csrf_token(api.console_secret, "local"))
            _check_json(request, body)
            return None
        cookie = request.cookies.get(SESSION_COOKIE) if not token else None
        if cookie:
            key = key_of_session(keys, cookie, time.time())
            if key is None:
                raise Unauthorised()
            if permission not in CONSOLE_PERMISSIONS:
                raise Forbidden(f"the console may not {permission.value}; use the API with the key itself")
        else:
            key = find_key(keys, token.encode()) if scheme.lower() == "bearer" else None
        if key is None:
            raise Unauthorised()
        if not key.allows(permission):
            raise Forbidden(
                f"this API key ({key.name}, role {key.role.value}) may not {permission.value}; "
                f"that needs the role {least_role(permission).value} or above"
            )
        if cookie and permission in BROWSER_ACTIONS:
            _check_csrf(request, csrf_token(key.secret, cookie))
        _check_json(request, body)
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
