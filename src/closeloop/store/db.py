"""Connecting to the database: SQLite (WAL, immediate transactions) or PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def create_db_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An SQLAlchemy engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    SQLite: creates the parent folder (0700 when new) and the database file readable and
    writable by its owner only (0600, from creation; SQLite gives its ``-wal`` and ``-shm``
    files the database's mode), turns on turns on WAL (readers never block the writer) with
    ``synchronous=NORMAL`` (a process crash loses nothing; a power cut may lose the last
    commits), a 30 s busy timeout, and opens every transaction with ``BEGIN IMMEDIATE`` so
    that claims made by several processes on one node serialise instead of failing to
    upgrade a read lock. ``postgresql://`` URLs are rewritten to the psycopg 3 driver.

    Raises ``sqlalchemy.exc.ArgumentError`` for a URL SQLAlchemy cannot parse.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
        )
    database = parsed.database or ""
    if database and database != ":memory:":
        _private_file(Path(database))
    engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        # SQLite's lower() folds ASCII only: searches fold every script, as PostgreSQL's does
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _lower(value: object) -> object:
    """SQL ``lower()`` for SQLite: Python's full Unicode lowercase of text."""
    return value.lower() if isinstance(value, str) else value


def _private_file(path: Path) -> None:
    """Create ``path`` (its folder 0700 when new) as an empty file of mode 0600, or take an
    existing one (and its ``-wal`` and ``-shm`` files) down to 0600 when others could read
    it: the hub's database holds customer data and hashed API keys, which no other local
    user may read. Raises ``PermissionError`` when the file is not ours to change."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if each.exists() and each.stat().st_mode & 0o077:
                each.chmod(0o600)
        return
    os.close(fd)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite ``url`` (``None`` for another database or an in-memory
    one). Raises ``sqlalchemy.exc.ArgumentError`` for a URL SQLAlchemy cannot parse."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
