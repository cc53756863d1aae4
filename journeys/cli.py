"""The `journeys` command."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from core.config import Settings
from core.lifecycle import TITLES as LIFECYCLE_TITLES
from definitions.loader import (
    check_definitions,
    default_directory,
    json_schema,
    loyalty_json_schema,
    policy_json_schema,
    sms_json_schema,
    template_json_schema,
)
from journeys.tiers import tier_app

if TYPE_CHECKING:
    from store.db import Store


class _Root(TyperGroup):
    """`--data-dir DIR` may come before or after the command (`journeys history --customer c1
    --data-dir /srv/j`): it is moved in front, where the root option takes it. `journeys up`
    keeps its own --data-dir."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        moved: list[str] = []
        rest: list[str] = []
        items = iter(args)
        for arg in items:
            if arg == "--":
                rest += [arg, *items]
            elif arg == "--data-dir":
                moved += [arg, next(items, "")]
            elif arg.startswith("--data-dir="):
                moved.append(arg)
            else:
                rest.append(arg)
        command = next((arg for arg in rest if not arg.startswith("-")), None)
        return super().parse_args(ctx, args if command == "up" else [*moved, *rest])


app = typer.Typer(
    cls=_Root, help="Journeys: durable, event-driven marketing automation on Temporal.", no_args_is_help=True
)

#: The --data-dir given, for `_settings`.
_DATA_DIR: list[Path | None] = [None]


@app.callback()
def _options(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="The data directory of the `journeys up` to work with (default: JOURNEYS_DATA_DIR, else .data): "
            "its journeys.env says where its store, Temporal, key and outbox are. Before or after the command."
        ),
    ] = None,
) -> None:
    _DATA_DIR[0] = data_dir


def _settings() -> Settings:
    """The settings (core.config decides the precedence), in the --data-dir given."""
    return Settings() if _DATA_DIR[0] is None else Settings(data_dir=_DATA_DIR[0])


@contextlib.contextmanager
def _opened_store(settings: Settings) -> Iterator[Store]:
    """The store at the configured database, disposed of when the block ends. The database must
    exist: a read creates no database file (`journeys migrate` does)."""
    from store.db import Store, missing_database

    missing = missing_database(settings.database_url)
    if missing is not None:
        typer.echo(
            f"journeys: no database at {missing}. Start the engine there (`journeys up --data-dir DIR`), "
            f"or create it with `journeys migrate`; --data-dir, {Settings.variable('data_dir')} or "
            f"{Settings.variable('database_url')} says where it is.",
            err=True,
        )
        raise typer.Exit(2)
    store = Store(settings.database_url)
    try:
        yield store
    finally:
        store.dispose()


#: Set when this module runs as the `journeys` program (main), not inside another (tests' CliRunner).
_STANDALONE = [False]


def main() -> None:
    """The `journeys` program."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    _STANDALONE[0] = True
    try:
        app()
    except (OperationalError, ProgrammingError) as err:  # a database missing, unreachable or not migrated
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0][:300]
        typer.echo(
            f"journeys: the database is not ready ({reason}). Check {Settings.variable('database_url')} "
            "(or --data-dir); "
            "`journeys migrate` creates or upgrades its tables.",
            err=True,
        )
        sys.exit(2)


def _exits_hard(command):
    """For commands that made a Temporal client: end the process with os._exit once the command
    is done (output flushed). The SDK's Rust runtime threads can otherwise call into Python
    while the interpreter finalizes and abort it (temporalio/sdk-python#300), turning a command
    that did its work into exit code -6. Only when running as the `journeys` program."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            command(*args, **kwargs)
            code = 0
        except (typer.Exit, SystemExit) as done:
            code = getattr(done, "exit_code", getattr(done, "code", 1)) or 0
            if not _STANDALONE[0]:
                raise
        if not _STANDALONE[0]:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)

    return run


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _definitions_or_exit(directory: Path | None):
    loaded, problems = check_definitions(directory or default_directory())
    if problems:
        for line in problems:
            typer.echo(line, err=True)
        raise typer.Exit(1)
    return loaded


