"""`journeys simulate`: play a shop's events through the real engine on Temporal's time-skipping
test server, so a month of journeys plays in a minute or two instead of a month.

The real workflows and activities run against a throwaway SQLite store with the outbox channel.
The test server's clock starts at today's date, so the simulation gives every instance a fixed
`clock_offset` (server time minus the time of the earliest event): calendars, quiet hours and
birthdays are all computed in the events' own time.

Broadcasts run too, as `journeys broadcast start` runs them: each one whose schedule falls in the
simulated window is started when its first send is due anywhere (its local time at UTC+14, or its
moment), with the segment's members as of then. One scheduled outside the window (next year's
Spring Festival) is listed as not run; `broadcasts={name: time}` moves it in. A recurring
broadcast's schedule starts at the beginning, as `journeys broadcast start` starts it, and its
RecurringBroadcast workflow starts the runs that fall in the window on the skipping clock.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import multiprocessing
import tempfile
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from channels import build_channels
from core.config import Settings
from core.lifecycle import stage
from core.records import Customer, Event
from core.rfm import score
from core.temporal import binary
from definitions.broadcasts import run_name
from definitions.events import EventCatalog
from definitions.loader import Definitions, rescheduled
from instances.contract import BroadcastProgress, broadcast_workflow_id
from journeys.progress import Progress, Tally, slots
from journeys.shards import default_shards, merge_stores, partition, run_in_processes
from journeys.worker import activity_threads, build_workers
from store import queries
from store.db import Store
from store.effect import Period
from store.segments import iterate_members
from store.tables import MessageRow
from triggers import broadcasts as broadcast_runs
from triggers.router import Router
from views.effect import EffectReport, Prices, effect_report
from workflows.broadcast import BroadcastWorkflow

TASK_QUEUE = "journeys-simulation"
#: The test server's core logs (the SDK's Rust core, forwarded to Python: `simulation_runtime`).
CORE_LOG = logging.getLogger("journeys.simulate.temporal_core")
#: What the SDK's core warns about the time-skipping test server once per worker (per shard): a
#: capability that server does not advertise, about heartbeat details kept on an activity's
#: failure, which no activity of a simulation relies on.
TEST_SERVER_CAPABILITY = "did not advertise the activity_failure_include_heartbeat capability"
#: How long one move of the test server's clock may take (Simulation.advance_to).
SKIP_TIMEOUT = timedelta(hours=1)


class _KnownTestServerWarning(logging.Filter):
    """Drops the core's warning about the test server's missing capability (TEST_SERVER_CAPABILITY),
    only that: every other core warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return TEST_SERVER_CAPABILITY not in record.getMessage()


@functools.cache
def simulation_runtime() -> Runtime:
    """The Temporal runtime of this process's simulations: the core's warnings (and errors)
    forwarded to CORE_LOG, which drops the known-harmless one; shown as Python shows a warning
    with no logging configured (on stderr) or as the caller's logging does."""
    CORE_LOG.addFilter(_KnownTestServerWarning())
    forwarding = LogForwardingConfig(logger=CORE_LOG, append_target_to_name=False)
    warnings = TelemetryFilter(core_level="WARN", other_level="ERROR")  # the SDK's default levels
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=warnings, forwarding=forwarding)))


class SimulationInputError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class SimulationReport:
    messages: list[dict[str, Any]]
    seconds: float = 0.0
    events: int = 0
    customers: int = 0
    per_journey: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    #: With `profiles`: one per customer as of `until` (customer_id, traits, rfm, segments).
    profiles: list[dict[str, Any]] = field(default_factory=list)
    #: One line per broadcast of the definitions: when it started and for how many, or why not.
    broadcasts: list[str] = field(default_factory=list)
    #: With `prices`: the effect report of the simulated period (views/effect.py).
    effect: EffectReport | None = None

    def summary_lines(self) -> list[str]:
        lines = [f"{self.customers} customers, {self.events} events, {len(self.messages)} records"]
        lines.extend(self.broadcasts)
        for journey in sorted(self.per_journey):
            counts = self.per_journey[journey]
            skipped = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("skipped:")}
            text = f"{journey}: sent {counts['sent']}"
            if counts["failed"]:
                text += f", failed {counts['failed']}"
            if skipped:
                text += ", skipped " + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))
            lines.append(text)
        return lines


