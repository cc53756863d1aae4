"""Benchmark: counting and paging segments of 1,000,000 customers on PostgreSQL.

    .venv/bin/python -m bench.segments [--customers 1000000] [--orders 400000] [--database URL]

Fills a fresh schema with customers (traits, tags, contacts) and orders (created and paid
events over the last 400 days, some refunded) in the database itself (generate_series), then
times, for segments of each kind, `count_members` (one SQL count, RFM computed by the
database) against the raw floor `SELECT count(*) FROM customers` measured in the same run, and
a walk through one segment's members page by page. Prints the process's peak RSS before and
after: counting never loads customers into Python. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sqlalchemy import text

from bench.common import PG_URL, Schema, peak_rss_mb, timed
from core.audience import Segment
from core.rfm import DEFAULT_TABLE
from store.db import Store
from store.segments import count_members, iterate_members

SEGMENTS = {
    "trait": {"trait": "member_level", "is": "gold"},
    "tag_and_sms": {"all": [{"tag": "vip"}, {"subscribed": "sms"}]},
    "rfm_tier": {"rfm": "tier", "in": ["champion", "loyal"]},
    "lapsing_valuable": {"all": [{"rfm": "m", "at_least": 3}, {"no_purchase_for_days": 90}, {"subscribed": "sms"}]},
    "recent_orders": {"orders_in_last_days": 30, "at_least": 1},
}


def fill(store: Store, customers: int, orders: int) -> None:
    """Fill the store's (migrated, empty) schema."""
    with store.engine.begin() as connection:
        connection.execute(
            text("""
            INSERT INTO customers (customer_id, name, phone, email, timezone, locale, tags, unsubscribed,
                                   blacklisted, traits, updated_at)
            SELECT 'c' || n, 'customer ' || n,
                   CASE WHEN n % 10 < 8 THEN '+86138' || lpad(n::text, 8, '0') END,
                   CASE WHEN n % 3 = 0 THEN 'c' || n || '@example.com' END,
                   'Asia/Shanghai', 'zh-CN',
                   CASE WHEN n % 20 = 0 THEN '["vip"]' ELSE '[]' END::json,
                   CASE WHEN n % 50 = 0 THEN '["sms"]' ELSE '[]' END::json,
                   n % 1000 = 0,
                   json_build_object('member_level', (ARRAY['gold', 'silver', 'bronze'])[1 + n % 3],
                                     'points', n % 5000),
                   now()
            FROM generate_series(1, :customers) AS n
            """),
            {"customers": customers},
        )
        for kind, offset in (("order.created", "0 minutes"), ("order.paid", "5 minutes")):
            connection.execute(
                text(f"""
                INSERT INTO events (event_id, type, customer_id, order_id, occurred_at, data, received_at,
                                    dispatched_at, attempts)
                SELECT '{kind}-' || n, '{kind}', 'c' || (1 + (n::bigint * 7919) % :customers), 'o' || n,
                       now() - ((n % 400) || ' days')::interval + interval '{offset}',
                       CASE WHEN '{kind}' = 'order.created'
                            THEN json_build_object('amount', 50 + (n::bigint * 37) % 3000)
                            ELSE '{{}}'::json END,
                       now(), now(), 1
                FROM generate_series(1, :orders) AS n
                WHERE '{kind}' = 'order.created' OR n % 10 <> 0
                """),
                {"customers": customers, "orders": orders},
            )
        connection.execute(text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=400_000)
    parser.add_argument("--database", default=PG_URL)
    args = parser.parse_args()
    now = datetime.now(UTC)
    with Schema(args.database, "bench_segments") as schema:
        filled, _ = timed(lambda: fill(schema.store, args.customers, args.orders))
        print(f"filled {args.customers:,} customers, {args.orders:,} orders in {filled:.1f} s")
        count_and_walk(schema.store, now)


def count_and_walk(store: Store, now: datetime) -> None:
    rss_before = peak_rss_mb()
    with store.transaction() as session:
        floor, total = timed(lambda: session.execute(text("SELECT count(*) FROM customers")).scalar_one())
    print(f"raw floor: SELECT count(*) FROM customers = {total:,} in {floor:.3f} s")
    for name, where in SEGMENTS.items():
        segment = Segment.model_validate({"name": name, "where": where})
        with store.transaction() as session:
            seconds, count = timed(lambda s=segment, session=session: count_members(session, s, now, DEFAULT_TABLE))
        print(f"count {name:<17} {count:>9,} in {seconds:7.3f} s  ({seconds / floor:6.1f}x the raw count)")
    segment = Segment.model_validate({"name": "walk", "where": SEGMENTS["rfm_tier"]})
    seconds, walked = timed(
        lambda: sum(1 for _ in iterate_members(store.transaction, segment, now, DEFAULT_TABLE, page=5000))
    )
    print(f"walk rfm_tier page by page (5,000 a page): {walked:,} members in {seconds:.1f} s")
    print(f"peak RSS {rss_before:.0f} MB before counting, {peak_rss_mb():.0f} MB after")


if __name__ == "__main__":
    main()
