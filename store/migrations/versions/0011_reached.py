"""The `reached` read model (store/reached.py): each run's first sent message, so the effect
report reads one indexed row per run instead of ranking every message of the period. Filled from
the ledger as it stands; conversions are filled when the effect report first records each
journey's goal (`goals`). An index on the events' type and time serves the result indicators.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SENT = "('sent', 'delivered', 'undelivered', 'opened', 'clicked')"


def upgrade() -> None:
    op.create_table(
        "reached",
        sa.Column("workflow_id", sa.String(300), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("journey", sa.String(60), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("order_id", sa.String(200), nullable=True),
        sa.Column("variant", sa.String(60), nullable=True),
        sa.Column("step", sa.String(60), nullable=False),
        sa.Column("channel", sa.String(20), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("converted_event", sa.String(200), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("converted_order", sa.String(200), nullable=True),
    )
    op.create_table(
        "goals",
        sa.Column("journey", sa.String(60), primary_key=True),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("within_seconds", sa.Float(), nullable=False),
        sa.Column("key", sa.String(10), nullable=False),
    )
    op.execute(f"""
        INSERT INTO reached (workflow_id, run_id, journey, customer_id, order_id, variant, step, channel, at,
                             message_id)
        SELECT workflow_id, run_id, journey, customer_id, order_id, variant, step, channel, at, id
        FROM (SELECT m.*, row_number() OVER (PARTITION BY workflow_id, run_id ORDER BY at, id) AS n
              FROM messages AS m WHERE status IN {SENT}) AS ranked
        WHERE n = 1
    """)
    op.create_index("ix_reached_journey", "reached", ["journey", "at"])
    op.create_index("ix_reached_customer", "reached", ["customer_id", "at"])
    op.create_index("ix_reached_order", "reached", ["order_id", "at"])
    op.create_index("ix_events_type_at", "events", ["type", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_type_at", table_name="events")
    op.drop_table("goals")
    op.drop_table("reached")
