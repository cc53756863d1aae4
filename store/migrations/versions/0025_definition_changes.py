"""Definitions as published versions (docs/publishing.md): changes (drafts, in review, published,
rejected), their files, the audit of what happened to each, and dry runs. New tables, nothing to
fill in: with no published change, the base directory runs as before.

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "definition_changes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False, index=True),
        sa.Column("author", sa.String(200), nullable=False),
        _when("created_at", False),
        _when("updated_at", False),
        _when("submitted_at"),
        sa.Column("reviewed_by", sa.String(200)),
        _when("reviewed_at"),
        _when("published_at"),
        sa.Column("comment", sa.Text()),
        sa.Column("hash", sa.String(12), nullable=False),
        sa.Column("seq", sa.Integer(), unique=True),
    )
    op.create_table(
        "definition_files",
        sa.Column("change_id", sa.String(36), primary_key=True),
        sa.Column("path", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(12), nullable=False),
    )
    op.create_index("ix_definition_files_kind_name", "definition_files", ["kind", "name"])
    op.create_table(
        "definition_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _when("at", False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("change_id", sa.String(36), nullable=False, index=True),
        sa.Column("hash", sa.String(12), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("figures", sa.JSON()),
    )
    op.create_index("ix_definition_audit_at", "definition_audit", ["at"])
    op.create_table(
        "dry_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("change_id", sa.String(36), index=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("progress", sa.Double(), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("requested_by", sa.String(200), nullable=False),
        _when("created_at", False),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("result", sa.JSON()),
        sa.Column("pid", sa.Integer()),
    )


def downgrade() -> None:
    for table in ("dry_runs", "definition_audit", "definition_files", "definition_changes"):
        op.drop_table(table)
