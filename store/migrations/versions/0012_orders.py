"""The `orders` read model (store/orders.py): each order's latest creation, first payment, first
refund and their amounts, so the effect report's revenue and result indicators read one row per
order. Filled from the event log as it stands.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _amount(dialect: str) -> str:
    """`data.amount` as store/segments.py's json_number reads it."""
    if dialect == "postgresql":
        return (
            "CASE WHEN json_typeof(data -> 'amount') = 'number' THEN CAST(data ->> 'amount' AS DOUBLE PRECISION) "
            "WHEN json_typeof(data -> 'amount') = 'string' AND data ->> 'amount' ~ '^[0-9]+(\\.[0-9]+)?$' "
            "THEN CAST(data ->> 'amount' AS DOUBLE PRECISION) END"
        )
    path = "'$.\"amount\"'"
    return (
        f"CASE WHEN json_type(data, {path}) IN ('integer', 'real') THEN json_extract(data, {path}) "
        f"WHEN json_type(data, {path}) = 'text' AND json_extract(data, {path}) GLOB '[0-9]*' "
        f"AND json_extract(data, {path}) NOT GLOB '*[^0-9.]*' THEN CAST(json_extract(data, {path}) AS REAL) END"
    )


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_amount", sa.Float(), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_amount", sa.Float(), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
    )
    amount = _amount(op.get_bind().dialect.name)
    op.execute(f"""
        WITH o AS (SELECT order_id, min(customer_id) AS customer_id FROM events
                   WHERE type IN ('order.created', 'order.paid', 'order.refunded') AND order_id IS NOT NULL
                   GROUP BY order_id),
             c AS (SELECT order_id, occurred_at, {amount} AS amount,
                          row_number() OVER (PARTITION BY order_id ORDER BY occurred_at DESC, event_id DESC) AS n
                   FROM events WHERE type = 'order.created' AND order_id IS NOT NULL),
             p AS (SELECT order_id, occurred_at, {amount} AS amount,
                          row_number() OVER (PARTITION BY order_id ORDER BY occurred_at, event_id) AS n
                   FROM events WHERE type = 'order.paid' AND order_id IS NOT NULL),
             r AS (SELECT order_id, min(occurred_at) AS refunded_at FROM events
                   WHERE type = 'order.refunded' AND order_id IS NOT NULL GROUP BY order_id)
        INSERT INTO orders (order_id, customer_id, created_at, created_amount, paid_at, paid_amount, refunded_at)
        SELECT o.order_id, o.customer_id, c.occurred_at, c.amount, p.occurred_at, p.amount, r.refunded_at
        FROM o
        LEFT JOIN c ON c.order_id = o.order_id AND c.n = 1
        LEFT JOIN p ON p.order_id = o.order_id AND p.n = 1
        LEFT JOIN r ON r.order_id = o.order_id
    """)
    op.create_index("ix_orders_paid", "orders", ["paid_at"])
    op.create_index("ix_orders_customer_paid", "orders", ["customer_id", "paid_at"])


def downgrade() -> None:
    op.drop_table("orders")
