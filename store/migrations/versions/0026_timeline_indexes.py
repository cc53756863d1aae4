"""A customer's timeline (GET /customers/{id}/timeline, views/history.py) reads their instances and
each of their messages' delivery updates: without these indexes both reads scan their tables.

Revision ID: 0026
Revises: 0025
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_instances_customer", "instances", ["customer_id", "entered_at"])
    op.create_index("ix_provider_events_message", "provider_events", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_provider_events_message", table_name="provider_events")
    op.drop_index("ix_instances_customer", table_name="instances")
