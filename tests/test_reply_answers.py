"""Answering SMS replies by keyword (应答设置, issue 28), through the production worker
(journeys.worker.build_workers, sandbox on) on the time-skipping server, with PostgreSQL and the
outbox channel. Each test logs a reply as the intake does (an `sms_replies` row, its action
classified, the unsubscribe's suppression written) and calls the intake's hook,
triggers.replies.start_reply_answer:

- `TD` at 03:00 the customer's time: one confirmation at once, however often the hook runs;
- `人工` at night (through Twilio's inbound webhook): the answer at the end of the quiet hours, once;
- an unknown reply with `otherwise: webhook`: one signed POST to customer service with the order;
- customer service refusing (4xx): the refusal recorded on the reply, nothing crashes;
- `ignore`: nothing sent;
- a reply whose hook found Temporal unreachable: the sweep starts its answer; every worker registers the sweep's
  schedule once.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.replies import ANSWER_RUN, REPLIES_JOURNEY, ReplyOutcome, reply_workflow_id
from channels import build_channels
from core.config import Settings
from core.signing import SIGNATURE_HEADER, verify_signature
from core.temporal import binary
from journeys.simulate import simulation_runtime
from journeys.worker import activity_threads, build_workers
from store import queries
from store.tables import MessageRow, SmsReplyRow
from tests.helpers import customer, daytime_zone, event, free_port, write_definitions
from triggers.replies import start_reply_answer
from workflows.replies import ReplySweepWorkflow

SECRET = "reply-hook-secret"
NUMBER = "+8613800000001"
TEMPLATES = {
    "unsubscribe_confirm": 'sms:\n  zh-CN: "您已退订{{ shop.name }}的营销短信"\n',
    "reply_service": 'sms:\n  zh-CN: "客服每天9:00-21:00在线，订单{{ order.order_id }}"\n',
}


def replies_yaml(url: str | None) -> str:
    otherwise = f'{{action: webhook, url: "{url}"}}' if url else "{action: ignore}"
    return f"""\
rules:
  - keywords: [TD, T, 退订]
    action: unsubscribe
    confirm: unsubscribe_confirm
  - keywords: [人工, 客服]
    action: answer
    template: reply_service
  - keywords: [谢谢]
    action: ignore
otherwise: {otherwise}
"""


def zone_at_hour(now: datetime, hour: int) -> str:
    """A fixed-offset zone where `now` reads `hour` o'clock (the test server's clock, not the wall's)."""
    for offset in range(-12, 15):
        if (now + timedelta(hours=offset)).hour == hour:
            return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
    raise AssertionError(f"no zone reads {hour}:00 at {now}")


