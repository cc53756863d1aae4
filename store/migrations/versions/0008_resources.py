"""The resource a message hands out (a coupon type), for the harassment limits on resources.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("resource", sa.String(60), nullable=True))
    op.create_index("ix_messages_resource", "messages", ["customer_id", "resource", "at"])


def downgrade() -> None:
    op.drop_index("ix_messages_resource", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("resource")
