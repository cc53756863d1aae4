"""The SMS report (store/sms_report.py) reads a period's SMS: an index on the ledger's channel and
time, so a month's report reads that month's SMS, not every message ever sent.

Revision ID: 0022
Revises: 0021
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_channel_at", "messages", ["channel", "at"])


def downgrade() -> None:
    op.drop_index("ix_messages_channel_at", table_name="messages")
