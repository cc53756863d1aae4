"""Send rate limits per channel, enforced by the Temporal server on the channel's task queue: with
SMS limited to 4 a second, 8 deliveries through the Twilio SDK spread over more than a second,
while email on its own unlimited queue goes out at once. Two workers on the SMS queue share the
one limit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.journey import JourneyActivities
from channels.sendgrid_email import SendGridEmailChannel
from channels.twilio_sms import TwilioSmsChannel
from core.config import Settings
from core.temporal import binary
from journeys.worker import build_workers, workflow_runner
from tests.driver_workflows import DeliverAll
from tests.fake_provider import AUTH_TOKEN, FakeProvider
from tests.helpers import DEV_SERVER_STARTUP, customer, free_port
from tests.test_policy import request, save

QUEUE = "rate-test"


def spread(times: list[float]) -> float:
    return max(times) - min(times)


async def test_each_channel_queue_keeps_its_rate_limit(sqlite_store):
    with FakeProvider() as provider:
        channels = {
            "sms": TwilioSmsChannel("AC" + "0" * 32, AUTH_TOKEN, from_number="+15005550006", api_base_url=provider.url),
            "email": SendGridEmailChannel("SG.key", "shop@example.com", host=provider.url),
        }
        activities = JourneyActivities(sqlite_store, channels, "小店", default_region="CN")
        deliveries = []
        for n in range(8):
            for channel in ("sms", "email"):
                person = customer(f"{channel}{n}", phone=f"+86138000000{n:02d}" if channel == "sms" else None)
                save(sqlite_store, person)
                ready = ActivityEnvironment().run(
                    activities.decide_message, request(customer_id=person.customer_id, deliver=False)
                )
                assert (ready.status, ready.channel) == ("ready", channel)
                deliveries.append([channel, ready.message_id])

        port = free_port()
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"),
            dev_server_startup_timeout=DEV_SERVER_STARTUP,
            port=port,
            data_converter=pydantic_data_converter,
            dev_server_extra_args=["--log-level", "error"],
        ) as env:
            # A second worker process: its own connection to the server.
            other = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
            with ThreadPoolExecutor(16) as executor:
                settings = Settings(task_queue=QUEUE, rate_limits={"sms": 4})
                workers = [
                    *build_workers(env.client, settings, sqlite_store, executor, channels),
                    *build_workers(other, settings, sqlite_store, executor, channels),
                    Worker(
                        env.client,
                        task_queue=f"{QUEUE}-driver",
                        workflows=[DeliverAll],
                        workflow_runner=workflow_runner(),
                    ),
                ]
                for worker in workers:
                    await worker.__aenter__()
                try:
                    started = time.monotonic()
                    statuses = await env.client.execute_workflow(
                        DeliverAll.run, args=[QUEUE, deliveries], id="deliver-all", task_queue=f"{QUEUE}-driver"
                    )
                    took = time.monotonic() - started
                finally:
                    for worker in workers:
                        await worker.__aexit__(None, None, None)
        assert statuses == ["sent"] * 16
        sms_times = [m["received"] for m in provider.sms]
        mail_times = [m["received"] for m in provider.mail_log]
        assert len(sms_times) == 8 and len(mail_times) == 8
        # 8 at 4/s. The server hands out tasks in one-second ticks per partition, so the first
        # second can carry a burst (up to 7 seen); over the run the limit holds: 8 never all at once.
        assert spread(sms_times) >= 0.9, sorted(t - min(sms_times) for t in sms_times)
        # The email queue has no limit of its own (how fast it went depends on the machine's load,
        # so it is not asserted): only the SMS queues carry the server-side limit.
        limits = {
            worker.config()["task_queue"]: worker.config().get("max_task_queue_activities_per_second")
            for worker in workers
        }
        assert limits[f"{QUEUE}-sms"] == 4 and limits[f"{QUEUE}-email"] is None
        print(f"sms spread {spread(sms_times):.2f} s, email spread {spread(mail_times):.2f} s, workflow {took:.2f} s")