def read_jsonl(path: Path, model: type, what: str, check: Callable[[Any], list[tuple[str, str]]] | None = None) -> list:
    """One `model` a line; every problem as `path:line: field: message`, `check` (the known
    event types, say) adding its own for lines the model takes."""
    items, problems = [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = model.model_validate_json(line)
            except ValidationError as err:
                for error in err.errors():
                    where = ".".join(str(part) for part in error["loc"]) or what
                    problems.append(f"{path}:{number}: {where}: {error['msg']}")
                continue
            found = check(item) if check else []
            problems.extend(f"{path}:{number}: {where}: {message}" for where, message in found)
            if not found:
                items.append(item)
    if problems:
        raise SimulationInputError(problems)
    return items


def message_record(row: MessageRow) -> dict[str, Any]:
    return {
        "journey": row.journey,
        "step": row.step,
        "customer_id": row.customer_id,
        "order_id": row.order_id,
        "channel": row.channel,  # None for a skip decided before a channel was chosen
        "status": row.status,
        "reason": row.reason,
        "at": _instant(row.at),
        "template": row.template,
        "category": row.category,
        "subject": row.subject,
        "body": row.body,
    }


class Simulation:
    """The real engine on a time-skipping test server, driven by events in their own time.

    async with Simulation(definitions, store, begin) as sim:
        await sim.emit(event)            # advances the clock to the event, then routes it
        await sim.advance_to(moment)     # everything due before `moment` has run on return
    """

    def __init__(
        self,
        definitions: Definitions,
        store: Store,
        begin: datetime,
        shop_name: str = Settings.default("shop_name"),
        fast: bool = False,
    ):
        self.fast = fast
        self.definitions = definitions
        self.store = store
        self.begin = begin
        self.shop_name = shop_name
        self.workers: list[Worker] = []

    async def __aenter__(self) -> Simulation:
        self.env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            test_server_existing_path=binary("temporal-test-server"),
            runtime=simulation_runtime(),
        )
        try:
            self.offset = (await self.env.get_current_time()) - self.begin
            # The production worker, as `journeys worker` builds it; no rate limits (the test
            # server's clock skips, so a per-second limit means nothing), the outbox for every channel.
            settings = Settings.embedded(task_queue=TASK_QUEUE, shop_name=self.shop_name, rate_limits={})
            self.router = Router(
                self.env.client,
                self.definitions,
                self.store,
                TASK_QUEUE,
                clock_offset=self.offset,
                clock=self.now,
                default_region=settings.default_region,
            )
            self._executor = ThreadPoolExecutor(activity_threads(settings))
            self.workers = build_workers(
                self.env.client,
                settings,
                self.store,
                self._executor,
                build_channels(None),
                fast=self.fast,
                policy=self.definitions.policy,
                definitions=self.definitions,
            )
            for worker in self.workers:
                await worker.__aenter__()
        except BaseException:
            await self.env.shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        try:
            for worker in reversed(self.workers):
                await worker.__aexit__(*exc_info)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self.env.shutdown()

    @property
    def client(self):
        return self.env.client

    async def now(self) -> datetime:
        """The simulation's clock (the events' time)."""
        return (await self.env.get_current_time()) - self.offset

    async def advance_to(self, moment: datetime) -> None:
        """Move the clock to `moment`. The test server does not move its clock past work that is
        due, so everything due before `moment` has run when this returns: after thousands of
        instances started at one instant (a shop's customers created at the start) that takes
        minutes, longer than the SDK's `env.sleep` waits for its call, hence SKIP_TIMEOUT."""
        behind = moment - await self.now()
        if behind > timedelta(0):
            request = SleepRequest()
            request.duration.FromTimedelta(behind)
            await self.client.test_service.unlock_time_skipping_with_sleep(request, timeout=SKIP_TIMEOUT)

    async def emit(self, event: Event, backfill: bool = False) -> list:
        """Log the event (a duplicate event_id is dropped) and route it at its own time, or now if
        its time has passed (it arrives late). `backfill`: as history, which starts nothing."""
        await self.advance_to(event.occurred_at)
        return await self._log_and_route(event, backfill)

    async def emit_together(self, events: list[Event], tally: Tally | None = None) -> None:
        """Events of one instant: the clock moves once, each customer's events are logged and
        routed in their order, and the customers concurrently (as the dispatcher routes them),
        since nothing of one customer's reaches another's. `tally` counts each one played."""
        if not events:
            return
        await self.advance_to(events[0].occurred_at)
        await _by_customer(
            [(event.customer_id, functools.partial(self._log_and_route, event)) for event in events],
            events[0].occurred_at,
            tally,
        )

    async def _log_and_route(self, event: Event, backfill: bool = False) -> list:
        with self.store.transaction() as session:
            fresh = queries.store_event(session, event, datetime.now(UTC), backfill=backfill)
        return await self.router.route(event, backfill=backfill) if fresh else []

    async def start_broadcast(self, name: str, at: datetime | None = None) -> None:
        """Start a broadcast now (the simulation's clock), as `journeys broadcast start` would; `at`:
        as of that moment, just passed (a schedule started with the simulation has its run at the
        simulation's first instant, as broadcast_plan counts it, though the clock moved on since)."""
        now = await self.now()
        await broadcast_runs.start(
            self.client, self.definitions, name, TASK_QUEUE, now=min(at or now, now), clock_offset=self.offset
        )

    async def broadcast_progress(self, name: str) -> BroadcastProgress:
        handle = self.client.get_workflow_handle(broadcast_workflow_id(name), result_type=BroadcastProgress)
        return await handle.query(BroadcastWorkflow.progress)

    async def create_customer(self, customer: Customer, at: datetime) -> None:
        """Upsert a customer as a `customer.created` event at `at`."""
        await self.emit(created(customer, at))

    def records(self, until: datetime | None = None) -> list[dict[str, Any]]:
        with self.store.transaction() as session:
            return [message_record(row) for row in queries.list_messages(session, until=until)]