def _running_definitions(settings: Settings, directory: Path | None = None):
    """What the engine runs (exit 1 on its problems): `directory` when given, else the configured
    base with the store's published changes laid over it, as the API and the worker load it
    (docs/publishing.md), so a broadcast or template published in the console is the one a
    command starts, previews or reports on."""
    if directory is not None:
        return _definitions_or_exit(directory)
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from store.db import Store, missing_database
    from triggers.live import LiveDefinitions

    base = Path(settings.definitions_dir or default_directory())
    if missing_database(settings.database_url) is not None:
        return _definitions_or_exit(base)  # no store yet: nothing published (and a read makes no database file)
    store = Store(settings.database_url)
    try:
        if not inspect(store.engine).has_table("definition_changes"):
            return _definitions_or_exit(base)  # a store not made yet (or before migration 0025): nothing published
        # What the engine runs: the newest publication that loads, by the same rule as its processes.
        live = LiveDefinitions(store, base)
    except SQLAlchemyError as err:  # the database is down or refuses: not "nothing published"
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        typer.echo(f"cannot read the published definitions from the database {shown}: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.dispose()
    if not live.loaded_seq:
        return _definitions_or_exit(base)  # no publication loads: the base alone, its problems shown
    return live.current


@app.command()
def validate(directory: Annotated[Path | None, typer.Argument(help="Default: ./definitions")] = None) -> None:
    """Check journey definitions: one line per problem and exit 1, else exit 0. Warnings (a line
    whose message starts `warning:`) are printed too and never fail the check."""
    directory = directory or default_directory()
    loaded, problems = check_definitions(directory)
    for line in [*problems, *loaded.warnings]:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{directory}: {len(loaded)} journeys OK ({', '.join(sorted(loaded.journeys))})")
    typer.echo(
        f"{directory}: {len(loaded.events.own())} declared event types, {len(loaded.resources)} resources, "
        f"{len(loaded.segments)} segments, {len(loaded.broadcasts)} broadcasts OK"
    )
    for name, (broadcast, _snapshot) in sorted(loaded.broadcasts.items()):  # how each runs (issue 29)
        path, why = broadcast.path_taken
        typer.echo(f"broadcast {name}: {path} ({why})")


@app.command()
def publish(
    directory: Annotated[
        Path | None, typer.Argument(help="The checkout's definitions directory (default: ./definitions)")
    ] = None,
    api: Annotated[str | None, typer.Option(help="The API (default: JOURNEYS_API_URL)")] = None,
    key: Annotated[str | None, typer.Option(help="An API key of the publish role (default: JOURNEYS_API_KEY)")] = None,
    author: Annotated[
        str | None, typer.Option(help="Who wrote the change (default: the last Git commit's author)")
    ] = None,
    comment: Annotated[str | None, typer.Option(help="The approval's comment")] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Publish only this file (a path inside DIRECTORY); again for more"),
    ] = None,
) -> None:
    """Publish the definition files of DIRECTORY that differ from what runs, as one change, made,
    submitted and approved at once (POST /definitions/publish; docs/publishing.md). For a CI job with
    a key of the publish role: the change's author is the commit's, the key approves it. Exit 1
    when the API refuses it (its problems at their lines, or who may not)."""
    import httpx

    from definitions.drafts import DraftError, content_hash, kind_of

    settings = _settings()
    directory = directory or default_directory()
    base_url = (api or settings.api_url).rstrip("/")
    secret = key or settings.api_key
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    if not directory.is_dir():
        typer.echo(f"{directory}: no such directory", err=True)
        raise typer.Exit(2)
    local: dict[str, str] = {}
    for file in sorted(directory.rglob("*")):
        relative = file.relative_to(directory).as_posix()
        if not file.is_file() or file.suffix not in (".yaml", ".yml"):
            continue
        try:
            kind_of(relative)
        except DraftError:
            continue  # events.yaml, sms.yaml, ...: not published through changes
        local[relative] = file.read_text(encoding="utf-8")
    if only:
        wanted = {_inside(directory, path) for path in only}
        unknown = sorted(wanted - set(local))
        if unknown:
            typer.echo(f"--only names no definition file of {directory}: {', '.join(unknown)}", err=True)
            raise typer.Exit(2)
        local = {path: text for path, text in local.items() if path in wanted}
    try:
        answer = httpx.get(f"{base_url}/definitions", headers=headers, timeout=30)
    except httpx.HTTPError as err:
        typer.echo(f"cannot reach the API at {base_url}: {err}", err=True)
        raise typer.Exit(1) from None
    if answer.status_code != 200:
        typer.echo(f"GET /definitions: {answer.status_code} {_detail(answer)}", err=True)
        raise typer.Exit(1)
    running = {item["path"]: item["hash"] for item in answer.json()}
    changed = {path: text for path, text in local.items() if running.get(path) != content_hash({path: text})}
    if not changed:
        typer.echo(f"nothing to publish: the {len(local)} definition files of {directory} are what runs")
        return
    body = {
        "files": changed,
        "title": f"journeys publish: {', '.join(sorted(changed))}"[:200],
        "author": author or _commit_author(directory),
        "comment": comment,
    }
    try:
        answer = httpx.post(f"{base_url}/definitions/publish", json=body, headers=headers, timeout=120)
    except httpx.HTTPError as err:
        typer.echo(f"cannot reach the API at {base_url}: {err}", err=True)
        raise typer.Exit(1) from None
    if answer.status_code == 503:  # in the store, so every process loads it once it can
        with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
            shown = answer.json()
            typer.echo(
                f"published as change {shown['change_id']}, publication {shown['seq']}, but not loaded: "
                f"{_detail(answer)}",
                err=True,
            )
            raise typer.Exit(1)
    if answer.status_code != 201:
        typer.echo(f"not published ({answer.status_code}): {_detail(answer)}", err=True)
        with contextlib.suppress(ValueError, AttributeError):
            for problem in answer.json().get("problems", []):
                field = f"{problem['field']}: " if problem["field"] else ""
                typer.echo(f"  {problem['path']}:{problem['line']}: {field}{problem['message']}", err=True)
        raise typer.Exit(1)
    change = answer.json()
    typer.echo(
        f"published change {change['id']} (publication {change.get('seq')}, hash {change['hash']}), "
        f"written by {change['author']}, approved by {change['reviewed_by']}:"
    )
    for path in sorted(changed):
        typer.echo(f"  {path} ({'changed' if path in running else 'new'})")


def _inside(directory: Path, path: str) -> str:
    """`path` as a path inside `directory` (given relative to it, or to the working directory)."""
    given = Path(path)
    with contextlib.suppress(ValueError):
        return given.resolve().relative_to(directory.resolve()).as_posix()
    return given.as_posix()


def _detail(answer) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        return answer.text[:500]
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)


def _commit_author(directory: Path) -> str | None:
    """The last Git commit's author of `directory` (`Name <email>`), else None (the key is then the
    author too, which the API refuses unless the shop allows it)."""
    import subprocess

    try:
        found = subprocess.run(
            ["git", "-C", str(directory), "log", "-1", "--format=%an <%ae>"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (found.stdout.strip() or None) if found.returncode == 0 else None


@app.command()
def schema(
    of: Annotated[
        str,
        typer.Argument(
            help="journey (a journey definition), policy (policy.yaml), loyalty (loyalty.yaml), sms (sms.yaml) "
            "or template (templates/*.yaml)"
        ),
    ] = "journey",
) -> None:
    """Print the JSON Schema of a journey, policy.yaml, loyalty.yaml, sms.yaml or a template (for editors)."""
    schemas = {
        "journey": json_schema,
        "policy": policy_json_schema,
        "loyalty": loyalty_json_schema,
        "sms": sms_json_schema,
        "template": template_json_schema,
    }
    if of not in schemas:
        typer.echo(f"schema {of!r}: one of {', '.join(schemas)}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(schemas[of](), indent=2, ensure_ascii=False))


def _broadcast_moves(options: list[str], loaded) -> dict[str, datetime]:
    """`--broadcast NAME=TIME` options as {name: time}; a bad one exits 2 naming it."""
    moves: dict[str, datetime] = {}
    for option in options:
        name, _, when = option.partition("=")
        if name not in loaded.broadcasts:
            known = ", ".join(sorted(loaded.broadcasts)) or "none"
            typer.echo(f"--broadcast {option}: no broadcast {name!r}; broadcasts: {known}", err=True)
            raise typer.Exit(2)
        try:
            moves[name] = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            typer.echo(f"--broadcast {option}: {when!r} is not a time like 2026-11-20T10:00", err=True)
            raise typer.Exit(2) from None
    return moves


@app.command()
def simulate(
    customers: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="customers.jsonl")],
    events: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="events.jsonl")],
    until: Annotated[str, typer.Option(help="End of the simulation, RFC 3339, e.g. 2026-03-01T00:00:00Z")],
    out: Annotated[Path, typer.Option(help="Where to write messages.jsonl")],
    definitions: Annotated[Path | None, typer.Option(help="Journey definitions to dry-run")] = None,
    profiles: Annotated[
        Path | None,
        typer.Option(help="Also write each customer as of --until (traits, RFM, segments), one JSON line each"),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Pass every module through Temporal's sandbox instead of importing it afresh for each "
            "workflow run (faster). Off by default: the worker's own construction. The sandbox stays on.",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Also write the effect of the simulated period (what `journeys report --json --by variant` prints)"
        ),
    ] = None,
    broadcast: Annotated[
        list[str] | None,
        typer.Option(
            "--broadcast",
            help="NAME=TIME: play broadcast NAME at TIME instead of its schedule, e.g. "
            "spring_festival_care=2026-11-20T10:00 (no offset: each customer's local time). Repeatable.",
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Split the customers across this many processes, each with its own test server and worker "
            "(the records are the same). Default: one a core, at most 16, one per 500 customers and events. "
            "1: all in this process.",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="A progress line on stderr (simulated date, events per second, time left). Default: when "
            "stderr is a terminal.",
        ),
    ] = None,
) -> None:
    """Play events through the real engine on Temporal's time-skipping server, with the broadcasts
    scheduled in the window."""
    from core.records import Customer, Event
    from journeys.shards import ShardFailed
    from journeys.simulate import SimulationInputError, read_jsonl, write_jsonl
    from journeys.simulate import simulate as run_simulation
    from views.effect import Prices

    try:
        end = datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        typer.echo(f"--until: {until!r} is not an RFC 3339 time", err=True)
        raise typer.Exit(2) from None
    if end.tzinfo is None:
        typer.echo(f"--until: {until!r} needs an offset (Z or +08:00)", err=True)
        raise typer.Exit(2)
    loaded = _definitions_or_exit(definitions)
    moves = _broadcast_moves(broadcast or [], loaded)
    try:
        customer_list = read_jsonl(customers, Customer, "customer")
        event_list = read_jsonl(events, Event, "event", check=loaded.events.problems)
    except SimulationInputError as err:
        for line in err.problems:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None
    if not event_list:  # the window runs from the first event to --until: with none, it is empty
        typer.echo(f"{events}: no events, so the window to simulate is empty", err=True)
        raise typer.Exit(2)
    first = min(event.occurred_at for event in event_list)
    if end < first:
        typer.echo(
            f"--until: {until} is before the first event ({first.isoformat().replace('+00:00', 'Z')}): "
            "nothing to simulate",
            err=True,
        )
        raise typer.Exit(2)
    settings = _settings()
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        found = asyncio.run(
            run_simulation(
                loaded,
                customer_list,
                event_list,
                end,
                shop_name=settings.shop_name,
                fast=fast,
                profiles=profiles is not None,
                broadcasts=moves,
                prices=Prices.of(settings) if report is not None else None,
                timezone=settings.shop_timezone,
                shards=shards,
                progress=sys.stderr if progress else None,
            )
        )
    except ShardFailed as err:
        typer.echo(f"simulate: {err}", err=True)
        raise typer.Exit(1) from None
    write_jsonl(found.messages, out)
    if report is not None and found.effect is not None:
        report.write_text(found.effect.model_dump_json(indent=2), encoding="utf-8")
        typer.echo(f"wrote the effect report to {report}")
    if profiles is not None:
        write_jsonl(found.profiles, profiles)
        typer.echo(f"wrote {len(found.profiles)} profiles to {profiles}")
    for line in found.summary_lines():
        typer.echo(line)
    typer.echo(f"wrote {out} in {found.seconds:.1f} s")


