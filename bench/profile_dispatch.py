"""Profile: where the API process's CPU goes while it dispatches, by function.

    .venv/bin/python -m bench.profile_dispatch [--starts 2000] [--top 30]

The engine as deployed (`temporal server start-dev`, a worker, PostgreSQL: a schema of its own,
dropped afterwards), with `journeys api` run under yappi (CPU clock, every thread: the dispatcher
reads and writes the store in threads of its own). As `bench.production`'s dispatch figure does,
it pauses the worker (SIGSTOP), posts `--starts`/2 order.created (two instances each) at once,
and waits until every event is dispatched; then prints the API's top functions by their own time
and the project's functions by their time including what they call, as shares of the API's CPU
during the burst (intake included: the events are posted to it). yappi costs about as much again
as it measures: the shares are the point.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Schema
from bench.production import Shop, post_all
from bench.profile_worker import ROOT, profiled, report
from tests.stack import Stack, pending, wait_until


def run_profiled_api(out: Path) -> None:
    """`journeys api` under yappi; SIGUSR1 clears what it has measured, SIGTERM stops the server
    and writes the profile to `out` (pstat) and its summary to `out` + .txt."""
    import logging

    import yappi

    from core.config import Settings
    from triggers.serve import api_server

    server = api_server(Settings())
    signal.signal(signal.SIGUSR1, lambda *_: yappi.clear_stats())
    # uvicorn handles SIGTERM itself, then raises it again with the handler it found: this one, so
    # that the process lives on to write the profile.
    signal.signal(signal.SIGTERM, lambda *_: None)
    logging.basicConfig(level=logging.INFO)
    profiled(out, "API", server.run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=2_000, help="instances to start (two per order.created)")
    parser.add_argument("--top", type=int, default=30, help="functions listed in each table")
    args = parser.parse_args()
    schema = Schema()
    directory = Path(tempfile.mkdtemp(prefix="journeys-profile-"))
    out = directory / "api.pstat"
    stack = Stack(directory, schema.url, workers=1)
    shop = Shop()
    api = None
    try:
        stack.start_server()
        stack.start_worker(0)
        with stack.log("api").open("ab") as sink:
            api = subprocess.Popen(
                [sys.executable, "-m", "bench.profile_dispatch", "--api-out", str(out)],
                cwd=ROOT, env={**stack.env, "PROFILE_TOP": str(args.top)}, stdout=sink, stderr=sink,
            )  # fmt: skip

        def ready() -> bool:
            try:
                return httpx.get(f"{stack.api}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 120, "the profiled API")
        stack.post(shop.people())
        post_all(stack.api, shop.orders("warm-", 100))  # warm up connections and code paths
        wait_until(lambda: pending(schema.store) == 0, 300, "the customers and the warm-up")
        worker = stack.processes["worker0"].pid
        os.kill(worker, signal.SIGSTOP)  # the start path alone, as bench.production measures it
        try:
            api.send_signal(signal.SIGUSR1)
            time.sleep(1)
            began = time.perf_counter()
            post_all(stack.api, shop.orders("p-", args.starts // 2))
            wait_until(lambda: pending(schema.store) == 0, 1800, "dispatch", interval=0.05)
            seconds = time.perf_counter() - began
        finally:
            os.kill(worker, signal.SIGCONT)
        print(f"{args.starts // 2} order.created ({args.starts} starts) dispatched in {seconds:.1f} s, API profiled")
        report(api, out)
        api = None
    finally:
        if api is not None:
            api.kill()
        stack.stop()
        schema.drop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--api-out":
        run_profiled_api(Path(sys.argv[2]))
    else:
        main()