async def simulate(
    definitions: Definitions,
    customers: list[Customer],
    events: list[Event],
    until: datetime,
    shop_name: str = Settings.default("shop_name"),
    fast: bool = False,
    profiles: bool = False,
    broadcasts: dict[str, datetime] | None = None,
    prices: Prices | None = None,
    timezone: str = Settings.default("shop_timezone"),
    shards: int | None = None,
    progress: TextIO | None = None,
    history: list[Event] | None = None,
) -> SimulationReport:
    """Play `events` (any order; played in `occurred_at` order) for `customers` up to `until`, on
    the production worker (sandboxed), with the definitions' broadcasts that fall in the window;
    `broadcasts` moves some to other times first (naive: each customer's local time). `fast=True`
    is the explicit fast mode (every module passed through the sandbox). With `prices`, the report
    holds the effect report of [first event, until], days in `timezone`.

    `shards` splits the customers across that many processes, each with its own test server,
    worker and store (journeys/shards.py), merged before anything is read, so the records are
    those of one process; None: one a core, as the work allows (`default_shards`), 1: all in
    this process. `progress`: a stream (stderr) for a progress line, redrawn in place. `history`:
    events before the window (a dry run's earlier orders), written to each shard's store as
    history for its customers before anything plays; they start nothing."""
    started = datetime.now(UTC)
    ordered = sorted(events, key=lambda e: e.occurred_at)
    begin = ordered[0].occurred_at if ordered else until
    for name, when in (broadcasts or {}).items():
        definitions = rescheduled(definitions, name, when)
    due, not_run = broadcast_plan(definitions, begin, until)
    played = [event for event in ordered if event.occurred_at <= until]
    if shards is None:
        shards = default_shards(len(customers) + len(played))
    if shards < 1:
        raise ValueError(f"shards: {shards}; at least 1")
    if shards > 1:  # a repeated event_id plays once, the first in time, as one store keeps it
        played = _first_of_each(played)

    with tempfile.TemporaryDirectory(prefix="journeys-sim-") as scratch:
        works = [
            ShardWork(
                definitions=_portable(definitions) if shards > 1 else definitions,
                customers=part_customers,
                events=part_events,
                begin=begin,
                until=until,
                due=due,
                shop_name=shop_name,
                fast=fast,
                database=Path(scratch) / f"shard-{index + 1}.db",
                history=_history_of(history or [], part_customers) if shards > 1 else list(history or []),
            )
            for index, (part_customers, part_events) in enumerate(
                [part for part in partition(customers, played, shards) if part != ([], [])]
                if shards > 1
                else [(customers, played)]
            )
        ]
        counters = slots(len(works), begin)
        if shards > 1:  # shared with the shards' processes
            counters = multiprocessing.get_context("spawn").Array("d", counters, lock=False)
        follow = None
        if progress is not None:
            totals = [len(work.customers) + len(work.events) for work in works]
            follow = asyncio.create_task(Progress(counters, totals, progress).follow())
        try:
            if shards > 1:
                counts = _summed(await run_in_processes(play_shard, works, counters))
                database = Path(scratch) / "simulation.db"
                Store(f"sqlite:///{database}", durable=False).migrate().dispose()
                merge_stores(database, [work.database for work in works])
            else:
                counts = await play_shard(works[0], Tally(counters, 0))
                database = works[0].database
        finally:
            if follow is not None:
                follow.cancel()
                await asyncio.gather(follow, return_exceptions=True)

        store = Store(f"sqlite:///{database}", durable=False)
        try:
            with store.transaction() as session:
                records = ordered_records(message_record(row) for row in queries.list_messages(session, until=until))
            found = customer_profiles(store, definitions, until) if profiles else []
            earned = (
                effect_report(store, definitions, Period(begin, until, timezone), prices, by="variant")
                if prices is not None
                else None
            )
        finally:
            store.dispose()

    ran = [_ran(definitions, when, name, counts[name]) for when, name in due]
    report = SimulationReport(
        broadcasts=ran + not_run,
        effect=earned,
        profiles=found,
        messages=records,
        events=len({e.event_id for e in ordered}),
        customers=len(customers),
        seconds=(datetime.now(UTC) - started).total_seconds(),
    )
    for record in records:
        status = record["status"] + (f":{record['reason']}" if record["status"] == "skipped" else "")
        report.per_journey[record["journey"]][status] += 1
    return report


