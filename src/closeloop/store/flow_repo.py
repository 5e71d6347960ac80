"""Flow instances: their state, data and timers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, tuple_

from closeloop.domain.records import FlowState
from closeloop.ports.store import iter_chunks
from closeloop.store import tables as t
from closeloop.store._sql import CHUNK, dialect_insert, for_update

UNBORN = ""  # the state of a placeholder row: an instance being created, not yet stepped


class FlowRepository:
    """Flow operations of :class:`~closeloop.ports.store.UnitOfWork`."""

    conn: Connection

    def get_flows(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], FlowState]:
        f = t.flows
        found: dict[tuple[str, str], FlowState] = {}
        for chunk in iter_chunks(sorted(set(keys)), CHUNK):
            if self.conn.dialect.name == "postgresql":
                self._claim_new(chunk)
            stmt = select(f).where(tuple_(f.c.flow, f.c.business_key).in_(chunk))
            stmt = for_update(self.conn, stmt.order_by(f.c.flow, f.c.business_key))
            for row in self.conn.execute(stmt):
                if row.state != UNBORN:
                    found[(row.flow, row.business_key)] = _state(row)
        return found

    def _claim_new(self, keys: Sequence[tuple[str, str]]) -> None:
        """Insert a placeholder row for each instance that has none, so that ``FOR UPDATE``
        has a row to lock: a second transaction creating the same instance waits on the
        insert until the first commits, then reads its state (PostgreSQL; SQLite has one
        writer). Placeholders (state ``UNBORN``) read as absent."""
        rows = [
            {
                "flow": flow,
                "business_key": key,
                "state": UNBORN,
                "data": {},
                "created_at": func.now(),
                "updated_at": func.now(),
            }
            for flow, key in keys
        ]
        self.conn.execute(dialect_insert(self.conn, t.flows).values(rows).on_conflict_do_nothing())

    def put_flows(self, states: Sequence[FlowState], now: datetime) -> None:
        if not states:
            return
        f = t.flows
        rows_out = [
            {
                "flow": s.flow,
                "business_key": s.business_key,
                "state": s.state,
                "data": s.data,
                "wake_at": s.wake_at,
                "created_at": now,
                "updated_at": now,
            }
            for s in states
        ]
        stmt = dialect_insert(self.conn, f)
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["flow", "business_key"],
                set_={
                    "state": stmt.excluded.state,
                    "data": stmt.excluded.data,
                    "wake_at": stmt.excluded.wake_at,
                    "updated_at": now,
                },
            ),
            rows_out,
        )

    def due_flows(self, until: datetime, limit: int) -> list[FlowState]:
        f = t.flows
        stmt = (
            select(f)
            .where(f.c.wake_at.is_not(None), f.c.wake_at <= until)
            .order_by(f.c.wake_at, f.c.flow, f.c.business_key)
            .limit(limit)
        )
        return [
            _state(row) for row in self.conn.execute(for_update(self.conn, stmt, skip_locked=True))
        ]

    def list_flows(self, flow: str | None, limit: int) -> list[FlowState]:
        f = t.flows
        stmt = (
            select(f).where(f.c.state != UNBORN).order_by(f.c.flow, f.c.business_key).limit(limit)
        )
        if flow is not None:
            stmt = stmt.where(f.c.flow == flow)
        return [_state(row) for row in self.conn.execute(stmt)]


def _state(row: Any) -> FlowState:
    return FlowState(row.flow, row.business_key, row.state, dict(row.data), row.wake_at)
