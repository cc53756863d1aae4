"""Changes of definitions in the store (docs/publishing.md): a draft of one or more files, submitted
for review, then published (approved) or rejected; what runs is the base directory with every
published change's files laid over it in publication order (`seq`), the latest change of a file
winning. Every step writes an audit row: who, when, the change's hash then, the comment, figures.

The store does not read definitions (the import layers: definitions and store are siblings), so
callers describe each file (its kind and name, definitions.drafts.kind_of, and hash,
definitions.drafts.content_hash) as a `NewFile`; triggers/live.py `describe_files` does that.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from store.tables import DefinitionAuditRow, DefinitionChangeRow, DefinitionFileRow, DryRunRow

DRAFT, IN_REVIEW, PUBLISHED, REJECTED = "draft", "in_review", "published", "rejected"
STATES = (DRAFT, IN_REVIEW, PUBLISHED, REJECTED)
#: States a change is still open in: it may yet change what runs.
OPEN = (DRAFT, IN_REVIEW)


class ChangeError(ValueError):
    """Something a user asked of a change that cannot be; the message names the change and why."""

    status = 422


class UnknownChange(ChangeError):
    status = 404


class WrongState(ChangeError):
    status = 409


class NotAllowed(ChangeError):
    status = 403


class PublishedMeanwhile(WrongState):
    """Another publication landed after the change was checked: check it again over it."""


@dataclass(frozen=True)
class NewFile:
    """One file of a change, described by the caller (the store does not parse definitions)."""

    path: str
    kind: str
    name: str
    text: str
    hash: str


#: What a change's id looks like (a UUID; letters, digits, '-' and '_' at most): anything else is
#: no change's, answered without asking the database (PostgreSQL refuses a NUL in a query).
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(change_id: str) -> str:
    """`change_id` if it can be a change's id, else UnknownChange naming it."""
    if not _ID.match(change_id or ""):
        raise UnknownChange(f"no change {change_id!r}: a change's id is a UUID; GET /definitions/changes lists them")
    return change_id


