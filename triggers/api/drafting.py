"""Checking and previewing a draft before it is saved: the console's editor asks on every pause in
typing whether the files it holds, laid over what runs, pass `journeys validate`'s checks (each
problem at its file and line), and what a send step of the draft would send a customer.

Nothing here is written: a draft is saved, submitted and published through the change routes
(docs/publishing.md). The checks are definitions/drafts.py `check_with`, the loader's own, run in
a thread (a check copies the definitions and loads them all, some tenths of a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from core.access import Permission
from definitions.drafts import DraftError, Problem, check_with, kind_of
from definitions.loader import Definitions
from triggers.api.deps import Context, allowed, context
from triggers.api.deps import Problem as ProblemAnswer
from triggers.api.journeys import answer_preview
from views.preview import Preview

router = APIRouter(dependencies=[Depends(allowed(Permission.WRITE_DRAFTS))], tags=["definitions"])

#: The most files one check takes: a journey with its templates is a handful.
MAX_FILES = 50


class Files(BaseModel):
    files: dict[str, str] = Field(
        description="The draft's files by their path inside the definitions (`x.yaml`, `templates/x.yaml`).",
        min_length=1,
        max_length=MAX_FILES,
    )


class CheckAnswer(BaseModel):
    ok: bool = Field(description="No problem (warnings allowed).")
    problems: list[Problem]
    journeys: dict[str, dict[str, Any]] = Field(
        description="The journeys the draft holds or whose templates it changes, as loaded (as "
        "`GET /journeys/{name}/definition` gives them); a journey with a problem is not among them."
    )


class PreviewRequest(Files):
    journey: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    step: Annotated[str, StringConstraints(min_length=1, max_length=60)]
    customer: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    order: Annotated[str | None, StringConstraints(max_length=200)] = None


def _bad_paths(files: Mapping[str, str]) -> list[str]:
    """Why each path a draft may not hold is wrong, one line each."""
    bad = []
    for path in files:
        try:
            kind_of(path)
        except DraftError as err:
            bad.append(str(err))
    return bad


def _journeys_touched(files: Mapping[str, str], loaded: Definitions) -> dict[str, dict[str, Any]]:
    """The loaded journeys that a draft's files define or whose templates they change."""
    names, templates = set(), set()
    for path, text in files.items():
        kind, name = kind_of(path)
        if kind == "template":
            templates.add(name)
        elif kind == "journey":
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                names.add(data["name"])
    return {
        snapshot.definition.name: snapshot.definition.model_dump(mode="json", exclude_none=True, by_alias=True)
        for snapshot in loaded
        if snapshot.definition.name in names or templates & set(snapshot.templates)
    }


def _refusal(lines: list[str]) -> JSONResponse:
    return JSONResponse({"detail": "; ".join(lines)}, status_code=422)


async def _check(request: Request, files: Mapping[str, str]) -> tuple[Definitions, list[Problem]] | JSONResponse:
    """What the draft laid over what runs loads and its problems, or a 422 naming each path a
    draft may not hold (or a file too long)."""
    if bad := _bad_paths(files):
        return _refusal(bad)
    try:  # over the live definitions' directory: the base with every publication laid over it
        return await asyncio.to_thread(check_with, context(request).live.directory, files)
    except DraftError as err:
        return _refusal([str(err)])


@router.post(
    "/definitions/check",
    response_model=CheckAnswer,
    responses={
        401: {"model": ProblemAnswer},
        403: {"model": ProblemAnswer},
        422: {"model": ProblemAnswer, "description": "A path that is not a definition file, or a file too long."},
    },
    summary="Check a draft's files laid over what runs, as `journeys validate` checks them",
)
async def check(body: Files, request: Request) -> CheckAnswer | JSONResponse:
    checked = await _check(request, body.files)
    if isinstance(checked, JSONResponse):
        return checked
    loaded, problems = checked
    return CheckAnswer(
        ok=not any(not p.warning for p in problems),
        problems=problems,
        journeys=_journeys_touched(body.files, loaded),
    )


@router.post(
    "/definitions/preview",
    response_model=Preview,
    responses={
        401: {"model": ProblemAnswer},
        403: {"model": ProblemAnswer},
        404: {"model": ProblemAnswer, "description": "No such journey in the draft, send step or customer."},
        422: {"model": ProblemAnswer, "description": "The draft does not load, or cannot be previewed as asked."},
    },
    dependencies=[Depends(allowed(Permission.READ_PROFILE))],
    summary="A draft's send step as a customer would get it now (nothing is sent or saved)",
)
async def preview_draft(body: PreviewRequest, request: Request, api: Context) -> Preview | JSONResponse:
    checked = await _check(request, body.files)
    if isinstance(checked, JSONResponse):
        return checked
    loaded, problems = checked
    errors = [p for p in problems if not p.warning]
    if body.journey not in loaded.journeys and errors:
        where = [f"{p.path}:{p.line}: {p.field + ': ' if p.field else ''}{p.message}" for p in errors[:5]]
        return _refusal([f"journey {body.journey!r} does not load with the draft", *where])

    return await answer_preview(api, loaded, body.journey, body.step, body.customer, body.order)
