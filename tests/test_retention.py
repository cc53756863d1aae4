"""Retention on the deployed processes and PostgreSQL: the worker registers a daily Temporal
schedule; a run removes message bodies and addresses, provider webhook events and the contact
data of customer events older than JOURNEYS_RETENTION_DAYS, and leaves newer ones and the counts
effect reports need. The namespace's history retention is kept within the same limit."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import ActivityEnvironment

from activities.payloads import RetentionReport, RetentionRequest
from activities.retention import RetentionActivities
from core.config import Settings
from core.temporal import connect
from instances.contract import retention_schedule_id
from journeys.retention import ensure_retention_schedule, limit_history_retention
from store.tables import EventRow, LinkClickRow, MessageRow, ProviderEventRow, ShortLinkRow
from tests.stack import JOURNEYS, Stack

KEYS = "k1=" + "B" * 43 + "="
PHONE = "+8613900001111"


def message(at: datetime, customer: str) -> MessageRow:
    return MessageRow(
        id=str(uuid.uuid4()), workflow_id=f"payment_reminder:{customer}", run_id="r", step="first_reminder",
        journey="payment_reminder", journey_version="v1", customer_id=customer, order_id=f"o-{customer}",
        channel="sms", address=PHONE, template="payment_reminder", category="transactional", status="sent",
        reason=None, at=at, body=f"亲爱的王芳，订单o-{customer}还未付款", subject=None, segments=1,
        template_data={"name": "王芳"}, error=None, updated_at=at,
    )  # fmt: skip


def customer_event(at: datetime, event_id: str, customer: str = "c-old", retry_at: datetime | None = None) -> EventRow:
    """Dispatched at `at`, or, with `retry_at`, still pending (its customer backing off until then)."""
    return EventRow(
        event_id=event_id, type="customer.created", customer_id=customer, order_id=None, occurred_at=at,
        data={"phone": PHONE, "name": "王芳"}, received_at=at, dispatched_at=None if retry_at else at,
        retry_at=retry_at, attempts=1 if retry_at else 0,
    )  # fmt: skip


def test_the_daily_schedule_removes_personal_data_older_than_the_limit(pg_store, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    old, recent = now - timedelta(days=200), now - timedelta(days=10)
    with pg_store.transaction() as session:
        session.add_all([message(old, "old"), message(recent, "recent")])
        session.add_all([
            ProviderEventRow(provider="sendgrid", event_key="old", kind="delivered", received_at=old),
            ProviderEventRow(provider="sendgrid", event_key="recent", kind="delivered", received_at=recent),
            customer_event(old, "cust-old"),
            # Not applied yet (Temporal was away; it is retried tomorrow): kept whole.
            customer_event(old, "cust-old-pending", "c-waiting", retry_at=now + timedelta(days=1)),
            customer_event(recent, "cust-recent"),
            EventRow(event_id="order-old", type="order.paid", customer_id="c-old", order_id="o-old",
                     occurred_at=old, data={"amount": 99}, received_at=old, dispatched_at=old),
        ])  # fmt: skip
    env = {"JOURNEYS_RETENTION_DAYS": "30", "JOURNEYS_ENCRYPTION_KEYS": KEYS}
    with Stack(tmp_path, pg_store.url, extra_env=env) as stack:
        logged = stack.worker_logs()
        assert "retention: personal data older than 30 days removed daily (schedule journeys-retention:journeys)" in (
            logged
        )
        settings = Settings.from_env(stack.env, temporal_address=stack.address)

        async def run_once() -> tuple:
            client = await connect(settings)
            handle = client.get_schedule_handle(retention_schedule_id("journeys"))
            described = await handle.describe()
            await handle.trigger()
            for _ in range(600):
                recent_actions = (await handle.describe()).info.recent_actions
                if recent_actions:
                    break
                await asyncio.sleep(0.1)
            started = recent_actions[0].action
            result = await client.get_workflow_handle(
                started.workflow_id, run_id=started.first_execution_run_id, result_type=RetentionReport
            ).result()
            namespace = await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=client.namespace)
            )
            return described, result, namespace.config.workflow_execution_retention_ttl.ToTimedelta()

        described, report, history_retention = asyncio.run(run_once())
        assert stack.worker_logs().count(" ERROR ") == 0
        shown = subprocess.run([JOURNEYS, "retention"], env=stack.env, capture_output=True, text=True, timeout=60)
        again = subprocess.run(
            [JOURNEYS, "retention", "--run-now"], env=stack.env, capture_output=True, text=True, timeout=120
        )

    # What an operator sees: the schedule, the next run, the last run and what it removed.
    lines = shown.stdout.splitlines()
    assert lines[0] == "schedule journeys-retention:journeys: personal data older than 30 days, daily at 03:00 UTC"
    assert lines[1].startswith("next run ") and "T03:00:00" in lines[1]
    assert lines[2].endswith(": 1 messages scrubbed, 1 provider events deleted, 1 customer events scrubbed")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("ran now: before ")  # nothing left to remove the second time
    assert again.stdout.rstrip().endswith(
        ": 0 messages scrubbed, 0 provider events deleted, 0 customer events scrubbed"
    )

    # The schedule: each day at 03:00 UTC, the Retention workflow on the journeys queue.
    assert isinstance(described.schedule.action, ScheduleActionStartWorkflow)
    assert described.schedule.action.workflow == "Retention"
    assert described.schedule.action.task_queue == "journeys"
    [next_run, *_] = described.info.next_action_times
    assert (next_run.hour, next_run.minute) == (3, 0) and timedelta(0) < next_run - now <= timedelta(days=1)
    assert timedelta(0) < history_retention <= timedelta(days=30)

    assert (report.messages, report.provider_events, report.events) == (1, 1, 1)
    assert now - timedelta(days=30, minutes=5) < report.before <= now - timedelta(days=30) + timedelta(minutes=5)
    with pg_store.transaction() as session:
        messages = {row.customer_id: row for row in session.query(MessageRow)}
        providers = {row.event_key for row in session.query(ProviderEventRow)}
        events = {row.event_id: row.data for row in session.query(EventRow)}
    expired = messages["old"]
    assert (expired.address, expired.body, expired.subject, expired.template_data, expired.error) == (None,) * 5
    assert (expired.status, expired.channel, expired.segments, expired.order_id) == ("sent", "sms", 1, "o-old")
    assert messages["recent"].address == PHONE and "王芳" in messages["recent"].body
    assert providers == {"recent"}
    assert events["cust-old"] == {}
    assert events["cust-old-pending"]["phone"] == PHONE
    assert events["cust-recent"]["phone"] == PHONE
    assert events["order-old"] == {"amount": 99}  # RFM and effect reports read a year of orders


async def listed_schedules(client, patience: float = 15.0) -> list[str]:
    """The schedules the server lists, once its listing has caught up: listing reads visibility,
    which follows a deletion a moment later (seconds on a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        ids = [s.id async for s in await client.list_schedules()]
        if not ids or asyncio.get_running_loop().time() > deadline:
            return ids
        await asyncio.sleep(0.2)


def test_the_schedule_follows_the_setting_and_the_namespace_keeps_histories_no_longer(tmp_path):
    """Against a dev server alone: changing JOURNEYS_RETENTION_DAYS updates the schedule, 0
    removes it; a namespace that keeps histories longer is brought down to the limit, a shorter
    one is left alone."""
    stack = Stack(tmp_path, "sqlite://")
    stack.start_server()
    try:

        async def scenario() -> list:
            settings = Settings.from_env(stack.env, temporal_address=stack.address, retention_days=7)
            client = await connect(settings)
            seen = [await ensure_retention_schedule(client, settings)]
            handle = client.get_schedule_handle(retention_schedule_id("journeys"))
            seen.append((await handle.describe()).schedule.action.args)
            seen.append(await ensure_retention_schedule(client, settings.model_copy(update={"retention_days": 90})))
            description = await handle.describe()
            seen.append(await description.data_converter.decode(list(description.schedule.action.args)))
            await ensure_retention_schedule(client, settings.model_copy(update={"retention_days": 90}))  # a restart
            seen.append((await handle.describe()).info.last_updated_at == description.info.last_updated_at)
            await client.workflow_service.update_namespace(
                UpdateNamespaceRequest(
                    namespace=client.namespace,
                    config=NamespaceConfig(workflow_execution_retention_ttl=Duration(seconds=400 * 86400)),
                )
            )
            seen.append(await limit_history_retention(client, 90))
            seen.append(await limit_history_retention(client, 120))
            seen.append(await ensure_retention_schedule(client, settings.model_copy(update={"retention_days": 0})))
            seen.append(await listed_schedules(client))
            return seen

        created, args, updated, decoded, untouched, lowered, within, off, remaining = asyncio.run(scenario())
    finally:
        stack.stop()
    assert created == "personal data older than 7 days removed daily (schedule journeys-retention:journeys)"
    assert len(args) == 1
    assert updated.startswith("personal data older than 90 days")
    assert decoded == [{"days": 90}]
    assert untouched  # a worker restarting with the same setting leaves the schedule as it is
    assert lowered == "namespace 'default' history retention lowered from 400 days to 90 days"
    assert within == "namespace 'default' keeps histories 90 days (within 120 days)"
    assert off.startswith("retention off (JOURNEYS_RETENTION_DAYS=0)")
    assert remaining == []


def test_retention_deletes_expired_short_links_and_old_clicks(pg_store):
    """A short link stops working at its expires_at (the retention period after its message) and
    retention deletes it; clicks older than the period go too (their user agents), and the message
    keeps its clicked status, which the effect report reads."""
    now = datetime.now(UTC)
    before = now - timedelta(days=30)
    old, recent = message(now - timedelta(days=40), "old"), message(now - timedelta(days=2), "recent")
    old.status = recent.status = "clicked"
    with pg_store.transaction() as session:
        session.add_all([
            old, recent,
            ShortLinkRow(code="oldcode", message_id=old.id, url="https://shop.example/a",
                         created_at=old.at, expires_at=old.at + timedelta(days=30)),
            ShortLinkRow(code="newcode", message_id=recent.id, url="https://shop.example/b",
                         created_at=recent.at, expires_at=recent.at + timedelta(days=30)),
            LinkClickRow(code="oldcode", message_id=old.id, at=old.at + timedelta(hours=1), user_agent="iPhone"),
            LinkClickRow(code="oldcode", message_id=old.id, at=now - timedelta(days=20), user_agent="iPhone"),
            LinkClickRow(code="newcode", message_id=recent.id, at=recent.at, user_agent="Android"),
        ])  # fmt: skip
    activities = RetentionActivities(pg_store)
    report = ActivityEnvironment().run(activities.expire_personal_data, RetentionRequest(before=before, batch=1))
    assert report.messages == 1  # the old message's body and number are gone too
    with pg_store.transaction() as session:
        codes = {row.code for row in session.query(ShortLinkRow)}
        clicks = sorted((row.code, row.user_agent) for row in session.query(LinkClickRow))
        statuses = {row.customer_id: row.status for row in session.query(MessageRow)}
    assert codes == {"newcode"}
    # The old link's click within the period stays until it ages out itself; the older one is gone.
    assert clicks == [("newcode", "Android"), ("oldcode", "iPhone")]
    assert statuses == {"old": "clicked", "recent": "clicked"}
    again = ActivityEnvironment().run(activities.expire_personal_data, RetentionRequest(before=before))
    assert again.messages == 0
    with pg_store.transaction() as session:
        assert session.query(ShortLinkRow).count() == 1 and session.query(LinkClickRow).count() == 2
