"""Effect reporting: the instances journeys started (with the split group their key draws), the
group on each message, and the indexes the effect report reads by.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("workflow_id", sa.String(300), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("journey", sa.String(60), nullable=False),
        sa.Column("journey_version", sa.String(20), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("order_id", sa.String(200), nullable=True),
        sa.Column("variant", sa.String(60), nullable=True),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_instances_journey", "instances", ["journey", "entered_at"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("variant", sa.String(60), nullable=True))
    op.create_index("ix_messages_journey_at", "messages", ["journey", "at"])
    op.create_index("ix_messages_run", "messages", ["workflow_id", "run_id", "at"])
    op.create_index("ix_events_goal_order", "events", ["order_id", "type", "occurred_at"])
    op.create_index("ix_events_goal_customer", "events", ["customer_id", "type", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_goal_customer", table_name="events")
    op.drop_index("ix_events_goal_order", table_name="events")
    op.drop_index("ix_messages_run", table_name="messages")
    op.drop_index("ix_messages_journey_at", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("variant")
    op.drop_index("ix_instances_journey", table_name="instances")
    op.drop_table("instances")
