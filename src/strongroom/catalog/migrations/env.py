"""Alembic environment, run from code (strongroom.catalog.db.migrate passes the connection)."""

from __future__ import annotations

from alembic import context

from strongroom.catalog.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