class CustomerService:
    """The shop's customer-service endpoint: checks each post's signature as a receiver does, keeps
    the bodies, and answers the statuses it is given in turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [])
        self.posts: list[tuple[dict, dict]] = []  # (headers, body) of each correctly signed post
        self.forged = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not verify_signature(SECRET, self.headers.get(SIGNATURE_HEADER, ""), raw):
                    service.forged += 1
                    status = 401
                else:
                    service.posts.append((dict(self.headers), json.loads(raw)))
                    status = service.statuses.pop(0) if service.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"refused: unknown shop" if status == 400 else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/replies"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Engine:
    """The worker on the time-skipping server, and what a user sees: the outbox and the store."""

    def __init__(self, tmp_path: Path, store, url: str | None):
        self.folder = write_definitions(tmp_path / "definitions", TEMPLATES, [])
        (self.folder / "replies.yaml").write_text(replies_yaml(url))
        self.outbox = tmp_path / "outbox.jsonl"
        self.store = store
        self.settings = Settings.embedded(
            task_queue=f"replies-{uuid.uuid4().hex[:8]}",
            rate_limits={},
            definitions_dir=self.folder,
            outbox_path=self.outbox,
            webhook_secret=SECRET,
        )

    async def __aenter__(self) -> Engine:
        self.env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            test_server_existing_path=binary("temporal-test-server"),
            runtime=simulation_runtime(),
        )
        self.client: Client = self.env.client
        self.executor = ThreadPoolExecutor(activity_threads(self.settings))
        self.workers = build_workers(self.client, self.settings, self.store, self.executor, build_channels(self.outbox))
        for worker in self.workers:
            await worker.__aenter__()
        self.now = await self.env.get_current_time()
        return self

    async def __aexit__(self, *exc) -> None:
        for worker in reversed(self.workers):
            await worker.__aexit__(None, None, None)
        self.executor.shutdown(wait=False, cancel_futures=True)
        await self.env.shutdown()

    def add_customer(self, tz: str) -> None:
        with self.store.transaction() as session:
            queries.upsert_customer(session, customer("c1", timezone=tz, phone=NUMBER), self.now, "CN")

    def log_reply(self, content: str, action: str, **fields) -> str:
        """The reply as the intake logs it (with the unsubscribe's suppression)."""
        reply_id = str(uuid.uuid4())
        with self.store.transaction() as session:
            session.add(
                SmsReplyRow(
                    id=reply_id,
                    provider=fields.pop("provider", "aliyun"),
                    provider_key=f"seq-{reply_id}",
                    number=NUMBER,
                    customer_id=fields.pop("customer_id", "c1"),
                    content=content,
                    received_at=fields.pop("received_at", self.now),
                    action=action,
                    **fields,
                )
            )
            if action == "unsubscribe":
                queries.add_suppression(session, "sms", NUMBER, "marketing", f"reply {content}", self.now)
        return reply_id

    async def answer(self, reply_id: str, times: int = 1, skip: timedelta | None = None):
        """Call the hook `times` times, let the test server's clock run `skip` on, and wait for the answer."""
        for _ in range(times):
            await start_reply_answer(self.client, reply_id, task_queue=self.settings.task_queue)
        if skip is not None:  # a handle the hook did not return skips no time by itself
            await self.env.sleep(skip)
        handle = self.client.get_workflow_handle(reply_workflow_id(reply_id), result_type=ReplyOutcome)
        return await handle.result()

    def sent(self) -> list[dict]:
        if not self.outbox.exists():
            return []
        return [json.loads(line) for line in self.outbox.read_text().splitlines() if line.strip()]

    def reply(self, reply_id: str) -> SmsReplyRow:
        with self.store.transaction() as session:
            row = session.get(SmsReplyRow, reply_id)
            session.expunge(row)
            return row

    def ledger(self) -> list[MessageRow]:
        with self.store.transaction() as session:
            rows = list(session.scalars(select(MessageRow).where(MessageRow.journey == REPLIES_JOURNEY)))
            for row in rows:
                session.expunge(row)
            return rows


async def test_td_at_three_in_the_morning_is_confirmed_at_once_and_once(tmp_path, pg_store):
    async with Engine(tmp_path, pg_store, url=None) as engine:
        engine.add_customer(zone_at_hour(engine.now, 3))  # 03:xx there: deep in the quiet hours
        reply_id = engine.log_reply("TD。", "unsubscribe")
        await engine.answer(reply_id, times=2)  # the hook twice (a retried webhook push)
        await engine.answer(reply_id)  # and again after it was answered
        sent = engine.sent()
        assert [(line["to"], line["channel"], line["category"]) for line in sent] == [(NUMBER, "sms", "transactional")]
        assert "您已退订" in sent[0]["body"]
        [row] = engine.ledger()
        assert (row.workflow_id, row.run_id, row.step, row.status) == (
            reply_workflow_id(reply_id),
            ANSWER_RUN,
            "confirm",
            "sent",
        )
        assert row.at - engine.now < timedelta(minutes=1)  # at once, not at 08:00
        reply = engine.reply(reply_id)
        assert (reply.answer_id, reply.error) == (row.id, None)
        assert reply.handled_at is not None and reply.handled_at - engine.now < timedelta(minutes=1)


async def test_an_answer_at_night_waits_for_the_end_of_the_quiet_hours(tmp_path, pg_store):
    async with Engine(tmp_path, pg_store, url=None) as engine:
        tz = zone_at_hour(engine.now, 3)
        engine.add_customer(tz)
        with engine.store.transaction() as session:
            queries.store_events(session, [event("order.created", engine.now, order="o-9", amount=88)], engine.now)
        reply_id = engine.log_reply("人工", "answer", provider="twilio")  # Twilio's inbound: the same
        outcome = await engine.answer(reply_id, times=2, skip=timedelta(hours=6))
        assert outcome.error is None
        [line] = engine.sent()
        assert line["to"] == NUMBER and "订单o-9" in line["body"]  # the customer's latest order
        [row] = engine.ledger()
        local = row.at.astimezone(ZoneInfo(tz))
        assert (row.step, row.status, local.hour, local.minute) == ("answer", "sent", 8, 0)
        assert row.at - engine.now < timedelta(hours=6)  # that same morning
        reply = engine.reply(reply_id)
        assert reply.answer_id == row.id and reply.handled_at >= row.at


async def test_an_unknown_reply_reaches_customer_service_signed_with_its_order(tmp_path, pg_store):
    service = CustomerService(statuses=[503])  # down once: tried again
    try:
        async with Engine(tmp_path, pg_store, url=service.url) as engine:
            engine.add_customer(daytime_zone(engine.now))
            items = [{"sku": "TEA-1", "name": "龙井", "qty": 2, "price": 44}]
            with engine.store.transaction() as session:
                queries.store_events(
                    session,
                    [
                        event("order.created", engine.now - timedelta(days=3), order="o-77", amount=88, items=items),
                        event("order.paid", engine.now - timedelta(days=3), order="o-77", amount=88),
                        event("order.shipped", engine.now - timedelta(days=1), order="o-77"),
                    ],
                    engine.now,
                )
                session.add(
                    MessageRow(
                        id="m-shipped", workflow_id="shipped_notice:o-77", run_id="r1", step="notice",
                        journey="shipped_notice", journey_version="v1", customer_id="c1", order_id="o-77",
                        channel="sms", address=NUMBER, template="shipped_notice", category="transactional",
                        at=engine.now - timedelta(days=1), updated_at=engine.now, status="delivered",
                    )
                )  # fmt: skip
            reply_id = engine.log_reply("快递怎么还没到？", "webhook", message_id="m-shipped")
            await engine.answer(reply_id, times=2)
        assert service.forged == 0
        assert len(service.posts) == 2  # the 503, then the one taken
        headers, body = service.posts[-1]
        assert headers["Idempotency-Key"] == reply_id
        assert body["content"] == "快递怎么还没到？" and body["customer_id"] == "c1" and body["number"] == NUMBER
        assert (body["message"]["journey"], body["message"]["step"]) == ("shipped_notice", "notice")
        order = body["order"]
        assert (order["order_id"], order["status"], order["amount"]) == ("o-77", "shipped", 88)
        assert order["items"][0]["sku"] == "TEA-1"
        assert engine.sent() == [] and engine.ledger() == []  # nothing texted back
        reply = engine.reply(reply_id)
        assert reply.handled_at is not None and reply.error is None and reply.answer_id is None
    finally:
        service.close()


async def test_customer_service_refusing_is_recorded_on_the_reply(tmp_path, pg_store):
    service = CustomerService(statuses=[400])
    try:
        async with Engine(tmp_path, pg_store, url=service.url) as engine:
            engine.add_customer(daytime_zone(engine.now))
            reply_id = engine.log_reply("在吗", "webhook")
            outcome = await engine.answer(reply_id)
            second = engine.log_reply("还在吗", "webhook")  # the worker goes on answering
            await engine.answer(second)
        assert len(service.posts) == 2  # a refusal is not tried again
        reply = engine.reply(reply_id)
        assert reply.handled_at is not None and "400" in reply.error and "refused: unknown shop" in reply.error
        assert outcome.error == reply.error
        assert engine.reply(second).error is None
    finally:
        service.close()


async def test_an_ignored_reply_gets_nothing(tmp_path, pg_store):
    service = CustomerService()
    try:
        async with Engine(tmp_path, pg_store, url=service.url) as engine:
            engine.add_customer(daytime_zone(engine.now))
            reply_id = engine.log_reply("谢谢", "ignore")
            await engine.answer(reply_id)
        assert engine.sent() == [] and engine.ledger() == [] and service.posts == []
        reply = engine.reply(reply_id)
        assert (reply.action, reply.answer_id, reply.error) == ("ignore", None, None)
        assert reply.handled_at is not None
    finally:
        service.close()


async def test_the_sweep_answers_a_reply_whose_hook_failed(tmp_path, pg_store):
    async with Engine(tmp_path, pg_store, url=None) as engine:
        engine.add_customer(daytime_zone(engine.now))
        missed = engine.log_reply("退订", "unsubscribe", received_at=engine.now - timedelta(minutes=10))
        gone = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=binary("temporal-test-server"))
        await gone.shutdown()  # the API's Temporal, unreachable when the reply came in
        await start_reply_answer(gone.client, missed, task_queue=engine.settings.task_queue)  # logged, not raised
        answered = engine.log_reply("人工", "answer", received_at=engine.now - timedelta(minutes=10))
        await engine.answer(answered)
        fresh = engine.log_reply("T", "unsubscribe")  # its hook is still on its way: left to it
        report = await engine.client.execute_workflow(
            ReplySweepWorkflow.run, id="sweep-1", task_queue=engine.settings.task_queue
        )
        assert (report.started, report.already) == (1, 0)
        await engine.client.get_workflow_handle(reply_workflow_id(missed)).result()
        again = await engine.client.execute_workflow(
            ReplySweepWorkflow.run, id="sweep-2", task_queue=engine.settings.task_queue
        )
        assert (again.started, again.already) == (0, 0)  # handled: not swept again
        assert engine.reply(missed).answer_id is not None and engine.reply(fresh).handled_at is None
        assert sorted(row.step for row in engine.ledger()) == ["answer", "confirm"]


