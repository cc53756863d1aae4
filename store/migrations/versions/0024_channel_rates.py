"""Each channel's send budget (store/rates.py), one token bucket in the database that every worker
and both send paths (one message, a page of messages) draw from: batched broadcasts send a page
from one activity, so Temporal's per-queue activity rate limit no longer counts messages. New, so
nothing to fill in: a bucket's row is made full on its first use.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_rates",
        sa.Column("channel", sa.String(20), primary_key=True),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("channel_rates")
