"""Where a batched broadcast's time goes: its pages run in this process, one after another, on
PostgreSQL with the outbox, without Temporal, under cProfile.

    .venv/bin/python -m bench.broadcast_profile [--members 10000] [--page 500] [--top 25]

Fills a schema with `--members` customers of one segment (a mainland phone each, where it is
daytime), then calls the batched path's two activities as the Broadcast workflow does, a page at
a time (activities/broadcast_pages.py: the member page, then `send_broadcast_page`: decide,
write, hand to the outbox), and prints members a second and the profile's top functions by
cumulative time. It is one thread: the deployed worker runs four pages at once, so its database
work overlaps the other page's Python (bench.broadcast measures that, on the deployed processes).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from temporalio.testing import ActivityEnvironment

from activities.broadcast import broadcast_input
from activities.broadcast_pages import BroadcastPageActivities
from activities.journey import JourneyActivities
from activities.payloads import MemberPage, PageRequest, SendPage
from bench.common import Schema
from channels import build_channels
from definitions.loader import PACKAGE_DIR, load_definitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25, help="functions of the profile to print")
    args = parser.parse_args()
    now = datetime.now(UTC)
    directory = Path(tempfile.mkdtemp(prefix="journeys-bench-profile-"))
    folder = directory / "definitions"
    shutil.copytree(PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "segments" / "everyone.yaml").write_text("name: everyone\nwhere: {tag: bench}\n")
    (folder / "broadcasts" / "bench_care.yaml").write_text(
        "name: bench_care\nsegment: everyone\nsend: {channel: sms, template: holiday_care}\n"
        f'schedule: {{at: "{(now - timedelta(minutes=1)).isoformat()}"}}\n'
    )
    definitions = load_definitions(folder)
    broadcast, snapshot = definitions.broadcasts["bench_care"]
    with Schema() as schema:
        fill(schema, args.members)
        run = broadcast_input("bench_care", broadcast, snapshot, definitions.segments["everyone"], definitions.rfm, now)
        sends = JourneyActivities(
            schema.store, build_channels(directory / "outbox.jsonl"), "shop", default_region="CN",
            policy=definitions.policy,
        )  # fmt: skip
        pages = BroadcastPageActivities(schema.store, sends)
        env = ActivityEnvironment()
        zones = list(env.run(pages.broadcast_zones, PageRequest(segment=run.segment, rfm_table=run.rfm_table, at=now)))
        profile = cProfile.Profile()
        after, done, began = None, 0, time.perf_counter()
        while True:
            ids = env.run(
                pages.broadcast_member_page,
                MemberPage(
                    segment=run.segment, rfm_table=run.rfm_table, members_at=now, zones=zones, after=after,
                    limit=args.page, journey="bench_care", run_id="bench", step="send", due=now,
                ),
            )  # fmt: skip
            if not ids:
                break
            page = SendPage(snapshot=run.snapshot, broadcast="bench_care", customer_ids=ids, run_id="bench", at=now,
                            due=now, entered_at=now, rfm_table=run.rfm_table)  # fmt: skip
            profile.enable()
            env.run(pages.send_broadcast_page, page)
            profile.disable()
            done, after = done + len(ids), ids[-1]
            if len(ids) < args.page:
                break
        seconds = time.perf_counter() - began
    shutil.rmtree(directory, ignore_errors=True)
    print(f"{done:,} members decided and handed to the outbox in {seconds:.2f} s: {done / seconds:,.0f} a second "
          f"(one thread, pages of {args.page})")  # fmt: skip
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


def fill(schema: Schema, members: int) -> None:
    """`members` customers tagged `bench`, each with a mainland mobile number, in Shanghai."""
    with schema.store.transaction() as session:
        session.execute(
            text("""
            INSERT INTO customers (customer_id, name, phone, timezone, locale, tags, unsubscribed, blacklisted,
                                   traits, updated_at)
            SELECT 'b' || lpad(n::text, 7, '0'), '客户' || n, '+86139' || lpad(n::text, 8, '0'), 'Asia/Shanghai',
                   'zh-CN', '["bench"]'::json, '[]'::json, false, '{}'::json, now()
            FROM generate_series(1, :members) AS n
            """),
            {"members": members},
        )


if __name__ == "__main__":
    main()