@app.command()
def worker() -> None:
    """Run a worker against TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE and DATABASE_URL."""
    from journeys.worker import run_worker

    _configure_logging()
    asyncio.run(run_worker(_settings()))


@app.command()
def api() -> None:
    """Serve the event API (JOURNEYS_API_HOST:JOURNEYS_API_PORT) and dispatch events to Temporal."""
    from core.access import ApiKeyError
    from triggers.serve import UnsafeBinding, api_server

    _configure_logging()
    settings = _settings()
    try:
        server = api_server(settings)
    except (UnsafeBinding, ApiKeyError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"Event API     http://{settings.api_host}:{settings.api_port} (OpenAPI at /docs)")
    typer.echo(f"Console       http://{settings.api_host}:{settings.api_port}/ui/")
    server.run()


@app.command()
def emit(
    type: Annotated[str, typer.Argument(help="Event type, e.g. order.created")],
    customer: Annotated[str, typer.Option(help="customer_id")],
    order: Annotated[str | None, typer.Option(help="order_id (required for order.* and review.posted)")] = None,
    data: Annotated[str, typer.Option(help="The event's data as JSON")] = "{}",
    event_id: Annotated[str | None, typer.Option(help="Default: a new UUID")] = None,
    occurred_at: Annotated[str | None, typer.Option(help="RFC 3339; default: now")] = None,
) -> None:
    """Post one event to the event API (JOURNEYS_API_URL, JOURNEYS_API_KEY)."""
    import uuid
    from datetime import UTC

    import httpx

    settings = _settings()
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as err:
        typer.echo(f"--data is not JSON: {err}", err=True)
        raise typer.Exit(2) from None
    event = {
        "event_id": event_id or str(uuid.uuid4()),
        "type": type,
        "occurred_at": occurred_at or datetime.now(UTC).isoformat(),
        "customer_id": customer,
        "order_id": order,
        "data": payload,
    }
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        answer = httpx.post(f"{settings.api_url}/events", json=event, headers=headers, timeout=30)
    except httpx.HTTPError as err:
        typer.echo(f"cannot reach the event API at {settings.api_url}: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{answer.status_code} {answer.text}")
    raise typer.Exit(0 if answer.status_code in (200, 202) else 1)


@app.command()
@_exits_hard
def history(
    customer: Annotated[str | None, typer.Option(help="A customer_id")] = None,
    order: Annotated[str | None, typer.Option(help="An order_id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a timeline")] = False,
) -> None:
    """What every journey did for a customer or an order, newest first."""
    from core.encryption import EncryptionKeyError
    from core.temporal import TemporalUnreachable, connect
    from views.history import BadId, timeline
    from views.history import history as load_history

    if bool(customer) == bool(order):
        typer.echo("give one of --customer or --order", err=True)
        raise typer.Exit(2)
    settings = _settings()

    async def load(store):
        client = await connect(settings)
        return await load_history(client, store, ui_url=settings.temporal_ui_url, customer_id=customer, order_id=order)

    with _opened_store(settings) as store:
        try:
            found = asyncio.run(load(store))
        except BadId as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(2) from None
        except EncryptionKeyError as err:  # not the converter's 100-line KeyError
            typer.echo(f"journeys history: cannot decrypt the history: {err}", err=True)
            raise typer.Exit(1) from None
        except TemporalUnreachable as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
    else:
        for line in timeline(found):
            typer.echo(line)


