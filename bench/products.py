"""Benchmark: the catalogue's reads on PostgreSQL, over an order history of many repurchases.

    .venv/bin/python -m bench.products [--customers 20000] [--orders 200000] [--database URL]

Fills a fresh schema in the database itself (generate_series) with customers, a catalogue of 200
SKUs in 10 categories, and orders (created with one item, paid 5 minutes later) spread over the
last 400 days, each customer buying a few SKUs again and again. Then times what the catalogue adds:
the daily relearning of every SKU's cycle (`relearn_cycles`, reading every purchase), a `bought:`
segment's count, the router's per-start read of one order's facts (`order_facts`), and the effect
report's per-SKU predictions for the last 30 days. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bench.common import PG_URL, Schema, peak_rss_mb, timed
from core.audience import Segment
from core.products import Product
from core.rfm import DEFAULT_TABLE
from store import queries
from store.products import order_facts, prediction_errors, relearn_cycles, save_products
from store.segments import count_members

SKUS = 200


def fill(schema: Schema, customers: int, orders: int) -> None:
    with schema.store.transaction() as session:
        save_products(
            session,
            [
                Product(sku=f"sku-{n}", title=f"商品 {n}", category=f"cat-{n % 10}", price=99, cycle_days=30 + n % 60)
                for n in range(SKUS)
            ],
            datetime.now(UTC),
        )
    with schema.store.engine.begin() as connection:
        connection.execute(
            text("""
            INSERT INTO customers (customer_id, timezone, locale, tags, unsubscribed, blacklisted, traits, updated_at)
            SELECT 'c' || n, 'Asia/Shanghai', 'zh-CN', '[]', '[]', false, '{}', now()
            FROM generate_series(1, :customers) AS n
            """),
            {"customers": customers},
        )
        # Order n: customer n % customers, SKU from the customer's own three, paid (400 days) * n / orders ago.
        for kind, offset in (("order.created", "0 minutes"), ("order.paid", "5 minutes")):
            connection.execute(
                text(f"""
                INSERT INTO events (event_id, type, customer_id, order_id, occurred_at, data, received_at,
                                    dispatched_at, attempts)
                SELECT '{kind}-' || n, '{kind}', 'c' || (n % :customers), 'o' || n,
                       now() - interval '400 days' * (1 - n::float / :orders) + interval '{offset}',
                       CASE WHEN '{kind}' = 'order.created'
                            THEN json_build_object('items', json_build_array(json_build_object(
                                 'sku', 'sku-' || ((n % :customers) * 7 + (n / :customers) % 3) % {SKUS}, 'qty', 1)))
                            ELSE '{{}}'::json END,
                       now(), now(), 0
                FROM generate_series(1, :orders) AS n
                """),
                {"customers": customers, "orders": orders},
            )
        connection.execute(text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--database", default=PG_URL)
    args = parser.parse_args()
    with Schema(args.database) as schema:
        seconds, _ = timed(lambda: fill(schema, args.customers, args.orders))
        print(f"filled {args.customers:,} customers, {args.orders:,} orders, {SKUS} SKUs in {seconds:.1f} s")
        now = datetime.now(UTC)
        with schema.store.transaction() as session:
            seconds, learned = timed(lambda: relearn_cycles(session, now, 5))
        pairs = sum(cycle.pairs for cycle in learned)
        print(f"relearn_cycles: {len(learned)} SKUs from {pairs:,} repeat pairs in {seconds:.2f} s")
        bought = Segment.model_validate({"name": "b", "where": {"bought": {"category": "cat-3", "within": "180d"}}})
        with schema.store.transaction() as session:
            seconds, count = timed(lambda: count_members(session, bought, now, DEFAULT_TABLE))
        print(f"bought: {{category: cat-3, within: 180d}}: {count:,} members counted in {seconds:.2f} s")
        with schema.store.transaction() as session:
            events = queries.events_of_order(session, f"o{args.orders}")
            customer = events[0].customer_id
            rounds = 50
            seconds, facts = timed(lambda: [order_facts(session, customer, events, now) for _ in range(rounds)])
        print(f"order_facts (a start's read, {args.orders // args.customers} orders of the customer): "
              f"{seconds / rounds * 1000:.1f} ms each")  # fmt: skip
        with schema.store.transaction() as session:
            seconds, lines = timed(lambda: prediction_errors(session, now - timedelta(days=30), now))
        print(f"prediction_errors (last 30 days): {sum(line.repurchases for line in lines):,} repurchases of "
              f"{len(lines)} SKUs in {seconds:.2f} s")  # fmt: skip
        print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
