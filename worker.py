"""Start a Temporal worker that runs journeys: the interpreter workflow and its activities.

    journeys worker          # or: python worker.py

Temporal address, namespace, TLS certificate or API key, and the database come from the
environment (see journeys/config.py); Ctrl-C or SIGTERM lets running activities finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.journey import JourneyActivities
from channels import build_channels, describe_channels
from journeys.config import Settings
from journeys.temporal import connect, ensure_search_attributes
from store.db import Store
from workflows.journey import JourneyWorkflow
from workflows.models import CHANNELS, channel_queue

log = logging.getLogger("journeys.worker")

ACTIVITY_THREADS = 16


def channel_workers(
    client: Client,
    task_queue: str,
    activities: JourneyActivities,
    executor: ThreadPoolExecutor,
    rate_limits: dict[str, float] | None = None,
    **options,
) -> list[Worker]:
    """One worker per channel, delivering on the channel's own task queue. A rate limit there is
    enforced by the Temporal server across all workers of the queue, so adding workers never
    exceeds a provider's limit."""
    return [
        Worker(
            client,
            task_queue=channel_queue(task_queue, channel),
            activities=[activities.deliver_message],
            activity_executor=executor,
            max_task_queue_activities_per_second=(rate_limits or {}).get(channel) or None,
            **options,
        )
        for channel in CHANNELS
    ]


def build_workers(client: Client, settings: Settings, store: Store, executor: ThreadPoolExecutor) -> list[Worker]:
    """The journey worker (workflows, policy decisions) and the channel delivery workers."""
    channels = build_channels(settings.outbox_path, settings)
    log.info("channels: %s", describe_channels(channels))
    log.info("send rate limits per second: %s", describe_rate_limits(settings.rate_limits))
    activities = JourneyActivities(
        store, channels, settings.shop_name, default_region=settings.default_region, opt_out=settings.sms_opt_out
    )
    options = {"max_concurrent_activities": ACTIVITY_THREADS, "graceful_shutdown_timeout": timedelta(seconds=30)}
    journeys = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[JourneyWorkflow],
        activities=[activities.load_customer, activities.send_message],
        activity_executor=executor,
        **options,
    )
    return [
        journeys,
        *channel_workers(client, settings.task_queue, activities, executor, settings.rate_limits, **options),
    ]


def describe_rate_limits(limits: dict[str, float]) -> str:
    return ", ".join(f"{channel}: {limits.get(channel) or 'unlimited'}" for channel in CHANNELS)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when none is given)."""
    store = Store(settings.database_url).migrate()
    client = await connect(settings)
    await ensure_search_attributes(client)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(ACTIVITY_THREADS * 2) as executor:
        workers = build_workers(client, settings, store, executor)
        log.info(
            "worker polling %r on %s (namespace %s)",
            settings.task_queue,
            settings.temporal_address,
            settings.temporal_namespace,
        )
        async with contextlib.AsyncExitStack() as running:
            for worker in workers:
                await running.enter_async_context(worker)
            await stop.wait()
            log.info("stopping: letting running activities finish")
    store.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(Settings.from_env()))
