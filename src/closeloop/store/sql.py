"""The SQL implementation of :class:`~closeloop.ports.store.Store`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from closeloop.store.access_repo import AccessRepository
from closeloop.store.db import create_db_engine
from closeloop.store.flow_repo import FlowRepository
from closeloop.store.inbox_repo import InboxRepository
from closeloop.store.ops_repo import OpsRepository
from closeloop.store.outbox_repo import OutboxRepository
from closeloop.store.reconcile_repo import ReconcileRepository


class SqlUnitOfWork(
    InboxRepository,
    FlowRepository,
    OutboxRepository,
    OpsRepository,
    ReconcileRepository,
    AccessRepository,
):
    """All store operations on one open transaction (``conn``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn


class SqlStore:
    """A store on SQLite or PostgreSQL through SQLAlchemy Core.

    Create with :meth:`from_url`; call :func:`closeloop.store.migrate.upgrade` before use.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 5) -> SqlStore:
        """A store on the database at ``url`` (see :func:`create_db_engine`)."""
        return cls(create_db_engine(url, pool_size=pool_size))

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[SqlUnitOfWork]:
        """One transaction: committed on normal exit, rolled back when the block raises."""
        with self.engine.begin() as conn:
            yield SqlUnitOfWork(conn)

    def ping(self) -> None:
        """Raise the driver's error when the database does not answer ``select 1``."""
        with self.engine.connect() as conn:
            conn.execute(text("select 1"))

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()
