"""Delivery status from provider webhooks: when a message was delivered, its SMS segment count,
a look-up by provider id, and the provider events already applied (so a duplicate is dropped);
the SendGrid dynamic template a message names and its data; and the customer's region, for
reading national phone numbers.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("region", sa.String(2), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("segments", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("provider_template", sa.String(60), nullable=True))
        batch.add_column(sa.Column("template_data", sa.JSON(), nullable=True))
        batch.create_index("ix_messages_provider_id", ["provider_id"])
    op.create_table(
        "provider_events",
        sa.Column("provider", sa.String(20), primary_key=True),
        sa.Column("event_key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provider_events")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_provider_id")
        batch.drop_column("delivered_at")
        batch.drop_column("provider_template")
        batch.drop_column("template_data")
        batch.drop_column("segments")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("region")
