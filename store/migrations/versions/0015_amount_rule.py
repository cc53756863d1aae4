"""Amounts by one rule (core/amounts.py): the `orders` read model's amounts are read again from
the event log, so what the former rules took for an amount (-500, 1e308, "1.2.3" on SQLite) is
none now; the runs those orders converted take their amount again.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: `data.amount` by core/amounts.py `amount_sql` as of this revision (frozen: a later rule gets
#: its own migration).
_AMOUNT = {
    "postgresql": (
        "(CASE json_typeof((data -> 'amount')) WHEN 'number' THEN CASE WHEN CAST((data ->> "
        "'amount') AS NUMERIC) BETWEEN 0 AND 10000000000000 THEN CASE WHEN CAST((data ->> 'amount') "
        "AS DOUBLE PRECISION) <= 1000000000000 THEN CAST((data ->> 'amount') AS DOUBLE PRECISION) "
        "END END WHEN 'string' THEN CASE WHEN length((data ->> 'amount')) <= 32 AND (data ->> "
        "'amount') ~ '^[0-9]+(\\.[0-9]+)?$' THEN CASE WHEN CAST((data ->> 'amount') AS DOUBLE "
        "PRECISION) <= 1000000000000 THEN CAST((data ->> 'amount') AS DOUBLE PRECISION) END END "
        "END)"
    ),
    "sqlite": (
        "(CASE WHEN json_type(data, '$.\"amount\"') IN ('integer', 'real') THEN CASE WHEN "
        "json_extract(data, '$.\"amount\"') BETWEEN 0 AND 1000000000000 THEN CAST(json_extract(data, "
        "'$.\"amount\"') AS REAL) END WHEN json_type(data, '$.\"amount\"') = 'text' THEN CASE WHEN "
        "length(json_extract(data, '$.\"amount\"')) BETWEEN 1 AND 32 AND json_extract(data, "
        "'$.\"amount\"') NOT GLOB '*[^0-9.]*' AND json_extract(data, '$.\"amount\"') NOT GLOB '.*' AND "
        "json_extract(data, '$.\"amount\"') NOT GLOB '*.' AND json_extract(data, '$.\"amount\"') NOT "
        "GLOB '*.*.*' AND CAST(json_extract(data, '$.\"amount\"') AS REAL) <= 1000000000000 THEN "
        "CAST(json_extract(data, '$.\"amount\"') AS REAL) END END)"
    ),
}


def upgrade() -> None:
    amount = _AMOUNT[op.get_bind().dialect.name]
    op.execute(f"""
        UPDATE orders SET
            created_amount = (SELECT {amount} FROM events
                              WHERE events.order_id = orders.order_id AND events.type = 'order.created'
                              ORDER BY events.occurred_at DESC, events.event_id DESC LIMIT 1),
            paid_amount = (SELECT {amount} FROM events
                           WHERE events.order_id = orders.order_id AND events.type = 'order.paid'
                           ORDER BY events.occurred_at, events.event_id LIMIT 1)
    """)
    op.execute("""
        UPDATE reached SET converted_amount = (SELECT coalesce(o.paid_amount, o.created_amount, 0) FROM orders AS o
                                               WHERE o.order_id = reached.converted_order)
        WHERE converted_order IS NOT NULL
    """)


def downgrade() -> None:
    pass  # the amounts the former rules read are not restored
