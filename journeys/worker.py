"""The one way Journeys builds its Temporal workers: `journeys worker`, `journeys up`, `journeys
simulate`, the benchmarks and the tests all call `build_workers`, so they run the same sandbox,
passthrough modules, activities and limits.

    journeys worker          # or: python worker.py

A worker process runs the journey worker (the interpreter workflow, the policy decision and the
record of failures) and one delivery worker per channel task queue (rate-limited by the server).
Temporal address, namespace, TLS certificate or API key, the database and the limits below come
from the environment (core/config.py); SIGINT or SIGTERM lets running activities finish first,
for at most the graceful timeout.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import py_compile
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import workflows as workflows_package
import workflows.broadcast as workflows_broadcast
import workflows.journey as workflows_journey
import workflows.retention as workflows_retention
from activities.broadcast import BroadcastActivities
from activities.broadcast_pages import BroadcastPageActivities
from activities.journey import JourneyActivities
from activities.loyalty import LoyaltyActivities
from activities.product_cycles import ProductCycleActivities
from activities.replies import ReplyActivities, reply_definitions
from activities.retention import RetentionActivities
from channels import build_channels, describe_channels
from core.channel import Channel
from core.config import Settings
from core.contact_policy import ContactPolicy
from core.loyalty import NO_LOYALTY, Loyalty
from core.sms_registry import NO_REGISTRY, SmsRegistry
from core.temporal import connect, describe, ensure_search_attributes
from core.vocabulary import CHANNELS
from definitions.expressions import compiled_counts
from definitions.loader import (
    Definitions,
    DefinitionsError,
    default_directory,
    load_loyalty,
    load_policy,
    load_sms_registry,
)
from instances.contract import channel_queue
from journeys.loyalty import ensure_loyalty_schedule
from journeys.product_cycles import ensure_product_cycles_schedule
from journeys.replies import ensure_reply_sweep_schedule
from journeys.retention import ensure_retention_schedule, limit_history_retention
from store import queries
from store.db import Store
from triggers.live import LiveDefinitions
from workflows.broadcast import BroadcastWorkflow, RecurringBroadcastWorkflow
from workflows.journey import JourneyWorkflow
from workflows.loyalty import LoyaltyDailyWorkflow
from workflows.product_cycles import ProductCyclesWorkflow
from workflows.replies import ReplyAnswerWorkflow, ReplySweepWorkflow
from workflows.retention import RetentionWorkflow

log = logging.getLogger("journeys.worker")

#: Modules the workflow sandbox shares with the worker instead of importing them again for each
#: workflow run: the project's vocabulary the interpreter reads, and Jinja2 with what it needs, so
#: an expression compiled outside the sandbox runs inside it without importing anything.
#:
#: And the interpreter itself, `workflows.journey`. The sandbox executes a workflow class's module
#: afresh for every instance and applies `@workflow.defn` to the class again: about a sixth of the
#: worker's CPU per immediate send (bench/profile_worker.py; docs/performance.md). Passed through,
#: it runs once per process; each instance still has its own `JourneyWorkflow` object, and the
#: module keeps no state between instances. The sandbox's restricted builtins still apply during
#: every activation. What it no longer checks at run time (the wall clock, randomness, I/O called
#: from that module) the replay test checks: `Replayer` runs the sandbox's default restrictions,
#: which import the module inside the sandbox, so such a call fails every saved history's replay
#: (tests/test_replay.py). The broadcast and retention workflows, seldom run, stay imported afresh.
PASSTHROUGH_MODULES = (
    "workflows.journey",
    "jinja2",
    "markupsafe",
    "tzdata",
    "definitions",
    "activities.payloads",
    "core",
    "instances.contract",
)


def workflow_runner(fast: bool = False) -> WorkflowRunner:
    """Temporal's sandbox with the project's passthrough modules, always. `fast=True` exists for
    `journeys simulate --fast` alone: every module is passed through instead of imported afresh
    for each workflow run (faster), while the sandbox still refuses non-deterministic calls."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    if fast:
        restrictions = restrictions.with_passthrough_all_modules()
    return SandboxedWorkflowRunner(restrictions=restrictions)


