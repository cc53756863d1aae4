"""An SMS reply is matched to the latest messages sent to its number (store/replies.py
`latest_messages_to`); a reply from a number no customer holds (a changed number, a shared phone)
is looked up by the number alone, which without this index read every SMS in the ledger.

Revision ID: 0027
Revises: 0026
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_address_at", "messages", ["address", "at"])


def downgrade() -> None:
    op.drop_index("ix_messages_address_at", table_name="messages")
