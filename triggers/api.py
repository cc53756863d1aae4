"""The event API: how order systems hand events to Journeys.

`POST /events` takes one event or a batch; every good event is written to the event log before
the answer, so an accepted event is never lost (the dispatcher takes it to Temporal from there).
The OpenAPI document at `/openapi.json` (and `/docs`) is the integration contract.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from temporalio.client import Client

from core.models import CUSTOMER_EVENT_TYPES, Customer, Event, customer_from_event
from definitions.loader import Definitions
from store import queries
from store.db import Store
from triggers.history import BadId, History, check_id, count_instances, history
from triggers.http import read_body
from triggers.webhooks import WebhookConfig, webhook_routes

MAX_BATCH = 1000


class FieldProblem(BaseModel):
    field: str = Field(description="Where in the event, e.g. `occurred_at` or `data.amount`.")
    message: str


class RejectedEvent(BaseModel):
    index: int = Field(description="Position in the batch (0 for a single event).")
    event_id: str | None = None
    problems: list[FieldProblem]


class EventsAnswer(BaseModel):
    accepted: list[str] = Field(default_factory=list, description="Event ids written to the log now.")
    duplicates: list[str] = Field(default_factory=list, description="Event ids already in the log: unchanged.")
    rejected: list[RejectedEvent] = Field(default_factory=list, description="Events that were not taken, and why.")
    duplicate: bool = Field(default=False, description="A single event whose event_id was already taken.")


class Problem(BaseModel):
    detail: str


def _problems(err: ValidationError, prefix: str = "") -> list[FieldProblem]:
    return [
        FieldProblem(field=prefix + (".".join(str(p) for p in item["loc"]) or "event"), message=item["msg"])
        for item in err.errors(include_input=False)
    ]


def _printable(text: str) -> bool:
    """An id safe to echo back in JSON (no unpaired surrogate, no control character)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


class DeadLetter(BaseModel):
    event_id: str
    type: str
    customer_id: str
    order_id: str | None
    occurred_at: datetime
    received_at: datetime
    failed_at: datetime
    attempts: int
    last_error: str | None = Field(description="Why it could not be applied.")


class ReplayRequest(BaseModel):
    event_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=1000)
    all_failed: bool = Field(default=False, description="Replay every dead letter.")


class Replayed(BaseModel):
    replayed: list[str] = Field(description="The dead letters put back in the queue.")


