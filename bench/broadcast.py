"""Benchmark: a one-message broadcast to a large segment on the deployed processes and PostgreSQL,
the batched path (pages of members decided and sent by one activity each) against the path of one
journey instance per recipient.

    .venv/bin/python -m bench.broadcast [--recipients 100000,1000000] [--page 500]
                                        [--instance-recipients 3000] [--instance-minutes 3]
                                        [--minutes 45] [--rate SENDS_PER_SECOND]

Each measurement runs in a PostgreSQL schema and a stack of its own (tests/stack.py: a Temporal
dev server in memory, `journeys api`, one `journeys worker`): the schema is filled with the
recipients (generate_series, all in the segment, with a phone, spread over 4 fixed-offset time
zones where it is about midday now, so no quiet hours defer them), the broadcast's moment is one
minute past, the channel is the outbox and, unless `--rate`, no channel has a rate limit.
`journeys broadcast start` starts it, and every few seconds the ledger is counted until every
recipient is decided or `--minutes` have passed. First, the instance path on `--instance-recipients`
(`path: instances`, bounded by `--instance-minutes`); then each size of `--recipients` on the
batched path (`path: batched`, `page: --page`). It prints, per measurement:

- recipients decided per second: the broadcast's ledger rows (`messages` of its journey) whose
  status is decided (sent and after, skipped, failed), over the time from the start command to
  the last of them (its `updated_at`); a bounded run counts what was decided by its bound;
- the time to the last send: from the start command to the latest `updated_at` of a sent row;
- Temporal history events and billable actions of the whole broadcast: every run of the
  Broadcast workflow `broadcast:{name}` (its continue-as-new chain, listed by workflow id and
  followed run to run), and the per-recipient journey workflows it started, if any: counted in
  the `instances` table (less the rows the batched path writes under the Broadcast workflow's
  run id, which are no workflows), their history read for a sample (the first 20 ended, by
  workflow id) and extrapolated (the output says so). The Broadcast workflow stays open until
  its latest send moment has passed (LATE_MARGIN), so its last run is read open, its final timer
  started;
- the worker's RSS, the maximum over the samples (bench.common.rss_mb);
- PostgreSQL's CPU share: the CPU time (utime+stime, and cutime+cstime for backends that ended
  meanwhile, reaped by the postmaster) of every `postgres` process from /proc/<pid>/stat, from
  just before the start command to the sample that saw the last recipient decided, over that
  wall time times the machine's cores (`61% of 2 cores`: 61% of the whole machine). It includes
  the counting queries of this benchmark, one every few seconds, and whatever else uses the
  server meanwhile (the load average is printed at the start and after each measurement: run it
  on a quiet machine).

Billable actions, as Temporal Cloud counts them, read from each run's history (`billable_run`):
1 for the run's start (WorkflowExecutionStarted: by a client, or by continue-as-new, which starts
the next run; the ContinuedAsNew event that closes a run is that same action, not counted
twice), 1 for each activity scheduled (ActivityTaskScheduled) plus 1 for each retry of it (its
ActivityTaskStarted's attempt - 1), 1 for each timer started, signal received, search-attribute
upsert, marker recorded (local activities, side effects) and child workflow started. Workflow
tasks, queries and history reads are not billed; activity heartbeats are, but never reach a
history, so they are not counted (a batched page's send activity heartbeats every few seconds while it
waits on a provider or the rate limit: a few billable actions a page at most, not in this count).

`--rate 200` keeps the old rate-limit mode: the SMS limit at 200 a second (JOURNEYS_RATE_LIMITS),
and the rate is printed against it (the ceiling a broadcast should reach).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import Schema, rss_mb
from core.vocabulary import SENT_STATUSES
from definitions.broadcasts import Broadcast
from definitions.loader import PACKAGE_DIR
from instances.contract import broadcast_workflow_id
from tests.stack import JOURNEYS, Stack

#: Ledger statuses of a decided recipient: handed over (and what a provider reported after), or not sent.
SENT = tuple(str(status) for status in SENT_STATUSES)
DECIDED = (*SENT, "skipped", "failed")
#: Instance histories read to extrapolate the instance path's.
HISTORY_SAMPLE = 20
#: Whether this build has the batched path (definitions/broadcasts.py `path`); without it every
#: broadcast runs an instance per member and the file may not name a path.
HAS_PATHS = "path" in Broadcast.model_fields
#: History events that are one billable action each (activities add their retries).
BILLABLE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
}


def billable_run(history) -> int:
    """The billable actions of one run's history (the rule in the module's docstring)."""
    count = 0
    for event in history.events:
        if event.event_type in BILLABLE:
            count += 1
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            count += max(0, event.activity_task_started_event_attributes.attempt - 1)  # its retries
    return count


def midday_zones(now: datetime, count: int = 4) -> list[str]:
    """`count` fixed-offset zones where it is between 11:00 and 14:59 now: hours from quiet hours
    (22:00-08:00) either way, also for a run of `--minutes`."""
    zones = []
    for offset in range(-12, 15):
        if 11 <= (now + timedelta(hours=offset)).hour <= 14:
            zones.append("UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}")
    return zones[:count]


def definitions(directory: Path, name: str, now: datetime, path: str | None, page: int | None) -> Path:
    """The shipped definitions with the segment `everyone` (tag bench) and the broadcast `name`,
    due a minute ago, on `path` with `page` members a page (each omitted when None)."""
    folder = directory / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "everyone.yaml").write_text("name: everyone\nwhere: {tag: bench}\n")
    extra = (f"path: {path}\n" if path else "") + (f"page: {page}\n" if page else "")
    (folder / "broadcasts" / f"{name}.yaml").write_text(
        f"name: {name}\nsegment: everyone\nsend: {{channel: sms, template: holiday_care}}\n"
        f'schedule: {{at: "{(now - timedelta(minutes=1)).isoformat()}"}}\n' + extra
    )
    return folder


def fill(schema: Schema, recipients: int, zones: list[str]) -> None:
    """`recipients` customers in the segment, spread over `zones` in turn."""
    with schema.store.transaction() as session:
        session.execute(
            text("""
            INSERT INTO customers (customer_id, name, phone, timezone, locale, tags, unsubscribed, blacklisted,
                                   traits, updated_at)
            SELECT 'b' || lpad(n::text, 7, '0'), 'customer ' || n, '+86139' || lpad(n::text, 8, '0'),
                   (CAST(:zones AS text[]))[1 + n % :count], 'zh-CN', '["bench"]'::json, '[]'::json, false,
                   '{}'::json, now()
            FROM generate_series(1, :recipients) AS n
            """),
            {"recipients": recipients, "zones": zones, "count": len(zones)},
        )
    with schema.store.transaction() as session:
        session.execute(text("ANALYZE customers"))


def postgres_cpu_seconds() -> float:
    """CPU time of every postgres process now: its own (utime+stime) and that of its ended children
    (cutime+cstime: backends the postmaster reaped), so backends that come and go are counted."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def ledger(schema: Schema, journey: str) -> tuple[int, int, datetime | None, datetime | None]:
    """(decided, sent, the latest decided row's updated_at, the latest sent row's) of `journey`."""
    with schema.store.transaction() as session:
        row = session.execute(
            text("""
            SELECT count(*) FILTER (WHERE status = ANY(:decided)),
                   count(*) FILTER (WHERE status = ANY(:sent)),
                   max(updated_at) FILTER (WHERE status = ANY(:decided)),
                   max(updated_at) FILTER (WHERE status = ANY(:sent))
            FROM messages WHERE journey = :journey
            """),
            {"journey": journey, "decided": list(DECIDED), "sent": list(SENT)},
        ).one()
    return row[0], row[1], _utc(row[2]), _utc(row[3])


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass
class History:
    """Temporal history of one broadcast: its Broadcast workflow's runs and its instances."""

    runs: int = 0
    broadcast_events: int = 0
    broadcast_billable: int = 0
    instances: int = 0
    sampled: int = 0
    instance_events: float = 0  # mean over the sample
    instance_billable: float = 0

    @property
    def events(self) -> int:
        return round(self.broadcast_events + self.instances * self.instance_events)

    @property
    def billable(self) -> int:
        return round(self.broadcast_billable + self.instances * self.instance_billable)

    def describe(self) -> str:
        what = (
            f"Broadcast workflow: {self.runs} runs, {self.broadcast_events:,} events, "
            f"{self.broadcast_billable:,} billable"
        )
        if self.instances:
            what += (
                f"; {self.instances:,} instances, {self.instance_events:.1f} events and {self.instance_billable:.1f} "
                f"billable each (mean of a sample of {self.sampled}, extrapolated to all)"
            )
        return what


