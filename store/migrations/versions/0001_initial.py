"""Customers, the event log, the message ledger and suppressions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("phone", sa.String(40)),
        sa.Column("email", sa.String(320)),
        sa.Column("birthday", sa.String(10)),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(10), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("unsubscribed", sa.JSON, nullable=False),
        sa.Column("blacklisted", sa.Boolean, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False, index=True),
        sa.Column("order_id", sa.String(200), index=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("dispatched_at", TS, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workflow_id", sa.String(300), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(60), nullable=False),
        sa.Column("journey", sa.String(60), nullable=False, index=True),
        sa.Column("journey_version", sa.String(20), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("order_id", sa.String(200), index=True),
        sa.Column("channel", sa.String(20)),
        sa.Column("address", sa.String(320)),
        sa.Column("template", sa.String(60), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(40)),
        sa.Column("at", TS, nullable=False),
        sa.Column("locale", sa.String(10)),
        sa.Column("subject", sa.Text),
        sa.Column("body", sa.Text),
        sa.Column("provider_id", sa.String(120)),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("workflow_id", "run_id", "step", name="uq_messages_step"),
    )
    op.create_index("ix_messages_cap", "messages", ["customer_id", "category", "at"])
    op.create_table(
        "suppressions",
        sa.Column("channel", sa.String(20), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(60), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_messages_cap", "messages")
    op.drop_table("messages")
    op.drop_table("events")
    op.drop_table("customers")