@functools.cache
def write_workflow_bytecode() -> None:
    """Write the bytecode of the workflow modules, which the sandbox imports afresh for every
    workflow instance unless they are passed through (the broadcast and retention workflows in
    the worker; all of them under `Replayer`'s default sandbox), reading their .pyc; without one
    (under PYTHONDONTWRITEBYTECODE, common in container images) it compiled the source every
    time, about a tenth of the worker's CPU when the interpreter was imported so. A read-only
    install keeps whatever bytecode it shipped with. Once per process: every later
    build_workers finds it done."""
    for module in (workflows_journey, workflows_broadcast, workflows_retention, workflows_package):
        source = module.__file__
        if not source or not source.endswith(".py"):
            continue
        try:
            py_compile.compile(source, cfile=importlib.util.cache_from_source(source), doraise=True)
        except (OSError, py_compile.PyCompileError) as err:
            log.info("could not write the bytecode of %s (%s): each workflow instance compiles it", source, err)


def compile_definitions(settings: Settings) -> Definitions:
    """The configured definitions (without publications), compiled: `live_definitions`' `current`."""
    return live_definitions(settings).current


def live_definitions(settings: Settings, store: Store | None = None, *, strict: bool = False) -> LiveDefinitions:
    """Load what runs (the configured definitions with the published changes over them, with
    `store`; triggers/live.py), compiling their expressions and templates before polling, so the
    instances that run them never compile in workflow code. A worker whose definitions have
    problems still runs: every instance carries its own snapshot. Returns the holder, whose
    `current` is what loaded (its sms.yaml is what SMS through Aliyun say). With `strict` (a
    process that also serves the API), DefinitionsError when nothing loads without problems."""
    live = LiveDefinitions(store, settings.definitions_dir or default_directory(), strict=strict)
    for warning in live.current.warnings:
        log.warning("definition %s", warning)
    expressions, templates = compiled_counts()
    log.info(
        "compiled %d expressions and %d templates of %d journeys in %s (publication %d)",
        expressions,
        templates,
        len(live.current),
        live.directory,
        live.seq,
    )
    return live


