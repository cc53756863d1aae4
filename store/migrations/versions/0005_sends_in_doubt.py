"""Sends in doubt: `attempted_at` on a message is when the earliest provider call still unsettled
began (null once the provider has answered, or before any call). A retry that finds it set knows
the provider may have the message already, and settles that before sending again.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("attempted_at")