class BroadcastCount(BaseModel):
    """What one shard's run of a broadcast reached: its members there, and the instances started
    for them (or found running)."""

    members: int = 0
    instances: int = 0
    #: A recurring broadcast's: its runs, and the members they left out for once_per.
    runs: list[str] = []
    not_again: int = 0


@dataclass(frozen=True)
class ShardWork:
    """What one shard plays: its customers and their events (in time order, none after
    `until`), with what every shard shares, and where its store goes."""

    definitions: Definitions
    customers: list[Customer]
    events: list[Event]
    begin: datetime
    until: datetime
    due: list[tuple[datetime, str]]
    shop_name: str
    fast: bool
    database: Path
    #: Its customers' events before `begin`, written to its store as history (backfill) before
    #: anything plays: what RFM, lifecycle and past-purchase segments read of earlier orders.
    history: list[Event] = field(default_factory=list)


async def play_shard(work: ShardWork, tally: Tally) -> dict[str, BroadcastCount]:
    """Play a shard on a test server of its own, into a store of its own at `work.database`
    (kept for reading): its customers created at `begin`, its events by instant, each broadcast
    due started before the events of its instant; then the clock run to one second past `until`,
    so everything due up to it has run. What each broadcast reached, by name."""
    definitions = _compiled(work.definitions)
    store = Store(f"sqlite:///{work.database}", durable=False).migrate()
    if work.history:
        with store.transaction() as session:
            queries.store_events(session, work.history, work.begin, backfill=True, dispatched_at=work.begin)
    try:
        async with Simulation(definitions, store, work.begin, work.shop_name, fast=work.fast) as sim:
            await sim.advance_to(work.begin)
            await sim.emit_together([created(customer, work.begin) for customer in work.customers], tally)
            waiting = list(work.due)
            for at, together in itertools.groupby(work.events, key=lambda e: e.occurred_at):
                while waiting and waiting[0][0] <= at:
                    await _start(sim, *waiting.pop(0))
                await sim.emit_together(list(together), tally)
            for when, name in waiting:
                await _start(sim, when, name)
            await sim.advance_to(work.until + timedelta(seconds=1))
            counts = {}
            for _, name in work.due:
                schedule = definitions.broadcasts[name][0].schedule
                if not schedule.recurring:
                    progress = await sim.broadcast_progress(name)
                    counts[name] = BroadcastCount(members=progress.total, instances=progress.started + progress.already)
                    continue
                count = BroadcastCount()
                for day in schedule.runs_between(work.begin, work.until):
                    progress = await sim.broadcast_progress(run_name(name, day))
                    count.runs.append(run_name(name, day))
                    count.members += progress.total or 0
                    count.instances += progress.started + progress.already
                    count.not_again += progress.not_again
                counts[name] = count
            return counts
    finally:
        store.dispose()


