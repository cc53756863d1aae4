"""A dry run (docs/publishing.md, docs/dry-runs.md): a draft simulated against the shop's own
events of the last N days, beside the same simulation of what runs now, and the difference.

Both runs are `journeys simulate` (journeys/simulate.py): the real workflows and activities on
Temporal's time-skipping server, a throwaway SQLite store, the outbox for every channel, so
nothing reaches a customer and the shop's store is only read. What they play is read from the
store: the customers with an event in the window (every customer when a broadcast is touched:
its segment decides who it reaches), as their records are now, and the window's events as the
shop sent them (history imported as backfill is left out: it started nothing when it came).

The result holds, for the journeys the draft touches, what each run sent, skipped and deferred
(by reason), what failed, the cost and the conversions (the effect report, views/effect.py, with
the configured prices), and the draft's figures minus the current ones.

It runs in a process of its own (`python -m journeys.dry_run JOB_ID`, spawned by the API,
triggers/api/dry_runs.py), writing its progress to the job's row; when it ends it takes the next
queued job, so the queue drains with no one watching.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from core.config import Settings
from core.records import Customer, Event
from definitions.broadcasts import parse_run
from definitions.drafts import DraftError, Problem, check_with, content_hash, kind_of
from definitions.loader import Definitions, default_directory
from journeys.simulate import SimulationInputError, simulate
from store import definition_changes, dry_runs
from store.db import Store
from views.effect import EffectReport, Prices

log = logging.getLogger("journeys.dry_run")  # the same name when run as __main__

#: Where each run's share of the progress bar starts: reading (the first 5%), then the current
#: run and the draft's, each played events first and then the timers that remain.
_READ, _RUN = 0.05, 0.47
#: Of a run's share, playing the events (the rest: the timers to the window's end, the report).
_PLAYING = 0.8
_PLAYED = re.compile(r"([\d,]+)/([\d,]+) customers and events")


class Outcome(BaseModel):
    """One journey's outcomes in one simulated window (docs/publishing.md OUTCOMES)."""

    sent: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    deferred: dict[str, int] = Field(default_factory=dict)
    failed: int = 0
    cost: float = 0.0
    converted: int = 0
    revenue: float = 0.0

    def minus(self, other: Outcome) -> Outcome:
        """This minus `other`, reason by reason (a reason only one has counts as 0 in the other)."""
        return Outcome(
            sent=self.sent - other.sent,
            skipped=_minus(self.skipped, other.skipped),
            deferred=_minus(self.deferred, other.deferred),
            failed=self.failed - other.failed,
            cost=round(self.cost - other.cost, 4),
            converted=self.converted - other.converted,
            revenue=round(self.revenue - other.revenue, 2),
        )