@app.command()
def preview(
    journey: Annotated[str, typer.Argument(help="A journey name, e.g. payment_reminder")],
    step: Annotated[str, typer.Argument(help="A send step id, e.g. first_reminder")],
    customer: Annotated[str, typer.Option(help="A customer_id in the store")],
    order: Annotated[str | None, typer.Option(help="An order_id: its data comes from the event log")] = None,
    definitions: Annotated[Path | None, typer.Option(help="Default: ./definitions")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """A message exactly as a customer would get it on each channel, and the channel the policy would pick."""
    from views.preview import PreviewError, describe
    from views.preview import preview as build_preview

    settings = _settings()
    loaded = _running_definitions(settings, definitions)
    try:
        with _opened_store(settings) as store:
            found = build_preview(
                loaded,
                store,
                journey=journey,
                step=step,
                customer_id=customer,
                order_id=order,
                shop_name=settings.shop_name,
                default_region=settings.default_region,
                opt_out=settings.sms_opt_out,
                link_base=settings.short_link_base(),
            )
    except PreviewError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(found.model_dump_json(indent=2) if as_json else "\n".join(describe(found)))


@app.command()
def report(
    which: Annotated[
        str | None, typer.Argument(help="`sms`: the SMS report (短信报表); without it, what journeys earned")
    ] = None,
    journey: Annotated[str | None, typer.Option(help="One journey (or broadcast); all by default")] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="A date (the shop's time zone) or an RFC 3339 time; default 30 days ago"),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="A date (included) or a time; default now")] = None,
    by: Annotated[str | None, typer.Option(help="Also per day, step, channel or variant")] = None,
    silent_days: Annotated[int, typer.Option(help="Reactivation: customers silent this long before a message")] = 90,
    since: Annotated[
        str | None, typer.Option(help="`report sms`: a date (the shop's time zone) or a time; default 30 days ago")
    ] = None,
    until: Annotated[str | None, typer.Option(help="`report sms`: a date (included) or a time; default now")] = None,
    definitions: Annotated[Path | None, typer.Option(help="Default: ./definitions")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: a row per journey and per group")] = False,
) -> None:
    """What each journey earned: sends, delivery, clicks, conversions, revenue, cost, ROI, holdout uplift.
    `journeys report sms --since --until`: the SMS report (短信报表) per day, signature and template."""
    import csv
    from datetime import UTC

    from store.effect import GROUPINGS
    from views.effect import Prices, csv_rows, effect_report, journeys_of, period_of, report_lines

    if which not in (None, "sms"):
        typer.echo(f"journeys report: {which!r} is not a report; give none (the effect) or sms", err=True)
        raise typer.Exit(2)
    # The options of one report that the other does not take: a mix-up is refused, not ignored.
    effect_only = {"--journey": journey, "--from": start, "--to": end, "--by": by, "--csv": as_csv}
    sms_only = {"--since": since, "--until": until}
    mixed = [name for name, value in (effect_only if which == "sms" else sms_only).items() if value]
    if mixed:
        other = "`journeys report sms`" if which is None else "the effect report (`journeys report`)"
        verb = "belongs" if len(mixed) == 1 else "belong"
        typer.echo(
            f"journeys {' '.join(['report', *([which] if which else [])])}: {', '.join(mixed)} {verb} to {other}",
            err=True,
        )
        raise typer.Exit(2)
    settings = _settings()
    loaded = _running_definitions(settings, definitions)
    if which == "sms":
        _report_sms(settings, loaded, since, until, as_json)
        return
    if by is not None and by not in GROUPINGS:
        typer.echo(f"--by: {by!r} is not one of {', '.join(GROUPINGS)}", err=True)
        raise typer.Exit(2)
    if journey is not None and journey not in journeys_of(loaded):
        typer.echo(f"--journey: no journey {journey!r}; journeys: {', '.join(sorted(journeys_of(loaded)))}", err=True)
        raise typer.Exit(2)
    try:
        period = period_of(start, end, settings.shop_timezone, datetime.now(UTC))
    except ValueError as err:
        typer.echo(f"--{err}", err=True)
        raise typer.Exit(2) from None
    with _opened_store(settings) as store:
        found = effect_report(
            store,
            loaded,
            period,
            Prices.of(settings),
            by=by,
            journey=journey,
            silent_days=silent_days,  # type: ignore[arg-type]
        )
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
    elif as_csv:
        csv.writer(sys.stdout).writerows(csv_rows(found))
    else:
        typer.echo("\n".join(report_lines(found)))


def _report_sms(settings: Settings, loaded, since: str | None, until: str | None, as_json: bool) -> None:
    """`journeys report sms`: per day, signature and template, what was submitted, delivered,
    failed (by error code), replied to and clicked, and the billed parts and their cost."""
    from datetime import UTC

    from views.effect import Prices
    from views.sms_report import report_lines, sms_period, sms_report

    try:
        period = sms_period(since, until, settings.shop_timezone, datetime.now(UTC))
    except ValueError as err:
        typer.echo(f"--{err}", err=True)
        raise typer.Exit(2) from None
    with _opened_store(settings) as store:
        found = sms_report(
            store, period.start, period.end, settings.shop_timezone, settings.shop_name, loaded.sms, Prices.of(settings)
        )
    typer.echo(found.model_dump_json(indent=2) if as_json else "\n".join(report_lines(found)))


@app.command()
def events(
    pending: Annotated[bool, typer.Option("--pending", help="Only events waiting for dispatch")] = False,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only dead letters: events that could not be applied")
    ] = False,
    replay: Annotated[
        list[str] | None, typer.Option("--replay", help="Put this dead letter back in the queue (repeatable)")
    ] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Put every dead letter back in the queue")] = False,
    limit: Annotated[int, typer.Option(help="At most this many")] = 50,
) -> None:
    """The event log: what was received and whether it reached Temporal; dead letters and their replay."""
    from store import queries

    with _opened_store(_settings()) as store, store.transaction() as session:
        if replay or all_failed:
            ids = queries.replay_events(session, None if all_failed else list(replay or []))
            missing = sorted(set(replay or []) - set(ids))
            typer.echo(f"{len(ids)} dead letters back in the queue: {', '.join(ids) or '-'}")
            if missing:
                typer.echo(f"not dead letters (unknown, pending or dispatched): {', '.join(missing)}", err=True)
                raise typer.Exit(1)
            return
        if failed:
            rows = queries.failed_events(session, limit)
        else:
            rows = queries.latest_events(session, limit, pending=pending)
    kind = "failed " if failed else "pending " if pending else ""
    typer.echo(f"{len(rows)} {kind}events (newest first, at most {limit})")
    for row in rows:
        if row.failed_at is not None:
            state = f"FAILED {row.failed_at.isoformat()}"
        elif row.dispatched_at is None:
            state = "pending" + (f" (retry at {row.retry_at.isoformat()})" if row.retry_at else "")
        else:
            state = f"dispatched {row.dispatched_at.isoformat()}"
        error = f"  last error: {row.last_error}" if row.last_error else ""
        typer.echo(
            f"  {row.received_at.isoformat()}  {row.event_id}  {row.type}  customer {row.customer_id}"
            f"{'  order ' + row.order_id if row.order_id else ''}  {state}, {row.attempts} attempts{error}"
        )


