"""Retention, registered by every worker at start-up: the daily `journeys-retention:<queue>`
Temporal schedule that removes personal data older than JOURNEYS_RETENTION_DAYS from the store
(workflows.retention), and the namespace's history retention brought within the same limit
where the server lets a client change it (not on Temporal Cloud: set it there in the namespace's
settings)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.payloads import RetentionReport
from core.config import Settings
from instances.contract import RetentionPolicy, retention_schedule_id
from workflows.retention import RetentionWorkflow

log = logging.getLogger("journeys.retention")

#: Each day at 03:00 UTC (an interval of a day, offset from midnight).
EVERY = timedelta(days=1)
AT = timedelta(hours=3)


def daily_schedule(action: ScheduleActionStartWorkflow, at: timedelta) -> Schedule:
    """A schedule that starts `action` each day at `at` past midnight UTC."""
    return Schedule(
        action=action,
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=EVERY, offset=at)]),
        # A run still going when the next is due is enough; one missed while the cluster was
        # down runs when it is back, within a day.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=EVERY),
    )


def retention_schedule(settings: Settings) -> Schedule:
    return daily_schedule(
        ScheduleActionStartWorkflow(
            RetentionWorkflow.run,
            RetentionPolicy(days=settings.retention_days),
            id=retention_schedule_id(settings.task_queue),
            task_queue=settings.task_queue,
            execution_timeout=timedelta(hours=6),
        ),
        AT,
    )


async def ensure_daily_schedule(
    client: Client, schedule_id: str, wanted: Schedule, same: Callable[[Any], bool]
) -> None:
    """Create the schedule, or bring it to `wanted` unless it runs at the same times already with
    an argument that is the `same` (or none: the daily loyalty run, the replies' sweep). Several
    workers starting at once agree; a restart changes nothing. Any schedule's times, not only daily."""
    try:
        await client.create_schedule(schedule_id, wanted)
    except ScheduleAlreadyRunningError:
        action = wanted.action
        model = type(action.args[0]) if isinstance(action, ScheduleActionStartWorkflow) and action.args else None

        async def update(current: ScheduleUpdateInput) -> ScheduleUpdate | None:
            held = await schedule_argument(current.description, model) if model else None
            argument_as_wanted = model is None or (held is not None and same(held))
            if argument_as_wanted and current.description.schedule.spec.intervals == wanted.spec.intervals:
                return None  # already as configured
            return ScheduleUpdate(schedule=wanted)

        await client.get_schedule_handle(schedule_id).update(update)


async def schedule_argument(description: ScheduleDescription, model: type) -> Any:
    """The one argument a schedule's action carries, as `model`, or None if it cannot be read
    (another format, or a key this process does not hold). The arguments come back as the server
    keeps them, so they go through the data converter's codec (decryption) first."""
    action = description.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or len(action.args) != 1:
        return None
    try:
        [argument] = await description.data_converter.decode(list(action.args), [model])
    except Exception:  # an older or foreign payload: replace it
        return None
    return argument


async def ensure_retention_schedule(client: Client, settings: Settings) -> str:
    """Create the schedule, or bring it to the configured days; delete it when retention is off
    (JOURNEYS_RETENTION_DAYS=0). Several workers starting at once agree. Says what it did."""
    schedule_id = retention_schedule_id(settings.task_queue)
    handle = client.get_schedule_handle(schedule_id)
    if settings.retention_days == 0:
        try:
            await handle.delete()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return f"retention off (JOURNEYS_RETENTION_DAYS=0): personal data is kept; no schedule {schedule_id}"
    wanted = retention_schedule(settings)
    await ensure_daily_schedule(client, schedule_id, wanted, lambda held: held.days == settings.retention_days)
    return f"personal data older than {settings.retention_days} days removed daily (schedule {schedule_id})"


async def _days(description: ScheduleDescription) -> int | None:
    """The days a schedule's action carries, or None if it cannot be read."""
    policy = await schedule_argument(description, RetentionPolicy)
    return None if policy is None else policy.days


async def limit_history_retention(client: Client, days: int) -> str:
    """Keep the namespace's closed-workflow histories at most `days` days: lower a longer (or
    unlimited) retention, leave a shorter one. Says what it did, or why it could not."""
    if days == 0:
        return "namespace history retention left as it is (retention off)"
    service = client.workflow_service
    try:
        described = await service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
        current = described.config.workflow_execution_retention_ttl.ToTimedelta()
        limit = timedelta(days=days)
        if timedelta(0) < current <= limit:
            return f"namespace {client.namespace!r} keeps histories {_days_text(current)} (within {days} days)"
        await service.update_namespace(
            UpdateNamespaceRequest(
                namespace=client.namespace,
                config=NamespaceConfig(workflow_execution_retention_ttl=Duration(seconds=int(limit.total_seconds()))),
            )
        )
    except RPCError as err:
        log.warning(
            "could not limit namespace %r history retention to %d days (%s); set it in the namespace's "
            "settings (Temporal Cloud: the namespace's retention period)",
            client.namespace,
            days,
            err.message,
        )
        return f"namespace {client.namespace!r} history retention unchanged: {err.message}"
    was = _days_text(current) if current > timedelta(0) else "forever"
    return f"namespace {client.namespace!r} history retention lowered from {was} to {days} days"


def _days_text(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"


async def retention_status(client: Client, settings: Settings) -> list[str]:
    """What `journeys retention` prints: the schedule, its next run and its last runs with what
    each removed."""
    schedule_id = retention_schedule_id(settings.task_queue)
    try:
        described = await client.get_schedule_handle(schedule_id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return [f"no schedule {schedule_id}: a worker registers it at start-up (JOURNEYS_RETENTION_DAYS > 0)"]
    lines = [
        f"schedule {schedule_id}: personal data older than {await _days(described)} days, daily at 03:00 UTC",
        "next run " + ", ".join(at.isoformat() for at in described.info.next_action_times[:1]),
    ]
    for action in reversed(described.info.recent_actions[-5:]):
        started = action.action
        if not isinstance(started, ScheduleActionExecutionStartWorkflow):
            continue
        handle = client.get_workflow_handle(
            started.workflow_id, run_id=started.first_execution_run_id, result_type=RetentionReport
        )
        lines.append(f"  {action.started_at.isoformat()}  {await _outcome(handle)}")
    return lines


async def _outcome(handle: WorkflowHandle[Any, RetentionReport]) -> str:
    described = await handle.describe()
    if described.status != WorkflowExecutionStatus.COMPLETED:
        return described.status.name.lower() if described.status else "unknown"
    return describe_report(await handle.result())


def describe_report(report: RetentionReport) -> str:
    outbox = f", {report.outbox_lines} outbox lines removed" if report.outbox_lines else ""
    links = (
        f", {report.links} short links and {report.link_clicks} clicks deleted"
        if report.links or report.link_clicks
        else ""
    )
    replies = (
        f", {report.sms_replies} SMS replies deleted and {report.reply_events} reply events scrubbed"
        if report.sms_replies or report.reply_events
        else ""
    )
    return (
        f"before {report.before.isoformat()}: {report.messages} messages scrubbed, "
        f"{report.provider_events} provider events deleted, {report.events} customer events scrubbed"
        f"{outbox}{links}{replies}"
    )


async def run_retention_now(client: Client, settings: Settings, seconds: float = 60) -> RetentionReport:
    """Trigger the schedule now and wait for the run's result (RuntimeError without a schedule,
    or when no run starts in `seconds`: one is still running)."""
    handle = client.get_schedule_handle(retention_schedule_id(settings.task_queue))
    before = len((await handle.describe()).info.recent_actions)
    await handle.trigger()
    for _ in range(int(seconds * 10)):
        actions = (await handle.describe()).info.recent_actions
        if len(actions) > before or (len(actions) == before == 10):  # the server keeps the last 10
            started = actions[-1].action
            if isinstance(started, ScheduleActionExecutionStartWorkflow):
                return await client.get_workflow_handle(
                    started.workflow_id, run_id=started.first_execution_run_id, result_type=RetentionReport
                ).result()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no retention run started in {seconds:.0f} s (is one still running?)")
