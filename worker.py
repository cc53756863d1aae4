"""Start a Temporal worker that runs journeys: the interpreter workflow and its activities.

    journeys worker          # or: python worker.py

Temporal address, namespace, TLS certificate or API key, and the database come from the
environment (see journeys/config.py); Ctrl-C or SIGTERM lets running activities finish first.
"""

from __future__ import annotations

import asyncio
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

log = logging.getLogger("journeys.worker")

ACTIVITY_THREADS = 16


def build_worker(client: Client, settings: Settings, store: Store, executor: ThreadPoolExecutor) -> Worker:
    channels = build_channels(settings.outbox_path, settings)
    log.info("channels: %s", describe_channels(channels))
    activities = JourneyActivities(
        store, channels, settings.shop_name, default_region=settings.default_region, opt_out=settings.sms_opt_out
    )
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[JourneyWorkflow],
        activities=[activities.load_customer, activities.send_message],
        activity_executor=executor,
        max_concurrent_activities=ACTIVITY_THREADS,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )


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
    with ThreadPoolExecutor(ACTIVITY_THREADS) as executor:
        worker = build_worker(client, settings, store, executor)
        log.info(
            "worker polling %r on %s (namespace %s)",
            settings.task_queue,
            settings.temporal_address,
            settings.temporal_namespace,
        )
        async with worker:
            await stop.wait()
            log.info("stopping: letting running activities finish")
    store.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(Settings.from_env()))
