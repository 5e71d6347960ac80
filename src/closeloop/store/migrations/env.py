"""Alembic environment: runs migrations on the engine given by :mod:`closeloop.store.migrate`."""

from __future__ import annotations

from alembic import context

from closeloop.store.tables import metadata

engine = context.config.attributes.get("engine")
if engine is None:  # pragma: no cover - only through closeloop.store.migrate
    raise RuntimeError("run migrations through closeloop.store.migrate.upgrade")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
