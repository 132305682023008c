"""Alembic's entry for head office's database (run from sync/store/schema.py, not alembic.ini)."""

from alembic import context

from sync.store.tables import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
