"""A worker process for the raw floor workflows (bench/raw_journey.py), built like the journeys
worker (sandboxed, the same runner), for the production benchmark's comparisons.

    python -m bench.raw_worker ADDRESS TASK_QUEUE
"""

from __future__ import annotations

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from bench.raw_journey import MinimalReminder, RawJourney, raw_send
from journeys.worker import workflow_runner


async def main(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(16) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[RawJourney, MinimalReminder],
            activities=[raw_send],
            activity_executor=executor,
            workflow_runner=workflow_runner(),
        ):
            print("raw worker polling", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