async def read_history(address: str, schema: Schema, journey: str) -> History:
    client = await Client.connect(address)
    found = History()
    workflow_id = broadcast_workflow_id(journey)
    run_ids = [run.run_id async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    seen: set[str] = set()
    while run_ids:
        run_id = run_ids.pop()
        if run_id in seen:
            continue
        seen.add(run_id)
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        found.runs += 1
        found.broadcast_events += len(history.events)
        found.broadcast_billable += billable_run(history)
        last = history.events[-1]
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_ids.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)
    # The batched path writes an instance row per member too (for the effect report), under the
    # Broadcast workflow's first run id: those are no workflows of their own.
    workflows = "FROM instances WHERE journey = :j AND run_id <> ALL(:runs)"
    with schema.store.transaction() as session:
        found.instances = session.scalar(text(f"SELECT count(*) {workflows}"), {"j": journey, "runs": list(seen)})
        sample = session.execute(
            text(f"SELECT workflow_id, run_id {workflows} ORDER BY ended_at IS NULL, workflow_id LIMIT :n"),
            {"j": journey, "runs": list(seen), "n": HISTORY_SAMPLE},
        ).all()
    events, bills = [], []
    for instance_id, run_id in sample:
        history = await client.get_workflow_handle(instance_id, run_id=run_id).fetch_history()
        events.append(len(history.events))
        bills.append(billable_run(history))
    if sample:
        found.sampled = len(sample)
        found.instance_events = sum(events) / len(events)
        found.instance_billable = sum(bills) / len(bills)
    return found