def build_workers(
    client: Client,
    settings: Settings,
    store: Store,
    executor: ThreadPoolExecutor,
    channels: dict[str, Channel] | None = None,
    *,
    fast: bool = False,
    policy: ContactPolicy | None = None,
    loyalty: Loyalty | None = None,
    sms: SmsRegistry | None = None,
    definitions: Definitions | None = None,
    live: LiveDefinitions | None = None,
) -> list[Worker]:
    """The journey worker and one delivery worker per channel, on `settings.task_queue`. A channel's
    rate limit is enforced by the Temporal server across all workers of its queue, so adding
    workers never exceeds a provider's limit. `channels` defaults to those `settings` configure.
    Workflows always run in Temporal's sandbox; `fast` (passed by `journeys simulate --fast`
    alone, no setting turns it on) only passes every module through it. Every send is decided by
    `policy`, by default the contact policy of the configured definitions (policy.yaml, read
    here: a worker started after an edit decides by it, running instances included; a journey's
    and a step's overrides are in each instance's snapshot). A policy.yaml with problems stops
    the worker (DefinitionsError, each as `file:line`): it would decide every send. `loyalty`, by
    default the configured definitions' loyalty.yaml, gives templates the tiers' titles. `sms`,
    the definitions' sms.yaml (by default read here), is what an SMS through Aliyun says.
    `definitions`, what the worker loaded at start (compile_definitions), gives the loyalty
    programme, sms.yaml, and the reply rules with their templates, so they are not read again.
    With `live` (what runs, triggers/live.py), a newly published version of the definitions
    replaces the policy, the loyalty programme, sms.yaml and the reply rules the activities use,
    without a restart; `policy`, `loyalty` and `sms` given here then stay as given."""
    write_workflow_bytecode()
    built_from = live.current if live is not None else None
    if live is not None and definitions is None:
        definitions = live.current
    directory = live.directory if live is not None else Path(settings.definitions_dir or default_directory())
    given_policy, given_loyalty, given_sms = policy is not None, loyalty is not None, sms is not None
    if policy is None:
        policy = load_policy(directory)
    channels = channels if channels is not None else build_channels(settings.outbox_path, settings)
    log.info("channels: %s", describe_channels(channels))
    log.info("send rate limits per second: %s", describe_rate_limits(settings.rate_limits))
    activities = JourneyActivities(
        store,
        channels,
        settings.shop_name,
        default_region=settings.default_region,
        opt_out=settings.sms_opt_out,
        deliver_inline=frozenset(channel for channel in CHANNELS if not settings.rate_limits.get(channel)),
        policy=policy,
        loyalty=loyalty if loyalty is not None else definitions.loyalty if definitions else _loyalty(settings),
        sms_registry=sms if sms is not None else definitions.sms if definitions else _sms_registry(settings),
        link_base=settings.short_link_base(),
        link_days=settings.retention_days,
        rate_limits=settings.rate_limits,
    )
    broadcasts = BroadcastActivities(store, client)
    # Batched broadcasts' pages: the same policy, rendering and channels as `activities`.
    pages = BroadcastPageActivities(store, activities)
    # SMS replies' answers (replies.yaml and the templates it names): sent by `activities` above.
    replies = ReplyActivities(
        store,
        *(reply_definitions(directory) if definitions is None else (definitions.replies, definitions.templates)),
        webhook_secret=settings.webhook_secret,
        client=client,
    )
    loyalty_activities = LoyaltyActivities(store, directory)
    if live is not None:

        def take(new: Definitions, where: Path) -> None:
            """A new publication: what sends from now on are decided and written by. Each is one
            attribute set (atomic for the activities' threads); running instances keep their
            journeys' snapshots, which they carry."""
            if not given_policy:
                activities.policy = new.policy
            if not given_loyalty:
                activities.loyalty = new.loyalty
            if not given_sms:
                activities.sms_registry = new.sms
            replies.rules, replies.templates = new.replies, new.templates
            loyalty_activities.directory = where

        live.on_change(take)
        # A holder another part of the process polls (`journeys up`'s API) may have swapped in a
        # publication while these were built, before `take` listened: take it now.
        if live.current is not built_from:
            take(live.current, live.directory)
    options = {
        "max_concurrent_activities": settings.worker_activities,
        "graceful_shutdown_timeout": timedelta(seconds=settings.worker_shutdown_seconds),
        "activity_executor": executor,
    }
    journeys = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[
            JourneyWorkflow,
            BroadcastWorkflow,
            RecurringBroadcastWorkflow,
            RetentionWorkflow,
            ProductCyclesWorkflow,
            LoyaltyDailyWorkflow,
            ReplyAnswerWorkflow,
            ReplySweepWorkflow,
        ],
        activities=[
            activities.load_customer,
            activities.decide_message,
            activities.record_failure,
            activities.record_exit,  # a local activity of the interpreter
            broadcasts.broadcast_size,
            broadcasts.broadcast_page,
            broadcasts.start_broadcast_instances,
            broadcasts.cancel_broadcast_instances,
            broadcasts.start_broadcast_run,
            pages.plan_broadcast,
            pages.broadcast_member_page,
            pages.send_broadcast_page,
            pages.close_broadcast_members,
            RetentionActivities(store, settings.outbox_path).expire_personal_data,
            ProductCycleActivities(store).relearn_product_cycles,
            loyalty_activities.run_loyalty_daily,
            replies.plan_reply_answer,
            replies.post_reply,
            replies.record_reply_outcome,
            replies.start_unanswered_replies,
        ],
        workflow_runner=workflow_runner(fast),
        max_concurrent_workflow_tasks=settings.worker_workflow_tasks,
        max_cached_workflows=settings.worker_cached_workflows,
        **options,
    )
    delivery = [
        Worker(
            client,
            task_queue=channel_queue(settings.task_queue, channel),
            activities=[activities.deliver_message],
            max_task_queue_activities_per_second=settings.rate_limits.get(channel) or None,
            **options,
        )
        for channel in CHANNELS
    ]
    return [journeys, *delivery]


