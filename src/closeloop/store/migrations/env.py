"""Alembic environment: runs migrations on the engine given by :mod:`closeloop.store.migrate`.

Reading the database's revision and every migration run in one transaction of ours (alembic
then opens none of its own). On SQLite that transaction begins with ``BEGIN IMMEDIATE``
(:func:`closeloop.store.db.create_db_engine`), so it holds the database's write lock from
before the read: a concurrent upgrader waits, then reads the revision this one committed.
The revisions before and after are left in the config's attributes for
:func:`closeloop.store.migrate.upgrade`.
"""

from __future__ import annotations

from alembic import context

from closeloop.store.migrate import SchemaMismatch, head_revision, known_revision, shown
from closeloop.store.tables import metadata

engine = context.config.attributes.get("engine")
if engine is None:  # pragma: no cover - only through closeloop.store.migrate
    raise RuntimeError("run migrations through closeloop.store.migrate.upgrade")

with engine.connect() as connection, connection.begin():
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    migration = context.get_context()
    before = migration.get_current_revision()
    if before is not None and not known_revision(before):
        raise SchemaMismatch("ahead", before, head_revision(), shown(engine.url))
    context.config.attributes["before"] = before
    with context.begin_transaction():  # inside ours: alembic begins nothing
        context.run_migrations()
    context.config.attributes["after"] = migration.get_current_revision()