def _history_of(history: list[Event], customers: list[Customer]) -> list[Event]:
    """The events of `history` that belong to `customers` (one shard's)."""
    ids = {customer.customer_id for customer in customers}
    return [event for event in history if event.customer_id in ids]


def created(customer: Customer, at: datetime) -> Event:
    """A customer's record as the `customer.created` event at `at` that upserts it."""
    return Event(
        event_id=f"simulate:customer.created:{customer.customer_id}",
        type="customer.created",
        occurred_at=at,
        customer_id=customer.customer_id,
        data=customer.model_dump(mode="json", exclude={"customer_id"}),
    )


def ordered_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger's order (the store's, list_messages) on the records as written: by the second
    of `at`, journey, customer, order (none first), step, and the whole record last. The store's
    own order also sees the milliseconds the test server's clock runs on while a task is handled,
    which differ from run to run; to the second, two runs agree."""

    def key(record: dict[str, Any]) -> tuple:
        order = record["order_id"]
        return (
            record["at"],
            record["journey"],
            record["customer_id"],
            order is not None,
            order or "",
            record["step"],
            json.dumps(record, ensure_ascii=False, sort_keys=True),
        )

    return sorted(records, key=key)


#: How many customers one instant's events are routed for at once.
TOGETHER = 64


async def _by_customer(
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]], at: datetime, tally: Tally | None
) -> None:
    """Each customer's steps in order, customers concurrently (TOGETHER at a time)."""
    chains: dict[str, list[Callable[[], Awaitable[Any]]]] = defaultdict(list)
    for customer_id, step in steps:
        chains[customer_id].append(step)
    limit = asyncio.Semaphore(TOGETHER)

    async def run(chain: list[Callable[[], Awaitable[Any]]]) -> None:
        async with limit:
            for step in chain:
                await step()
                if tally is not None:
                    tally.played(at)

    if len(chains) == 1:  # the common case: no task to make
        await run(next(iter(chains.values())))
        return
    async with asyncio.TaskGroup() as group:
        for chain in chains.values():
            group.create_task(run(chain))


def _first_of_each(events: list[Event]) -> list[Event]:
    """The first event of each event_id, in their order."""
    seen: set[str] = set()
    first = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            first.append(event)
    return first


def _summed(shard_counts: list[dict[str, BroadcastCount]]) -> dict[str, BroadcastCount]:
    total: dict[str, BroadcastCount] = {}
    for counts in shard_counts:
        for name, count in counts.items():
            before = total.get(name, BroadcastCount())
            total[name] = BroadcastCount(
                members=before.members + count.members,
                instances=before.instances + count.instances,
                runs=count.runs,  # every shard plays the same runs
                not_again=before.not_again + count.not_again,
            )
    return total