class _CustomerGroup(TyperGroup):
    """`journeys customer ID` shows the profile; `journeys customer erase ID` erases."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


customer_app = typer.Typer(
    cls=_CustomerGroup,
    help="One customer: `journeys customer ID` shows the profile; `journeys customer erase ID` erases.",
    no_args_is_help=True,
)
app.add_typer(customer_app, name="customer")


@customer_app.command("show")
def customer_show(
    customer_id: Annotated[str, typer.Argument(help="The customer")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The profile: record, traits, tags, RFM now, segments and suppressions."""
    from datetime import UTC

    from views.profile import profile

    settings = _settings()
    definitions = _running_definitions(settings)
    with _opened_store(settings) as store, store.transaction() as session:
        found = profile(
            session,
            customer_id,
            definitions.rfm,
            datetime.now(UTC),
            settings.default_region,
            list(definitions.segments.values()),
            tiers=definitions.loyalty.tiers,
        )
    if found is None:
        typer.echo(f"no customer {customer_id!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    rfm = found.rfm
    record = found.record
    typer.echo(f"customer {found.customer_id}  {record.get('name') or '-'}  {record.get('phone') or '-'}  "
               f"{record.get('email') or '-'}  ({record['timezone']}, {record['locale']})")  # fmt: skip
    typer.echo(f"  rfm        {rfm.tier}  score {rfm.score}  R{rfm.r} F{rfm.f} M{rfm.m}  "
               f"({rfm.purchases} purchases, {rfm.amount:g} in the year)")  # fmt: skip
    typer.echo(f"  lifecycle  {found.lifecycle}  {LIFECYCLE_TITLES[found.lifecycle]}")
    tier = found.tier
    held = f"{tier.name} {tier.title or ''}, card until {tier.until:%Y-%m-%d}" if tier else "no tier"
    typer.echo(f"  member     {held}; {found.points} points")
    typer.echo(f"  tags       {', '.join(found.tags) or '-'}")
    typer.echo(f"  traits     {json.dumps(found.traits, ensure_ascii=False) if found.traits else '-'}")
    typer.echo(f"  segments   {', '.join(found.segments) or '-'}")
    held = [f"unsubscribed from {c}" for c in found.unsubscribed] + (["blacklisted"] if found.blacklisted else [])
    held += [f"{s.channel} {s.address} suppressed ({s.scope}: {s.reason})" for s in found.suppressions]
    held += found.contact_problems
    typer.echo(f"  held back  {'; '.join(held) or 'nothing'}")
    for wait in found.waiting:
        until, deadline = wait.until.isoformat(), wait.deadline.isoformat()
        typer.echo(f"  waiting    {wait.journey}/{wait.step} for cap {wait.cap} (priority {wait.priority}), "
                   f"until {until}, deadline {deadline}: {wait.detail or '-'}")  # fmt: skip


@customer_app.command("erase")
@_exits_hard
def customer_erase(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    by: Annotated[str, typer.Option(help="Who asks, for the record")] = "cli",
) -> None:
    """Erase a customer (PIPL, GDPR): stop their journeys and remove their personal data."""
    from core.temporal import TemporalUnreachable, connect
    from store import queries
    from triggers.erasure import NoSuchCustomer, erase
    from views.history import BadId

    if not yes:
        typer.confirm(f"Erase customer {customer_id!r}? This cannot be undone", abort=True)
    settings = _settings()

    async def run(store):
        store.migrate()
        queries.configure_salt(settings.secret)
        with store.transaction() as session:  # before Temporal: erasing nobody needs no connection
            if not queries.known_customer(session, customer_id):
                raise NoSuchCustomer(f"no customer {customer_id!r}: nothing was erased")
        return await erase(
            await connect(settings),
            store,
            customer_id,
            by,
            default_region=settings.default_region,
            outbox=settings.outbox_path,
        )

    with _opened_store(settings) as store:
        try:
            done = asyncio.run(run(store))
        except (BadId, NoSuchCustomer) as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(2) from None
        except TemporalUnreachable as err:
            typer.echo(f"{err}; nothing was erased", err=True)
            raise typer.Exit(1) from None
    removed = ", ".join(f"{name} {count}" for name, count in done.removed.items())
    outbox = f", outbox lines {done.outbox_lines_removed}" if done.outbox_lines_removed else ""
    typer.echo(f"erased {customer_id}: {len(done.terminated)} journeys stopped; {removed}{outbox}")


segment_app = typer.Typer(
    help="Segments (definitions/segments/): count them, list their members.", no_args_is_help=True
)
app.add_typer(segment_app, name="segment")


def _segments_or_exit(name: str | None):
    settings = _settings()
    definitions = _running_definitions(settings)
    if name is not None and name not in definitions.segments:
        known = ", ".join(sorted(definitions.segments)) or "none"
        typer.echo(f"no segment {name!r}; segments: {known}", err=True)
        raise typer.Exit(2)
    return settings, definitions


@segment_app.command("count")
def segment_count(name: Annotated[str | None, typer.Argument(help="A segment; all when left out")] = None) -> None:
    """How many customers are in a segment now (every segment without a name)."""
    from datetime import UTC

    from store.segments import count_members

    settings, definitions = _segments_or_exit(name)
    chosen = [definitions.segments[name]] if name else list(definitions.segments.values())
    now = datetime.now(UTC)
    with _opened_store(settings) as store, store.transaction() as session:
        for segment in chosen:
            count = count_members(session, segment, now, definitions.rfm)
            typer.echo(f"{segment.name}  {count}" + (f"  ({segment.title})" if segment.title else ""))


@segment_app.command("list")
def segment_list(
    name: Annotated[str, typer.Argument(help="The segment")],
    limit: Annotated[int | None, typer.Option(help="At most this many (all by default)")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line")] = False,
) -> None:
    """A segment's members now, by customer id: id, RFM grades, score and tier (no contact data)."""
    import csv
    from datetime import UTC

    from store.segments import iterate_members

    settings, definitions = _segments_or_exit(name)
    with _opened_store(settings) as store:
        out = csv.writer(sys.stdout) if as_csv else None
        if out is not None:
            out.writerow(["customer_id", "r", "f", "m", "score", "tier"])
        found = iterate_members(store.transaction, definitions.segments[name], datetime.now(UTC), definitions.rfm)
        for n, member in enumerate(found):
            if limit is not None and n >= limit:
                break
            row = member.model_dump()
            if out is not None:
                out.writerow(row.values())
            elif as_json:
                typer.echo(json.dumps(row, ensure_ascii=False))
            else:
                typer.echo(
                    f"{member.customer_id}  {member.tier}  score {member.score}  R{member.r} F{member.f} M{member.m}"
                )


lifecycle_app = typer.Typer(
    help="The customer lifecycle (客户生命周期): stages and their monthly migration.", no_args_is_help=True
)
app.add_typer(lifecycle_app, name="lifecycle")


@lifecycle_app.command("report")
def lifecycle_report(
    month: Annotated[str, typer.Option(help="YYYY-MM, in the shop's time zone (the current month runs to now)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (what GET /lifecycle/report answers)")] = False,
) -> None:
    """The stages at the month's end and the migration matrix from its start (正向/负向迁移)."""
    from datetime import UTC

    from journeys.lifecycle import read_report, report_json, report_lines

    settings = _settings()
    definitions = _running_definitions(settings)
    with _opened_store(settings) as store:
        try:
            found = read_report(store, month, settings.shop_timezone, definitions.rfm.lifecycle, datetime.now(UTC))
        except ValueError as err:
            typer.echo(f"--month: {err}", err=True)
            raise typer.Exit(2) from None
    typer.echo(report_json(found) if as_json else "\n".join(report_lines(found)))


def _echo_problems(problems: list[str]) -> str:
    """Print a file's problems (one line each, on stderr); what the summary line says of them."""
    for problem in problems:
        typer.echo(problem, err=True)
    count = len(problems)
    return f", {count} problem{'s' if count != 1 else ''} (lines skipped)" if count else ""


products_app = typer.Typer(
    help="The product catalogue and repurchase cycles (回购周期): import it, show a product, show the cycles.",
    no_args_is_help=True,
)
app.add_typer(products_app, name="products")


@products_app.command("import")
def products_import(
    file: Annotated[Path, typer.Argument(help="A CSV file: UTF-8 (a BOM or not) or GBK, with a header")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file, write nothing")] = False,
) -> None:
    """Products from a CSV file into the catalogue (sku, title, category, price, tags, cycle_days; or
    商家编码, 商品名称, 类目, 价格, 标签, 回购周期). Bad lines are skipped and listed as FILE:LINE: column:
    problem; the good ones are written in one transaction. The same file again changes nothing."""
    from journeys.products import ImportFileError, import_products_file

    settings = _settings()
    with _opened_store(settings) as store:
        try:
            found = import_products_file(store, file, dry_run=dry_run)
        except ImportFileError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
    skipped = _echo_problems(found.problems)
    if dry_run or found.saved is None:
        typer.echo(f"{file}: {len(found.products)} of {found.lines} lines good{skipped}; nothing written")
    else:
        saved = found.saved
        typer.echo(
            f"{file}: {len(saved.created)} new, {len(saved.updated)} updated, {len(saved.unchanged)} unchanged{skipped}"
        )
    if found.problems:
        raise typer.Exit(1)


@products_app.command("show")
def products_show(sku: Annotated[str, typer.Argument(help="The SKU")]) -> None:
    """One product as the catalogue has it, with its learned cycle."""
    from store.products import cycle_lines, get_product

    with _opened_store(_settings()) as store, store.transaction() as session:
        product = get_product(session, sku)
        lines = cycle_lines(session, skus=[sku])
    if product is None:
        typer.echo(f"no product {sku!r} in the catalogue", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(product.model_dump(mode="json"), ensure_ascii=False))
    for line in lines:
        typer.echo(_cycle_text(line))


def _cycle_text(line) -> str:
    learned = (
        f"learned {line.learned_days:g} d on {line.pairs} pairs of {line.customers} customers"
        + ("" if line.usable else f" (under {line.min_pairs}: not used)")
        if line.learned_days is not None
        else "learned: no repeat purchases"
    )
    catalogue = f"catalogue {line.cycle_days} d" if line.cycle_days else "catalogue: no cycle_days"
    return f"{line.sku}  {line.title or '(not in the catalogue)'}  {catalogue}; {learned}"


@products_app.command("cycles")
def products_cycles(
    relearn: Annotated[
        bool, typer.Option("--relearn", help="Learn them from the order history now, as the daily schedule does")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line")] = False,
) -> None:
    """Every SKU's repurchase cycle: the catalogue's cycle_days and the one learned from the orders,
    with its sample counts (pairs, customers) and whether it is used (JOURNEYS_REPURCHASE_MIN_PAIRS)."""
    from datetime import UTC

    from store.products import cycle_lines, relearn_cycles

    settings = _settings()
    with _opened_store(settings) as store:
        if relearn:
            with store.transaction() as session:
                relearn_cycles(session, datetime.now(UTC), settings.repurchase_min_pairs)
        with store.transaction() as session:
            lines = cycle_lines(session)
    if not lines:
        typer.echo("no products and no repeat purchases yet")
    for line in lines:
        typer.echo(json.dumps(line.model_dump(mode="json"), ensure_ascii=False) if as_json else _cycle_text(line))


broadcast_app = typer.Typer(
    help="Broadcasts (definitions/broadcasts/): start one, follow it, cancel it.", no_args_is_help=True
)
app.add_typer(broadcast_app, name="broadcast")


def _broadcast_call(work) -> None:
    """Run `work(client, store, definitions, settings)` and print what it returns; a clear line
    and exit code 1 for a broadcast that cannot do that, or Temporal out of reach."""
    from core.temporal import TemporalUnreachable, connect
    from triggers.broadcasts import BroadcastError

    settings = _settings()
    definitions = _running_definitions(settings)

    async def run(store):
        return await work(await connect(settings), store, definitions, settings)

    with _opened_store(settings) as store:
        try:
            lines = asyncio.run(run(store))
        except BroadcastError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
        except TemporalUnreachable as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
    for line in lines:
        typer.echo(line)


@broadcast_app.command("list")
def broadcast_list() -> None:
    """The broadcasts defined, with their segment and schedule."""
    definitions = _running_definitions(_settings())
    for name, (broadcast, _snapshot) in sorted(definitions.broadcasts.items()):
        schedule = broadcast.schedule
        when = schedule.describe() if schedule.recurring else f"at {schedule.describe()}"
        once = f"  once per {broadcast.once_per}" if broadcast.once_per else ""
        typer.echo(f"{name}  segment {broadcast.segment}  {when}{once}  holdout {broadcast.holdout:g}"
                   + (f"  ({broadcast.title})" if broadcast.title else ""))  # fmt: skip


@broadcast_app.command("dry-run")
def broadcast_dry_run(name: Annotated[str, typer.Argument(help="The broadcast")]) -> None:
    """What a broadcast would do if started now: members, the holdout, and the contact policy's
    answer for each member at their send time. Sends nothing."""
    from datetime import UTC

    from triggers.broadcasts import BroadcastError, dry_run

    settings = _settings()
    definitions = _running_definitions(settings)
    try:
        with _opened_store(settings) as store:
            found = dry_run(store, definitions, name, datetime.now(UTC), default_region=settings.default_region)
    except BroadcastError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{found.name}: {found.members} members, {found.held_out} held out")
    for key, count in sorted(found.outcomes.items()):
        typer.echo(f"  {key:<28} {count}")
    if found.first_send is not None:
        typer.echo(f"  sends from {found.first_send.isoformat()} to {found.last_send.isoformat()}")


@broadcast_app.command("start")
@_exits_hard
def broadcast_start(name: Annotated[str, typer.Argument(help="The broadcast")]) -> None:
    """Start a broadcast: every member of its segment now gets an instance that sends at its time.
    A recurring one starts its schedule (a run at each of its dates); NAME@DATE starts that run now."""
    from triggers import broadcasts

    async def work(client, _store, definitions, settings):
        workflow_id = await broadcasts.start(client, definitions, name, settings.task_queue)
        if _recurring(definitions, name):
            return [
                f"started {name}'s schedule: workflow {workflow_id} (journeys broadcast runs {name} lists its runs)"
            ]
        return [f"started {name}: workflow {workflow_id} (journeys broadcast status {name} follows it)"]

    _broadcast_call(work)


@broadcast_app.command("cancel")
@_exits_hard
def broadcast_cancel(name: Annotated[str, typer.Argument(help="The broadcast")]) -> None:
    """Cancel a broadcast: no more instances start, and those still waiting end without sending.
    A recurring one: no more runs (a run started goes on; cancel it as NAME@DATE)."""
    from triggers import broadcasts

    async def work(client, _store, definitions, _settings):
        await broadcasts.cancel(client, definitions, name)
        if _recurring(definitions, name):
            return [f"cancelling {name}'s schedule: no more runs (journeys broadcast runs {name} lists those started)"]
        return [f"cancelling {name}: instances still waiting will send nothing"]

    _broadcast_call(work)


@broadcast_app.command("status")
@_exits_hard
def broadcast_status(
    name: Annotated[str, typer.Argument(help="The broadcast")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Where a broadcast is: members, instances started and waiting, sends and skips by reason."""
    from triggers import broadcasts

    async def work(client, store, definitions, _settings):
        found = await broadcasts.status(client, store, definitions, name)
        if as_json:
            return [found.model_dump_json(indent=2)]
        if _recurring(definitions, name):
            return [
                f"{found.name}  {found.shown_state}  segment {found.segment}  {found.schedule}",
                *([f"  next run   {found.next_run} from {found.next_at:%Y-%m-%dT%H:%MZ}"] if found.next_at else []),
                f"  runs       {len(found.runs)} started (journeys broadcast runs {name})"
                + (f", {len(found.missed)} missed: {', '.join(found.missed)}" if found.missed else ""),
            ]
        return _broadcast_lines(found)

    _broadcast_call(work)


def _recurring(definitions, name: str) -> bool:
    """Whether `name` is a recurring broadcast itself (not one of its runs, NAME@DATE)."""
    return name in definitions.broadcasts and definitions.broadcasts[name][0].schedule.recurring


def _broadcast_lines(found) -> list[str]:
    """A broadcast's (or a run's) progress, as `status` and `runs` print it."""
    outcomes = ", ".join(f"{key} {count}" for key, count in sorted(found.outcomes.items())) or "nothing yet"
    members = found.members if found.members is not None else "-"
    again = f", {found.not_again} not again (once_per)" if found.not_again else ""
    if found.path == "batched":
        deferred = f", {found.deferred} deferred" if found.deferred else ""
        held = f", {found.held_out} held out" if found.held_out else ""
        upcoming = f" (next send moment {found.next_at:%Y-%m-%dT%H:%MZ})" if found.next_at else ""
        return [
            f"{found.name}  {found.shown_state}  segment {found.segment}: {members} members",
            f"  batched    {found.started} reached{held}{deferred}{again}, {found.waiting} waiting{upcoming}",
            f"  messages   {outcomes}",
        ]
    return [
        f"{found.name}  {found.shown_state}  segment {found.segment}: {members} members",
        f"  instances  {found.started} started{again}, {found.waiting} waiting",
        f"  messages   {outcomes}",
    ]


@broadcast_app.command("runs")
@_exits_hard
def broadcast_runs(
    name: Annotated[str, typer.Argument(help="The recurring broadcast")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, one run a line")] = False,
) -> None:
    """A recurring broadcast's runs (NAME@DATE), by date, each with its progress."""
    from triggers import broadcasts

    async def work(client, store, definitions, _settings):
        found = await broadcasts.runs(client, store, definitions, name)
        if as_json:
            return [run.model_dump_json() for run in found]
        return [line for run in found for line in _broadcast_lines(run)] or [f"{name}: no runs yet"]

    _broadcast_call(work)


@app.command()
@_exits_hard
def retention(
    run_now: Annotated[bool, typer.Option("--run-now", help="Run it now and print what it removed")] = False,
) -> None:
    """The retention schedule (JOURNEYS_RETENTION_DAYS): its next run and what its last runs removed."""
    from temporalio.service import RPCError

    from core.temporal import TemporalUnreachable, connect, target
    from journeys.retention import describe_report, retention_status, run_retention_now

    settings = _settings()

    async def run() -> list[str]:
        client = await connect(settings)
        if run_now:
            return ["ran now: " + describe_report(await run_retention_now(client, settings))]
        return await retention_status(client, settings)

    try:
        lines = asyncio.run(run())
    except TemporalUnreachable as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    except RuntimeError as err:  # no run started
        typer.echo(f"{err} (Temporal at {target(settings)})", err=True)
        raise typer.Exit(1) from None
    except RPCError as err:  # no schedule to trigger
        typer.echo(f"cannot run retention: {err.message}", err=True)
        raise typer.Exit(1) from None
    for line in lines:
        typer.echo(line)


import_app = typer.Typer(
    help="Load a platform's export as history (backfill): it updates customers, orders, RFM and traits, and "
    "starts no journey and sends nothing.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")
#: `journeys import products FILE.csv` is `journeys products import FILE.csv`: one command, two ways in.
import_app.command("products")(products_import)

app.add_typer(tier_app, name="tier")  # journeys/tiers.py: show, set, report


@import_app.command("orders")
def import_orders(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The export, CSV (UTF-8, with a BOM or GBK)")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format", help="taobao (淘宝 下载订单报表), jd (京东 订单导出) or generic (columns named as fields)"
        ),
    ] = "taobao",
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="COLUMN=FIELD: read FIELD from the file's COLUMN (repeatable), e.g. 会员名=customer_id"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and check everything, write nothing; say what would change")
    ] = False,
    timezone: Annotated[
        str | None, typer.Option(help="Where the file's times were written (default: JOURNEYS_SHOP_TIMEZONE)")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="A progress bar on stderr (rows/s, time left). Default: on a terminal"
        ),
    ] = None,
) -> None:
    """An order export as customers and order events. Bad rows are skipped and listed (file:line: column: problem);
    importing the same file again changes nothing."""
    from core.order_exports import FORMATS, ExportError, ExportReader, parse_mapping
    from core.records import known_timezone
    from journeys.progress import Meter
    from triggers.imports import ImportStopped, run_import, summary

    settings = _settings()
    if format not in FORMATS:
        typer.echo(f"--format: {format!r} is not one of {', '.join(FORMATS)}", err=True)
        raise typer.Exit(2)
    zone = timezone or settings.shop_timezone
    if not known_timezone(zone):
        typer.echo(f"--timezone: {zone!r} is not an IANA time zone (e.g. Asia/Shanghai)", err=True)
        raise typer.Exit(2)
    try:
        mapping = parse_mapping(map_ or [])
    except ExportError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    reader = ExportReader(
        file, FORMATS[format], mapping, timezone=zone, default_region=settings.default_region, name=str(file)
    )
    meter = Meter(sys.stderr) if (sys.stderr.isatty() if progress is None else progress) else None
    with _opened_store(settings) as store:
        try:
            state = run_import(
                store, reader, dry_run=dry_run,
                on_progress=(lambda s: meter.update(s.tally.rows, s.fraction)) if meter else None,
            )  # fmt: skip
        except ExportError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(2) from None
        except ImportStopped as err:
            if meter:
                meter.close()
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
    if meter:
        meter.close()
    for line in state.problems:
        typer.echo(line, err=True)
    if state.problem_count > len(state.problems):
        typer.echo(f"... and {state.problem_count - len(state.problems):,} more rows skipped", err=True)
    for line in summary(state, dry_run=dry_run):
        typer.echo(line)


points_app = typer.Typer(
    help="Points (积分体系): a customer's balance and log, an operator's adjustment, the overview (积分总览).",
    no_args_is_help=True,
)
app.add_typer(points_app, name="points")


def _loyalty_or_exit():
    from definitions.loader import DefinitionsError, load_loyalty

    try:
        return load_loyalty(default_directory())
    except DefinitionsError as err:
        for line in err.problems:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


@points_app.command("show")
def points_show(
    customer: Annotated[str, typer.Argument(help="The customer's id")],
    limit: Annotated[int, typer.Option(min=1, max=500, help="Entries of the log to show")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="As GET /customers/{id}/points answers")] = False,
) -> None:
    """A customer's balance, what lapses when, and the log (积分日志), the latest first."""
    from activities.points import customer_points
    from store.points import known

    loyalty = _loyalty_or_exit()
    with _opened_store(_settings()) as store, store.transaction() as session:
        found = customer_points(session, customer, loyalty.zone, limit=limit) if known(session, customer) else None
    if found is None:
        typer.echo(f"no customer {customer!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(found.model_dump(mode="json"), ensure_ascii=False))
        return
    typer.echo(f"customer {customer}: {found.balance} points")
    for expiring in found.expiring:
        typer.echo(f"  {expiring.points} good until {expiring.expires_on}")
    for entry in found.entries:
        typer.echo(f"  {entry.at.isoformat()}  {entry.kind:<7} {entry.points:+d}  {entry.reason}  [{entry.source}]")


@points_app.command("adjust")
def points_adjust(
    customer: Annotated[str, typer.Argument(help="The customer's id")],
    points: Annotated[int, typer.Argument(help="Points to add, or (negative, after --) to take")],
    reason: Annotated[str, typer.Option(help="Why (shown in the customer's log)")],
    request_id: Annotated[
        str | None, typer.Option(help="The same id again adjusts nothing twice (default: a new one, printed)")
    ] = None,
) -> None:
    """An operator's adjustment, as POST /points/adjust: added points lapse as earned ones do; taken
    points come from the oldest lots (the balance may go below zero)."""
    import uuid
    from datetime import UTC

    from activities.points import adjust

    if points == 0 or not reason.strip():
        typer.echo("points must not be 0, and --reason must say why", err=True)
        raise typer.Exit(2)
    loyalty = _loyalty_or_exit()
    request_id = request_id or f"cli-{uuid.uuid4()}"
    _book_points(
        customer,
        request_id,
        lambda session: adjust(session, customer, points, reason, request_id, datetime.now(UTC), loyalty),
    )


def _book_points(customer: str, request_id: str, book) -> None:
    """Book a redemption or an adjustment (`book(session)`) for a known customer and say what it did;
    exit 1 for an unknown customer, a refused redemption or a request id used for another request."""
    from activities.points import NotEnoughPoints, RequestReused
    from store.points import known

    with _opened_store(_settings()) as store:
        try:
            with store.transaction() as session:
                booked = book(session) if known(session, customer) else None
        except (NotEnoughPoints, RequestReused) as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
    if booked is None:
        typer.echo(f"no customer {customer!r}", err=True)
        raise typer.Exit(1)
    again = " (already done: nothing changed)" if booked.duplicate else ""
    typer.echo(
        f"customer {customer}: {booked.points:+d} points, balance {booked.balance}{again}; request id {request_id}"
    )


@points_app.command("redeem")
def points_redeem(
    customer: Annotated[str, typer.Argument(help="The customer's id")],
    points: Annotated[int, typer.Argument(help="Points to spend (more than 0)")],
    request_id: Annotated[
        str, typer.Option(help="The order system's id of this request: the same again spends nothing twice")
    ],
    order: Annotated[str | None, typer.Option(help="The order the points pay for")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (default: redeemed for the order)")] = None,
) -> None:
    """Spend a customer's points, the oldest first, as POST /points/redeem: refused past the balance
    (exit 1), once per request id."""
    from datetime import UTC

    from activities.points import redeem

    if points <= 0:
        typer.echo("points must be more than 0", err=True)
        raise typer.Exit(2)
    loyalty = _loyalty_or_exit()
    _book_points(
        customer,
        request_id,
        lambda session: redeem(
            session, customer, points, request_id, datetime.now(UTC), loyalty.zone, order_id=order, reason=reason
        ),
    )


@points_app.command("overview")
def points_overview(
    since: Annotated[
        datetime | None, typer.Option(help="From (inclusive), in loyalty.yaml's zone without an offset")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Until (exclusive)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="As GET /points/overview answers")] = False,
) -> None:
    """积分总览: points issued, redeemed, expired, adjusted, imported and reversed in the period (all
    time by default), and what is outstanding now with its liability at the shop's point value."""
    from zoneinfo import ZoneInfo

    from activities.points import overview

    loyalty = _loyalty_or_exit()
    since, until = ((t.replace(tzinfo=ZoneInfo(loyalty.zone)) if t and t.tzinfo is None else t) for t in (since, until))
    with _opened_store(_settings()) as store, store.transaction() as session:
        found = overview(session, loyalty, since, until)
    if as_json:
        typer.echo(json.dumps(found.model_dump(mode="json"), ensure_ascii=False))
        return
    period = f"{since.isoformat() if since else 'the start'} to {until.isoformat() if until else 'now'}"
    typer.echo(f"points from {period}:")
    for name in ("issued", "redeemed", "expired", "adjusted", "imported", "reversed"):
        typer.echo(f"  {name:<9} {getattr(found, name):>12,}")
    typer.echo(
        f"outstanding now: {found.outstanding:,} points held by {found.holders:,} customers; "
        f"liability {found.liability:,.2f} at {found.point_value:g} a point"
    )


@import_app.command("points")
def import_points(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV (UTF-8, with a BOM or not, or GBK) with a header")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file, write nothing")] = False,
) -> None:
    """积分导入: points from a CSV file (customer_id, points; optionally reason, at, expires_at, id) as
    history: entries of kind import, no points.earned events. Bad rows are skipped and listed as
    FILE:LINE: column: problem; importing the same file again adds nothing."""
    from datetime import UTC

    from journeys.points import ImportFileError, import_points_file

    loyalty = _loyalty_or_exit()
    with _opened_store(_settings()) as store:
        try:
            found = import_points_file(store, file, loyalty, datetime.now(UTC), dry_run=dry_run)
        except ImportFileError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(1) from None
    skipped = _echo_problems(found.problems)
    if dry_run:
        typer.echo(f"{file}: {len(found.entries)} of {found.lines} lines good{skipped}; nothing written")
    else:
        again = len(found.entries) - found.written
        typer.echo(f"{file}: {found.written} entries written, {again} already imported{skipped}")
    if found.problems:
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Bring the database at DATABASE_URL to the newest schema."""
    from store.db import Store

    settings = _settings()
    Store(settings.database_url).migrate().dispose()
    typer.echo(f"migrated {settings.database_url}")


@app.command()
def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the embedded server and store keep their files, and journeys.env, the record of where "
            "everything runs that the other commands read (default: JOURNEYS_DATA_DIR, else .data)"
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Temporal frontend port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port")] = 8233,
    api_port: Annotated[int, typer.Option(help="Event API port")] = 8000,
) -> None:
    """Run the engine on embedded defaults: the Temporal dev server (SQLite file), a worker and the API."""
    from core.access import ApiKeyError
    from journeys.up import StartupError, run_up

    _configure_logging()
    data_dir = data_dir or _DATA_DIR[0] or Settings.unrecorded().data_dir
    try:
        sys.exit(asyncio.run(run_up(data_dir, port, ui_port, api_port)))
    except (StartupError, ApiKeyError) as error:
        typer.echo(f"journeys up: {error}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":  # `python -m journeys.cli`, as the tests run this checkout's code
    main()
