"""Apply: inbox rows become canonical records, flow steps and outbox commands
(docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from closeloop.domain.changes import content_hash, version_sort_key
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.domain.records import CanonicalRecord, MappingError
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.registry import Registry, UnknownObjectError
from closeloop.engine.runtime import FlowRuntime, Origin
from closeloop.ports.clock import Clock
from closeloop.ports.flows import Binding
from closeloop.ports.store import (
    AuditEntry,
    InboxRow,
    NewException,
    RecordKey,
    Snapshot,
    Store,
    UnitOfWork,
)

log = structlog.get_logger(__name__)
_SETTLING = ("applied", "unchanged")


class Applier:
    """Applies pending inbox rows in batches; one transaction per batch.

    A change whose mapping fails is rejected with a business exception listing every problem;
    a flow that raises rejects only its record (nothing of it is written); a batch whose
    transaction fails is retried one row at a time so that one poison row cannot block others.
    """

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, metrics: EngineMetrics
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.metrics = metrics

    def apply_batch(self, limit: int = 200) -> int:
        """Apply up to ``limit`` pending inbox rows; returns how many were processed."""
        try:
            with self.store.transaction() as tx:
                rows = tx.claim_inbox(limit)
                outcomes, opened = self._apply(tx, rows)
        except Exception:
            if limit == 1:
                raise
            log.exception("apply batch failed; retrying row by row")
            return sum(self._apply_one_guarded() for _ in range(limit))
        for row, outcome in zip(rows, outcomes, strict=True):
            self.metrics.changes_applied.labels(row.change.system, row.change.object, outcome).inc()
        for error_class in opened:
            self.metrics.exceptions.labels(error_class).inc()
        return len(rows)

    def _apply_one_guarded(self) -> int:
        try:
            return self.apply_batch(1)
        except Exception as exc:
            with self.store.transaction() as tx:
                rows = tx.claim_inbox(1)
                if not rows:
                    return 0
                row = rows[0]
                message = f"could not apply {_describe(row)}: {type(exc).__name__}: {exc}"
                tx.mark_inbox([(row.id, "rejected", message)], self.clock.now())
                tx.open_exceptions(
                    [rejection(row, ExceptionClass.INTERNAL, message)], self.clock.now()
                )
            self.metrics.exceptions.labels(ExceptionClass.INTERNAL.value).inc()
            return 1

    def _apply(self, tx: UnitOfWork, rows: list[InboxRow]) -> tuple[list[str], list[str]]:
        now = self.clock.now()
        outcomes: dict[int, tuple[str, str | None]] = {}
        exceptions: list[NewException] = []
        mapped: list[tuple[InboxRow, Binding, dict[str, Any]]] = []
        for row in rows:
            change = row.change
            try:
                binding = self.registry.binding(change.system, change.object)
                mapped.append((row, binding, binding.mapper(change)))
            except (MappingError, UnknownObjectError) as exc:
                problems = exc.problems if isinstance(exc, MappingError) else [str(exc)]
                message = f"{_describe(row)} cannot be mapped: " + "; ".join(problems)
                outcomes[row.id] = ("rejected", message)
                exceptions.append(rejection(row, ExceptionClass.MAPPING, message))
        ids = self._canonical_ids(tx, mapped)
        snapshots = tx.get_snapshots([row.change.key for row, _, _ in mapped])
        mapped = self._owned_only(tx, mapped, snapshots, now)
        records: list[tuple[InboxRow, Binding, CanonicalRecord]] = []
        new_snapshots: list[tuple[int, Snapshot, dict[str, Any]]] = []
        for row, binding, data in mapped:
            change = row.change
            previous = snapshots.get(change.key)
            digest = content_hash(data)
            if previous and version_sort_key(change.version) < version_sort_key(previous.version):
                outcomes[row.id] = ("stale", f"older than applied version {previous.version}")
                continue
            if previous and previous.hash == digest:
                outcomes[row.id] = ("unchanged", None)
                continue
            canonical_id = ids[(binding.canonical_type, change.system, change.external_id)]
            snapshot = Snapshot(
                change.key, binding.canonical_type, canonical_id, change.version, digest
            )
            snapshots[change.key] = snapshot
            new_snapshots.append((row.id, snapshot, data))
            records.append(
                (
                    row,
                    binding,
                    CanonicalRecord(
                        binding.canonical_type, canonical_id, change.key, change.version, data
                    ),
                )
            )
        runtime = FlowRuntime(tx, self.registry, now)
        offers = [(record, binding.flows, _origin(row)) for row, binding, record in records]
        for (row, _, _), failure in zip(records, runtime.offer_records(offers), strict=True):
            if failure is not None:  # nothing of the record was kept: reject it
                outcomes[row.id] = ("rejected", failure.message)
                exceptions.append(failure)
        tx.put_snapshots([(s, d) for i, s, d in new_snapshots if i not in outcomes], now)
        runtime.buffer.write(tx, now)
        # a version that maps again settles the rejections of earlier versions (what a flow
        # raised about the record stays open until the flow resolves it)
        settled: dict[str, str] = {}
        for row in rows:
            if outcomes.get(row.id, ("applied",))[0] in _SETTLING:
                entity, version = _entity(row), row.change.version
                known = settled.get(entity)
                if known is None or version_sort_key(version) > version_sort_key(known):
                    settled[entity] = version
        tx.close_exceptions_for(
            list(settled),
            [],
            "closeloop",
            "fixed at source: a newer version applied",
            now,
            rejections_only=True,
            applied_versions=settled,
        )
        tx.open_exceptions(exceptions, now)
        results = [outcomes.get(row.id, ("applied", None)) for row in rows]
        tx.mark_inbox([(row.id, s, err) for row, (s, err) in zip(rows, results, strict=True)], now)
        opened = [e.error_class.value for e in [*exceptions, *runtime.buffer.exceptions]]
        return [s for s, _ in results], opened

    def _owned_only(
        self,
        tx: UnitOfWork,
        mapped: list[tuple[InboxRow, Binding, dict[str, Any]]],
        snapshots: dict[RecordKey, Snapshot],
        now: datetime,
    ) -> list[tuple[InboxRow, Binding, dict[str, Any]]]:
        """Field ownership at runtime: a later version's change to a field its system does
        not own (``binding.foreign_fields``) is not propagated: the field keeps the value the
        hub applied before, and the change is audited as drift (action ``drift``, actor the
        system) and counted. A record's first version is taken whole: nothing owns it yet."""
        guarded = [
            row.change.key
            for row, b, _ in mapped
            if b.foreign_fields and row.change.key in snapshots
        ]
        if not guarded:
            return mapped
        before = tx.applied_records(guarded)
        out: list[tuple[InboxRow, Binding, dict[str, Any]]] = []
        entries: list[AuditEntry] = []
        for row, binding, data in mapped:
            old = before.get(row.change.key)
            changed = {
                name: data[name]
                for name in sorted(binding.foreign_fields)
                if old is not None
                and name in data
                and name in old.data
                and data[name] != old.data[name]
            }
            if old is not None and changed:
                data = {**data, **{name: old.data[name] for name in changed}}
                detail = {
                    "version": row.change.version,
                    "refused": changed,
                    "kept": {name: old.data[name] for name in changed},
                    "reason": f"{row.change.system} does not own these fields",
                }
                entries.append(
                    AuditEntry(
                        now,
                        row.change.system,
                        "drift",
                        _entity(row),
                        detail,
                        row.change.correlation_id,
                    )
                )
                for name in changed:
                    self.metrics.ownership_refused.labels(
                        row.change.system, binding.canonical_type, name
                    ).inc()
            out.append((row, binding, data))
        tx.audit(entries)
        return out

    def _canonical_ids(
        self, tx: UnitOfWork, mapped: list[tuple[InboxRow, Binding, dict[str, Any]]]
    ) -> dict[tuple[str, str, str], str]:
        groups: dict[tuple[str, str], list[str]] = {}
        for row, binding, _ in mapped:
            groups.setdefault((binding.canonical_type, row.change.system), []).append(
                row.change.external_id
            )
        ids: dict[tuple[str, str, str], str] = {}
        for (canonical_type, system), external_ids in groups.items():
            for external_id, canonical_id in tx.canonical_ids(
                canonical_type, system, external_ids
            ).items():
                ids[(canonical_type, system, external_id)] = canonical_id
        return ids


def rejection(row: InboxRow, error_class: ExceptionClass, message: str) -> NewException:
    """The business exception for an inbox row that could not be applied (or was refused at
    intake): about the row's record, so that a later version that applies settles it."""
    return NewException(
        error_class,
        Impact.REPORTING,
        _entity(row),
        message,
        inbox_id=row.id,
        correlation_id=row.change.correlation_id,
    )


def _origin(row: InboxRow) -> Origin:
    """The row's record as the runtime names it (the shape of :func:`rejection`)."""
    return Origin(
        _describe(row),
        _entity(row),
        Impact.REPORTING,
        inbox_id=row.id,
        correlation_id=row.change.correlation_id,
    )


def _entity(row: InboxRow) -> str:
    return f"{row.change.system}:{row.change.object}:{row.change.external_id}"


def _describe(row: InboxRow) -> str:
    c = row.change
    return f"{c.system} {c.object} {c.external_id} (version {c.version})"
