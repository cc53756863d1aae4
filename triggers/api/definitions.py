"""Definitions as published versions (docs/publishing.md): what runs, each file's versions, changes
(drafts) and their review (活动审核): submit, approve (publish) and reject, `journeys publish`'s
one-step publication, and the audit of it all.

What runs is `api.live` (triggers/live.py): the base directory with the published changes laid
over it. An approval here loads the new set in this process at once; every other process (the
workers, other API processes) loads it within a couple of seconds (they poll the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy.exc import IntegrityError

from core.access import Permission
from definitions.drafts import (
    KINDS,
    MAX_FILE_BYTES,
    DraftError,
    Problem,
    check_name,
    check_with,
    content_hash,
    kind_of,
    path_of,
)
from store import definition_changes as changes
from store.tables import DefinitionChangeRow, DefinitionFileRow, DryRunRow
from triggers.api.deps import ApiContext, Context, allowed, requester
from triggers.api.deps import Problem as Refusal
from triggers.live import describe_files

log = logging.getLogger(__name__)

router = APIRouter(tags=["definitions"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Refusal} for status in (401, 403, 404, 409, 413, 415, 422)
}
#: The most files one change may hold (a journey with its templates is a handful).
MAX_FILES = 200


# -- answers -------------------------------------------------------------------------------------


class RunningFile(BaseModel):
    kind: str
    name: str
    path: str
    hash: str
    source: str = Field(description='"base" (the definitions directory) or "published" (a change laid over it)')
    change_id: str | None = None
    published_at: datetime | None = None
    published_by: str | None = None
    open_changes: int = Field(0, description="Changes holding this file still in draft or in review")


class RunningText(BaseModel):
    kind: str
    name: str
    path: str
    text: str
    hash: str
    source: str
    change_id: str | None = None


class Version(BaseModel):
    change_id: str
    hash: str = Field(description="This file's hash in that change")
    state: str
    author: str
    created_at: datetime
    submitted_at: datetime | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    published_at: datetime | None = None
    comment: str | None = None
    dry_run: dict[str, Any] | None = Field(None, description="The figures of the change's latest finished dry run")


class ChangeFile(BaseModel):
    path: str
    kind: str
    name: str
    hash: str
    text: str | None = None
    diff: str | None = Field(None, description="Unified diff against the file that runs (all added if none runs)")


class DryRunSummary(BaseModel):
    id: str
    state: str
    progress: float
    days: int
    requested_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    stale: bool = Field(
        False, description="It ran an earlier version of the change's files: its figures are not the change's now"
    )


class Change(BaseModel):
    id: str
    title: str
    state: str
    author: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    published_at: datetime | None = None
    seq: int | None = Field(None, description="Publication order, once published")
    comment: str | None = None
    hash: str
    files: list[ChangeFile]
    problems: list[Problem] | None = Field(
        None, description="What `journeys validate` finds with it laid over what runs (not in lists)"
    )
    dry_runs: list[DryRunSummary] = []


class AuditEntry(BaseModel):
    at: datetime
    action: str
    who: str
    change_id: str
    hash: str
    comment: str | None = None
    figures: dict[str, Any] | None = None


# -- requests ------------------------------------------------------------------------------------


def _no_nul(value: str | None, info: ValidationInfo) -> str | None:
    """A NUL in free text is refused (422 naming the field): no record holds one (PostgreSQL
    refuses it in a text column)."""
    if value is not None and "\x00" in value:
        raise ValueError(f"{info.field_name} holds a NUL character (\\u0000), which no record may")
    return value


class ChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] = Field(description="{path inside the definitions directory: its text}")
    title: str | None = Field(None, max_length=200)

    refuse_nul = field_validator("title")(_no_nul)


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(None, max_length=10_000)

    refuse_nul = field_validator("comment")(_no_nul)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(max_length=10_000, description="Why: required")

    refuse_nul = field_validator("comment")(_no_nul)


class PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, str]
    title: str | None = Field(None, max_length=200)
    author: str | None = Field(None, max_length=200, description="Who wrote it (the commit's author); else the key")
    comment: str | None = Field(None, max_length=10_000)

    refuse_nul = field_validator("title", "author", "comment")(_no_nul)


class Refused(Exception):
    """A request this router refuses, with its status and a message naming the thing at fault."""

    def __init__(self, status: int, detail: str, **extra: Any):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra

    def answer(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail, **self.extra}, status_code=self.status)


# -- helpers -------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _described(files: dict[str, str]) -> tuple[list[changes.NewFile], str]:
    """The files checked (path, size, text) and described for the store, or Refused naming one."""
    if not files:
        raise Refused(422, "a change holds at least one file: {files: {path: text}}")
    if len(files) > MAX_FILES:
        raise Refused(422, f"a change holds at most {MAX_FILES} files, not {len(files)}")
    for path, text in files.items():
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise Refused(422, f"{path!r}: not UTF-8 text (it holds a lone surrogate)") from None
        if "\x00" in text:
            raise Refused(422, f"{path!r}: holds a NUL character, which no definition file may")
        if size > MAX_FILE_BYTES:
            raise Refused(413, f"{path!r}: {size} bytes, longer than the {MAX_FILE_BYTES // 1024} KiB a file may be")
    try:
        return describe_files(files)
    except DraftError as err:
        raise Refused(422, str(err)) from None
    except UnicodeEncodeError:
        raise Refused(422, "a file's path is not UTF-8 text") from None


def _problems(api: ApiContext, files: dict[str, str]) -> list[Problem]:
    """What `journeys validate` finds with `files` laid over what runs."""
    _loaded, found = check_with(api.live.directory, files)
    return found


def _diff(path: str, running: str | None, text: str) -> str:
    return "".join(
        difflib.unified_diff(
            (running or "").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"running/{path}" if running is not None else "/dev/null",
            tofile=f"change/{path}",
        )
    )


def _dry_run(run: DryRunRow, files: dict[str, str]) -> DryRunSummary:
    return DryRunSummary(
        id=run.id, state=run.state, progress=run.progress, days=run.days, requested_by=run.requested_by,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at, message=run.message,
        result=run.result, stale=not changes.is_current(run, files),
    )  # fmt: skip


def _change(
    row: DefinitionChangeRow,
    files: list[DefinitionFileRow],
    *,
    api: ApiContext | None = None,
    problems: list[Problem] | None = None,
    dry_runs: list[DryRunRow] | None = None,
) -> Change:
    """A change as answered; with `api`, each file's text and diff against what runs."""
    texts = {file.path: file.text for file in files}
    shown = []
    for file in files:
        item = ChangeFile(path=file.path, kind=file.kind, name=file.name, hash=file.hash)
        if api is not None:
            item.text, item.diff = file.text, _diff(file.path, api.live.running_text(file.path), file.text)
        shown.append(item)
    return Change(
        id=row.id, title=row.title, state=row.state, author=row.author, created_at=row.created_at,
        updated_at=row.updated_at, submitted_at=row.submitted_at, reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at, published_at=row.published_at, seq=row.seq, comment=row.comment, hash=row.hash,
        files=shown, problems=problems, dry_runs=[_dry_run(run, texts) for run in dry_runs or []],
    )  # fmt: skip


