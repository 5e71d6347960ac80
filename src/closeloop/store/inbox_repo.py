"""Inbox, cursors, snapshots, xref and flow state: the intake and apply side of the store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, tuple_, update

from closeloop.domain.changes import INTAKE_REFUSAL, Change
from closeloop.ports.store import Cursor, InboxRow, RecordKey, Snapshot, iter_chunks
from closeloop.store import tables as t
from closeloop.store._sql import CHUNK, dialect_insert, for_update, insert_ignore, upsert


class InboxRepository:
    """Intake and apply operations of :class:`~closeloop.ports.store.UnitOfWork`."""

    conn: Connection

    def insert_changes(self, changes: Sequence[Change], now: datetime) -> list[bool]:
        ids = self._insert_inbox([(c, "pending", None) for c in changes], now)
        return [i is not None for i in ids]

    def insert_refused(
        self, refused: Sequence[tuple[Change, str]], now: datetime
    ) -> list[int | None]:
        return self._insert_inbox([(c, "rejected", error) for c, error in refused], now)

    def _insert_inbox(
        self, entries: Sequence[tuple[Change, str, str | None]], now: datetime
    ) -> list[int | None]:
        """Insert ``(change, status, error)`` rows; the new row id of each, ``None`` for a
        change already in the inbox (or earlier in ``entries``)."""
        if not entries:
            return []
        rows = [
            {
                "system": c.system,
                "object": c.object,
                "external_id": c.external_id,
                "version": c.version,
                "payload": c.payload,
                "correlation_id": c.correlation_id or uuid.uuid4().hex,
                "modified_at": c.modified_at,
                "received_at": now,
                "status": status,
                "error": error,
                "processed_at": None if status == "pending" else now,
            }
            for c, status, error in entries
        ]
        i = t.inbox
        stmt = (
            dialect_insert(self.conn, i)
            .on_conflict_do_nothing()
            .returning(i.c.id, i.c.system, i.c.object, i.c.external_id, i.c.version)
        )
        inserted = {
            (r.system, r.object, r.external_id, r.version): r.id
            for r in self.conn.execute(stmt, rows)
        }
        seen: set[tuple[str, str, str, str]] = set()
        result: list[int | None] = []
        for c, _, _ in entries:
            ident = (c.system, c.object, c.external_id, c.version)
            result.append(inserted.get(ident) if ident not in seen else None)
            seen.add(ident)
        return result

    def get_cursor(self, system: str, object_name: str) -> Cursor | None:
        row = self.conn.execute(
            select(t.cursors).where(t.cursors.c.system == system, t.cursors.c.object == object_name)
        ).first()
        if row is None:
            return None
        seen = {(str(a), str(b)): datetime.fromisoformat(at) for a, b, at in row.seen}
        return Cursor(system=system, object=object_name, watermark=row.watermark, seen=seen)

    def put_cursor(self, cursor: Cursor, now: datetime) -> None:
        upsert(
            self.conn,
            t.cursors,
            [
                {
                    "system": cursor.system,
                    "object": cursor.object,
                    "watermark": cursor.watermark,
                    "seen": sorted(
                        [eid, version, at.isoformat()] for (eid, version), at in cursor.seen.items()
                    ),
                    "updated_at": now,
                }
            ],
            ["system", "object"],
        )

    def claim_inbox(self, limit: int) -> list[InboxRow]:
        i = t.inbox
        record = (i.c.system, i.c.object, i.c.external_id)
        # two plain queries rather than one anti-join: their plans stay index lookups even
        # while the planner has no statistics on a young table
        candidates = select(i.c.id, *record).where(i.c.status == "pending").order_by(i.c.id)
        candidates = for_update(self.conn, candidates.limit(limit), skip_locked=True, of=i)
        found = list(self.conn.execute(candidates))
        if not found:
            return []
        heads: dict[tuple[str, str, str], int] = {}
        keys = list({(r.system, r.object, r.external_id) for r in found})
        for chunk in iter_chunks(keys, CHUNK):
            stmt = (
                select(*record, func.min(i.c.id))
                .where(i.c.status == "pending", tuple_(*record).in_(chunk))
                .group_by(*record)
            )
            heads.update({(s, o, e): first for s, o, e, first in self.conn.execute(stmt)})
        ids = [r.id for r in found if heads.get((r.system, r.object, r.external_id)) == r.id]
        if not ids:
            return []
        rows = self.conn.execute(select(i).where(i.c.id.in_(ids)).order_by(i.c.id))
        return [
            InboxRow(
                id=r.id,
                change=Change.model_construct(
                    system=r.system,
                    object=r.object,
                    external_id=r.external_id,
                    version=r.version,
                    payload=r.payload,
                    correlation_id=r.correlation_id,
                    modified_at=r.modified_at,
                ),
                received_at=r.received_at,
            )
            for r in rows
        ]

    def mark_inbox(self, outcomes: Sequence[tuple[int, str, str | None]], now: datetime) -> None:
        if not outcomes:
            return
        stmt = (
            update(t.inbox)
            .where(t.inbox.c.id == bindparam("b_id"))
            .values(status=bindparam("b_status"), error=bindparam("b_error"), processed_at=now)
        )
        self.conn.execute(stmt, [{"b_id": i, "b_status": s, "b_error": e} for i, s, e in outcomes])

    def reset_inbox(self, inbox_id: int, now: datetime) -> bool:
        i = t.inbox
        refused_at_intake = i.c.error.startswith(INTAKE_REFUSAL, autoescape=True)
        result = self.conn.execute(
            update(i)
            .where(
                i.c.id == inbox_id,
                i.c.status == "rejected",
                or_(i.c.error.is_(None), ~refused_at_intake),
            )
            .values(status="pending", error=None, processed_at=now)
        )
        return bool(result.rowcount)

    def canonical_ids(
        self, canonical_type: str, system: str, external_ids: Sequence[str]
    ) -> dict[str, str]:
        x = t.xref

        def lookup(wanted: Sequence[str]) -> dict[str, str]:
            found: dict[str, str] = {}
            for chunk in iter_chunks(wanted, CHUNK):
                rows = self.conn.execute(
                    select(x.c.external_id, x.c.canonical_id).where(
                        x.c.canonical_type == canonical_type,
                        x.c.system == system,
                        x.c.external_id.in_(chunk),
                    )
                )
                found.update({r.external_id: r.canonical_id for r in rows})
            return found

        wanted = list(dict.fromkeys(external_ids))
        found = lookup(wanted)
        missing = [e for e in wanted if e not in found]
        if missing:  # insert new ids; a concurrent worker's insert wins, so read back
            new_rows = [
                {
                    "canonical_type": canonical_type,
                    "system": system,
                    "external_id": e,
                    "canonical_id": str(uuid.uuid4()),
                }
                for e in missing
            ]
            insert_ignore(self.conn, x, new_rows)
            found.update(lookup(missing))
        return found

    def link_xref(
        self, canonical_type: str, canonical_id: str, system: str, external_id: str
    ) -> None:
        x = t.xref
        self.conn.execute(
            delete(x).where(
                x.c.canonical_type == canonical_type,
                x.c.system == system,
                or_(x.c.canonical_id == canonical_id, x.c.external_id == external_id),
            )
        )
        self.conn.execute(
            insert(x).values(
                canonical_type=canonical_type,
                system=system,
                external_id=external_id,
                canonical_id=canonical_id,
            )
        )

    def find_xref(self, canonical_type: str, canonical_id: str, system: str) -> str | None:
        x = t.xref
        return self.conn.execute(
            select(x.c.external_id).where(
                x.c.canonical_type == canonical_type,
                x.c.canonical_id == canonical_id,
                x.c.system == system,
            )
        ).scalar()

    def get_snapshots(self, keys: Sequence[RecordKey]) -> dict[RecordKey, Snapshot]:
        r = t.records
        found: dict[RecordKey, Snapshot] = {}
        for chunk in iter_chunks(list(dict.fromkeys(keys)), CHUNK):
            stmt = select(
                r.c.system,
                r.c.object,
                r.c.external_id,
                r.c.canonical_type,
                r.c.canonical_id,
                r.c.version,
                r.c.hash,
            ).where(tuple_(r.c.system, r.c.object, r.c.external_id).in_(chunk))
            for row in self.conn.execute(stmt):
                key = (row.system, row.object, row.external_id)
                found[key] = Snapshot(
                    key, row.canonical_type, row.canonical_id, row.version, row.hash
                )
        return found

    def put_snapshots(
        self, snapshots: Sequence[tuple[Snapshot, dict[str, Any]]], now: datetime
    ) -> None:
        rows = [
            {
                "system": s.key[0],
                "object": s.key[1],
                "external_id": s.key[2],
                "canonical_type": s.canonical_type,
                "canonical_id": s.canonical_id,
                "version": s.version,
                "hash": s.hash,
                "data": data,
                "updated_at": now,
            }
            for s, data in snapshots
        ]
        upsert(self.conn, t.records, rows, ["system", "object", "external_id"])
