"""The tables of published definitions and dry runs (migration 0025), the timeline's indexes (0026)
and the messages' index by number (0027) are what the models say, on both databases: a difference
would make a store's rows fail to load on one of them, or a read scan its table."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from store.tables import Base

TABLES = (
    "definition_changes",
    "definition_files",
    "definition_audit",
    "dry_runs",
    "ix_instances_customer",
    "ix_provider_events_message",
    "ix_messages_address_at",
)


def test_the_migration_makes_the_tables_the_models_describe(store):
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = [d for d in compare_metadata(context, Base.metadata) if any(t in repr(d) for t in TABLES)]
    assert differences == []
