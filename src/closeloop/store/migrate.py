"""Schema migrations through Alembic, run programmatically (``closeloop db upgrade``), and the
check every other command makes that the database's schema is the one this code needs.

Only :func:`upgrade` changes the schema. Concurrent upgraders serialise: on PostgreSQL on a
session advisory lock (:data:`MIGRATION_LOCK_KEY`, taken on a connection of its own around
reading the version and migrating); on SQLite on the database's own write lock, as the whole
upgrade is one ``BEGIN IMMEDIATE`` transaction (see ``migrations/env.py``). Either way one
upgrader migrates and the others wait, then find nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from closeloop.domain.errors import ConflictError

_SCRIPTS = Path(__file__).with_name("migrations")

MIGRATION_LOCK_KEY = 0x636C6F73656C6F6F  # "closeloo" as a bigint: one key per database
"""The PostgreSQL advisory lock (``pg_advisory_lock(bigint)``) ``closeloop db upgrade`` holds
while it migrates; visible in ``pg_locks`` as ``locktype='advisory'``."""

SchemaState = Literal["empty", "behind", "ahead"]


class SchemaMismatch(ConflictError):
    """The database's schema is not the one this code needs, so it is not used.

    ``state``: ``"empty"`` (no closeloop schema at all), ``"behind"`` (an older revision this
    code can migrate: run ``closeloop db upgrade``) or ``"ahead"`` (a revision this code does
    not know, written by a newer closeloop: upgrade closeloop). ``current`` and ``head`` are
    the database's revision (``None`` when empty) and this code's newest; ``database`` names
    the database without its password (not in the message, which ``/readyz`` shows to
    anyone). The message says what to do.
    """

    def __init__(
        self, state: SchemaState, current: str | None, head: str | None, database: str
    ) -> None:
        self.state, self.current, self.head, self.database = state, current, head, database
        if state == "empty":
            what = "the database has no closeloop schema yet"
            todo = "run `closeloop db upgrade`"
        elif state == "behind":
            what = f"the database is at schema {current}, this closeloop needs {head}"
            todo = "run `closeloop db upgrade`"
        else:
            what = f"the database is at schema {current}, which this closeloop (newest {head}) "
            what += "does not know"
            todo = "this closeloop is older than the database: upgrade closeloop"
        super().__init__(f"{what}: {todo}")


@dataclass(frozen=True)
class Upgraded:
    """What :func:`upgrade` found and left: the revision ``before`` (``None``: an empty
    database) and ``after``, both read in the migration's own transaction."""

    before: str | None
    after: str | None

    @property
    def migrated(self) -> bool:
        """Whether this upgrade changed the schema (``False``: nothing to do)."""
        return self.before != self.after


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["engine"] = engine
    return config


def upgrade(
    engine: Engine, revision: str = "head", *, on_wait: Callable[[], None] | None = None
) -> Upgraded:
    """Migrate the database behind ``engine`` to ``revision`` (default: the newest), one
    upgrader at a time (see the module's docstring): an upgrader that finds another one
    migrating calls ``on_wait`` (PostgreSQL; on SQLite it waits silently, up to the engine's
    30 s busy timeout) and waits until it is done. Returns the revisions before and after.

    Raises :class:`SchemaMismatch` (``"ahead"``) when the database is at a revision this code
    does not know, whatever the database driver raises when it cannot be reached, and
    ``sqlite3.OperationalError`` ("database is locked") when a SQLite migration waited past
    the busy timeout.
    """
    config = _config(engine)
    with _migration_lock(engine, on_wait):
        command.upgrade(config, revision)
    return Upgraded(config.attributes["before"], config.attributes["after"])


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this code's migrations (env.py checks the database's
    before it migrates, :func:`check` before a command uses it)."""
    script = ScriptDirectory.from_config(_config())
    return any(r.revision == revision for r in script.walk_revisions())


@contextmanager
def _migration_lock(engine: Engine, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """On PostgreSQL, hold :data:`MIGRATION_LOCK_KEY` on a connection of its own while the
    block runs (a crashed holder's session ends and frees it); elsewhere nothing: SQLite's
    migration transaction is the lock."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = {"key": MIGRATION_LOCK_KEY}
    with engine.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            if on_wait is not None:
                on_wait()
            conn.execute(text("SELECT pg_advisory_lock(:key)"), key)
        conn.commit()  # a session lock outlives the transaction; the session stays idle
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                conn.commit()
            except Exception:
                conn.invalidate()  # closing the session frees its locks
                raise


def head_revision() -> str | None:
    """The newest migration this code ships."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or ``None`` when it has none."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check(engine: Engine) -> str:
    """The database's revision when it is this code's newest (:func:`head_revision`); reads
    only, creates nothing. Raises :class:`SchemaMismatch` (empty, behind or ahead)
    otherwise, and whatever the database driver raises when it cannot be read."""
    current, head = current_revision(engine), head_revision()
    if current == head and current is not None:
        return current
    database = shown(engine.url)
    if current is None:
        raise SchemaMismatch("empty", None, head, database)
    raise SchemaMismatch("behind" if known_revision(current) else "ahead", current, head, database)


def shown(url: str | URL) -> str:
    """``url`` as messages show it: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)