async def _full(api: ApiContext, change_id: str) -> Change:
    """A change with its texts, diffs, problems (against what runs now) and dry runs."""

    def read(session):
        row = changes.get(session, change_id)
        return row, changes.files_of(session, change_id), changes.dry_runs_of(session, change_id)

    row, files, runs = await api.store.run(read)
    problems = await asyncio.to_thread(_problems, api, {file.path: file.text for file in files})
    return _change(row, files, api=api, problems=problems, dry_runs=runs)


def _refusing(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A route whose refusals (Refused, the store's ChangeError) are answered with their status
    and message, naming what is at fault."""

    @functools.wraps(endpoint)
    async def answer(*args: Any, **kwargs: Any) -> Any:
        try:
            return await endpoint(*args, **kwargs)
        except Refused as err:
            return err.answer()
        except changes.ChangeError as err:
            return JSONResponse({"detail": str(err)}, status_code=err.status)

    return answer


def _kind_path(api: ApiContext, kind: str, name: str) -> str:
    try:
        return path_of(kind, name, api.live.journey_paths())
    except DraftError as err:
        raise Refused(404, str(err)) from None


async def _check_loads(
    api: ApiContext, files: dict[str, str], what: str, *, published: dict[str, str] | None = None
) -> None:
    """Refused (409, each problem at its file and line) unless `files` laid over what runs load
    without problems (warnings allowed). With `published` (the store's published files now), over
    the base with those laid over it instead: what a publication will load, even when this
    process runs an older one (another process's approval, or one that did not load)."""
    if published is None or api.live.store is None:
        found = await asyncio.to_thread(_problems, api, files)
    else:
        _loaded, found = await asyncio.to_thread(check_with, api.live.base, {**published, **files})
    blocking = [problem for problem in found if not problem.warning]
    if not blocking:
        return
    shown = "; ".join(f"{p.path}:{p.line}: {p.field + ': ' if p.field else ''}{p.message}" for p in blocking[:5])
    more = f" (and {len(blocking) - 5} more)" if len(blocking) > 5 else ""
    raise Refused(
        409,
        f"{what} {len(blocking)} problem(s): {shown}{more}",
        problems=[problem.model_dump() for problem in blocking],
    )


async def _approve(
    api: ApiContext, change_id: str, who: str, comment: str | None, *, allow_own: bool
) -> DefinitionChangeRow:
    """Approve (publish) a change in review, after checking it still loads over what runs now;
    then load it in this process at once."""
    await asyncio.to_thread(api.live.refresh)  # what runs now, another process's approvals included

    def read(session) -> tuple[dict[str, str], dict[str, str], int]:
        # In one transaction: the published files and the publication they make agree.
        return changes.change_files(session, change_id), changes.published_files(session), changes.latest_seq(session)

    now = _now()
    for attempt in range(5):
        # The check and the publication agree: the change is published as the one right after the
        # publication it was checked over, or checked again over whatever landed meanwhile.
        files, published, latest = await api.store.run(read)
        await _check_loads(api, files, f"change {change_id} no longer loads over what runs now:", published=published)

        def publish(session, latest: int = latest) -> DefinitionChangeRow:
            figures = changes.latest_figures(session, change_id)
            return changes.approve(
                session,
                change_id,
                who,
                now,
                comment=comment,
                allow_own=allow_own,
                figures=figures,
                expected_seq=latest,
            )

        try:
            row = await api.store.run(publish)
            break
        except (IntegrityError, changes.PublishedMeanwhile):  # another change was published meanwhile
            if attempt == 4:
                raise Refused(409, f"change {change_id}: other changes are being published; try again") from None
            await asyncio.sleep(0.05 * (attempt + 1))
    await asyncio.to_thread(api.live.refresh)
    if api.live.store is not None and row.seq is not None and api.live.loaded_seq < row.seq:
        why = api.live.failure or api.live.trouble or "it was not loaded"
        log.error("change %s is published (publication %d) but did not load: %s", change_id, row.seq, why)
        raise Refused(
            503,
            f"change {change_id} is published in the store (publication {row.seq}) but did not load: {why}; "
            f"still running {f'publication {api.live.loaded_seq}' if api.live.loaded_seq else 'the base definitions'}"
            + (" (publish a change that mends it)" if api.live.failure else " (it is tried again at the next look)"),
            change_id=change_id,
            seq=row.seq,
        )
    return row


def _allow_own(api: ApiContext) -> bool:
    """Whether an author may approve their own change: the shop allows it, or there are no API
    keys (a local engine on loopback: every caller is the same unnamed one)."""
    return api.publish_own_changes or not api.keys


# -- what runs -----------------------------------------------------------------------------------


@router.get(
    "/definitions",
    response_model=list[RunningFile],
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="Every definition file that runs: from the base directory or a published change",
)
async def running_files(api: Context) -> list[RunningFile]:
    texts = api.live.running_files()

    loaded = api.live.loaded_seq if api.live.store is not None else None

    def read(session):
        return changes.published_sources(session, up_to=loaded), changes.open_changes(session)

    published, open_counts = await api.store.run(read)
    answer = []
    for path, text in texts.items():
        kind, name = kind_of(path)
        change = published.get(path, (None, None))[0]
        answer.append(
            RunningFile(
                kind=kind,
                name=name,
                path=path,
                hash=content_hash({path: text}),
                source="published" if change is not None else "base",
                change_id=change.id if change else None,
                published_at=change.published_at if change else None,
                published_by=change.reviewed_by if change else None,
                open_changes=open_counts.get(path, 0),
            )  # fmt: skip
        )
    return answer


@router.get(
    "/definitions/changes",
    response_model=list[Change],
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="Changes of definitions, newest first, without their texts",
)
@_refusing
async def list_changes(api: Context, state: str | None = None) -> list[Change] | JSONResponse:
    def read(session):
        rows = changes.changes(session, state)
        files = changes.paths_of(session, [row.id for row in rows])
        return [_change(row, files[row.id]) for row in rows]

    return await api.store.run(read)


@router.get(
    "/definitions/changes/{change_id}",
    response_model=Change,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="A change with its files' texts, each one's diff against what runs, its problems and dry runs",
)
@_refusing
async def show_change(change_id: str, api: Context) -> Change | JSONResponse:
    return await _full(api, change_id)


@router.post(
    "/definitions/changes",
    response_model=Change,
    status_code=201,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.WRITE_DRAFTS))],
    summary="Write a draft: one or more files by their path inside the definitions directory",
)
@_refusing
async def create_change(body: ChangeIn, request: Request, api: Context) -> Change | JSONResponse:
    who = requester(request)
    files, change_hash = _described(body.files)
    title = body.title or ""
    row = await api.store.run(lambda session: changes.create(session, files, change_hash, who, _now(), title))
    return await _full(api, row.id)


@router.put(
    "/definitions/changes/{change_id}",
    response_model=Change,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.WRITE_DRAFTS))],
    summary="Replace a draft's files (a rejected change becomes a draft again)",
)
@_refusing
async def edit_change(change_id: str, body: ChangeIn, request: Request, api: Context) -> Change | JSONResponse:
    who = requester(request)
    files, change_hash = _described(body.files)
    title = body.title
    await api.store.run(lambda session: changes.edit(session, change_id, files, change_hash, who, _now(), title))
    return await _full(api, change_id)


