"""Each `reached` run also holds its customer's purchases around its first message (the first
payments just before and after it, from `orders`), so reactivation reads them from the run, and
its converted order's amount, so revenue does not look each order up; `settled` marks the runs
whose figures are computed (a send leaves a new run unsettled; `settle` computes it). Filled for
the runs there are.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reached") as batch:
        batch.add_column(sa.Column("last_paid_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_paid_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("converted_amount", sa.Float(), nullable=True))
        batch.add_column(sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.create_index("ix_reached_converted_order", "reached", ["converted_order"])
    op.create_index(
        "ix_reached_unsettled",
        "reached",
        ["journey"],
        postgresql_where=sa.text("NOT settled"),
        sqlite_where=sa.text("NOT settled"),
    )
    op.execute("""
        UPDATE reached SET converted_amount = (SELECT coalesce(o.paid_amount, o.created_amount, 0) FROM orders AS o
                                               WHERE o.order_id = reached.converted_order)
        WHERE converted_order IS NOT NULL
    """)
    op.execute("""
        UPDATE reached SET
            last_paid_before = (SELECT max(o.paid_at) FROM orders AS o
                                WHERE o.customer_id = reached.customer_id AND o.paid_at < reached.at),
            next_paid_after = (SELECT min(o.paid_at) FROM orders AS o
                               WHERE o.customer_id = reached.customer_id AND o.paid_at > reached.at)
    """)


def downgrade() -> None:
    op.drop_index("ix_reached_unsettled", table_name="reached")
    op.drop_index("ix_reached_converted_order", table_name="reached")
    with op.batch_alter_table("reached") as batch:
        batch.drop_column("settled")
        batch.drop_column("converted_amount")
        batch.drop_column("next_paid_after")
        batch.drop_column("last_paid_before")
