"""How each journey run ended (revision 3 runs record it), for the effect report's exits.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("exit_reason", sa.String(60), nullable=True))
    op.create_index("ix_instances_ended", "instances", ["journey", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_instances_ended", table_name="instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("exit_reason")
        batch.drop_column("ended_at")