class JourneyView(BaseModel):
    name: str
    title: str | None
    category: str
    version: str = Field(description="The version new instances start with (content hash).")
    running: int = Field(description="Running instances, all versions.")
    running_this_version: int
    running_older_versions: int = Field(description="Instances finishing on a version they started with.")


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
    lifespan=None,
) -> FastAPI:
    """The API over `store` (and Temporal, through `temporal`, for history and /journeys).
    `on_accepted` is called after new events are logged (the dispatcher's wake-up); with
    `api_keys`, every request but the health checks and the provider webhooks (which carry the
    providers' signatures instead) needs `Authorization: Bearer`."""
    app = FastAPI(
        title="Journeys event API",
        version="1",
        description="Hand order and customer events to Journeys. Each event is stored before the answer.",
        lifespan=lifespan,
    )
    keys = [key.encode() for key in (api_keys or []) if key]

    def authorised(request: Request) -> None:
        if not keys:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        # Compare with every key, in constant time, whatever matches first.
        valid = scheme.lower() == "bearer" and sum(hmac.compare_digest(token.encode(), key) for key in keys) > 0
        if not valid:
            raise _Unauthorised()

    @app.exception_handler(OperationalError)
    async def _store_down(_request: Request, err: OperationalError) -> JSONResponse:
        return JSONResponse({"detail": "the event store is unavailable; retry later"}, status_code=503)

    @app.exception_handler(_Unauthorised)
    async def _unauthorised(_request: Request, _err: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "missing or wrong API key (Authorization: Bearer KEY)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")

    @app.post(
        "/events",
        dependencies=[Depends(authorised)],
        response_model=EventsAnswer,
        status_code=202,
        responses={
            200: {"model": EventsAnswer, "description": "Nothing new: every event was already taken."},
            202: {"model": EventsAnswer, "description": "Events written to the log (see `rejected` in a batch)."},
            401: {"model": Problem, "description": "Missing or wrong API key."},
            413: {"model": Problem, "description": f"Body over the size limit, or over {MAX_BATCH} events."},
            422: {"model": EventsAnswer, "description": "Nothing taken: the body or every event is invalid."},
            503: {"model": Problem, "description": "The store is unavailable; retry."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Event"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Event"},
                                    "maxItems": MAX_BATCH,
                                },
                            ]
                        }
                    }
                },
            }
        },
        summary="Send one event or a batch",
    )
    async def post_events(request: Request) -> JSONResponse:
        body = await read_body(request, max_body_bytes)
        if body is None:
            return _too_large(max_body_bytes)
        try:
            payload = json.loads(body)
        except RecursionError:
            return JSONResponse({"detail": "the body is not JSON we can read: it nests too deeply"}, status_code=422)
        except ValueError as err:  # not JSON, not UTF-8, or an integer past Python's 4,300 digits
            return JSONResponse({"detail": f"the body is not JSON: {err}"}, status_code=422)
        single = isinstance(payload, dict)
        if not single and not isinstance(payload, list):
            return JSONResponse({"detail": "send one event (an object) or a batch (an array)"}, status_code=422)
        items: list[Any] = [payload] if single else payload
        if len(items) > MAX_BATCH:
            return JSONResponse({"detail": f"{len(items)} events in one batch; at most {MAX_BATCH}"}, status_code=413)

        answer = EventsAnswer()
        good: list[Event] = []
        for index, item in enumerate(items):
            try:
                event = Event.model_validate(item)
                if event.type in CUSTOMER_EVENT_TYPES:  # the record it carries must be one the store can keep
                    customer_from_event(event)
                good.append(event)
            except ValidationError as err:
                event_id = item.get("event_id") if isinstance(item, dict) else None
                in_data = isinstance(err.title, str) and err.title == Customer.__name__
                answer.rejected.append(
                    RejectedEvent(
                        index=index,
                        event_id=event_id if isinstance(event_id, str) and _printable(event_id) else None,
                        problems=_problems(err, prefix="data." if in_data else ""),
                    )
                )
        if good:
            accepted, duplicates = await _log(store, good)
            answer.accepted, answer.duplicates = accepted, duplicates
        if answer.accepted and on_accepted is not None:
            on_accepted()
        answer.duplicate = single and bool(answer.duplicates)
        status = 202 if answer.accepted else 200 if answer.duplicates else 422
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)

    async def client_or_503() -> Client:
        if temporal is None:
            raise _TemporalDown("this API has no Temporal connection configured")
        try:
            return await asyncio.wait_for(temporal(), timeout=5)
        except Exception as err:
            raise _TemporalDown(f"Temporal is unreachable: {err}") from err

    @app.exception_handler(_TemporalDown)
    async def _temporal_down(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503)

    @app.exception_handler(BadId)
    async def _bad_id(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    history_responses = {401: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}}

    @app.get(
        "/customers/{customer_id}/history",
        dependencies=[Depends(authorised)],
        response_model=History,
        responses=history_responses,
        summary="Every journey instance and message for a customer, newest first",
    )
    async def customer_history(customer_id: str) -> History:
        check_id(customer_id=customer_id)
        return await history(await client_or_503(), store, ui_url=ui_url, customer_id=customer_id)

    @app.get(
        "/orders/{order_id}/history",
        dependencies=[Depends(authorised)],
        response_model=History,
        responses=history_responses,
        summary="Every journey instance and message for an order, newest first",
    )
    async def order_history(order_id: str) -> History:
        check_id(order_id=order_id)
        return await history(await client_or_503(), store, ui_url=ui_url, order_id=order_id)

    @app.get(
        "/journeys",
        dependencies=[Depends(authorised)],
        response_model=list[JourneyView],
        responses={401: {"model": Problem}, 503: {"model": Problem}},
        summary="The loaded journey definitions, their versions and running instances",
    )
    async def journeys() -> list[JourneyView]:
        client = await client_or_503()
        views = []
        for snapshot in definitions or []:
            name = snapshot.definition.name
            running = f"JourneyName = '{name}' AND ExecutionStatus = 'Running'"
            total = await count_instances(client, running)
            current = await count_instances(client, f"{running} AND JourneyVersion = '{snapshot.version}'")
            views.append(
                JourneyView(
                    name=name,
                    title=snapshot.definition.title,
                    category=snapshot.definition.category,
                    version=snapshot.version,
                    running=total,
                    running_this_version=current,
                    running_older_versions=total - current,
                )
            )
        return views

    @app.get(
        "/events/failed",
        dependencies=[Depends(authorised)],
        response_model=list[DeadLetter],
        responses={401: {"model": Problem}},
        summary="Dead letters: events the dispatcher could not apply, newest first",
    )
    async def failed_events(limit: int = 100) -> list[DeadLetter]:
        rows = await store.run(lambda session: queries.failed_events(session, max(1, min(limit, 1000))))
        return [DeadLetter.model_validate(row, from_attributes=True) for row in rows]

    @app.post(
        "/events/replay",
        dependencies=[Depends(authorised)],
        response_model=Replayed,
        responses={401: {"model": Problem}, 422: {"model": Problem}},
        summary="Put dead letters back in the queue (after a fix), by id or all of them",
    )
    async def replay_events(request: ReplayRequest) -> Replayed:
        ids = await store.run(
            lambda session: queries.replay_events(session, None if request.all_failed else request.event_ids)
        )
        if ids and on_accepted is not None:
            on_accepted()
        return Replayed(replayed=ids)

    @app.get("/healthz", summary="The API process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The store and Temporal answer", responses={503: {"model": Problem}})
    async def readyz() -> JSONResponse:
        try:
            await store.run(lambda session: session.execute(text("select 1")))
        except OperationalError as err:
            return JSONResponse({"detail": f"store unavailable: {err.orig}"}, status_code=503)
        if temporal is not None:
            try:
                client = await client_or_503()
                await asyncio.wait_for(client.service_client.check_health(), timeout=5)
            except Exception as err:
                return JSONResponse({"detail": f"Temporal unavailable: {err}"}, status_code=503)
        return JSONResponse({"status": "ready"})

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = event_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    app.include_router(webhook_routes(store, webhooks or WebhookConfig(max_body_bytes=max_body_bytes)))
    return app


class _Unauthorised(Exception):
    pass


class _TemporalDown(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the body is over {limit} bytes"}, status_code=413)


async def _log(store: Store, events: list[Event]) -> tuple[list[str], list[str]]:
    """Write events to the log in one statement: (accepted ids, duplicate ids), in batch order."""

    def write(session) -> tuple[list[str], list[str]]:
        written = queries.store_events(session, events, datetime.now(UTC))
        accepted, duplicates = [], []
        for event in events:
            if event.event_id in written:
                written.discard(event.event_id)  # a second copy in the same batch is a duplicate
                accepted.append(event.event_id)
            else:
                duplicates.append(event.event_id)
        return accepted, duplicates

    return await store.run(write)
