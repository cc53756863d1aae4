"""Alembic environment: migrations run on the connection `store.db.migrate` hands over."""

from alembic import context

from store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations through store.db.migrate (journeys migrate), not the alembic CLI")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