async def test_every_worker_registers_the_sweep_schedule_once():
    """Against a dev server (the test server has no schedules): the first worker's start creates
    the 5-minute sweep, a restart leaves it as it is."""
    from temporalio.client import ScheduleActionStartWorkflow

    from journeys.replies import SWEEP_EVERY, ensure_reply_sweep_schedule, reply_sweep_schedule_id
    from tests.helpers import local_temporal

    async with await local_temporal(free_port()) as env:
        said = await ensure_reply_sweep_schedule(env.client, "journeys")
        handle = env.client.get_schedule_handle(reply_sweep_schedule_id("journeys"))
        first = await handle.describe()
        await ensure_reply_sweep_schedule(env.client, "journeys")  # another worker, or a restart
        again = await handle.describe()
    assert said == "replies whose answer never started are swept every 5 minutes (schedule journeys-replies:journeys)"
    assert again.info.last_updated_at == first.info.last_updated_at
    action = first.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow) and action.workflow == "ReplySweep"
    assert [interval.every for interval in first.schedule.spec.intervals] == [SWEEP_EVERY]


def test_a_broken_template_elsewhere_leaves_the_reply_rules_in_force(tmp_path, caplog):
    """The worker reads replies.yaml once: a typo in an unrelated template (which `journeys
    validate` reports) must not silently turn every confirmation off; a broken replies.yaml does
    fall back to the built-in unsubscribe words, and says why."""
    from activities.replies import reply_definitions
    from core.replies import DEFAULT_REPLIES

    folder = write_definitions(tmp_path / "definitions", {**TEMPLATES, "promo": "sms: [unclosed\n"}, [])
    (folder / "replies.yaml").write_text(replies_yaml(None))
    rules, templates = reply_definitions(folder)
    assert [rule.action for rule in rules.rules] == ["unsubscribe", "answer", "ignore"]
    assert sorted(templates) == ["reply_service", "unsubscribe_confirm"]
    (folder / "replies.yaml").write_text("rules: [{keywords: [人工], action: answer}]\n")
    assert reply_definitions(folder) == (DEFAULT_REPLIES, {})
    assert "an `answer` rule needs a template" in caplog.text
