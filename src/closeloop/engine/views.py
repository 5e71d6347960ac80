"""Read models for the operations console and ``/api/v1``: business exceptions grouped by
cause, and the overview figures (each system's health, queue and lag, exceptions by class
and impact). Pure functions over what :class:`~closeloop.engine.operations.Operations` and
the store ports answer, the two reads both surfaces make through them
(:func:`find_groups`, :func:`read_overview`), plus :class:`ReadModel`, the store reads of
the engagement views (:mod:`closeloop.flows.timeline`) that operator actions do not make."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from closeloop.domain.records import FlowState
from closeloop.engine.operations import Operations
from closeloop.ports.store import (
    AppliedRecord,
    AuditEntry,
    CommandRow,
    ExceptionQuery,
    ExceptionRow,
    ReconcileRun,
    RecordKey,
    Store,
    StoreStats,
)

GROUP_SCAN = 10_000
"""The most open exceptions read to group them or count them by impact."""

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ID_TOKEN = re.compile(r"[\w-]*\d[\w./-]*")  # any word holding a digit: ids, numbers, dates
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SPACES = re.compile(r"\s+")


def normalise_message(message: str, entity: str = "") -> str:
    """``message`` with what differs between exceptions of one cause taken out: the
    exception's own ``entity``, UUIDs, quoted values and any word holding a digit (ids,
    amounts, dates, attempt counts) become ``…``; e.g. ``"erp upsert of Record:9f1c...
    failed 3 times"`` and ``"... Record:77ab... failed 4 times"`` both give
    ``"erp upsert of … failed … times"``."""
    text = message.replace(entity, "…") if entity else message
    text = _UUID.sub("…", text)
    text = _QUOTED.sub("…", text)
    text = _ID_TOKEN.sub("…", text)
    text = re.sub(r"…(?:[\s:/-]*…)+", "…", text)
    return _SPACES.sub(" ", text).strip()


@dataclass
class ExceptionGroup:
    """Open exceptions with one cause: the same ``error_class``, ``system`` and normalised
    message (``cause``). ``key`` is a short stable id of the cause (hex) for forms and
    links; ``rows`` are the exceptions, oldest first (``example`` is the oldest; ``ids``,
    ``entities`` and ``impacts`` follow from them)."""

    key: str
    error_class: str
    system: str
    cause: str
    rows: list[ExceptionRow] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many exceptions the group holds."""
        return len(self.rows)

    @property
    def oldest(self) -> datetime:
        """When the oldest was opened (aware UTC)."""
        return self.rows[0].created_at

    @property
    def example(self) -> ExceptionRow:
        """The oldest exception, whose message stands for the group."""
        return self.rows[0]

    @property
    def ids(self) -> list[int]:
        """The exceptions' ids, oldest first."""
        return [r.id for r in self.rows]

    @property
    def entities(self) -> list[str]:
        """The distinct entities the group blocks, in order of first appearance."""
        return list(dict.fromkeys(r.entity for r in self.rows))

    @property
    def impacts(self) -> list[str]:
        """The distinct business impacts, sorted."""
        return sorted({r.impact.value for r in self.rows})


def group_key(error_class: str, system: str, cause: str) -> str:
    """The stable id of a cause: 12 hex digits of SHA-256 over its three parts."""
    return hashlib.sha256(f"{error_class}\x1f{system}\x1f{cause}".encode()).hexdigest()[:12]


def group_exceptions(
    rows: Iterable[ExceptionRow], systems: Mapping[int, str]
) -> list[ExceptionGroup]:
    """``rows`` grouped by cause (:class:`ExceptionGroup`), largest group first, then oldest.
    ``systems``: the system each exception concerns by id
    (:meth:`~closeloop.engine.operations.Operations.exception_systems`); an id missing from
    it is grouped under the first part of its entity."""
    groups: dict[str, ExceptionGroup] = {}
    for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
        system = systems.get(row.id) or row.entity.split(":", 1)[0]
        cause = normalise_message(row.message, row.entity)
        key = group_key(row.error_class.value, system, cause)
        group = groups.setdefault(key, ExceptionGroup(key, row.error_class.value, system, cause))
        group.rows.append(row)
    return sorted(groups.values(), key=lambda g: (-g.count, g.oldest))


def find_groups(operations: Operations, query: ExceptionQuery) -> list[ExceptionGroup]:
    """The exceptions ``query`` finds (its ``limit`` bounds the scan: pass
    :data:`GROUP_SCAN`), grouped by cause (:func:`group_exceptions`). When the groups hold
    ``query.limit`` exceptions in all, more may exist than were read."""
    rows = operations.find_exceptions(query)
    return group_exceptions(rows, operations.exception_systems([r.id for r in rows]))


