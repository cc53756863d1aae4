"""The loyalty programme's tables: the points ledger, member tiers and their change log, and each
customer's last written lifecycle stage (core/loyalty.py). New, so nothing to fill in.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "points_ledger",
        sa.Column("entry_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("order_id", sa.String(200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("customer_id", "source", name="uq_points_ledger_source"),
    )
    op.create_index("ix_points_ledger_customer_at", "points_ledger", ["customer_id", "at"])
    op.create_index("ix_points_ledger_expires", "points_ledger", ["expires_at"])
    op.create_table(
        "member_tiers",
        sa.Column("customer_id", sa.String(200), primary_key=True),
        sa.Column("tier", sa.String(60), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overridden", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_member_tiers_until", "member_tiers", ["until"])
    op.create_table(
        "tier_changes",
        sa.Column("change_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("from_tier", sa.String(60), nullable=True),
        sa.Column("to_tier", sa.String(60), nullable=True),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("customer_id", "source", name="uq_tier_changes_source"),
    )
    op.create_index("ix_tier_changes_customer_id", "tier_changes", ["customer_id"])
    op.create_index("ix_tier_changes_at", "tier_changes", ["at"])
    op.create_table(
        "lifecycle_stages",
        sa.Column("customer_id", sa.String(200), primary_key=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lifecycle_stages_stage", "lifecycle_stages", ["stage"])


def downgrade() -> None:
    op.drop_table("lifecycle_stages")
    op.drop_table("tier_changes")
    op.drop_table("member_tiers")
    op.drop_table("points_ledger")
