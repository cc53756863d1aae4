"""Profile: where the worker's CPU goes for immediate sends, by function.

    .venv/bin/python -m bench.profile_worker [--sends 400] [--top 30]

The engine as deployed (`temporal server start-dev`, `journeys api`, PostgreSQL: a schema of its
own, dropped afterwards), with the worker run under yappi (CPU clock, every thread: the workflow
activations and the activities run in threads of their own). After a warm-up it posts `--sends`
order.shipped at once (an immediate SMS each) and prints the worker's top functions by their own
time and the project's functions by their time including what they call, as shares of the
worker's CPU during the burst. yappi costs about as much again as it measures: the shares are the
point, not the milliseconds (`bench.production` gives those, without a profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Schema
from bench.production import Shop, post_all, settle
from tests.stack import Stack, pending, sent, wait_until

ROOT = Path(__file__).resolve().parent.parent


def run_profiled_worker(out: Path) -> None:
    """`journeys worker` under yappi; SIGUSR1 clears what it has measured, SIGTERM stops the worker
    and writes the profile to `out` (pstat) and its summary to `out` + .txt."""
    import logging

    import yappi

    from core.config import Settings
    from journeys.worker import run_worker

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, yappi.clear_stats)
        await run_worker(Settings(), stop)

    logging.basicConfig(level=logging.INFO)
    profiled(out, "worker", lambda: asyncio.run(main()))


def profiled(out: Path, what: str, run) -> None:
    """`run()` under yappi (CPU clock, every thread); then its profile to `out` (pstat) and its
    summary, naming `what` was profiled, to `out` + .txt."""
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)
    run()
    yappi.stop()
    stats = yappi.get_func_stats()
    stats.save(str(out), type="pstat")
    Path(f"{out}.txt").write_text(summary(list(stats), int(os.environ.get("PROFILE_TOP", "30")), what))


def report(profiled: subprocess.Popen, out: Path) -> None:
    """Stop the profiled process (SIGTERM: it writes its profile) and print the profile's summary."""
    profiled.send_signal(signal.SIGTERM)
    profiled.wait(120)
    print(Path(f"{out}.txt").read_text(), end="", flush=True)
    print(f"the whole profile (pstat, for snakeviz or pstats): {out}", flush=True)


def summary(stats: list, top: int, what: str = "worker") -> str:
    total = sum(s.tsub for s in stats) or 1.0
    lines = [f"{what} CPU during the burst, under the profiler: {total:.2f} s", "own time:"]
    for s in sorted(stats, key=lambda s: -s.tsub)[:top]:
        lines.append(f"  {100 * s.tsub / total:5.1f}%  {s.ncall:8d} calls  {s.name}  ({where(s.module)}:{s.lineno})")
    lines.append("the project's functions, including what they call:")
    ours = [s for s in stats if s.module.startswith(str(ROOT)) and "/.venv/" not in s.module]
    for s in sorted(ours, key=lambda s: -s.ttot)[:top]:
        lines.append(f"  {100 * s.ttot / total:5.1f}%  {s.ncall:8d} calls  {s.name}  ({where(s.module)}:{s.lineno})")
    return "\n".join(lines) + "\n"


def where(module: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", f"{ROOT}/"):
        if marker in module:
            return module.split(marker, 1)[1]
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=400, help="order.shipped posted at once")
    parser.add_argument("--top", type=int, default=30, help="functions listed in each table")
    args = parser.parse_args()
    schema = Schema()
    directory = Path(tempfile.mkdtemp(prefix="journeys-profile-"))
    out = directory / "worker.pstat"
    stack = Stack(directory, schema.url, workers=0, extra_env={"JOURNEYS_RATE_LIMITS": "sms=0,email=0,webhook=0"})
    shop = Shop()
    worker = None
    try:
        stack.start()
        log = directory / "worker.log"
        with log.open("ab") as sink:
            worker = subprocess.Popen(
                [sys.executable, "-m", "bench.profile_worker", "--worker-out", str(out)],
                cwd=ROOT, env={**stack.env, "PROFILE_TOP": str(args.top)}, stdout=sink, stderr=sink,
            )  # fmt: skip
        wait_until(lambda: "worker polling" in log.read_text(errors="replace"), 120, "the profiled worker")
        stack.post(shop.people())
        wait_until(lambda: pending(schema.store) == 0, 300, "the customers")
        warm = shop.orders("warm-", 50, "order.shipped", carrier="顺丰", tracking_no="SF")
        post_all(stack.api, warm)
        wait_until(lambda: sent(schema.store, "shipped_notice") >= len(warm), 600, "the warm-up's sends")
        settle([worker.pid])
        os.kill(worker.pid, signal.SIGUSR1)  # the burst alone
        time.sleep(1)
        began = time.perf_counter()
        post_all(stack.api, shop.orders("p-", args.sends, "order.shipped", carrier="顺丰", tracking_no="SF"))
        wait_until(lambda: sent(schema.store, "shipped_notice") >= len(warm) + args.sends, 1800, "the burst's sends")
        seconds = time.perf_counter() - began
        print(f"{args.sends} immediate sends in {seconds:.1f} s with the worker profiled", flush=True)
        report(worker, out)
        worker = None
    finally:
        if worker is not None:
            worker.kill()
        stack.stop()
        schema.drop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker-out":
        run_profiled_worker(Path(sys.argv[2]))
    else:
        main()