@router.post(
    "/definitions/changes/{change_id}/submit",
    response_model=Change,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.WRITE_DRAFTS))],
    summary="Submit a draft for review; 409 while it has problems (each at its file and line)",
)
@_refusing
async def submit_change(change_id: str, request: Request, api: Context) -> Change | JSONResponse:
    who = requester(request)
    files = await api.store.run(lambda session: changes.change_files(session, change_id))
    await _check_loads(api, files, f"change {change_id} has")
    await api.store.run(lambda session: changes.submit(session, change_id, who, _now()))
    return await _full(api, change_id)


@router.post(
    "/definitions/changes/{change_id}/approve",
    response_model=Change,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.PUBLISH))],
    summary="Approve (publish) a change in review: it runs from now on, for new instances",
)
@_refusing
async def approve_change(
    change_id: str, request: Request, api: Context, body: ApproveIn | None = None
) -> Change | JSONResponse:
    who = requester(request)
    await _approve(api, change_id, who, body.comment if body else None, allow_own=_allow_own(api))
    return await _full(api, change_id)


@router.post(
    "/definitions/changes/{change_id}/reject",
    response_model=Change,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.PUBLISH))],
    summary="Reject a change in review, saying why (the comment is required)",
)
@_refusing
async def reject_change(change_id: str, body: RejectIn, request: Request, api: Context) -> Change | JSONResponse:
    who = requester(request)
    await api.store.run(lambda session: changes.reject(session, change_id, who, body.comment, _now()))
    return await _full(api, change_id)


