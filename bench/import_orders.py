"""Benchmark: importing a 1,000,000-row Taobao order report on PostgreSQL (`journeys import orders`).

    .venv/bin/python -m bench.import_orders [--rows 1000000] [--database URL] [--file F] [--profile]

Generates a report shaped like the real one (tests/data/order_exports.py: UTF-8 with a BOM, the
full column set, duplicates and bad rows) unless `--file` names one, then imports it into a fresh
schema through `run_import`, the command's own path, and prints rows/s, the total time, the
orders and events written, and the machine (cores, CPU, load average before and after: the cores
may be shared). With `--profile`, the import runs under cProfile and the functions that took the
most time are printed (where the time goes). The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import PG_URL, Schema, peak_rss_mb
from core.order_exports import FORMATS, ExportReader
from tests.data.order_exports import SHANGHAI, Expected, taobao_rows, write_csv
from triggers.imports import run_import


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database", default=PG_URL)
    parser.add_argument("--file", type=Path, help="An export to import instead of a generated one")
    parser.add_argument("--profile", action="store_true", help="Where the time goes (cProfile)")
    options = parser.parse_args()

    print(f"machine: {machine()}; {load()}")
    with tempfile.TemporaryDirectory() as folder:
        path = options.file
        if path is None:
            began = time.perf_counter()
            rows = taobao_rows(options.rows, Expected(), now=datetime.now(SHANGHAI), buyers=options.rows // 3)
            path = write_csv(Path(folder) / "orders.csv", rows)
            print(
                f"generated {options.rows:,} rows ({path.stat().st_size / 1e6:,.0f} MB) "
                f"in {time.perf_counter() - began:.0f} s"
            )
        with Schema(options.database, prefix="journeys_bench_import") as schema:
            reader = ExportReader(path, FORMATS["taobao"], timezone="Asia/Shanghai", default_region="CN")
            profiler = cProfile.Profile() if options.profile else None
            began = time.perf_counter()
            if profiler:
                profiler.enable()
            state = run_import(schema.store, reader)
            if profiler:
                profiler.disable()
            seconds = time.perf_counter() - began
    c = state.counts
    print(
        f"imported {c.rows:,} rows in {seconds:.1f} s: {c.rows / seconds:,.0f} rows/s; {c.orders:,} orders, "
        f"{c.events_new:,} events, {c.customers_new:,} customers, {c.skipped:,} rows skipped, "
        f"{c.duplicates:,} duplicates"
    )
    print(f"target: 1,000,000 rows under 300 s on PostgreSQL; peak memory {peak_rss_mb():,.0f} MB; {load()}")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
