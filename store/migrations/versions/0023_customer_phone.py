"""An SMS reply (Aliyun's SmsUp, Twilio's inbound) is linked to its customer by the number while
the provider's push waits: an index on customers' phone, so that is a lookup, not a scan of every
customer.

Revision ID: 0023
Revises: 0022
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_customers_phone", "customers", ["phone"])


def downgrade() -> None:
    op.drop_index("ix_customers_phone", table_name="customers")
