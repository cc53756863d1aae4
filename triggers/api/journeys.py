"""The loaded journey definitions, their versions and running instances."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.access import Permission
from definitions.loader import Definitions
from triggers.api.deps import ApiContext, Context, Problem, Temporal, allowed
from views.history import count_instances
from views.preview import Preview, PreviewError, PreviewRefused, preview
from views.waiting import WaitingCounts, waiting_counts

router = APIRouter(dependencies=[Depends(allowed(Permission.READ_JOURNEYS))], tags=["journeys"])


class JourneyView(BaseModel):
    name: str
    title: str | None
    category: str
    version: str = Field(description="The version new instances start with (content hash).")
    running: int = Field(description="Running instances, all versions.")
    running_this_version: int
    running_older_versions: int = Field(description="Instances finishing on a version they started with.")


@router.get(
    "/journeys",
    response_model=list[JourneyView],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}},
    summary="The loaded journey definitions, their versions and running instances",
)
async def journeys(api: Context, client: Temporal) -> list[JourneyView]:
    views = []
    for snapshot in api.definitions:
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


def _snapshot(api, name: str):
    for snapshot in api.definitions:
        if snapshot.definition.name == name:
            return snapshot
    return None


class DefinitionView(BaseModel):
    name: str
    version: str
    definition: dict[str, Any] = Field(
        description="The journey as loaded: entry, goal, steps (waits, branches, splits, sends)."
    )


@router.get(
    "/journeys/{name}/definition",
    response_model=DefinitionView,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
    summary="A journey's definition, as the console draws it",
)
async def journey_definition(name: str, api: Context) -> DefinitionView | JSONResponse:
    snapshot = _snapshot(api, name)
    if snapshot is None:
        return JSONResponse({"detail": f"no journey {name!r}"}, status_code=404)
    definition = snapshot.definition.model_dump(mode="json", exclude_none=True, by_alias=True)
    return DefinitionView(name=name, version=snapshot.version, definition=definition)


@router.get(
    "/journeys/{name}/waiting",
    response_model=WaitingCounts,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}},
    summary="Where the journey's running instances wait now: instances per wait step (by its path)",
)
async def journey_waiting(name: str, api: Context, client: Temporal) -> WaitingCounts | JSONResponse:
    snapshot = _snapshot(api, name)
    if snapshot is None:
        return JSONResponse({"detail": f"no journey {name!r}"}, status_code=404)
    return await waiting_counts(client, snapshot.definition, snapshot.version)


@router.get(
    "/journeys/{name}/preview",
    response_model=Preview,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem, "description": "No such journey, send step or customer."},
        422: {"model": Problem, "description": "Cannot be previewed as asked; the detail says what to pass."},
    },
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="A send step's message as a customer would get it now (nothing is sent)",
)
async def preview_step(
    name: str,
    api: Context,
    step: Annotated[str, Query(max_length=60)],
    customer: Annotated[str, Query(max_length=200)],
    order: Annotated[str | None, Query(max_length=200)] = None,
) -> Preview | JSONResponse:
    return await answer_preview(api, api.definitions, name, step, customer, order)


async def answer_preview(
    api: ApiContext, definitions: Definitions, journey: str, step: str, customer: str, order: str | None
) -> Preview | JSONResponse:
    """A send step of `definitions` (what runs, or a draft laid over it) previewed for a customer,
    off the event loop: 404 for no such journey, step or customer, 422 when it cannot be as asked."""

    def build() -> Preview:
        return preview(
            definitions,
            api.store,
            journey=journey,
            step=step,
            customer_id=customer,
            order_id=order or None,
            shop_name=api.shop_name,
            default_region=api.default_region,
            opt_out=api.sms_opt_out,
            link_base=api.link_base,
        )

    try:
        return await asyncio.to_thread(build)
    except PreviewRefused as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    except PreviewError as err:
        return JSONResponse({"detail": str(err)}, status_code=404)
