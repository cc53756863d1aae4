"""Dead letters and per-customer backoff in the event log: `failed_at` closes an event the
dispatcher cannot apply (a permanent error, kept with its error until replayed), and `retry_at`
holds a customer whose event failed for a passing reason until then, so it never blocks others.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_events_failed_at", ["failed_at"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_failed_at")
        batch.drop_column("retry_at")
        batch.drop_column("failed_at")
