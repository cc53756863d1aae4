"""Benchmark: a dry run (docs/dry-runs.md) of a week of a shop's events, against raw Temporal.

    .venv/bin/python -m bench.dry_run [--customers 1000] [--days 7] [--seed 7] [--no-raw]

Writes a deterministic shop month (bench/simulate_month.py's: orders created around the clock,
most paid, some cancelled or left to close, shipments, deliveries, reviews, refunds) into a fresh
SQLite store so that it ends now, queues a dry run of a draft of the payment reminder (reminding
after two hours, not fifteen minutes) over the last `--days` days, and runs it as the API's
process runs it (`journeys.dry_run.run_dry_run`: what runs now and the draft, one simulation each,
the customers' earlier orders as history). Then plays the window's dispatches against a bare
workflow (one timer and one no-op activity per instance) on a fresh time-skipping server, twice,
as the dry run plays two simulations. Prints both and their ratio; the ratio is the figure to
watch on a given machine, with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import peak_rss_mb
from bench.simulate_month import UNTIL, raw_temporal, shop_month
from core.config import Settings
from definitions.loader import PACKAGE_DIR, load_definitions
from journeys.dry_run import run_dry_run
from store import dry_runs, queries
from store.db import Store

REMINDER = (PACKAGE_DIR / "payment_reminder.yaml").read_text(encoding="utf-8")
LATER = {"payment_reminder.yaml": REMINDER.replace("  - wait: 15m\n", "  - wait: 2h\n")}


def _load() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-raw", action="store_true", help="skip raw Temporal")
    args = parser.parse_args()
    assert LATER["payment_reminder.yaml"] != REMINDER, "the shipped payment reminder no longer waits 15m"
    people, month = shop_month(args.customers, args.seed)
    now = datetime.now(UTC).replace(microsecond=0)
    shift = now - UNTIL  # the month ends now
    shifted = [event.model_copy(update={"occurred_at": event.occurred_at + shift}) for event in month]
    window_start = now - timedelta(days=args.days)
    in_window = [event for event in shifted if window_start <= event.occurred_at <= now]
    with tempfile.TemporaryDirectory(prefix="bench-dry-run-") as scratch:
        store = Store(f"sqlite:///{Path(scratch) / 'shop.db'}").migrate()
        with store.transaction() as session:
            for person in people:
                queries.upsert_customer(session, person, now - timedelta(days=40), "CN")
            queries.store_events(session, [e for e in shifted if e.occurred_at <= now], now)
            job_id = dry_runs.queue(session, LATER, args.days, "bench", None, now).id
        print(
            f"shop: {len(people)} customers, {len(month)} events in the month, {len(in_window)} in the last "
            f"{args.days} days; cores {os.cpu_count()}, load average before: {_load()}"
        )
        began = time.perf_counter()
        row = await run_dry_run(store, job_id, PACKAGE_DIR, settings=Settings.embedded(data_dir=Path(scratch)), now=now)
        seconds = time.perf_counter() - began
        store.dispose()
    assert row.state == "done", row.message
    result = row.result
    diff = result["diff"]["payment_reminder"]
    print(
        f"dry run: {seconds:.1f} s wall for {result['events']} events of {result['customers']} customers "
        f"({2 * result['events'] / seconds:.0f} events/s over its two simulations); payment_reminder sent "
        f"{result['current']['payment_reminder']['sent']} now, {diff['sent']:+d} with the draft"
    )
    if not args.no_raw:
        definitions = load_definitions(PACKAGE_DIR)
        back = [event.model_copy(update={"occurred_at": event.occurred_at - shift}) for event in in_window]
        customers = {event.customer_id for event in back}
        raw = 0.0
        for _ in range(2):  # the dry run plays two simulations of the window
            taken, starts = await raw_temporal(definitions, [p for p in people if p.customer_id in customers], back)
            raw += taken
        print(f"raw Temporal, the window's dispatches twice: {raw:.1f} s wall ({starts} starts each)")
        print(f"ratio dry run/raw: {seconds / raw:.2f}")
    print(f"load average after: {_load()}; peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
