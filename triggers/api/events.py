"""`POST /events` takes one event or a batch; every good event is written to the event log before
the answer, so an accepted event is never lost (the dispatcher takes it to Temporal from there).
Dead letters (events the dispatcher could not apply) are listed and replayed here too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from activities import loyalty
from core.access import Permission
from core.records import CUSTOMER_EVENT_TYPES, ENGINE_EVENT_TYPES, Customer, Event, apply_customer_event
from definitions.loader import Definitions
from store import queries
from store.db import Store
from triggers.api.deps import ApiContext, Context, Problem, allowed
from triggers.http import BodyRefused, read_json
from views.history import EventView

MAX_BATCH = 1000

router = APIRouter(tags=["events"])


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

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "accepted": ["evt-1001"],
                    "duplicates": ["evt-1000"],
                    "rejected": [
                        {
                            "index": 2,
                            "event_id": "evt-1002",
                            "problems": [{"field": "occurred_at", "message": "Input should have timezone info"}],
                        }
                    ],
                    "duplicate": False,
                }
            ]
        }
    }


class DeadLetter(EventView):
    failed_at: datetime
    attempts: int
    last_error: str | None = Field(description="Why it could not be applied.")


class PendingEvent(EventView):
    attempts: int
    retry_at: datetime | None = Field(description="When the dispatcher tries again after a passing failure.")


class ReplayRequest(BaseModel):
    event_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000, examples=[["evt-1002", "evt-1003"]]
    )
    all_failed: bool = Field(default=False, description="Replay every dead letter.")


class Replayed(BaseModel):
    replayed: list[str] = Field(description="The dead letters put back in the queue.")


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "maxItems": MAX_BATCH},
                    ]
                },
                "examples": {
                    "one event": {
                        "value": {
                            "event_id": "evt-1001",
                            "type": "order.created",
                            "occurred_at": "2026-11-24T10:00:00+08:00",
                            "customer_id": "c-42",
                            "order_id": "o-7",
                            "data": {"amount": 199, "items": [{"sku": "tea-01", "qty": 2}]},
                        }
                    }
                },
            }
        },
    }
}


@router.post(
    "/events",
    response_model=EventsAnswer,
    status_code=202,
    responses={
        200: {"model": EventsAnswer, "description": "Nothing new: every event was already taken."},
        202: {"model": EventsAnswer, "description": "Events written to the log (see `rejected` in a batch)."},
        401: {"model": Problem, "description": "Missing or wrong API key."},
        403: {
            "model": Problem,
            "description": "The key's role may not send events; or, with no keys, a page of another site sent it.",
        },
        413: {"model": Problem, "description": f"Body over the size limit, or over {MAX_BATCH} events."},
        415: {"model": Problem, "description": "The body is not sent as JSON (Content-Type: application/json)."},
        422: {"model": EventsAnswer, "description": "Nothing taken: the body or every event is invalid."},
        503: {"model": Problem, "description": "The store is unavailable; retry."},
    },
    openapi_extra=_BODY,
    dependencies=[Depends(allowed(Permission.SEND_EVENTS))],
    summary="Send one event or a batch",
)
async def post_events(
    request: Request,
    api: Context,
    backfill: Annotated[
        bool,
        Query(
            description="History (an import of past orders): the events update the customer, orders, RFM and "
            "traits, and start or steer no journey (an instance that exits on one still exits). The event log "
            "notes each as backfill."
        ),
    ] = False,
) -> JSONResponse:
    try:
        payload = await read_json(request, api.max_body_bytes)
    except BodyRefused as refused:
        return JSONResponse({"detail": str(refused)}, status_code=refused.status)
    single = isinstance(payload, dict)
    if not single and not isinstance(payload, list):
        return JSONResponse({"detail": "send one event (an object) or a batch (an array)"}, status_code=422)
    items: list[Any] = [payload] if single else payload
    if len(items) > MAX_BATCH:
        return JSONResponse({"detail": f"{len(items)} events in one batch; at most {MAX_BATCH}"}, status_code=413)

    answer = EventsAnswer()
    good: list[Event] = []
    catalog = api.definitions.events
    for index, item in enumerate(items):
        event_id = item.get("event_id") if isinstance(item, dict) else None
        shown_id = event_id if isinstance(event_id, str) and _printable(event_id) else None
        try:
            event = Event.model_validate(item)
            if event.type in CUSTOMER_EVENT_TYPES:  # the record it carries must be one the store can keep
                apply_customer_event(None, event)
        except ValidationError as err:
            in_data = isinstance(err.title, str) and err.title == Customer.__name__
            problems = _problems(err, prefix="data." if in_data else "")
            answer.rejected.append(RejectedEvent(index=index, event_id=shown_id, problems=problems))
            continue
        if event.type in ENGINE_EVENT_TYPES:
            problem = FieldProblem(field="type", message=f"{event.type} events are written by the engine only")
            answer.rejected.append(RejectedEvent(index=index, event_id=shown_id, problems=[problem]))
            continue
        # Known types only; a declared type's order_id and data as events.yaml says.
        if found := catalog.problems(event):
            problems = [FieldProblem(field=where, message=message) for where, message in found]
            answer.rejected.append(RejectedEvent(index=index, event_id=shown_id, problems=problems))
            continue
        good.append(event)
    if good:
        answer.accepted, answer.duplicates = await _log(api.store, good, api.definitions, backfill)
    if answer.accepted and api.on_accepted is not None:
        api.on_accepted()
    answer.duplicate = single and bool(answer.duplicates)
    status = 202 if answer.accepted else 200 if answer.duplicates else 422
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)


_READ = {
    "responses": {401: {"model": Problem}, 403: {"model": Problem}},
    "dependencies": [Depends(allowed(Permission.READ_EVENTS))],
}


async def _listed(api: ApiContext, rows_of, model: type[BaseModel], limit: int) -> list:
    rows = await api.store.run(lambda session: rows_of(session, max(1, min(limit, 1000))))
    return [model.model_validate(row, from_attributes=True) for row in rows]


@router.get(
    "/events/failed",
    response_model=list[DeadLetter],
    summary="Dead letters: events the dispatcher could not apply, newest first",
    **_READ,
)
async def failed_events(api: Context, limit: int = 100) -> list[DeadLetter]:
    return await _listed(api, queries.failed_events, DeadLetter, limit)


@router.get(
    "/events/pending",
    response_model=list[PendingEvent],
    summary="Events waiting for dispatch to Temporal, oldest first",
    **_READ,
)
async def pending_events(api: Context, limit: int = 100) -> list[PendingEvent]:
    return await _listed(api, queries.pending_events, PendingEvent, limit)


@router.post(
    "/events/replay",
    response_model=Replayed,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[Depends(allowed(Permission.REPLAY_EVENTS))],
    summary="Put dead letters back in the queue (after a fix), by id or all of them",
)
async def replay_events(replay: ReplayRequest, api: Context) -> Replayed:
    ids = await api.store.run(
        lambda session: queries.replay_events(session, None if replay.all_failed else replay.event_ids)
    )
    if ids and api.on_accepted is not None:
        api.on_accepted()
    return Replayed(replayed=ids)


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


async def _log(
    store: Store, events: list[Event], definitions: Definitions, backfill: bool = False
) -> tuple[list[str], list[str]]:
    """Write events to the log in one statement: (accepted ids, duplicate ids), in batch order.
    The loyalty programme applies to those logged now (not to history), in the same transaction."""

    def write(session) -> tuple[list[str], list[str]]:
        now = datetime.now(UTC)
        written = queries.store_events(session, events, now, backfill=backfill)
        if written and not backfill:
            loyalty.note_logged(session, queries.first_written(events, written), definitions, now)
        accepted, duplicates = [], []
        for event in events:
            if event.event_id in written:
                written.discard(event.event_id)  # a second copy in the same batch is a duplicate
                accepted.append(event.event_id)
            else:
                duplicates.append(event.event_id)
        return accepted, duplicates

    return await store.run(write)
