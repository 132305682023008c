"""Alembic's entry for a kiosk's journal (run from kiosk/ledger/journal.py, not alembic.ini)."""

from alembic import context

from kiosk.ledger.journal import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
