"""Apply: inbox rows become canonical records, flow steps and outbox commands (DESIGN.md 2-3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from closeloop.domain.changes import content_hash, version_sort_key
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, MappingError, Signal
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.registry import Registry, UnknownObjectError
from closeloop.engine.xref import answer_xref
from closeloop.ports.clock import Clock
from closeloop.ports.flows import XREF, Binding
from closeloop.ports.store import (
    InboxRow,
    NewCommand,
    NewException,
    Snapshot,
    Store,
    UnitOfWork,
)

log = structlog.get_logger(__name__)
_SETTLING = ("applied", "unchanged")
MAX_SIGNALS = 10_000  # per transaction: more means flows signal each other in a loop


@dataclass
class StepBuffer:
    """Flow steps decided in one transaction, written together at its end."""

    states: dict[tuple[str, str], FlowState] = field(default_factory=dict)
    commands: list[NewCommand] = field(default_factory=list)
    exceptions: list[NewException] = field(default_factory=list)
    resolves: list[str] = field(default_factory=list)
    signals: list[tuple[Signal, str | None]] = field(default_factory=list)

    def add(self, flow: str, key: str, step: FlowStep, correlation_id: str | None) -> None:
        """Record ``step`` of flow instance ``(flow, key)``."""
        self.states[(flow, key)] = FlowState(flow, key, step.state, step.data, step.wake_at)
        self.signals.extend((signal, correlation_id) for signal in step.signals)
        self.commands.extend(NewCommand(c, flow, correlation_id) for c in step.commands)
        self.exceptions.extend(
            NewException(
                i.error_class, i.impact, i.entity, i.message, correlation_id=correlation_id
            )
            for i in step.issues
        )
        self.resolves.extend(step.resolves)

    def merge(self, other: StepBuffer) -> None:
        """Take over everything ``other`` decided."""
        self.states.update(other.states)
        self.commands.extend(other.commands)
        self.exceptions.extend(other.exceptions)
        self.resolves.extend(other.resolves)
        self.signals.extend(other.signals)

    def deliver(
        self,
        tx: UnitOfWork,
        registry: Registry,
        known: dict[tuple[str, str], FlowState],
        now: datetime,
    ) -> None:
        """Hand every pending signal to its receiving instance, and the signals those steps
        send, until none is left. ``known`` caches states read in this transaction (it is
        filled with the ones read here). A signal to a flow the configuration does not run
        is not delivered (e.g. mobilize without invoicing); signals to ``xref`` are answered
        by :mod:`closeloop.engine.xref`. Raises ``RuntimeError`` past ``MAX_SIGNALS``."""
        delivered = 0
        while self.signals:
            signal, correlation_id = self.signals.pop(0)
            delivered += 1
            if delivered > MAX_SIGNALS:
                raise RuntimeError(f"more than {MAX_SIGNALS} signals: flows signal in a loop")
            key = (signal.flow, signal.business_key)
            if signal.flow != XREF and not registry.has_flow(signal.flow):
                continue
            if key not in self.states and key not in known:
                known.update(tx.get_flows([key]))
            state = self.states.get(key) or known.get(key)
            if signal.flow == XREF:  # the hub's cross-reference answers itself
                replies, watching = answer_xref(tx, signal, state)
                if watching is not None:
                    self.states[key] = watching
                self.signals.extend((reply, correlation_id) for reply in replies)
                continue
            step = registry.flow(signal.flow).on_signal(state, signal, now)
            if step is not None:
                self.add(signal.flow, signal.business_key, step, correlation_id)

    def write(self, tx: UnitOfWork, now: datetime) -> None:
        """Persist states, supersede parked commands the new ones replace, write commands,
        open and close exceptions."""
        tx.put_flows(list(self.states.values()), now)
        entities = [
            (n.command.system, n.command.operation, n.command.entity) for n in self.commands
        ]
        superseded = tx.supersede_parked(entities, now)
        if superseded or self.resolves:
            tx.close_exceptions_for(
                self.resolves,
                superseded,
                "closeloop",
                "fixed at source: a newer version replaced it",
                now,
            )
        tx.add_commands(self.commands, now)
        tx.open_exceptions(self.exceptions, now)


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
        buffer = self._run_flows(tx, records, outcomes, exceptions)
        tx.put_snapshots([(s, d) for i, s, d in new_snapshots if i not in outcomes], now)
        buffer.write(tx, now)
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
        opened = [e.error_class.value for e in [*exceptions, *buffer.exceptions]]
        return [s for s, _ in results], opened

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

    def _run_flows(
        self,
        tx: UnitOfWork,
        records: list[tuple[InboxRow, Binding, CanonicalRecord]],
        outcomes: dict[int, tuple[str, str | None]],
        exceptions: list[NewException],
    ) -> StepBuffer:
        wanted: list[tuple[str, str]] = []
        keyed: list[list[tuple[str, str]]] = []
        for _, binding, record in records:
            keys = []
            for flow in binding.flows:
                business_key = flow.business_key(record)
                if business_key:
                    keys.append((flow.name, business_key))
            keyed.append(keys)
            wanted.extend(keys)
        states: dict[tuple[str, str], FlowState] = tx.get_flows(wanted) if wanted else {}
        buffer = StepBuffer()
        for (row, _, record), keys in zip(records, keyed, strict=True):
            local = StepBuffer()
            try:
                for flow_name, business_key in keys:
                    flow = self.registry.flow(flow_name)
                    current = local.states.get((flow_name, business_key)) or states.get(
                        (flow_name, business_key)
                    )
                    step = flow.on_record(current, record)
                    if step is not None:
                        local.add(flow_name, business_key, step, row.change.correlation_id)
                local.deliver(tx, self.registry, states, self.clock.now())
            except Exception as exc:  # a flow bug must not stop the other records
                log.exception(
                    "flow failed", entity=_entity(row), correlation_id=row.change.correlation_id
                )
                message = f"{_describe(row)} could not be processed: {type(exc).__name__}: {exc}"
                outcomes[row.id] = ("rejected", message)
                exceptions.append(rejection(row, ExceptionClass.INTERNAL, message))
                continue
            states.update(local.states)
            buffer.merge(local)
        return buffer


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


def _entity(row: InboxRow) -> str:
    return f"{row.change.system}:{row.change.object}:{row.change.external_id}"


def _describe(row: InboxRow) -> str:
    c = row.change
    return f"{c.system} {c.object} {c.external_id} (version {c.version})"
