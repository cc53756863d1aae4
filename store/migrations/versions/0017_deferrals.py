"""The `deferrals` table: each time the contact policy puts a send off (quiet hours, a send window,
a full cap), with the reason, the detail and the moments; a deferral for a cap stays open while
the message waits for its slot, so a higher-priority waiting message goes ahead of lower ones.
New, so nothing to fill in.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deferrals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.String(300), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(60), nullable=False),
        sa.Column("journey", sa.String(60), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("variant", sa.String(60), nullable=True),
        sa.Column("channel", sa.String(20), nullable=True),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resume_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cap", sa.String(60), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("workflow_id", "run_id", "step", "at", name="uq_deferrals_attempt"),
    )
    op.create_index("ix_deferrals_waiting", "deferrals", ["customer_id", "cap", "open"])
    op.create_index("ix_deferrals_journey_at", "deferrals", ["journey", "at"])


def downgrade() -> None:
    op.drop_index("ix_deferrals_journey_at", table_name="deferrals")
    op.drop_index("ix_deferrals_waiting", table_name="deferrals")
    op.drop_table("deferrals")