def _loyalty(settings: Settings) -> Loyalty:
    """The loyalty programme whose tier titles templates show (`customer.tier.title`); a
    loyalty.yaml with problems is logged and shows the tiers' names instead: a title is no reason
    to stop every send."""
    try:
        return load_loyalty(settings.definitions_dir or default_directory())
    except DefinitionsError as err:
        log.error("loyalty.yaml not read, templates show tier names for titles: %s", err)
        return NO_LOYALTY


def _sms_registry(settings: Settings) -> SmsRegistry:
    """The templates registered with Aliyun SMS (sms.yaml); one with problems is logged and none
    is used: an SMS through Aliyun then fails naming its template code, other sends go on."""
    try:
        return load_sms_registry(settings.definitions_dir or default_directory())
    except DefinitionsError as err:
        log.error("sms.yaml not read, SMS through Aliyun fail as unregistered: %s", err)
        return NO_REGISTRY


def activity_threads(settings: Settings) -> int:
    """Threads for the activities of all the process's workers: the journey worker's and the
    channels' slots may all be busy at once."""
    return settings.worker_activities * 2


def describe_rate_limits(limits: dict[str, float]) -> str:
    return ", ".join(f"{channel}: {limits.get(channel) or 'unlimited'}" for channel in CHANNELS)


async def run_worker(
    settings: Settings, stop: asyncio.Event | None = None, live: LiveDefinitions | None = None
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when none is given), then drain: every worker
    shuts down at once, each letting its running activities finish for the graceful timeout.
    `live`: what runs, held and polled by another part of this process (`journeys up`'s API), so
    one process loads each publication once; by default the worker loads and polls its own."""
    store = Store(settings.database_url).migrate()
    queries.configure_salt(settings.secret)  # erased addresses' suppression hashes
    polls = live is None
    if live is None:
        live = live_definitions(settings, store)
    client = await connect(settings)
    await ensure_search_attributes(client)
    try:
        log.info("retention: %s", await ensure_retention_schedule(client, settings))
    except RPCError as err:  # journeys still run; the operator must see that retention does not
        log.error("retention: could not register the schedule (%s); personal data is not expired", err.message)
    log.info("retention: %s", await limit_history_retention(client, settings.retention_days))
    try:
        log.info("products: %s", await ensure_product_cycles_schedule(client, settings))
    except RPCError as err:  # journeys still run, on the cycles last learned
        log.error("products: could not register the repurchase-cycle schedule (%s)", err.message)
    try:
        log.info("loyalty: %s", await ensure_loyalty_schedule(client, settings))
    except RPCError as err:  # journeys still run; points do not lapse and no notice goes out
        log.error("loyalty: could not register the daily schedule (%s)", err.message)
    try:
        log.info("replies: %s", await ensure_reply_sweep_schedule(client, settings.task_queue))
    except RPCError as err:  # replies are still answered when the API's hook starts them
        log.error("replies: could not register the sweep schedule (%s); a missed hook is not caught up", err.message)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(activity_threads(settings), thread_name_prefix="activity") as executor:
        workers = build_workers(client, settings, store, executor, live=live)
        log.info(
            "worker polling %r on %s: %s",
            settings.task_queue,
            describe(client),
            describe_limits(settings),
        )
        running = [asyncio.create_task(worker.run()) for worker in workers]
        # Newly published definitions, every couple of seconds (triggers/live.py).
        polling = asyncio.create_task(live.keep(stop) if polls else stop.wait())
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *running], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in done if task is not stopped and task.exception() is not None]
        log.info("stopping: letting running activities finish (at most %s s)", settings.worker_shutdown_seconds)
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        await asyncio.gather(*running, return_exceptions=True)
        stopped.cancel()
        polling.cancel()
    store.dispose()
    log.info("worker stopped")
    if failed:
        raise failed[0].exception()


def describe_limits(settings: Settings) -> str:
    return (
        f"{settings.worker_workflow_tasks} workflow tasks, {settings.worker_activities} activities at once, "
        f"{settings.worker_cached_workflows} cached workflows, sandbox on"
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(Settings()))
