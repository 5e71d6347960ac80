"""The durable store as the core sees it: one unit of work per transaction.

Every method of :class:`UnitOfWork` runs inside the transaction opened by
:meth:`Store.transaction`; nothing is visible to others until it commits, and an exception
inside the ``with`` block rolls everything back (no half-applied change).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from closeloop.domain.access import AccessRole
from closeloop.domain.changes import Change
from closeloop.domain.commands import Command, CommandStatus, ExceptionClass, Impact
from closeloop.domain.records import FlowState

RecordKey = tuple[str, str, str]
"""``(system, object, external_id)``"""


@dataclass(frozen=True, slots=True)
class InboxRow:
    """A change in the inbox, with its row id (intake order)."""

    id: int
    change: Change
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The last canonical data the hub applied for one source record."""

    key: RecordKey
    canonical_type: str
    canonical_id: str
    version: str
    hash: str


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A command as a flow step writes it to the outbox."""

    command: Command
    flow: str
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class CommandRow:
    """An outbox command with its delivery state."""

    id: int
    command: Command
    flow: str
    status: CommandStatus
    attempts: int
    ambiguous: bool
    correlation_id: str | None
    created_at: datetime
    first_attempt_at: datetime | None
    updated_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class CommandUpdate:
    """The new delivery state of a claimed command after an attempt."""

    id: int
    status: CommandStatus
    next_attempt_at: datetime | None = None
    ambiguous: bool = False
    result: dict[str, Any] | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class NewException:
    """A business exception to open: what, how bad, which entity it blocks, what to do."""

    error_class: ExceptionClass
    impact: Impact
    entity: str
    message: str
    command_id: int | None = None
    inbox_id: int | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class ExceptionRow:
    """A business exception as the operations surface shows it."""

    id: int
    error_class: ExceptionClass
    impact: Impact
    entity: str
    message: str
    status: str
    command_id: int | None
    inbox_id: int | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime
    resolved_by: str | None = None
    resolution: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """A poll cursor: the watermark, and the ``(external id, version)`` pairs seen inside the
    overlap window with their modification times."""

    system: str
    object: str
    watermark: datetime | None
    seen: Mapping[tuple[str, str], datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail: who did what to which entity, and why; ``id`` once
    stored (``None`` for an entry being written)."""

    at: datetime
    actor: str
    action: str
    entity: str
    detail: dict[str, Any]
    correlation_id: str | None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AppliedRecord:
    """What the hub last applied of one source record: ``version`` (the vendor's marker),
    when (``applied_at``) and its canonical ``data``."""

    key: RecordKey
    canonical_type: str
    version: str
    applied_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DriftRow:
    """One drift of a reconciliation run, as the report keeps it.

    ``kind``: ``mismatch`` (a field differs), ``missing`` (a record one system should hold is
    absent), ``orphan`` (a record that looks like the hub's, which the hub does not know),
    ``dangling`` (a cross-reference whose target no longer exists). ``key``: the business
    key (project key, invoice reference, time entry key, CRM account id); ``field``: the
    canonical field (``None`` for a whole record); ``values``: each system's value (JSON);
    ``owner``: the system of record (``None``: no clear owner); ``status``: ``drift``,
    ``in_flight`` (the outbox or the inbox still carries the change: not drift),
    ``repaired`` (a repair was sent), ``planned`` (a dry run's repair), ``exception`` (a
    person decides: ``exception_id``); ``cause``: the likely cause in words;
    ``repair``: what the repair does (or why there is none)."""

    domain: str
    kind: str
    key: str
    field: str | None
    values: dict[str, Any]
    owner: str | None
    status: str
    cause: str
    repair: str = ""
    exception_id: int | None = None


