"""Reconciliation's reads of the hub's own state and its run reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, func, insert, select, tuple_

from closeloop.domain.commands import CommandStatus
from closeloop.ports.store import (
    AppliedRecord,
    CommandRow,
    DriftRow,
    ReconcileRun,
    RecordKey,
    iter_chunks,
)
from closeloop.store import tables as t
from closeloop.store.outbox_repo import _row_to_command

CHUNK = 500
_UNDELIVERED = (
    CommandStatus.PENDING.value,
    CommandStatus.IN_FLIGHT.value,
    CommandStatus.PARKED.value,
)


class ReconcileRepository:
    """Reconciliation operations of :class:`~closeloop.ports.store.UnitOfWork`."""

    conn: Connection

    def applied_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, AppliedRecord]:
        r = t.records
        found: dict[RecordKey, AppliedRecord] = {}
        for chunk in iter_chunks(list(dict.fromkeys(keys)), CHUNK):
            stmt = select(r).where(tuple_(r.c.system, r.c.object, r.c.external_id).in_(chunk))
            for row in self.conn.execute(stmt):
                key = (row.system, row.object, row.external_id)
                found[key] = AppliedRecord(
                    key, row.canonical_type, row.version, row.updated_at, dict(row.data)
                )
        return found

    def latest_received(self, keys: Sequence[RecordKey]) -> dict[RecordKey, tuple[str, str]]:
        i = t.inbox
        found: dict[RecordKey, tuple[str, str]] = {}
        for chunk in iter_chunks(list(dict.fromkeys(keys)), CHUNK):
            newest = (
                select(func.max(i.c.id))
                .where(tuple_(i.c.system, i.c.object, i.c.external_id).in_(chunk))
                .group_by(i.c.system, i.c.object, i.c.external_id)
            )
            stmt = select(i.c.system, i.c.object, i.c.external_id, i.c.version, i.c.status).where(
                i.c.id.in_(newest)
            )
            for row in self.conn.execute(stmt):
                found[(row.system, row.object, row.external_id)] = (row.version, row.status)
        return found

    def commands_for_entities(self, entities: Sequence[str]) -> list[CommandRow]:
        c = t.commands
        rows: list[CommandRow] = []
        for chunk in iter_chunks(list(dict.fromkeys(entities)), CHUNK):
            stmt = select(c).where(c.c.entity.in_(chunk))
            rows.extend(_row_to_command(r) for r in self.conn.execute(stmt))
        return sorted(rows, key=lambda row: row.id)

    def undelivered_commands(self, limit: int) -> list[CommandRow]:
        c = t.commands
        stmt = select(c).where(c.c.status.in_(_UNDELIVERED)).order_by(c.c.id).limit(limit)
        return [_row_to_command(r) for r in self.conn.execute(stmt)]

    def save_reconcile_run(self, run: ReconcileRun) -> int:
        row = {
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "trigger": run.trigger,
            "actor": run.actor[:128],
            "domains": list(run.domains),
            "repair": run.repair,
            "dry_run": run.dry_run,
            "records": run.records,
            "pages": run.pages,
            "counts": run.counts,
            "status": run.status,
            "error": run.error,
        }
        stmt = insert(t.reconcile_runs).returning(t.reconcile_runs.c.id)
        run_id = int(self.conn.execute(stmt, row).scalar_one())
        drifts = [{"run_id": run_id, **_drift_row(d)} for d in run.drifts]
        for chunk in iter_chunks(drifts, CHUNK):
            self.conn.execute(insert(t.reconcile_drifts), list(chunk))
        return run_id

    def list_reconcile_runs(self, limit: int, trigger: str | None = None) -> list[ReconcileRun]:
        r = t.reconcile_runs
        stmt = select(r).order_by(r.c.id.desc()).limit(limit)
        if trigger is not None:
            stmt = stmt.where(r.c.trigger == trigger)
        return [_run(row, ()) for row in self.conn.execute(stmt)]

    def get_reconcile_run(self, run_id: int) -> ReconcileRun | None:
        r, d = t.reconcile_runs, t.reconcile_drifts
        row = self.conn.execute(select(r).where(r.c.id == run_id)).first()
        if row is None:
            return None
        drifts = tuple(
            DriftRow(
                domain=x.domain,
                kind=x.kind,
                key=x.key,
                field=x.field,
                values=dict(x.values),
                owner=x.owner,
                status=x.status,
                cause=x.cause,
                repair=x.repair,
                exception_id=x.exception_id,
            )
            for x in self.conn.execute(select(d).where(d.c.run_id == run_id).order_by(d.c.id))
        )
        return _run(row, drifts)


def _drift_row(drift: DriftRow) -> dict[str, Any]:
    return asdict(drift)


def _run(row: Any, drifts: tuple[DriftRow, ...]) -> ReconcileRun:
    return ReconcileRun(
        started_at=row.started_at,
        finished_at=row.finished_at,
        trigger=row.trigger,
        actor=row.actor,
        domains=tuple(row.domains),
        repair=bool(row.repair),
        dry_run=bool(row.dry_run),
        records=dict(row.records),
        pages=dict(row.pages),
        counts={k: dict(v) for k, v in dict(row.counts).items()},
        status=row.status,
        error=row.error,
        drifts=drifts,
        id=row.id,
    )
