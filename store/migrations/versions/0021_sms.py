"""SMS replies (回复记录), tracked short links (短链) and their clicks. New, so nothing to fill in.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_replies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("provider_key", sa.String(200), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=True),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("order_id", sa.String(200), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("sign_name", sa.String(60), nullable=True),
        sa.Column("dest_code", sa.String(40), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(20), nullable=True),
        sa.Column("answer_id", sa.String(36), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("provider", "provider_key", name="uq_sms_replies_key"),
    )
    op.create_index("ix_sms_replies_customer", "sms_replies", ["customer_id", "received_at"])
    op.create_index("ix_sms_replies_received", "sms_replies", ["received_at"])
    op.create_index("ix_sms_replies_message_id", "sms_replies", ["message_id"])
    op.create_table(
        "short_links",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_short_links_message_id", "short_links", ["message_id"])
    op.create_index("ix_short_links_expires_at", "short_links", ["expires_at"])
    op.create_table(
        "link_clicks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.String(400), nullable=True),
    )
    op.create_index("ix_link_clicks_code", "link_clicks", ["code"])
    op.create_index("ix_link_clicks_at", "link_clicks", ["at"])
    op.create_index("ix_link_clicks_message", "link_clicks", ["message_id", "at"])


def downgrade() -> None:
    op.drop_table("link_clicks")
    op.drop_table("short_links")
    op.drop_table("sms_replies")
