"""Benchmark: the effect report over 10,000,000 message rows on PostgreSQL.

    .venv/bin/python -m bench.effect [--messages 10000000] [--days 60] [--database URL]

Fills a fresh schema in the database itself (generate_series): instances of seven journeys (two
messages each on average, one journey with a 10% holdout), their messages over `--days` days in
every status, an order.created for each instance's order and an order.paid for 40% of them within
four days. Then times, against the raw floor `SELECT count(*) FROM messages` over the same 30
days measured in the same run: the first report, which records the journeys' goals and computes
every run's conversion in the `reached` read model (what an upgrade or a changed goal costs once);
then the whole report (every journey, conversions, revenue, uplift, result indicators), the
report by day and for one journey, which read the read model as it is kept. Prints the process's peak RSS:
nothing is loaded into Python row by row. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bench.common import PG_URL, Schema, peak_rss_mb, timed
from core.vocabulary import SENT_STATUSES
from definitions.loader import PACKAGE_DIR, load_definitions
from store.db import Store
from store.effect import Period
from views.effect import Prices, effect_report

JOURNEYS = [
    "payment_reminder", "pre_close_reminder", "shipped_notice", "delivered_care", "review_request", "revisit_28d",
    "spring_festival_care",
]  # fmt: skip
STATUSES = ["sent", "delivered", "delivered", "delivered", "opened", "clicked", "undelivered", "skipped", "failed"]


def fill(store: Store, messages: int, days: int, now: datetime) -> None:
    """Fill the store's (migrated, empty) schema."""
    instances = messages // 2
    journeys = "ARRAY[" + ", ".join(f"'{j}'" for j in JOURNEYS) + "]"
    statuses = "ARRAY[" + ", ".join(f"'{s}'" for s in STATUSES) + "]"
    sent = ", ".join(f"'{s}'" for s in SENT_STATUSES)
    params = {"instances": instances, "now": now, "days": days, "customers": max(instances // 5, 1)}
    with store.engine.begin() as connection:
        # Instance n: journey n % 7, order o{n}, customer c{n % customers}, entered over the days.
        connection.execute(
            text(f"""
            INSERT INTO instances (workflow_id, run_id, journey, journey_version, customer_id, order_id, variant,
                                   entered_at)
            SELECT ({journeys})[1 + n % 7] || ':' || 'o' || n, 'r', ({journeys})[1 + n % 7], 'v1',
                   'c' || (n % :customers), 'o' || n,
                   CASE WHEN n % 7 = 6 THEN CASE WHEN n % 10 = 0 THEN 'holdout' ELSE 'send' END END,
                   :now - ((n % (:days * 1440)) || ' minutes')::interval
            FROM generate_series(1, :instances) AS n
            """),
            params,
        )
        # Two messages per instance (none for the held out), an hour apart, 15 minutes after entry.
        connection.execute(
            text(f"""
            INSERT INTO messages (id, workflow_id, run_id, step, journey, journey_version, customer_id, order_id,
                                  channel, template, category, status, reason, at, segments, variant, updated_at)
            SELECT 'm' || n || '-' || k, ({journeys})[1 + n % 7] || ':' || 'o' || n, 'r', 'step' || k,
                   ({journeys})[1 + n % 7], 'v1', 'c' || (n % :customers), 'o' || n,
                   CASE WHEN n % 4 = 0 THEN 'email' ELSE 'sms' END, 't', 'marketing',
                   ({statuses})[1 + (n + k) % 9],
                   CASE ({statuses})[1 + (n + k) % 9] WHEN 'skipped' THEN 'quiet_hours'
                        WHEN 'failed' THEN 'provider_rejected' WHEN 'undelivered' THEN 'undelivered' END,
                   :now - ((n % (:days * 1440)) || ' minutes')::interval + ((15 + 60 * k) || ' minutes')::interval,
                   1 + n % 2,
                   CASE WHEN n % 7 = 6 THEN 'send' END, :now
            FROM generate_series(1, :instances) AS n, generate_series(0, 1) AS k
            WHERE NOT (n % 7 = 6 AND n % 10 = 0)
            """),
            params,
        )
        # The `reached` read model, as its send point keeps it (its rows, not yet their
        # conversions: the first report records the goals and computes them).
        connection.execute(
            text(f"""
            INSERT INTO reached (workflow_id, run_id, journey, customer_id, order_id, variant, step, channel, at,
                                 message_id)
            SELECT DISTINCT ON (workflow_id, run_id) workflow_id, run_id, journey, customer_id, order_id, variant,
                   step, channel, at, id
            FROM messages WHERE status IN ({sent})
            ORDER BY workflow_id, run_id, at, id
            """)
        )
        for kind, share, offset in (("order.created", 1, "0"), ("order.paid", 5, "(n % 96) * 60")):
            connection.execute(
                text(f"""
                INSERT INTO events (event_id, type, customer_id, order_id, occurred_at, data, received_at,
                                    dispatched_at, attempts)
                SELECT '{kind}-' || n, '{kind}', 'c' || (n % :customers), 'o' || n,
                       :now - ((n % (:days * 1440)) || ' minutes')::interval + ({offset} || ' minutes')::interval,
                       json_build_object('amount', 50 + (n::bigint * 37) % 3000), :now, :now, 1
                FROM generate_series(1, :instances) AS n
                WHERE n % {share} < 2 OR {share} = 1
                """),
                params,
            )
        # The `orders` read model, as the event log's writer keeps it.
        connection.execute(
            text("""
            INSERT INTO orders (order_id, customer_id, created_at, created_amount, paid_at, paid_amount)
            SELECT c.order_id, c.customer_id, c.occurred_at, (c.data ->> 'amount')::float, p.occurred_at,
                   (p.data ->> 'amount')::float
            FROM events AS c LEFT JOIN events AS p ON p.order_id = c.order_id AND p.type = 'order.paid'
            WHERE c.type = 'order.created'
            """)
        )
        # Each run's neighbouring purchases, as the send path sets them.
        connection.execute(
            text("""
            UPDATE reached SET
                last_paid_before = (SELECT max(o.paid_at) FROM orders AS o
                                    WHERE o.customer_id = reached.customer_id AND o.paid_at < reached.at),
                next_paid_after = (SELECT min(o.paid_at) FROM orders AS o
                                   WHERE o.customer_id = reached.customer_id AND o.paid_at > reached.at)
            """)
        )
        connection.execute(text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--database", default=PG_URL)
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    with Schema(args.database, "bench_effect") as schema:
        filled, _ = timed(lambda: fill(schema.store, args.messages, args.days, now))
        print(f"filled {args.messages:,} messages (and their instances and orders) in {filled:.0f} s")
        report(schema.store, now)


def report(store: Store, now: datetime) -> None:
    """Time the raw floor, then the report three ways."""
    definitions = load_definitions(PACKAGE_DIR)
    period = Period(now - timedelta(days=30), now, "Asia/Shanghai")
    prices = Prices(sms=0.05, email=0.001, currency="CNY")
    with store.transaction() as session:
        floor, rows = timed(
            lambda: session.execute(
                text("SELECT count(*) FROM messages WHERE at >= :start AND at < :end"),
                {"start": period.start, "end": period.end},
            ).scalar()
        )
    print(f"raw count of the period's messages: {rows:,} in {floor:.2f} s   (peak RSS {peak_rss_mb():.0f} MB)")
    for label, options in (
        ("first report (goals new)", {}),
        ("whole report", {}),
        ("by day", {"by": "day"}),
        ("one journey by variant", {"journey": "spring_festival_care", "by": "variant"}),
    ):
        seconds, found = timed(lambda options=options: effect_report(store, definitions, period, prices, **options))
        sent = sum(j.sent for j in found.journeys.values())
        converted = sum(j.converted for j in found.journeys.values())
        print(
            f"{label:<24} {seconds:7.2f} s  ({seconds / floor:,.0f}x the raw count)  sent {sent:,}, "
            f"converted {converted:,}, revenue {found.totals.revenue:,.0f}   (peak RSS {peak_rss_mb():.0f} MB)"
        )


if __name__ == "__main__":
    main()
