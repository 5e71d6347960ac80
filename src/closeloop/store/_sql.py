"""Dialect helpers shared by the repositories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

CHUNK = 500
"""Most rows in one IN list (SQLite allows 32,766 parameters; keep statements small)."""


def dialect_insert(conn: Connection, table: Table) -> Any:
    """``INSERT`` with the ``ON CONFLICT`` clauses of the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows``, skipping those that conflict with a unique key."""
    if rows:
        stmt: Insert = dialect_insert(conn, table).on_conflict_do_nothing()
        conn.execute(stmt, list(rows))


def upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert ``rows`` or, on a conflict on ``keys``, overwrite every other column."""
    if not rows:
        return
    stmt = dialect_insert(conn, table)
    updates = {name: stmt.excluded[name] for name in rows[0] if name not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=updates), list(rows))


def for_update(conn: Connection, stmt: Any, *, skip_locked: bool = False, of: Any = None) -> Any:
    """``FOR UPDATE [SKIP LOCKED]`` on PostgreSQL; SQLite's IMMEDIATE transaction is the lock."""
    if conn.dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=skip_locked, of=of)
    return stmt