class Window(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime

    model_config = {"populate_by_name": True}


class DryRunResult(BaseModel):
    """docs/publishing.md's dry-run `result`."""

    window: Window
    events: int
    customers: int
    seconds: float
    current: dict[str, Outcome]
    draft: dict[str, Outcome]
    diff: dict[str, Outcome]


class DryRunFailed(Exception):
    """What stops a dry run, said for the person who asked for it."""


def _minus(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {reason: a.get(reason, 0) - b.get(reason, 0) for reason in sorted(set(a) | set(b))}


def outcomes(effect: EffectReport | None, journeys: set[str]) -> dict[str, Outcome]:
    """Each of `journeys`' outcomes from a simulation's effect report (zero where it did nothing)."""
    found = effect.journeys if effect is not None else {}
    result = {}
    for name in sorted(journeys):
        figures = found.get(name)
        if figures is None:
            result[name] = Outcome()
            continue
        result[name] = Outcome(
            sent=figures.sent,
            skipped=dict(sorted(figures.skipped_by_reason.items())),
            deferred=dict(sorted(figures.deferred_by_reason.items())),
            failed=figures.failed,
            cost=figures.cost,
            converted=figures.converted,
            revenue=figures.revenue,
        )
    return result


def touched(
    files: Mapping[str, str], current: Definitions, draft: Definitions, before: Mapping[str, str | None]
) -> set[str]:
    """The journeys (and broadcasts, by name) a change of `files` can alter: those in its files,
    those whose snapshot (definition, templates, resources) differs between the two loads, those
    sending a changed template, broadcasts to a changed segment, and all for policy.yaml or
    loyalty.yaml (they decide every send). `before`: each file's text in what runs now (None: new)."""
    loads = (current, draft)
    names: set[str] = set()
    for path, text in files.items():
        kind, name = kind_of(path)
        if kind in ("journey", "broadcast"):
            names |= ({_named(text), _named(before.get(path) or "")} - {None}) or {name}
        elif kind == "template":
            for load in loads:
                names |= {j for j, snapshot in load.journeys.items() if name in snapshot.templates}
                names |= {b for b, (_, snapshot) in load.broadcasts.items() if name in snapshot.templates}
        elif kind == "segment":
            for load in loads:
                names |= {b for b, (broadcast, _) in load.broadcasts.items() if broadcast.segment == name}
        else:  # policy, loyalty
            for load in loads:
                names |= set(load.journeys) | set(load.broadcasts)
    versions = [
        {**{j: s.version for j, s in load.journeys.items()}, **{b: s.version for b, (_, s) in load.broadcasts.items()}}
        for load in loads
    ]
    names |= {name for name in set(versions[0]) | set(versions[1]) if versions[0].get(name) != versions[1].get(name)}
    return {parse_run(name)[0] if parse_run(name) else name for name in names}


def _named(text: str) -> str | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_window(
    store: Store, start: datetime, end: datetime, every_customer: bool = False
) -> tuple[list[Customer], list[Event], list[Event]]:
    """The window's events, their customers' records (every customer with `every_customer`) and
    those customers' earlier events (store/dry_runs.py `window`)."""
    with store.transaction() as session:
        return dry_runs.window(session, start, end, every_customer)


class _ProgressToRow:
    """The stream simulate draws its progress line on (journeys/progress.py), read as played /
    total and written to the job's row as a share of the whole dry run, at most once a second."""

    def __init__(self, store: Store, job_id: str, start: float, share: float):
        self.store, self.job_id, self.start, self.share = store, job_id, start, share
        self.written = 0.0

    def write(self, text: str) -> int:
        match = _PLAYED.search(text)
        if match is not None:
            done, total = (int(group.replace(",", "")) for group in match.groups())
            self.report(done / total if total else 1.0)
        return len(text)

    def report(self, played: float) -> None:
        now = time.monotonic()
        if now - self.written >= 1.0 or played >= 1.0:
            self.written = now
            _progress(self.store, self.job_id, self.start + self.share * _PLAYING * min(played, 1.0))

    def flush(self) -> None:
        pass


def _progress(store: Store, job_id: str, value: float) -> None:
    with store.transaction() as session:
        dry_runs.set_progress(session, job_id, value)


def _problem_lines(problems: list[Problem]) -> list[str]:
    return [
        f"{p.path or '-'}:{p.line}: {p.field + ': ' if p.field else ''}{p.message}" for p in problems if not p.warning
    ]


async def run_dry_run(
    store: Store,
    job_id: str,
    base_dir: Path,
    *,
    current: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
    shards: int | None = None,
) -> dry_runs.DryRunRow:
    """Run the dry run `job_id` (claimed now if still queued): the draft's files laid over
    `base_dir` with `current` (what runs now: the published files over the base; by default the
    store's, read when the job starts) against the same without them, over the last `days` days
    to `now`. The row ends done or failed; returned."""
    settings = settings or Settings.embedded()
    now = now or datetime.now(UTC)
    with store.transaction() as session:
        row = session.get(dry_runs.DryRunRow, job_id)
        if row is None:
            raise DryRunFailed(f"no dry run {job_id}")
        if row.state == "queued":
            dry_runs.claim(session, job_id, now, os.getpid())
        elif row.state == "running":
            if row.pid not in (None, os.getpid()) and dry_runs.process_alive(row.pid):
                raise DryRunFailed(f"dry run {job_id} is running already, in process {row.pid}")
            dry_runs.set_pid(session, job_id, os.getpid())
        else:
            raise DryRunFailed(f"dry run {job_id} is {row.state} already")
        files, days = dict(row.files), row.days
        if current is None:  # what runs now, as of this job (a publication since the process began counts)
            current = definition_changes.published_files(session)
    log.info("dry run %s: %d files over the last %d days, pid %d", job_id, len(files), days, os.getpid())
    try:
        result = await _dry_run(store, job_id, base_dir, files, days, dict(current or {}), settings, now, shards)
    except DryRunFailed as err:
        _end(store, job_id, message=str(err))
    except Exception as err:  # anything else: said on the row, the trace in the log
        log.exception("dry run %s failed", job_id)
        _end(store, job_id, message=f"the dry run failed: {type(err).__name__}: {err}")
    else:
        _end(store, job_id, result=result.model_dump(mode="json", by_alias=True))
    with store.transaction() as session:
        row = dry_runs.get(session, job_id)
        dry_runs.audit(session, row, content_hash(files), datetime.now(UTC))
    log.info("dry run %s: %s%s", job_id, row.state, f": {row.message}" if row.message else "")
    return row


def _end(store: Store, job_id: str, *, result: dict[str, Any] | None = None, message: str | None = None) -> None:
    with store.transaction() as session:
        if result is not None:
            dry_runs.finish(session, job_id, result, datetime.now(UTC))
        else:
            dry_runs.fail(session, job_id, message or "failed", datetime.now(UTC))


async def _dry_run(
    store: Store,
    job_id: str,
    base_dir: Path,
    files: dict[str, str],
    days: int,
    current: dict[str, str],
    settings: Settings,
    now: datetime,
    shards: int | None,
) -> DryRunResult:
    started = time.monotonic()
    try:
        current_defs, current_problems = check_with(base_dir, current)
        draft_defs, draft_problems = check_with(base_dir, {**current, **files})
    except DraftError as err:
        raise DryRunFailed(str(err)) from err
    if lines := _problem_lines(draft_problems):
        raise DryRunFailed("the draft does not load:\n" + "\n".join(lines))
    if lines := _problem_lines(current_problems):
        raise DryRunFailed("what runs now does not load, so there is nothing to compare with:\n" + "\n".join(lines))
    names = touched(
        files, current_defs, draft_defs, {path: current.get(path) or _read(base_dir / path) for path in files}
    )
    start, end = now - timedelta(days=days), now
    broadcast_touched = bool(names & (set(current_defs.broadcasts) | set(draft_defs.broadcasts)))
    customers, events, history = read_window(store, start, end, every_customer=broadcast_touched)
    _progress(store, job_id, _READ)
    prices = Prices.of(settings)
    reports = []
    for index, definitions in enumerate((current_defs, draft_defs)):
        begins = _READ + index * _RUN
        if events or customers:
            stream = _ProgressToRow(store, job_id, begins, _RUN)
            try:
                report = await simulate(
                    definitions, customers, events, end, shop_name=settings.shop_name, prices=prices,
                    timezone=settings.shop_timezone, shards=shards, progress=stream, history=history,  # type: ignore[arg-type]
                )  # fmt: skip
            except SimulationInputError as err:
                raise DryRunFailed("the shop's events cannot be simulated:\n" + str(err)) from err
            reports.append(report.effect)
        else:
            reports.append(None)
        _progress(store, job_id, begins + _RUN)
    before, after = outcomes(reports[0], names), outcomes(reports[1], names)
    return DryRunResult(
        window=Window(from_=start, to=end),
        events=len(events),
        customers=len(customers),
        seconds=round(time.monotonic() - started, 1),
        current=before,
        draft=after,
        diff={name: after[name].minus(before[name]) for name in sorted(names)},
    )


async def drain(store: Store, job_id: str, base_dir: Path, settings: Settings, **options: Any) -> None:
    """Run `job_id`, then every job queued meanwhile that this process can claim."""
    next_id: str | None = job_id
    while next_id is not None:
        await run_dry_run(store, next_id, base_dir, settings=settings, **options)
        with store.transaction() as session:
            next_id = dry_runs.claim_next(session, datetime.now(UTC), os.getpid())


def main(argv: list[str] | None = None) -> int:
    """`python -m journeys.dry_run JOB_ID`: what the API spawns. The store and the definitions
    are the configured ones (Settings: DATABASE_URL, JOURNEYS_DEFINITIONS), as the API's."""
    parser = argparse.ArgumentParser(prog="python -m journeys.dry_run", description=main.__doc__)
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    # Warnings and errors of everything (each throwaway store's migrations log at INFO), this module's progress.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    settings = Settings()
    store = Store(settings.database_url)
    try:
        base = Path(settings.definitions_dir or default_directory())
        asyncio.run(drain(store, args.job_id, base, settings))
    except DryRunFailed as err:
        print(f"journeys dry-run: {err}", file=sys.stderr)
        return 1
    finally:
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
