"""The loaded journey definitions, their versions and running instances."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from core.access import Permission
from triggers.api.deps import Context, Problem, Temporal, allowed
from views.history import count_instances

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
