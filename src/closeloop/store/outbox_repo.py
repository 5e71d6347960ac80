"""Outbox commands: write, claim (head of each business key), finish, requeue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, tuple_, update

from closeloop.domain.commands import Command, CommandStatus, Impact
from closeloop.ports.store import CommandRow, CommandUpdate, NewCommand, iter_chunks
from closeloop.store import tables as t
from closeloop.store._sql import CHUNK, dialect_insert, for_update

_BLOCKING = (CommandStatus.PENDING, CommandStatus.IN_FLIGHT, CommandStatus.PARKED)


def _row_to_command(r: Any) -> CommandRow:
    return CommandRow(
        id=r.id,
        command=Command(
            system=r.system,
            operation=r.operation,
            business_key=r.business_key,
            idempotency_key=r.idempotency_key,
            payload=r.payload,
            entity=r.entity,
            impact=Impact(r.impact),
        ),
        flow=r.flow,
        status=CommandStatus(r.status),
        attempts=r.attempts,
        ambiguous=bool(r.ambiguous),
        correlation_id=r.correlation_id,
        created_at=r.created_at,
        first_attempt_at=r.first_attempt_at,
        updated_at=getattr(r, "updated_at", None),
        last_error=getattr(r, "last_error", None),
    )


class OutboxRepository:
    """Outbox operations of :class:`~closeloop.ports.store.UnitOfWork`."""

    conn: Connection

    def add_commands(self, commands: Sequence[NewCommand], now: datetime) -> int:
        if not commands:
            return 0
        rows = [
            {
                "idempotency_key": n.command.idempotency_key,
                "system": n.command.system,
                "operation": n.command.operation,
                "business_key": n.command.business_key,
                "entity": n.command.entity,
                "impact": n.command.impact.value,
                "flow": n.flow,
                "payload": n.command.payload,
                "status": CommandStatus.PENDING.value,
                "attempts": 0,
                "ambiguous": False,
                "next_attempt_at": now,
                "correlation_id": n.correlation_id,
                "created_at": now,
                "updated_at": now,
            }
            for n in commands
        ]
        stmt = (
            dialect_insert(self.conn, t.commands)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(t.commands.c.id)
        )
        return len(self.conn.execute(stmt, rows).all())

    def supersede_parked(
        self, entities: Sequence[tuple[str, str, str]], now: datetime
    ) -> list[int]:
        c = t.commands
        ids: list[int] = []
        wanted = [e for e in dict.fromkeys(entities) if e[2]]
        for chunk in iter_chunks(wanted, CHUNK):
            stmt = (
                update(c)
                .where(
                    tuple_(c.c.system, c.c.operation, c.c.entity).in_(chunk),
                    c.c.status == CommandStatus.PARKED.value,
                )
                .values(status=CommandStatus.SUPERSEDED.value, updated_at=now)
                .returning(c.c.id)
            )
            ids.extend(self.conn.execute(stmt).scalars())
        return ids

    def claim_commands(
        self, systems: Sequence[str], now: datetime, limit: int, lease_until: datetime, worker: str
    ) -> list[CommandRow]:
        if not systems or limit <= 0:
            return []
        c = t.commands
        # candidates first, then the head of each of their business keys: two index lookups
        # whose plans do not depend on the planner's statistics (see claim_inbox)
        candidates = (
            select(c.c.id, c.c.business_key)
            .where(c.c.status.in_([CommandStatus.PENDING.value, CommandStatus.IN_FLIGHT.value]))
            .where(c.c.system.in_(list(systems)))
            .where(
                or_(
                    and_(c.c.status == CommandStatus.PENDING.value, c.c.next_attempt_at <= now),
                    and_(c.c.status == CommandStatus.IN_FLIGHT.value, c.c.lease_until < now),
                )
            )
            .order_by(c.c.id)
            .limit(limit)
        )
        candidates = for_update(self.conn, candidates, skip_locked=True, of=c)
        found = list(self.conn.execute(candidates))
        if not found:
            return []
        heads: dict[str, int] = {}
        for chunk in iter_chunks(list({r.business_key for r in found}), CHUNK):
            heads_of = (
                select(c.c.business_key, func.min(c.c.id))
                .where(c.c.business_key.in_(chunk))
                .where(c.c.status.in_([s.value for s in _BLOCKING]))
                .group_by(c.c.business_key)
            )
            heads.update({key: first for key, first in self.conn.execute(heads_of)})
        ids = [r.id for r in found if heads.get(r.business_key) == r.id]
        if not ids:
            return []
        stmt = (
            update(c)
            .where(c.c.id.in_(ids))
            .values(
                ambiguous=case(
                    (c.c.status == CommandStatus.IN_FLIGHT.value, True), else_=c.c.ambiguous
                ),
                status=CommandStatus.IN_FLIGHT.value,
                attempts=c.c.attempts + 1,
                lease_until=lease_until,
                claimed_by=worker,
                first_attempt_at=func.coalesce(c.c.first_attempt_at, now),
                updated_at=now,
            )
            .returning(*c.c)
        )
        return sorted((_row_to_command(r) for r in self.conn.execute(stmt)), key=lambda r: r.id)

    def still_claimed(self, command_ids: Sequence[int], worker: str) -> set[int]:
        c = t.commands
        held: set[int] = set()
        for chunk in iter_chunks(list(command_ids), CHUNK):
            stmt = select(c.c.id).where(
                c.c.id.in_(chunk),
                c.c.claimed_by == worker,
                c.c.status == CommandStatus.IN_FLIGHT.value,
            )
            held.update(self.conn.execute(for_update(self.conn, stmt)).scalars())
        return held

    def finish_commands(self, updates: Sequence[CommandUpdate], now: datetime) -> None:
        if not updates:
            return
        c = t.commands
        stmt = (
            update(c)
            .where(c.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                next_attempt_at=func.coalesce(bindparam("b_next", type_=t.TS), c.c.next_attempt_at),
                ambiguous=bindparam("b_ambiguous"),
                result=bindparam("b_result", type_=t.commands.c.result.type),
                last_error=bindparam("b_error"),
                lease_until=None,
                updated_at=now,
            )
        )
        self.conn.execute(
            stmt,
            [
                {
                    "b_id": u.id,
                    "b_status": u.status.value,
                    "b_next": u.next_attempt_at,
                    "b_ambiguous": u.ambiguous,
                    "b_result": u.result,
                    "b_error": u.last_error,
                }
                for u in updates
            ],
        )

    def release_commands(
        self, command_ids: Sequence[int], sent: Sequence[int], worker: str, now: datetime
    ) -> int:
        c = t.commands
        ambiguous = set(sent)
        released = 0
        for was_sent in (True, False):
            wanted = [i for i in command_ids if (i in ambiguous) is was_sent]
            for chunk in iter_chunks(wanted, CHUNK):
                stmt = (
                    update(c)
                    .where(
                        c.c.id.in_(chunk),
                        c.c.claimed_by == worker,
                        c.c.status == CommandStatus.IN_FLIGHT.value,
                    )
                    .values(
                        status=CommandStatus.PENDING.value,
                        attempts=case((c.c.attempts > 0, c.c.attempts - 1), else_=0),
                        ambiguous=True if was_sent else c.c.ambiguous,
                        next_attempt_at=now,
                        lease_until=None,
                        updated_at=now,
                    )
                )
                released += self.conn.execute(stmt).rowcount
        return released

    def get_command(self, command_id: int) -> CommandRow | None:
        row = self.conn.execute(select(t.commands).where(t.commands.c.id == command_id)).first()
        return _row_to_command(row) if row is not None else None

    def requeue_command(self, command_id: int, now: datetime) -> bool:
        c = t.commands
        result = self.conn.execute(
            update(c)
            .where(c.c.id == command_id, c.c.status == CommandStatus.PARKED.value)
            .values(
                status=CommandStatus.PENDING.value,
                attempts=0,
                first_attempt_at=None,
                next_attempt_at=now,
                updated_at=now,
            )
        )
        return bool(result.rowcount)

    def set_command_status(self, command_id: int, status: CommandStatus, now: datetime) -> bool:
        c = t.commands
        result = self.conn.execute(
            update(c)
            .where(c.c.id == command_id, c.c.status == CommandStatus.PARKED.value)
            .values(status=status.value, updated_at=now)
        )
        return bool(result.rowcount)

    def runnable_commands(self) -> int:
        c = t.commands
        parked = c.alias("parked")
        blocked = (
            select(parked.c.id)
            .where(
                parked.c.business_key == c.c.business_key,
                parked.c.status == CommandStatus.PARKED.value,
                parked.c.id < c.c.id,
            )
            .exists()
        )
        stmt = select(func.count()).where(
            c.c.status.in_([CommandStatus.PENDING.value, CommandStatus.IN_FLIGHT.value]),
            ~blocked,
        )
        return int(self.conn.execute(stmt).scalar() or 0)
