"""What dispatching an event did of note, kept on the event log (`note`): an entry event too old
for a journey's `entry.max_age` (stale), or an import of history; and which events came in as
history (`backfill`), which update orders, RFM and traits and start nothing.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("backfill", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("note")
        batch.drop_column("backfill")