@dataclass
class Measured:
    path: str  # as asked of the file: batched, instances, or the build's only path
    recipients: int
    decided: int = 0
    sent: int = 0
    seconds: float = 0.0  # start command to the last decided row
    last_send: float | None = None  # start command to the last sent row
    finished: bool = False
    bound: float = 0.0  # wall seconds sampled
    history: History = field(default_factory=History)
    rss_max: float = 0.0
    postgres_share: float = 0.0
    cores: int = 1
    limit: float | None = None

    @property
    def rate(self) -> float:
        return self.decided / self.seconds if self.seconds > 0 else 0.0

    def figures(self) -> str:
        last = f"last send after {self.last_send:.1f} s" if self.last_send is not None else "nothing sent"
        share = self.history.billable / self.decided if self.decided else 0.0
        limit = f" against the limit {self.limit:g}/s ({self.rate / self.limit:.2f}x)" if self.limit else ""
        return (
            f"{self.rate:,.1f} recipients/s{limit}, {last}, {self.history.events:,} history events, "
            f"{self.history.billable:,} billable actions ({share:.2%} of recipients), worker RSS max "
            f"{self.rss_max:,.0f} MB, PostgreSQL CPU {self.postgres_share:.0%} of {self.cores} cores"
        )


def measure(
    path: str | None,
    recipients: int,
    page: int | None,
    minutes: float,
    rate: float | None,
    interval: float,
    workers: int = 1,
) -> Measured:
    """One broadcast to `recipients` on `path` in a schema and stack of its own."""
    now = datetime.now(UTC)
    name = f"bench_{path or 'broadcast'}"
    result = Measured(path or "instances", recipients, cores=os.cpu_count() or 1, limit=rate)
    schema = Schema()
    directory = Path(tempfile.mkdtemp(prefix="journeys-bench-broadcast-"))
    limits = f"sms={rate:g}" if rate else "sms=0,email=0,webhook=0"
    env = {
        "JOURNEYS_DEFINITIONS": str(definitions(directory, name, now, path, page)),
        "JOURNEYS_RATE_LIMITS": limits,
    }
    stack = Stack(directory, schema.url, workers=workers, extra_env=env)
    try:
        filled = time.monotonic()
        fill(schema, recipients, midday_zones(now))
        print(f"  {recipients:,} customers filled in {time.monotonic() - filled:.1f} s", flush=True)
        stack.start()
        worker = stack.processes["worker0"].pid
        cpu_before, began_at, began = postgres_cpu_seconds(), datetime.now(UTC), time.monotonic()
        started = subprocess.run(
            [JOURNEYS, "broadcast", "start", name], env=stack.env, capture_output=True, text=True, check=True
        )
        print(f"  {started.stdout.strip()}", flush=True)
        cpu_after, ended = cpu_before, began
        rss: list[float] = [rss_mb(worker)]
        decided = 0
        while time.monotonic() - began < minutes * 60:
            time.sleep(interval)
            decided, sent, _, _ = ledger(schema, name)
            cpu_after, ended = postgres_cpu_seconds(), time.monotonic()
            rss.append(rss_mb(worker))
            print(
                f"  {ended - began:6.0f} s  decided {decided:>9,}  sent {sent:>9,}  worker RSS {rss[-1]:5.0f} MB",
                flush=True,
            )
            if decided >= recipients:
                break
        result.bound = ended - began
        result.finished = decided >= recipients
        result.decided, result.sent, last_decided, last_sent = ledger(schema, name)
        result.seconds = (last_decided - began_at).total_seconds() if last_decided else result.bound
        result.last_send = (last_sent - began_at).total_seconds() if last_sent else None
        result.rss_max = max(value for value in rss if value == value)
        result.postgres_share = (cpu_after - cpu_before) / (result.bound * result.cores) if result.bound else 0.0
        result.history = asyncio.run(read_history(stack.address, schema, name))
        print(f"  history: {result.history.describe()}", flush=True)
        # Other work on the machine slows the run, and its queries count in PostgreSQL's CPU.
        print(f"  load average {', '.join(f'{value:.2f}' for value in os.getloadavg())} at the end", flush=True)
        if not result.finished:
            print(f"  stopped after {result.bound:.0f} s: {result.decided:,} of {recipients:,} decided", flush=True)
    finally:
        stack.stop()
        schema.drop()
        shutil.rmtree(directory, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", default="100000,1000000", help="sizes of the batched broadcast, e.g. 100000")
    parser.add_argument("--page", type=int, default=1000, help="members per page of the batched path")
    parser.add_argument("--instance-recipients", type=int, default=3000, help="size of the instance-path broadcast")
    parser.add_argument("--instance-minutes", type=float, default=3, help="the instance path's bound")
    parser.add_argument("--minutes", type=float, default=45, help="a ceiling per size")
    parser.add_argument("--rate", type=float, default=None, help="an SMS rate limit, sends a second (none by default)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes of the batched runs (RSS is the first one's)"
    )
    args = parser.parse_args()
    sizes = [int(size.replace("_", "")) for size in args.recipients.split(",") if size.strip()]
    cores = os.cpu_count() or 1
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {cores} cores, load average {load} at start", flush=True)
    limit = f"the SMS rate limit {args.rate:g}/s" if args.rate else "no rate limit"
    print(f"PostgreSQL, the outbox channel, {limit}", flush=True)
    if not HAS_PATHS:
        print("this build has no batched path: every broadcast below runs an instance per member", flush=True)

    print(
        f"instances: {args.instance_recipients:,} recipients, path: instances, at most {args.instance_minutes:g} min",
        flush=True,
    )
    instances = measure(
        "instances" if HAS_PATHS else None, args.instance_recipients, None, args.instance_minutes, args.rate, 5
    )
    bound = "" if instances.finished else f", bounded at {instances.bound:.0f} s"
    print(
        f"instances {args.instance_recipients:,}: {instances.decided:,} decided{bound}; {instances.figures()}",
        flush=True,
    )
    summaries = []
    for size in sizes:
        label = "batched" if HAS_PATHS else "instances"
        workers = f", {args.workers} workers" if args.workers > 1 else ""
        print(f"{label}: {size:,} recipients, page {args.page}{workers}, at most {args.minutes:g} min", flush=True)
        batched = measure(
            "batched" if HAS_PATHS else None, size, args.page if HAS_PATHS else None, args.minutes, args.rate,
            2 if size <= 200_000 else 5, args.workers,
        )  # fmt: skip
        unfinished = "" if batched.finished else f" (stopped at {batched.bound:.0f} s: {batched.decided:,} decided)"
        times = batched.rate / instances.rate if instances.rate else 0.0
        ratio = "" if not times else f" ({times:,.1f}x)" if times < 10 else f" ({times:,.0f}x)"
        summaries.append(
            f"{label} {size:,}: {batched.figures()}{unfinished}; instances: {instances.rate:,.1f}/s{ratio}"
        )
        print(summaries[-1], flush=True)
    if len(summaries) > 1:
        print("summary:", flush=True)
        for line in summaries:
            print(line, flush=True)


if __name__ == "__main__":
    main()
