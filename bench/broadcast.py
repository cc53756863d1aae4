"""Benchmark: a broadcast to a large segment on the deployed processes and PostgreSQL.

    .venv/bin/python -m bench.broadcast [--recipients 100000] [--rate 200]

Fills a schema with `--recipients` customers (all in the segment, where it is midday, with a
phone), starts a broadcast whose moment has come, with the SMS rate limit at `--rate` per
second, and samples every 10 s: messages sent, the send rate over the last interval, instances
waiting, and the worker's RSS. Prints the steady send rate against the rate limit (the ceiling
a broadcast should reach) and the RSS range (flat: instances wait on the server, not in the
worker). A raw Temporal figure is not meaningful here: the limit is the provider's contract.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from bench.common import Schema
from bench.production import rss_mb
from definitions.loader import PACKAGE_DIR
from store import queries
from tests.helpers import daytime_zone
from tests.stack import JOURNEYS, Stack


def definitions(directory: Path, now: datetime) -> Path:
    folder = directory / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "everyone.yaml").write_text("name: everyone\nwhere: {tag: bench}\n")
    (folder / "broadcasts" / "bench_care.yaml").write_text(
        "name: bench_care\nsegment: everyone\nsend: {channel: sms, template: holiday_care}\n"
        f'schedule: {{at: "{(now - timedelta(minutes=1)).isoformat()}"}}\n'
    )
    return folder


def fill(schema: Schema, recipients: int, zone: str) -> None:
    with schema.store.transaction() as session:
        session.execute(
            text("""
            INSERT INTO customers (customer_id, name, phone, timezone, locale, tags, unsubscribed, blacklisted,
                                   traits, updated_at)
            SELECT 'b' || lpad(n::text, 7, '0'), 'customer ' || n, '+86139' || lpad(n::text, 8, '0'), :zone,
                   'zh-CN', '["bench"]'::json, '[]'::json, false, '{}'::json, now()
            FROM generate_series(1, :recipients) AS n
            """),
            {"recipients": recipients, "zone": zone},
        )


def sent_count(schema: Schema) -> int:
    with schema.store.transaction() as session:
        return queries.message_outcomes(session, "bench_care").get("sent", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200, help="the SMS rate limit, sends a second")
    parser.add_argument("--minutes", type=float, default=30, help="stop sampling after this long")
    args = parser.parse_args()
    now = datetime.now(UTC)
    schema = Schema()
    directory = Path(tempfile.mkdtemp(prefix="journeys-bench-broadcast-"))
    env = {"JOURNEYS_DEFINITIONS": str(definitions(directory, now)), "JOURNEYS_RATE_LIMITS": f"sms={args.rate:g}"}
    stack = Stack(directory, schema.url, workers=1, extra_env=env)
    try:
        fill(schema, args.recipients, daytime_zone(now))
        stack.start()
        worker = stack.processes["worker0"].pid
        started = subprocess.run(
            [JOURNEYS, "broadcast", "start", "bench_care"], env=stack.env, capture_output=True, text=True, check=True
        )
        print(started.stdout.strip(), flush=True)
        began = time.monotonic()
        samples: list[tuple[float, int, float]] = []
        last_sent, last_at = 0, began
        while time.monotonic() - began < args.minutes * 60:
            time.sleep(10)
            sent, at = sent_count(schema), time.monotonic()
            rate = (sent - last_sent) / (at - last_at)
            rss = rss_mb(worker)
            samples.append((rate, sent, rss))
            print(f"{at - began:6.0f} s  sent {sent:>7,}  {rate:6.1f}/s  worker RSS {rss:5.0f} MB", flush=True)
            last_sent, last_at = sent, at
            if sent >= args.recipients:
                break
        steady = [rate for rate, sent, _ in samples[1:-1] if 0 < sent < args.recipients] or [r for r, _, _ in samples]
        rss_values = [rss for _, _, rss in samples]
        mean = sum(steady) / len(steady)
        print(
            f"broadcast of {args.recipients:,}: {samples[-1][1]:,} sent in {time.monotonic() - began:.0f} s; "
            f"steady rate {mean:.1f}/s against the limit {args.rate:g}/s ({mean / args.rate:.2f}x); "
            f"worker RSS {min(rss_values):.0f} to {max(rss_values):.0f} MB",
            flush=True,
        )
    finally:
        stack.stop()
        schema.drop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
