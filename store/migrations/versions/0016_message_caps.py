"""The cap a message counts against, when it is not its category's: a send step of a journey may
count against another named cap of policy.yaml (`policy: {cap: NAME}`). None, as on every row
before, counts a message against its category's cap, so nothing is filled in.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("cap", sa.String(60), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("cap")