def _portable(definitions: Definitions) -> Definitions:
    """`definitions` for another process: the event catalogue without its compiled checks (which
    do not pickle); `_compiled` compiles them again there."""
    return replace(definitions, events=EventCatalog(definitions.events.declared))


def _compiled(definitions: Definitions) -> Definitions:
    return replace(definitions, events=EventCatalog.of(list(definitions.events.declared.values())))


def broadcast_plan(
    definitions: Definitions, begin: datetime, until: datetime
) -> tuple[list[tuple[datetime, str]], list[str]]:
    """The broadcasts a simulation from `begin` to `until` runs, with when each starts (its first
    send anywhere, or `begin` if that is earlier but some of its sends are still ahead), in
    order; and a line for each it does not run."""
    due: list[tuple[datetime, str]] = []
    not_run: list[str] = []
    for name, (broadcast, _) in sorted(definitions.broadcasts.items()):
        schedule = broadcast.schedule
        if schedule.recurring:  # its schedule starts with the simulation, when it has a run in it
            if schedule.runs_between(begin, until):
                due.append((begin, name))
            else:
                not_run.append(
                    f"broadcast {name}: not run, {schedule.describe()}: no run starts in the simulated "
                    f"{_instant(begin)} to {_instant(until)}"
                )
            continue
        if schedule.latest < begin or schedule.earliest > until:
            not_run.append(
                f"broadcast {name}: not run, scheduled {schedule.describe()}, outside the simulated "
                f"{_instant(begin)} to {_instant(until)} (--broadcast {name}=TIME moves it in)"
            )
            continue
        due.append((max(schedule.earliest, begin), name))
    return sorted(due), not_run


async def _start(sim: Simulation, when: datetime, name: str) -> None:
    await sim.advance_to(when)
    await sim.start_broadcast(name, at=when)


def _ran(definitions: Definitions, when: datetime, name: str, count: BroadcastCount) -> str:
    broadcast = definitions.broadcasts[name][0]
    segment = broadcast.segment
    # Batched: members reached (decided, or held by a deferral); else instances started.
    reached = "reached" if broadcast.path_taken[0] == "batched" else "instances"
    if broadcast.schedule.recurring:
        again = f", {count.not_again} not again (once_per {broadcast.once_per})" if broadcast.once_per else ""
        span = f" from {count.runs[0]} to {count.runs[-1]}" if count.runs else ""
        return (
            f"broadcast {name}: {broadcast.schedule.describe()}, {len(count.runs)} runs{span}, segment {segment}: "
            f"{count.members} members, {count.instances} {reached}{again}"
        )
    return (
        f"broadcast {name}: started {_instant(when)}, segment {segment}: {count.members} members, "
        f"{count.instances} {reached}"
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def customer_profiles(store: Store, definitions: Definitions, at: datetime) -> list[dict[str, Any]]:
    """Every customer as of `at`: traits, RFM, the lifecycle stage and the segments they are in, by
    customer id. One query per segment for the memberships, and two for the records and the
    purchases RFM and the stage are read from (core.rfm, core.lifecycle, as journeys read them)."""
    members: dict[str, list[str]] = defaultdict(list)
    for segment in definitions.segments.values():
        for member in iterate_members(store.transaction, segment, at, definitions.rfm):
            members[member.customer_id].append(segment.name)
    found = []
    with store.transaction() as session:
        ids = queries.customer_ids(session)
        customers = queries.get_customers(session, ids)
        purchases = queries.purchases_of_customers(session, ids, at)
    for customer_id in ids:
        customer, rfm = customers[customer_id], score(purchases[customer_id], at, definitions.rfm)
        found.append(
            {
                "customer_id": customer_id,
                "traits": customer.traits if customer else {},
                "rfm": rfm.model_dump(mode="json", include={"r", "f", "m", "score", "tier"}),
                "lifecycle": stage(purchases[customer_id], at, definitions.rfm.lifecycle),
                "segments": members.get(customer_id, []),
            }
        )
    return found


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