@router.post(
    "/definitions/publish",
    response_model=Change,
    status_code=201,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.PUBLISH))],
    summary="Make, submit and approve a change at once (`journeys publish`): `author` wrote it, the key approves",
)
@_refusing
async def publish(body: PublishIn, request: Request, api: Context) -> Change | JSONResponse:
    approver = requester(request)
    author = (body.author or "").strip() or approver
    files, change_hash = _described(body.files)
    if changes.person(author) == changes.person(approver) and not _allow_own(api):
        raise Refused(
            403,
            f"{approver} may not publish their own change: give the author (`author`, `journeys publish "
            "--author`), who must be someone else, or allow it (JOURNEYS_PUBLISH_OWN_CHANGES=true)",
        )
    await _check_loads(api, body.files, "the change has")
    now = _now()

    def made(session) -> str:
        row = changes.create(session, files, change_hash, author, now, body.title or "", declared_by=approver)
        changes.submit(session, row.id, approver, now)
        return row.id

    change_id = await api.store.run(made)
    try:
        await _approve(api, change_id, approver, body.comment, allow_own=_allow_own(api))
    except (Refused, changes.ChangeError) as err:
        status = err.status
        if status == 503:  # published in the store, not loaded here: the answer says so
            raise
        # Not published: the change this request made must not stay in review with no one to
        # review it (its author ran a command, not the console); it is rejected with the reason.
        detail = err.detail if isinstance(err, Refused) else str(err)
        why = f"not published: {detail}"
        with contextlib.suppress(changes.ChangeError):
            await api.store.run(lambda session: changes.reject(session, change_id, approver, why, _now()))
        extra = err.extra if isinstance(err, Refused) else {}
        raise Refused(status, f"{detail} (change {change_id} was rejected)", **extra) from None
    return await _full(api, change_id)