@dataclass(frozen=True, slots=True)
class SystemHealth:
    """One system as the overview shows it: its circuit ``breaker`` (``closed``, ``open``,
    ``half_open``; ``unknown`` when this process dispatches nothing to it), ``quota`` in
    words (``-``: the connector says nothing), and its outbox commands by status
    (``pending``, ``in_flight``, ``parked``: waiting for a person)."""

    name: str
    breaker: str
    quota: str
    pending: int
    in_flight: int
    parked: int

    @property
    def healthy(self) -> bool:
        """Whether calls flow (breaker closed) and nothing waits for a person."""
        return self.breaker in ("closed", "unknown") and self.parked == 0


@dataclass(frozen=True, slots=True)
class Overview:
    """The console's first page: ``systems`` by name, the inbox's ``inbox_pending`` changes
    and the age of its oldest (``lag_s``, seconds; ``None`` when none waits), open
    exceptions by class and by impact (counts), and the ``last_run`` of reconciliation
    (``None`` before the first)."""

    systems: list[SystemHealth]
    inbox_pending: int
    lag_s: float | None
    exceptions_by_class: dict[str, int]
    exceptions_by_impact: dict[str, int]
    open_exceptions: int
    last_run: ReconcileRun | None


def overview(
    stats: StoreStats,
    open_rows: Sequence[ExceptionRow],
    system_names: Sequence[str],
    breakers: Mapping[str, str],
    quotas: Mapping[str, str],
    last_run: ReconcileRun | None,
    now: datetime,
) -> Overview:
    """The overview from the store's ``stats``, the ``open_rows`` exceptions, each system's
    breaker state and quota (by name), the latest reconciliation run and ``now`` (aware)."""
    systems = []
    for name in system_names:
        by_status = stats.commands_by_system.get(name, {})
        systems.append(
            SystemHealth(
                name,
                breakers.get(name, "unknown"),
                quotas.get(name, "-"),
                by_status.get("pending", 0),
                by_status.get("in_flight", 0),
                by_status.get("parked", 0),
            )
        )
    oldest = stats.oldest_pending_inbox
    by_impact: dict[str, int] = {}
    for row in open_rows:
        by_impact[row.impact.value] = by_impact.get(row.impact.value, 0) + 1
    return Overview(
        systems,
        stats.inbox_by_status.get("pending", 0),
        max(0.0, (now - oldest).total_seconds()) if oldest else None,
        dict(sorted(stats.open_exceptions_by_class.items())),
        dict(sorted(by_impact.items())),
        sum(stats.open_exceptions_by_class.values()),
        last_run,
    )


def read_overview(
    operations: Operations,
    system_names: Sequence[str],
    breakers: Mapping[str, str],
    quotas: Mapping[str, str],
    last_run: ReconcileRun | None,
    now: datetime,
) -> Overview:
    """:func:`overview` of what ``operations`` answers now: the store's counts and the open
    exceptions (at most :data:`GROUP_SCAN` of them are read to count them by impact)."""
    open_rows = operations.find_exceptions(ExceptionQuery(limit=GROUP_SCAN))
    return overview(operations.stats(), open_rows, system_names, breakers, quotas, last_run, now)


class ReadModel:
    """Store reads of the console and the API beyond the operator actions': each a
    transaction of its own, reading only. It answers
    :class:`closeloop.flows.timeline.EngagementReads`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def flows(self) -> list[FlowState]:
        """Every flow instance with its state and data (at most 100,000)."""
        with self.store.transaction() as tx:
            return tx.list_flows(None, 100_000)

    def audit_trail(self, entity: str, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries about ``entity``, newest first."""
        with self.store.transaction() as tx:
            return tx.list_audit(entity, limit)

    def find_exceptions(self, query: ExceptionQuery) -> list[ExceptionRow]:
        """Exceptions matching ``query``, newest first."""
        with self.store.transaction() as tx:
            return tx.find_exceptions(query)

    def commands_for(self, entities: Sequence[str]) -> list[CommandRow]:
        """Every outbox command about any of ``entities``, oldest first."""
        if not entities:
            return []
        with self.store.transaction() as tx:
            return tx.commands_for_entities(list(dict.fromkeys(entities)))

    def applied(self, keys: Sequence[RecordKey]) -> dict[RecordKey, AppliedRecord]:
        """What the hub last applied of each of ``keys`` (``(system, object, id)``)."""
        if not keys:
            return {}
        with self.store.transaction() as tx:
            return tx.applied_records(list(dict.fromkeys(keys)))
