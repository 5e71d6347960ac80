"""Business exceptions, the audit trail and counts for the operations surface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from closeloop.domain.changes import version_sort_key
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.ports.store import (
    AuditEntry,
    ExceptionQuery,
    ExceptionRow,
    NewException,
    StoreStats,
)
from closeloop.store import tables as t


def _row_to_exception(r: Any) -> ExceptionRow:
    return ExceptionRow(
        id=r.id,
        error_class=ExceptionClass(r.error_class),
        impact=Impact(r.impact),
        entity=r.entity,
        message=r.message,
        status=r.status,
        command_id=r.command_id,
        inbox_id=r.inbox_id,
        correlation_id=r.correlation_id,
        created_at=r.created_at,
        updated_at=r.updated_at,
        resolved_by=r.resolved_by,
        resolution=r.resolution,
    )


class OpsRepository:
    """Exception, audit and statistics operations of :class:`~closeloop.ports.store.UnitOfWork`."""

    conn: Connection

    def open_exceptions(self, exceptions: Sequence[NewException], now: datetime) -> list[int]:
        if not exceptions:
            return []
        rows = [
            {
                "error_class": e.error_class.value,
                "impact": e.impact.value,
                "entity": e.entity,
                "message": e.message,
                "status": "open",
                "command_id": e.command_id,
                "inbox_id": e.inbox_id,
                "correlation_id": e.correlation_id,
                "created_at": now,
                "updated_at": now,
            }
            for e in exceptions
        ]
        stmt = insert(t.exceptions).returning(t.exceptions.c.id, sort_by_parameter_order=True)
        return list(self.conn.execute(stmt, rows).scalars())

    def list_exceptions(self, status: str | None, limit: int) -> list[ExceptionRow]:
        stmt = select(t.exceptions).order_by(t.exceptions.c.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(t.exceptions.c.status == status)
        return [_row_to_exception(r) for r in self.conn.execute(stmt)]

    def find_exceptions(self, query: ExceptionQuery) -> list[ExceptionRow]:
        e, c = t.exceptions, t.commands
        stmt = select(e).order_by(e.c.id.desc()).limit(max(query.limit, 0))
        if query.status:
            stmt = stmt.where(e.c.status == query.status)
        if query.error_class is not None:
            stmt = stmt.where(e.c.error_class == query.error_class.value)
        if query.impact is not None:
            stmt = stmt.where(e.c.impact == query.impact.value)
        if query.created_before is not None:
            stmt = stmt.where(e.c.created_at < query.created_before)
        if query.before_id is not None:
            stmt = stmt.where(e.c.id < query.before_id)
        if query.ids is not None:
            stmt = stmt.where(e.c.id.in_(list(query.ids)))
        if query.search:
            pattern = f"%{_escape_like(query.search.lower())}%"
            stmt = stmt.where(
                or_(
                    func.lower(e.c.entity).like(pattern, escape="\\"),
                    func.lower(e.c.message).like(pattern, escape="\\"),
                )
            )
        if query.system:
            on_command = select(c.c.id).where(c.c.system == query.system)
            stmt = stmt.where(
                or_(
                    e.c.command_id.in_(on_command),
                    and_(
                        e.c.command_id.is_(None),
                        or_(
                            e.c.entity == query.system,
                            e.c.entity.like(f"{_escape_like(query.system)}:%", escape="\\"),
                        ),
                    ),
                )
            )
        return [_row_to_exception(r) for r in self.conn.execute(stmt)]

    def exception_systems(self, exception_ids: Sequence[int]) -> dict[int, str]:
        e, c = t.exceptions, t.commands
        found: dict[int, str] = {}
        ids = list(dict.fromkeys(exception_ids))
        for start in range(0, len(ids), 500):
            stmt = (
                select(e.c.id, e.c.entity, c.c.system)
                .select_from(e.outerjoin(c, c.c.id == e.c.command_id))
                .where(e.c.id.in_(ids[start : start + 500]))
            )
            for row in self.conn.execute(stmt):
                found[row.id] = row.system or row.entity.split(":", 1)[0]
        return found

    def get_exception(self, exception_id: int) -> ExceptionRow | None:
        row = self.conn.execute(
            select(t.exceptions).where(t.exceptions.c.id == exception_id)
        ).first()
        return _row_to_exception(row) if row is not None else None

    def set_exception_status(
        self, exception_ids: Sequence[int], status: str, actor: str, reason: str, now: datetime
    ) -> None:
        if exception_ids:
            self.conn.execute(
                update(t.exceptions)
                .where(t.exceptions.c.id.in_(list(exception_ids)))
                .values(status=status, resolved_by=actor, resolution=reason, updated_at=now)
            )

    def close_exceptions_for(
        self,
        entities: Sequence[str],
        command_ids: Sequence[int],
        actor: str,
        reason: str,
        now: datetime,
        *,
        rejections_only: bool = False,
        applied_versions: Mapping[str, str] | None = None,
    ) -> list[int]:
        e = t.exceptions
        if not entities and not command_ids:
            return []
        which = or_(e.c.entity.in_(list(entities)), e.c.command_id.in_(list(command_ids)))
        if rejections_only:
            which = and_(which, e.c.inbox_id.is_not(None))
        if applied_versions is not None:
            rows = self.conn.execute(
                select(e.c.id, e.c.entity, t.inbox.c.version)
                .select_from(e.outerjoin(t.inbox, t.inbox.c.id == e.c.inbox_id))
                .where(e.c.status == "open", which)
            )
            ids = [
                i
                for i, entity, version in rows
                if version is None
                or entity not in applied_versions
                or version_sort_key(version) <= version_sort_key(applied_versions[entity])
            ]
            if not ids:
                return []
            which = e.c.id.in_(ids)
        stmt = (
            update(e)
            .where(e.c.status == "open")
            .where(which)
            .values(status="resolved", resolved_by=actor, resolution=reason, updated_at=now)
            .returning(e.c.id)
        )
        return list(self.conn.execute(stmt).scalars())

    def audit(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            self.conn.execute(
                insert(t.audit),
                [
                    {
                        "at": a.at,
                        "actor": a.actor,
                        "action": a.action,
                        "entity": a.entity,
                        "detail": a.detail,
                        "correlation_id": a.correlation_id,
                    }
                    for a in entries
                ],
            )

    def list_audit(
        self, entity: str | None, limit: int, before_id: int | None = None
    ) -> list[AuditEntry]:
        stmt = select(t.audit).order_by(t.audit.c.id.desc()).limit(limit)
        if entity:
            stmt = stmt.where(t.audit.c.entity == entity)
        if before_id is not None:
            stmt = stmt.where(t.audit.c.id < before_id)
        return [
            AuditEntry(r.at, r.actor, r.action, r.entity, dict(r.detail), r.correlation_id, r.id)
            for r in self.conn.execute(stmt)
        ]

    def stats(self) -> StoreStats:
        i, c, e = t.inbox, t.commands, t.exceptions
        inbox = {
            s: n
            for s, n in self.conn.execute(select(i.c.status, func.count()).group_by(i.c.status))
        }
        by_system: dict[str, dict[str, int]] = {}
        commands: dict[str, int] = {}
        rows = self.conn.execute(
            select(c.c.system, c.c.status, func.count()).group_by(c.c.system, c.c.status)
        )
        for system, status, count in rows:
            by_system.setdefault(system, {})[status] = count
            commands[status] = commands.get(status, 0) + count
        open_by_class = {
            k: n
            for k, n in self.conn.execute(
                select(e.c.error_class, func.count())
                .where(e.c.status == "open")
                .group_by(e.c.error_class)
            )
        }
        oldest = self.conn.execute(
            select(i.c.received_at).where(i.c.status == "pending").order_by(i.c.id).limit(1)
        ).scalar()
        return StoreStats(inbox, commands, by_system, open_by_class, oldest)


def _escape_like(text: str) -> str:
    """``text`` with LIKE's wildcards taken literally (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