@router.get(
    "/audit",
    response_model=list[AuditEntry],
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="What was done to changes of definitions, newest first: who, when, the hash, comment and figures",
)
@_refusing
async def audit(api: Context, kind: str | None = None, name: str | None = None) -> list[AuditEntry] | JSONResponse:
    if kind is not None and kind not in KINDS:
        raise Refused(422, f"{kind!r} is not a kind of definition; kinds are {', '.join(KINDS)}")
    if name is not None:
        try:
            check_name(name)
        except DraftError as err:
            raise Refused(422, f"name: {err}") from None
    path = _kind_path(api, kind, name) if kind is not None and name is not None else None
    rows = await api.store.run(lambda session: changes.audit(session, kind=kind, name=name, path=path))
    return [
        AuditEntry(
            at=row.at,
            action=row.action,
            who=row.who,
            change_id=row.change_id,
            hash=row.hash,
            comment=row.comment,
            figures=row.figures,
        )  # fmt: skip
        for row in rows
    ]


# Declared last: `/definitions/{kind}/{name}` would otherwise take `/definitions/changes/{id}`.


@router.get(
    "/definitions/{kind}/{name}",
    response_model=RunningText,
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="The file of a journey, template, segment, broadcast, policy or loyalty programme that runs",
)
@_refusing
async def running_text(kind: str, name: str, api: Context) -> RunningText | JSONResponse:
    path = _kind_path(api, kind, name)
    text = api.live.running_text(path)
    if text is None:
        there = sorted(n for p in api.live.running_files() if (n := _named(p, kind)))
        raise Refused(404, f"no {kind} {name!r} runs; {kind}s that run: {', '.join(there) or 'none'}")
    loaded = api.live.loaded_seq if api.live.store is not None else None
    source = await api.store.run(lambda session: changes.published_sources(session, up_to=loaded).get(path))
    return RunningText(
        kind=kind, name=name, path=path, text=text, hash=content_hash({path: text}),
        source="published" if source else "base", change_id=source[0].id if source else None,
    )  # fmt: skip


@router.get(
    "/definitions/{kind}/{name}/versions",
    response_model=list[Version],
    responses=_RESPONSES,
    dependencies=[Depends(allowed(Permission.READ_JOURNEYS))],
    summary="Every change that holds this file, newest first, with who wrote, reviewed and published it",
)
@_refusing
async def versions(kind: str, name: str, api: Context) -> list[Version] | JSONResponse:
    path = _kind_path(api, kind, name)

    def read(session):
        found = changes.versions(session, path)
        return [(change, file, changes.latest_figures(session, change.id)) for change, file in found]

    found = await api.store.run(read)
    if not found and api.live.running_text(path) is None:
        raise Refused(404, f"no {kind} {name!r} runs or was ever drafted ({path})")
    return [
        Version(
            change_id=change.id,
            hash=file.hash,
            state=change.state,
            author=change.author,
            created_at=change.created_at,
            submitted_at=change.submitted_at,
            reviewed_by=change.reviewed_by,
            reviewed_at=change.reviewed_at,
            published_at=change.published_at,
            comment=change.comment,
            dry_run=figures,
        )  # fmt: skip
        for change, file, figures in found
    ]


def _named(path: str, kind: str) -> str | None:
    """The name of the definition at `path` if it is of `kind` (a journey by its `name:`)."""
    found_kind, name = kind_of(path)
    return name if found_kind == kind else None