@dataclass(frozen=True, slots=True)
class ReconcileRun:
    """One reconciliation run: when, who asked (``trigger``: ``cli``, ``api``,
    ``schedule``; ``actor``), the ``domains``, whether it repaired (``repair``; ``dry_run``:
    planned only), ``records`` compared per domain, ``pages`` of facts read per system (the
    API calls behind them: ``closeloop bench reconcile``), ``counts`` (domain -> kind ->
    drifts; in-flight changes and drift with a person apart), ``status`` (``ok``,
    ``failed``: ``error`` says why) and its ``drifts`` (empty when listed)."""

    started_at: datetime
    finished_at: datetime
    trigger: str
    actor: str
    domains: tuple[str, ...]
    repair: bool
    dry_run: bool
    records: dict[str, int]
    pages: dict[str, int]
    counts: dict[str, dict[str, int]]
    status: str
    error: str | None = None
    drifts: tuple[DriftRow, ...] = ()
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """An API key as stored: never the secret, only its SHA-256 (``secret_hash``, hex)."""

    id: int
    name: str
    role: AccessRole
    secret_hash: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    sessions_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExceptionQuery:
    """A filter over business exceptions, newest first: ``status`` (``None``: any),
    ``error_class``, ``impact``, ``system`` (the command's target, or the first part of
    the entity), ``created_before`` (aware; older than), ``search`` (a substring of the
    entity or message, case-insensitive), ``ids``, and keyset paging: ``before_id`` (only
    ids below it) and ``limit``."""

    status: str | None = "open"
    error_class: ExceptionClass | None = None
    impact: Impact | None = None
    system: str | None = None
    created_before: datetime | None = None
    search: str | None = None
    ids: tuple[int, ...] | None = None
    before_id: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for status and metrics: by state, by class, and the age of the inbox."""

    inbox_by_status: dict[str, int]
    commands_by_status: dict[str, int]
    commands_by_system: dict[str, dict[str, int]]
    open_exceptions_by_class: dict[str, int]
    oldest_pending_inbox: datetime | None


class UnitOfWork(Protocol):
    """The operations the core makes inside one transaction."""

    # intake
    def insert_changes(self, changes: Sequence[Change], now: datetime) -> list[bool]:
        """Insert changes; ``False`` for each one already in the inbox (same identity)."""
        ...

    def insert_refused(
        self, refused: Sequence[tuple[Change, str]], now: datetime
    ) -> list[int | None]:
        """Insert ``(change, error)`` pairs that intake refused as ``rejected`` inbox rows
        (kept for the audit, never applied; ``error`` begins with
        :data:`~closeloop.domain.changes.INTAKE_REFUSAL`). Returns each new row's id, ``None``
        for a change already in the inbox (same identity)."""
        ...

    def get_cursor(self, system: str, object_name: str) -> Cursor | None:
        """The poll cursor of one object, or ``None`` before the first poll."""
        ...

    def put_cursor(self, cursor: Cursor, now: datetime) -> None:
        """Create or replace a poll cursor."""
        ...

    # apply
    def claim_inbox(self, limit: int) -> list[InboxRow]:
        """Pending inbox rows, oldest first, at most one per record, locked until commit.

        A row is offered only when no earlier pending row of the same record exists, so
        versions of one record apply in intake order even with several workers.
        """
        ...

    def mark_inbox(self, outcomes: Sequence[tuple[int, str, str | None]], now: datetime) -> None:
        """Set ``(inbox id, status, error)`` for each row."""
        ...

    def canonical_ids(
        self, canonical_type: str, system: str, external_ids: Sequence[str]
    ) -> dict[str, str]:
        """Canonical ids of the given records, creating xref rows (new uuids) for new ones."""
        ...

    def link_xref(
        self, canonical_type: str, canonical_id: str, system: str, external_id: str
    ) -> None:
        """Record that ``canonical_id`` is ``external_id`` in ``system`` (idempotent). The link
        replaces what the record was linked to in ``system`` before, and detaches
        ``external_id`` from any other canonical record: each side has one partner."""
        ...

    def find_xref(self, canonical_type: str, canonical_id: str, system: str) -> str | None:
        """The external id of a canonical record in ``system``, if known."""
        ...

    def get_snapshots(self, keys: Sequence[RecordKey]) -> dict[RecordKey, Snapshot]:
        """The last applied snapshot of each record that has one."""
        ...

    def put_snapshots(
        self, snapshots: Sequence[tuple[Snapshot, dict[str, Any]]], now: datetime
    ) -> None:
        """Create or replace snapshots with their canonical data."""
        ...

    def get_flows(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], FlowState]:
        """Flow states by ``(flow, business_key)``, locked until commit where the backend can."""
        ...

    def put_flows(self, states: Sequence[FlowState], now: datetime) -> None:
        """Create or replace flow states (with their timers)."""
        ...

    def due_flows(self, until: datetime, limit: int) -> list[FlowState]:
        """Flow instances whose timer is due at ``until``, earliest first, locked until commit
        (instances another transaction holds are skipped where the backend can)."""
        ...

    def list_flows(self, flow: str | None, limit: int) -> list[FlowState]:
        """Flow instances by flow name and business key, optionally of one flow."""
        ...

    def add_commands(self, commands: Sequence[NewCommand], now: datetime) -> int:
        """Write commands to the outbox, due now; a known idempotency key is skipped.

        Returns how many were new.
        """
        ...

    def supersede_parked(
        self, entities: Sequence[tuple[str, str, str]], now: datetime
    ) -> list[int]:
        """Supersede parked commands on ``(system, operation, entity)``; returns their ids."""
        ...

    # dispatch
    def claim_commands(
        self, systems: Sequence[str], now: datetime, limit: int, lease_until: datetime, worker: str
    ) -> list[CommandRow]:
        """Claim due commands of ``systems``, oldest first, the head of each business key only.

        A command is due when pending and its due time has come, or in flight with an expired
        lease (its worker died: it is returned with ``ambiguous`` set). Claimed commands are
        in flight until ``lease_until``.
        """
        ...

    def runnable_commands(self) -> int:
        """Pending or in-flight commands not waiting behind a parked command of their
        business key (those wait for a person)."""
        ...

    def still_claimed(self, command_ids: Sequence[int], worker: str) -> set[int]:
        """Which of ``command_ids`` are still in flight under ``worker``'s claim (locked)."""
        ...

    def finish_commands(self, updates: Sequence[CommandUpdate], now: datetime) -> None:
        """Record the outcome of attempts on claimed commands."""
        ...

    def release_commands(
        self, command_ids: Sequence[int], sent: Sequence[int], worker: str, now: datetime
    ) -> int:
        """Give back ``worker``'s claims on ``command_ids`` (a worker stopping before their
        calls ended): each is pending and due at ``now`` again, its attempt not counted;
        those also in ``sent`` (a call may have reached the target) become ambiguous, so the
        next claimer looks them up before sending. Claims another worker took over are left
        alone. Returns how many were released."""
        ...

    def get_command(self, command_id: int) -> CommandRow | None:
        """One command, or ``None``."""
        ...

    # exceptions and audit
    def open_exceptions(self, exceptions: Sequence[NewException], now: datetime) -> list[int]:
        """Open business exceptions; returns their ids."""
        ...

    def list_exceptions(self, status: str | None, limit: int) -> list[ExceptionRow]:
        """Exceptions, newest first, optionally only those with ``status``."""
        ...

    def find_exceptions(self, query: ExceptionQuery) -> list[ExceptionRow]:
        """Exceptions matching ``query``, newest first, at most ``query.limit``."""
        ...

    def exception_systems(self, exception_ids: Sequence[int]) -> dict[int, str]:
        """The system each exception concerns (its command's target, else the entity's
        first part), by exception id."""
        ...

    def get_exception(self, exception_id: int) -> ExceptionRow | None:
        """One exception, or ``None``."""
        ...

    def set_exception_status(
        self, exception_ids: Sequence[int], status: str, actor: str, reason: str, now: datetime
    ) -> None:
        """Move exceptions to ``status`` (``replayed``, ``resolved``) with who and why."""
        ...

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
        """Resolve the open exceptions about ``entities`` or ``command_ids`` (with
        ``rejections_only``, only inbox rejections: mapping or apply failures, not what a
        flow raised about the record; with ``applied_versions``, an entity's rejections only
        of versions at or before the version applied, by
        :func:`~closeloop.domain.changes.version_sort_key`: a newer version stays refused,
        however late the older one arrived); returns ids."""
        ...

    def requeue_command(self, command_id: int, now: datetime) -> bool:
        """Make a parked command pending again (attempts reset); ``False`` if not parked."""
        ...

    def set_command_status(self, command_id: int, status: CommandStatus, now: datetime) -> bool:
        """Force a parked command to a terminal ``status``; ``False`` if it was not parked."""
        ...

    def reset_inbox(self, inbox_id: int, now: datetime) -> bool:
        """Make a rejected inbox row pending again; ``False`` if it was not rejected, or was
        refused at intake (its stored payload is a scrubbed copy: only a new version of the
        record can fix it)."""
        ...

    def audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append to the audit trail."""
        ...

    def list_audit(
        self, entity: str | None, limit: int, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first, optionally about one entity; with ``before_id``
        only those with a lower id (keyset paging)."""
        ...

    def add_api_key(
        self,
        name: str,
        role: AccessRole,
        secret_hash: str,
        created_by: str,
        now: datetime,
        expires_at: datetime | None,
    ) -> int:
        """Store a new key; its id. Raises ``ConflictError`` when a key ever had ``name``
        (names stay unique, so the audit trail's ``key:<name>`` names one key)."""
        ...

    def get_api_key(self, key_id: int) -> ApiKeyRow | None:
        """One key by id, revoked or not."""
        ...

    def list_api_keys(self) -> list[ApiKeyRow]:
        """Every key, oldest first."""
        ...

    def revoke_api_key(self, key_id: int, now: datetime) -> bool:
        """Revoke a key; ``False`` when there is none or it was already revoked."""
        ...

    def touch_api_key(self, key_id: int, now: datetime) -> None:
        """Record that a key was used now."""
        ...

    def end_sessions(self, key_id: int, now: datetime) -> None:
        """End every console session of a key signed in before ``now``."""
        ...

    def stats(self) -> StoreStats:
        """Counts by state for status pages and metrics."""
        ...

    # reconciliation
    def applied_records(self, keys: Sequence[RecordKey]) -> dict[RecordKey, AppliedRecord]:
        """What the hub last applied of each of ``keys`` (absent: never applied)."""
        ...

    def latest_received(self, keys: Sequence[RecordKey]) -> dict[RecordKey, tuple[str, str]]:
        """The newest version the inbox received of each of ``keys`` and its status
        (``pending``, ``applied``, ``unchanged``, ...; absent: never received)."""
        ...

    def commands_for_entities(self, entities: Sequence[str]) -> list[CommandRow]:
        """Every outbox command written about any of ``entities`` (their ``entity``),
        oldest first."""
        ...

    def undelivered_commands(self, limit: int) -> list[CommandRow]:
        """Commands not yet delivered (pending, in flight or parked), oldest first."""
        ...

    def save_reconcile_run(self, run: ReconcileRun) -> int:
        """Keep a run's report with its drifts; returns its id."""
        ...

    def list_reconcile_runs(self, limit: int, trigger: str | None = None) -> list[ReconcileRun]:
        """Runs (of one ``trigger``, or all), newest first, without their drifts."""
        ...

    def get_reconcile_run(self, run_id: int) -> ReconcileRun | None:
        """One run with its drifts (``None`` when there is none)."""
        ...


class Store(Protocol):
    """A transactional store (SQLite or PostgreSQL)."""

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """Open a transaction; commit on normal exit, roll back on an exception."""
        ...

    def ping(self) -> None:
        """Raise the driver's error when the database does not answer a trivial query."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