def _row(session: Session, change_id: str, *, lock: bool = False) -> DefinitionChangeRow:
    check_id(change_id)
    query = select(DefinitionChangeRow).where(DefinitionChangeRow.id == change_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise UnknownChange(f"no change {change_id!r}; GET /definitions/changes lists them")
    return row


def record(
    session: Session,
    action: str,
    who: str,
    change_id: str,
    files_hash: str,
    now: datetime,
    *,
    comment: str | None = None,
    figures: dict[str, Any] | None = None,
) -> None:
    """One audit row, the only writer of them: `action` (created, edited, submitted, approved,
    rejected, dry_run) by `who` on change `change_id`, with the hash of the files the action was
    about (the change's own; a dry run's, the files it ran, which an edit may since have changed)."""
    session.add(
        DefinitionAuditRow(
            at=now, action=action, who=who, change_id=change_id, hash=files_hash, comment=comment, figures=figures
        )
    )


def person(who: str) -> str:
    """The person behind a requester: the API key's name, without its fingerprint
    (triggers/api/deps.py `requester` is "NAME [fingerprint]"). One person may hold several keys
    of one name (an operator key and a publish key): they are still one person to the review."""
    return who.split(" [", 1)[0].strip()


def _write_files(session: Session, change_id: str, files: Iterable[NewFile]) -> None:
    session.execute(delete(DefinitionFileRow).where(DefinitionFileRow.change_id == change_id))
    session.flush()
    for file in files:
        session.add(
            DefinitionFileRow(
                change_id=change_id, path=file.path, kind=file.kind, name=file.name, text=file.text, hash=file.hash
            )
        )


def _check_files(files: list[NewFile]) -> None:
    if not files:
        raise ChangeError("a change holds at least one file: {files: {path: text}}")
    paths = [file.path for file in files]
    if len(set(paths)) != len(paths):
        raise ChangeError("a change holds each path once")


def create(
    session: Session,
    files: list[NewFile],
    change_hash: str,
    author: str,
    now: datetime,
    title: str = "",
    *,
    declared_by: str | None = None,
) -> DefinitionChangeRow:
    """A new change in state `draft` by `author`, with its files; audited as `created`. With
    `declared_by` (`journeys publish`: a publishing key names the commit's author) the audit row
    says which key vouched for the author."""
    _check_files(files)
    row = DefinitionChangeRow(
        id=str(uuid.uuid4()), title=title or "", state=DRAFT, author=author, created_at=now, updated_at=now,
        hash=change_hash,
    )  # fmt: skip
    session.add(row)
    session.flush()
    _write_files(session, row.id, files)
    declared = f"author declared by {declared_by}" if declared_by else None
    record(session, "created", author, row.id, row.hash, now, comment=declared)
    return row


def edit(
    session: Session,
    change_id: str,
    files: list[NewFile],
    change_hash: str,
    who: str,
    now: datetime,
    title: str | None = None,
) -> DefinitionChangeRow:
    """Replace a change's files (and title); only a draft or a rejected change (which becomes a
    draft again, its review cleared), never one in review or published."""
    _check_files(files)
    row = _row(session, change_id, lock=True)
    if row.state not in (DRAFT, REJECTED):
        raise WrongState(f"change {change_id} is {row.state}: only a draft or a rejected change can be edited")
    row.state, row.hash, row.updated_at = DRAFT, change_hash, now
    row.submitted_at = row.reviewed_by = row.reviewed_at = None
    if title is not None:
        row.title = title
    _write_files(session, row.id, files)
    record(session, "edited", who, row.id, row.hash, now)
    return row


def submit(session: Session, change_id: str, who: str, now: datetime) -> DefinitionChangeRow:
    """A draft goes to review (the caller has checked it has no problems)."""
    row = _row(session, change_id, lock=True)
    if row.state != DRAFT:
        raise WrongState(f"change {change_id} is {row.state}: only a draft can be submitted")
    row.state, row.submitted_at, row.updated_at = IN_REVIEW, now, now
    record(session, "submitted", who, row.id, row.hash, now)
    return row


def approve(
    session: Session,
    change_id: str,
    who: str,
    now: datetime,
    *,
    comment: str | None = None,
    allow_own: bool = False,
    figures: dict[str, Any] | None = None,
    expected_seq: int | None = None,
) -> DefinitionChangeRow:
    """Publish a change in review: the next `seq`, so it is laid over every change published
    before it. One conditional UPDATE does it: of two approvers at once, one finds the change no
    longer in review (409); two changes approved at once that pick the same `seq` collide on its
    unique index, and the caller retries the loser in a new transaction (IntegrityError).

    With `expected_seq` (the latest publication the caller checked the change against), the
    change takes `expected_seq + 1` or nothing: PublishedMeanwhile if another publication landed
    since (or IntegrityError if it lands at the same moment), so a change is never published over
    a set it was not checked with."""
    row = _row(session, change_id)
    if row.state != IN_REVIEW:
        raise WrongState(f"change {change_id} is {row.state}: only a change in review can be approved")
    if not allow_own:
        _check_not_own(session, row, who)
    following: Any = select(func.coalesce(func.max(DefinitionChangeRow.seq), 0) + 1).scalar_subquery()
    if expected_seq is not None:
        if (latest := latest_seq(session)) != expected_seq:
            raise PublishedMeanwhile(
                f"change {change_id} was checked over publication {expected_seq}, but publication {latest} "
                "was published since"
            )
        following = expected_seq + 1  # taken by a publication at the same moment: the unique index refuses
    done = session.execute(
        update(DefinitionChangeRow)
        .where(DefinitionChangeRow.id == change_id, DefinitionChangeRow.state == IN_REVIEW)
        .values(
            state=PUBLISHED,
            seq=following,
            reviewed_by=who,
            reviewed_at=now,
            published_at=now,
            updated_at=now,
            comment=comment,
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise WrongState(f"change {change_id} was approved or rejected by someone else just now")
    session.refresh(row)
    record(session, "approved", who, row.id, row.hash, now, comment=comment, figures=figures)
    return row


def _check_not_own(session: Session, row: DefinitionChangeRow, who: str) -> None:
    """NotAllowed if the approver wrote the change: created it, or edited it since (an edit keeps
    the change's author, so the audit says who else wrote it); people compared by key name."""
    approver = person(who)
    wrote = select(DefinitionAuditRow.action, DefinitionAuditRow.who).where(
        DefinitionAuditRow.change_id == row.id, DefinitionAuditRow.action.in_(("created", "edited"))
    )
    done = {action for action, writer in session.execute(wrote) if person(writer) == approver}
    if person(row.author) == approver:
        done.add("created")
    if done:
        how = " and ".join(sorted(done))
        raise NotAllowed(
            f"{who} wrote change {row.id} ({how} it) and may not approve it: another person with the publish "
            "role must (or the shop allows it: JOURNEYS_PUBLISH_OWN_CHANGES=true)"
        )


def reject(session: Session, change_id: str, who: str, comment: str, now: datetime) -> DefinitionChangeRow:
    """A change in review goes back to its author with a comment (required)."""
    if not (comment or "").strip():
        raise ChangeError("a reject needs a comment saying why: {comment: ...}")
    row = _row(session, change_id, lock=True)
    if row.state != IN_REVIEW:
        raise WrongState(f"change {change_id} is {row.state}: only a change in review can be rejected")
    row.state, row.reviewed_by, row.reviewed_at, row.updated_at, row.comment = REJECTED, who, now, now, comment
    record(session, "rejected", who, row.id, row.hash, now, comment=comment)
    return row


def get(session: Session, change_id: str) -> DefinitionChangeRow:
    """The change, or UnknownChange naming it."""
    return _row(session, change_id)


def files_of(session: Session, change_id: str) -> list[DefinitionFileRow]:
    """A change's files, by path."""
    query = select(DefinitionFileRow).where(DefinitionFileRow.change_id == change_id)
    return list(session.scalars(query.order_by(DefinitionFileRow.path)))


def change_files(session: Session, change_id: str) -> dict[str, str]:
    """A change's files as `{path: text}` (what definitions.drafts.check_with lays over)."""
    _row(session, change_id)
    return {file.path: file.text for file in files_of(session, change_id)}


def changes(session: Session, state: str | None = None) -> list[DefinitionChangeRow]:
    """Changes, newest first, in `state` if given."""
    if state is not None and state not in STATES:
        raise ChangeError(f"{state!r} is not a state of a change; states are {', '.join(STATES)}")
    query = select(DefinitionChangeRow)
    if state is not None:
        query = query.where(DefinitionChangeRow.state == state)
    return list(session.scalars(query.order_by(DefinitionChangeRow.created_at.desc(), DefinitionChangeRow.id)))


def paths_of(session: Session, change_ids: list[str]) -> dict[str, list[DefinitionFileRow]]:
    """The files (without caring for their texts) of several changes, by change."""
    found: dict[str, list[DefinitionFileRow]] = {change_id: [] for change_id in change_ids}
    if change_ids:
        query = select(DefinitionFileRow).where(DefinitionFileRow.change_id.in_(change_ids))
        for file in session.scalars(query.order_by(DefinitionFileRow.path)):
            found[file.change_id].append(file)
    return found


def versions(session: Session, path: str) -> list[tuple[DefinitionChangeRow, DefinitionFileRow]]:
    """Every change that holds the file at `path`, newest first (published ones by `seq`)."""
    query = (
        select(DefinitionChangeRow, DefinitionFileRow)
        .join(DefinitionFileRow, DefinitionFileRow.change_id == DefinitionChangeRow.id)
        .where(DefinitionFileRow.path == path)
        .order_by(DefinitionChangeRow.created_at.desc(), DefinitionChangeRow.id)
    )
    rows = [(change, file) for change, file in session.execute(query)]
    return sorted(rows, key=lambda pair: (pair[0].seq or 0, pair[0].created_at), reverse=True)


def published_sources(
    session: Session, up_to: int | None = None
) -> dict[str, tuple[DefinitionChangeRow, DefinitionFileRow]]:
    """For each path a published change holds, the latest such change (by `seq`) and its file;
    with `up_to`, of the publications up to that `seq` only (what a process that loaded it runs)."""
    query = (
        select(DefinitionChangeRow, DefinitionFileRow)
        .join(DefinitionFileRow, DefinitionFileRow.change_id == DefinitionChangeRow.id)
        .where(DefinitionChangeRow.state == PUBLISHED)
        .order_by(DefinitionChangeRow.seq)
    )
    if up_to is not None:
        query = query.where(DefinitionChangeRow.seq <= up_to)
    found: dict[str, tuple[DefinitionChangeRow, DefinitionFileRow]] = {}
    for change, file in session.execute(query):
        found[file.path] = (change, file)  # a later seq overwrites an earlier one
    return found


def published_files(session: Session, up_to: int | None = None) -> dict[str, str]:
    """`{path: text}` of what published changes hold (up to `seq` `up_to`, if given), the latest
    change of each path winning (by `seq`): what is laid over the base directory to make what runs."""
    return {path: file.text for path, (_change, file) in published_sources(session, up_to).items()}


def published_journey_files(session: Session, known: Iterable[str] = ()) -> dict[str, str | None]:
    """`{hash: text}` of every journey file any published change ever held (each version that
    may still run an instance), the text None for the hashes in `known` (the caller parsed
    those already)."""
    query = (
        select(DefinitionFileRow.hash, DefinitionFileRow.change_id)
        .join(DefinitionChangeRow, DefinitionFileRow.change_id == DefinitionChangeRow.id)
        .where(DefinitionChangeRow.state == PUBLISHED, DefinitionFileRow.kind == "journey")
    )
    skip = set(known)
    found: dict[str, str | None] = {}
    wanted: dict[str, str] = {}
    for file_hash, change_id in session.execute(query):
        found[file_hash] = None
        if file_hash not in skip:
            wanted.setdefault(file_hash, change_id)
    for file_hash, change_id in wanted.items():
        text = session.scalar(
            select(DefinitionFileRow.text).where(
                DefinitionFileRow.change_id == change_id, DefinitionFileRow.hash == file_hash
            )
        )
        found[file_hash] = text
    return found


def latest_seq(session: Session) -> int:
    """The `seq` of the latest published change, 0 for none: what each process polls."""
    return session.scalar(select(func.coalesce(func.max(DefinitionChangeRow.seq), 0))) or 0


def open_changes(session: Session) -> dict[str, int]:
    """How many open changes (draft or in review) hold each path."""
    query = (
        select(DefinitionFileRow.path, func.count())
        .join(DefinitionChangeRow, DefinitionFileRow.change_id == DefinitionChangeRow.id)
        .where(DefinitionChangeRow.state.in_(OPEN))
        .group_by(DefinitionFileRow.path)
    )
    return {path: count for path, count in session.execute(query)}


def audit(
    session: Session,
    kind: str | None = None,
    name: str | None = None,
    change_id: str | None = None,
    path: str | None = None,
) -> list[DefinitionAuditRow]:
    """The audit rows, newest first: of changes that hold a file of `kind` (and `name`, or at
    `path`: a journey's file need not be named after it) if given."""
    query = select(DefinitionAuditRow)
    if kind is not None or name is not None or path is not None:
        holding = select(DefinitionFileRow.change_id)
        if kind is not None:
            holding = holding.where(DefinitionFileRow.kind == kind)
        if path is not None:
            holding = holding.where(DefinitionFileRow.path == path)
        elif name is not None:
            holding = holding.where(DefinitionFileRow.name == name)
        query = query.where(DefinitionAuditRow.change_id.in_(holding))
    if change_id is not None:
        query = query.where(DefinitionAuditRow.change_id == change_id)
    return list(session.scalars(query.order_by(DefinitionAuditRow.at.desc(), DefinitionAuditRow.id.desc())))


def dry_runs_of(session: Session, change_id: str) -> list[DryRunRow]:
    """A change's dry runs, newest first."""
    query = select(DryRunRow).where(DryRunRow.change_id == change_id).order_by(DryRunRow.created_at.desc())
    return list(session.scalars(query))


def is_current(run: DryRunRow, files: dict[str, str]) -> bool:
    """Whether dry run `run` ran exactly `files` (a change's files now, change_files): a run of
    the change before an edit is stale, its figures no longer the change's."""
    return dict(run.files or {}) == files


def latest_figures(session: Session, change_id: str) -> dict[str, Any] | None:
    """The figures of a change's latest finished dry run of its files as they are now (its window
    and its diff), for the audit; None when every run is of an earlier version (stale)."""
    files = change_files(session, change_id)
    for run in dry_runs_of(session, change_id):
        if run.state == "done" and run.result and is_current(run, files):
            return {
                "dry_run": run.id,
                "days": run.days,
                "window": run.result.get("window"),
                "diff": run.result.get("diff"),
            }
    return None
