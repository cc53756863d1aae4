"""The HTTP API: how order systems hand events to Journeys, and how operators read what happened.

One router per resource: events (`events.py`), imports of order exports (`imports.py`), history
(`history.py`), journeys (`journeys.py`), published definitions and their review
(`definitions.py`), the SMS report (`sms.py`), health (`health.py`), the
payload codec for the Temporal Web UI (`codec.py`), and, with no API key, the providers' webhooks
(`triggers.webhooks`) and the short links customers follow (`links.py`). What they share (the store,
the Temporal connection, the API keys) comes in through FastAPI dependencies (`deps.py`). The
OpenAPI document at `/openapi.json` (and `/docs`) is the integration contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from temporalio.client import Client
from temporalio.service import RPCError

from core.access import parse_api_keys
from core.config import Settings
from core.encryption import EncryptionCodec
from core.records import Event
from definitions.loader import Definitions, default_directory
from store.db import Store
from triggers import console
from triggers.aliyun_push import aliyun_push_routes
from triggers.api import (
    broadcasts,
    customers,
    effect,
    events,
    health,
    history,
    imports,
    journeys,
    lifecycle,
    links,
    products,
    segments,
    sms,
)
from triggers.api import codec as codec_routes
from triggers.api import definitions as definition_routes
from triggers.api import drafting as drafting_routes
from triggers.api import dry_runs as dry_run_routes
from triggers.api import points as points_routes
from triggers.api import tiers as tier_routes
from triggers.api.deps import ApiContext, Forbidden, NotJson, TemporalDown, Unauthorised
from triggers.live import LiveDefinitions
from triggers.reply_intake import OnReply, ReplyIntake
from triggers.webhooks import WebhookConfig, webhook_routes
from views.effect import Prices
from views.history import BadId


def create_app(
    store: Store,
    *,
    temporal: Callable[[], Awaitable[Client]] | None = None,
    definitions: Definitions | None = None,
    ui_url: str = "http://127.0.0.1:8233",
    api_keys: list[str] | None = None,
    max_body_bytes: int = 1_048_576,
    on_accepted: Callable[[], None] | None = None,
    webhooks: WebhookConfig | None = None,
    codec: EncryptionCodec | None = None,
    ui_origins: list[str] | None = None,
    default_region: str = Settings.default("default_region"),
    task_queue: str = "journeys",
    prices: Prices | None = None,
    shop_timezone: str = Settings.default("shop_timezone"),
    shop_name: str = Settings.default("shop_name"),
    sms_opt_out: dict[str, str] | None = None,
    outbox: Path | None = None,
    lifespan=None,
    max_import_bytes: int = imports.MAX_IMPORT_BYTES,
    link_base: str | None = None,
    on_reply: OnReply | None = None,
    live: LiveDefinitions | None = None,
    publish_own_changes: bool = False,
) -> FastAPI:
    """The API over `store` (and Temporal, through `temporal`, for history and /journeys).
        `on_accepted` is called after new events are logged (the dispatcher's wake-up); with
        `api_keys` (`[NAME:]ROLE:SECRET` entries, core.access), every request but the health checks
        and the provider webhooks (which carry the providers' signatures instead) needs
        `Authorization: Bearer SECRET` with a key whose role allows it. With `codec`, `/codec/*` decrypts
        payloads for the Temporal Web UI, which may call from `ui_origins` (CORS). Whatever the keys, a
        body that is not JSON gets a 415; with no keys, a request from another site's page that would
        change something gets a 403 (triggers.http, applied by `allowed` in deps.py). `live` is what
    runs and loads published changes (triggers/live.py); without it, `definitions` run, fixed."""
    app = FastAPI(
        title="Journeys event API",
        version="1",
        description="Hand order and customer events to Journeys. Each event is stored before the answer.",
        lifespan=lifespan,
    )
    if live is None:
        live = LiveDefinitions.fixed(definitions if definitions is not None else Definitions(), default_directory())
    app.state.journeys = ApiContext(
        store=store,
        temporal=temporal,
        live=live,
        ui_url=ui_url,
        keys=parse_api_keys(api_keys or []),
        max_body_bytes=max_body_bytes,
        on_accepted=on_accepted,
        codec=codec,
        default_region=default_region,
        task_queue=task_queue,
        prices=prices or Prices.of(Settings.embedded()),  # the embedded defaults
        shop_timezone=shop_timezone,
        shop_name=shop_name,
        sms_opt_out=sms_opt_out,
        ui_origins=tuple(ui_origins or ()),
        outbox=outbox,
        link_base=link_base,
        publish_own_changes=publish_own_changes,
    )
    app.state.max_import_bytes = max_import_bytes  # POST /imports' upload limit
    if ui_origins:  # the Temporal Web UI calls the codec endpoint from the operator's browser
        app.add_middleware(
            CORSMiddleware,
            allow_origins=ui_origins,
            allow_credentials=True,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        )

    @app.exception_handler(OperationalError)
    async def _store_down(_request: Request, err: OperationalError) -> JSONResponse:
        return JSONResponse({"detail": "the event store is unavailable; retry later"}, status_code=503)

    @app.exception_handler(Unauthorised)
    async def _unauthorised(_request: Request, _err: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "missing or wrong API key (Authorization: Bearer KEY)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=403)

    @app.exception_handler(NotJson)
    async def _not_json(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=415)

    @app.exception_handler(TemporalDown)
    async def _temporal_down(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes the input, which may hold a lone surrogate or bytes that are
        # not UTF-8 (POST /events/replay with such a body was a 500): where and what, never the input.
        detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RPCError)
    async def _temporal_failed(_request: Request, err: RPCError) -> JSONResponse:
        # Temporal answered with an error or not in time (views.history bounds its calls): a 503
        # naming it, not a 500 and not a request left hanging.
        return JSONResponse({"detail": f"Temporal did not answer as expected: {err}"}, status_code=503)

    @app.exception_handler(BadId)
    async def _bad_id(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    for module in (
        events,
        imports,
        history,
        customers,
        journeys,
        effect,
        segments,
        lifecycle,
        broadcasts,
        products,
        points_routes,
        tier_routes,
        sms,
        links,
        health,
        codec_routes,
        dry_run_routes,
        drafting_routes,
        definition_routes,  # last: its GET /definitions/{kind}/{name} would take other /definitions/x/y paths
    ):
        app.include_router(module.router)
    # Provider webhooks; SMS replies (Twilio's, Aliyun's) go through one intake: the reply rules, the event
    # log and the dispatcher's wake-up, then `on_reply(reply_id)` for a reply that needs an answer.
    webhook_config = webhooks or WebhookConfig(max_body_bytes=max_body_bytes)
    intake = ReplyIntake(store, app.state.journeys.live, default_region, on_accepted, on_reply)
    app.include_router(webhook_routes(store, webhook_config, intake=intake))
    app.include_router(
        aliyun_push_routes(store, webhook_config.aliyun_push_token, intake, webhook_config.max_body_bytes)
    )
    app.include_router(console.router)

    event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = event_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
