"""Operator actions: business exceptions (list, show, replay, resolve), cross-reference
links a person decides and credit notes a person asks for, each with the audit trail."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from closeloop.domain.commands import CommandStatus
from closeloop.domain.errors import ConflictError, InputError, NotFoundError
from closeloop.domain.records import FlowState, Signal
from closeloop.engine.registry import Registry
from closeloop.engine.runtime import FlowFailure, FlowRuntime
from closeloop.ports.clock import Clock
from closeloop.ports.flows import XREF, xref_key, xref_link
from closeloop.ports.store import (
    AuditEntry,
    ExceptionQuery,
    ExceptionRow,
    Store,
    StoreStats,
    UnitOfWork,
)


class OperationError(ConflictError):
    """An operator action that cannot be done now (the exception is not open, it has nothing
    to replay, a waiting flow failed on the link)."""


class OperationNotFound(NotFoundError):
    """An operator action names an exception that does not exist."""


class OperationInputError(InputError):
    """An operator action lacks what it needs (a reason, both systems and ids)."""


BULK_MAX = 1000


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What a bulk action did to one exception: ``ok`` and its new status, or why not."""

    exception_id: int
    ok: bool
    detail: str


class Operations:
    """What the CLI and the operations API do to the hub's state."""

    def __init__(self, store: Store, clock: Clock, registry: Registry) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry

    def stats(self) -> StoreStats:
        """Counts by state."""
        with self.store.transaction() as tx:
            return tx.stats()

    def flows(self, flow: str | None = None, limit: int = 100_000) -> list[FlowState]:
        """Flow instances (of one flow, or all) with their state, data and timer."""
        with self.store.transaction() as tx:
            return tx.list_flows(flow, limit)

    def find_exceptions(self, query: ExceptionQuery) -> list[ExceptionRow]:
        """Exceptions matching ``query`` (filters, keyset paging), newest first."""
        with self.store.transaction() as tx:
            return tx.find_exceptions(query)

    def exception_systems(self, exception_ids: Sequence[int]) -> dict[int, str]:
        """The system each exception concerns, by id."""
        with self.store.transaction() as tx:
            return tx.exception_systems(exception_ids)

    def audit_trail(
        self, entity: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEntry]:
        """The audit trail, newest first (of one entity, or all); ``before_id``: only
        entries with a lower id (the next page)."""
        with self.store.transaction() as tx:
            return tx.list_audit(entity, limit, before_id)

    def list_exceptions(self, status: str | None = "open", limit: int = 100) -> list[ExceptionRow]:
        """Exceptions, newest first (``status=None`` for all)."""
        with self.store.transaction() as tx:
            return tx.list_exceptions(status, limit)

    def show(self, exception_id: int) -> ExceptionRow:
        """One exception. Raises :class:`OperationError` when there is none."""
        with self.store.transaction() as tx:
            row = tx.get_exception(exception_id)
        if row is None:
            raise OperationNotFound(f"no exception {exception_id}")
        return row

    def replay(self, exception_id: int, actor: str, reason: str = "") -> ExceptionRow:
        """Run the parked command (or re-apply the rejected change) again.

        The command keeps its idempotency key, so a replay never duplicates an effect. Raises
        :class:`OperationError` when the exception is not open or has nothing to replay.
        """

        def requeue(tx: UnitOfWork, row: ExceptionRow, now: datetime) -> None:
            if row.command_id is not None:
                done = tx.requeue_command(row.command_id, now)
            elif row.inbox_id is not None:
                done = tx.reset_inbox(row.inbox_id, now)
            else:
                done = False
            if not done:
                raise OperationError(
                    f"exception {exception_id} has nothing to replay: fix the source record, "
                    "or resolve it by hand"
                )

        return self._act(exception_id, actor, "replay", "replayed", reason, requeue)

    def resolve(self, exception_id: int, actor: str, reason: str) -> ExceptionRow:
        """Close an exception by hand; its parked command is skipped, letting later ones run.

        Raises :class:`OperationError` when the exception is not open or ``reason`` is blank.
        """
        if not reason.strip():
            raise OperationInputError("a resolution needs a reason")

        def skip(tx: UnitOfWork, row: ExceptionRow, now: datetime) -> None:
            if row.command_id is not None:
                tx.set_command_status(row.command_id, CommandStatus.RESOLVED, now)

        return self._act(exception_id, actor, "resolve", "resolved", reason, skip)

    def bulk(
        self, action: str, exception_ids: Sequence[int], actor: str, reason: str
    ) -> list[BulkOutcome]:
        """``replay`` or ``resolve`` each of ``exception_ids`` (at most 1,000), each in its
        own transaction, so one that cannot be acted on fails alone: one
        :class:`BulkOutcome` per id, in order. Raises :class:`OperationInputError` for
        another action, too many ids, or a resolve without a reason."""
        if action not in ("replay", "resolve"):
            raise OperationInputError(f"bulk action {action!r}: use replay or resolve")
        if len(exception_ids) > BULK_MAX:
            raise OperationInputError(f"at most {BULK_MAX} exceptions at once")
        if action == "resolve" and not reason.strip():
            raise OperationInputError("a resolution needs a reason")
        outcomes = []
        for exception_id in dict.fromkeys(exception_ids):
            try:
                if action == "replay":
                    row = self.replay(exception_id, actor, reason)
                else:
                    row = self.resolve(exception_id, actor, reason)
            except (OperationError, OperationNotFound) as exc:
                outcomes.append(BulkOutcome(exception_id, False, str(exc)))
            else:
                outcomes.append(BulkOutcome(exception_id, True, row.status))
        return outcomes

    def link(
        self,
        canonical_type: str,
        record: tuple[str, str],
        target: tuple[str, str],
        actor: str,
        reason: str,
    ) -> list[tuple[str, str]]:
        """A person's decision that ``record`` (``(system, external id)``, e.g. a Salesforce
        account) is ``target`` (``(system, external id)``, e.g. a Tryton customer code), as
        when an ambiguous customer match waits for someone to pick. The cross-reference then
        answers every flow waiting on it, in the same transaction (a blocked deal resumes).
        Returns the flow instances ``(flow, business key)`` that moved. Raises
        :class:`OperationError` for a blank reason or id, or when a waiting flow fails on the
        answer (nothing is linked then: link again once the flow is fixed)."""
        if not reason.strip():
            raise OperationInputError("a link needs a reason")
        if not all(part.strip() for part in (*record, *target)):
            raise OperationInputError("a link needs both systems and both ids")
        key = xref_key(canonical_type, *record)
        now = self.clock.now()
        with self.store.transaction() as tx:
            runtime = FlowRuntime(tx, self.registry, now)
            try:
                runtime.offer_signals([xref_link((canonical_type, *record), *target)])
            except FlowFailure as failure:  # rolls the link back with the transaction
                raise OperationError(f"nothing was linked: {failure}") from failure
            runtime.buffer.write(tx, now)
            moved = sorted(k for k in runtime.buffer.states if k[0] != XREF)
            detail = {"target": f"{target[0]}:{target[1]}", "reason": reason, "moved": moved}
            tx.audit([AuditEntry(now, actor, "link", f"{XREF}:{key}", detail, None)])
        return moved

    def credit(
        self,
        reference: str,
        reason: str,
        actor: str,
        line_keys: tuple[str, ...] = (),
        rebill: bool = False,
    ) -> dict[str, Any]:
        """Ask for a credit note of the engagement's posted invoice ``reference`` (e.g.
        ``SF-006.../2026-08``): of the whole invoice, or of its lines ``line_keys`` (charge
        keys such as ``milestone:a0B...`` or ``expense:harvest-42``; ``time`` for its time).
        With ``rebill``, the PSA un-marks what the invoice billed so it can be billed again.
        The credit note (``<reference>/credit-<n>``) is made by the engagement's ERP through
        the outbox, like every write. Returns ``{"reference", "instance"}``.

        Raises :class:`OperationInputError` for a blank reason or reference,
        :class:`OperationNotFound` when the hub has no such invoice, and
        :class:`OperationError` when it is not posted (a draft is corrected, not credited)
        or a credit note itself."""
        if not reason.strip() or not reference.strip():
            raise OperationInputError("a credit note needs the invoice reference and a reason")
        project_key = reference.split("/", 1)[0]
        key = f"billing:{project_key}"
        now = self.clock.now()
        with self.store.transaction() as tx:
            found = tx.get_flows([("invoice", key)])
            state = found.get(("invoice", key))
            invoice = (state.data.get("invoices") or {}).get(reference) if state else None
            if state is None or invoice is None:
                raise OperationNotFound(f"the hub made no invoice {reference!r}")
            if "/credit-" in reference:
                raise OperationError(f"{reference} is a credit note: it cannot be credited")
            if invoice.get("state") not in ("posted", "paid"):
                raise OperationError(
                    f"invoice {reference} is {invoice.get('state')}, not posted: only a posted "
                    "invoice is credited"
                )
            signal = Signal(
                "invoice",
                key,
                "credit",
                {
                    "reference": reference,
                    "reason": reason,
                    "line_keys": list(line_keys),
                    "rebill": rebill,
                    "actor": actor,
                },
            )
            runtime = FlowRuntime(tx, self.registry, now)
            try:
                runtime.offer_signals([signal])
            except FlowFailure as failure:
                raise OperationError(f"nothing was credited: {failure}") from failure
            runtime.buffer.write(tx, now)
            detail = {"reason": reason, "line_keys": list(line_keys), "rebill": rebill}
            tx.audit([AuditEntry(now, actor, "credit", f"invoice:{reference}", detail, None)])
        return {"reference": reference, "instance": key}

    def _act(
        self,
        exception_id: int,
        actor: str,
        action: str,
        status: str,
        reason: str,
        effect: Callable[[UnitOfWork, ExceptionRow, datetime], None],
    ) -> ExceptionRow:
        """Apply ``effect`` to an open exception, set its ``status`` and audit who and why,
        all in one transaction."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            row = self._open(tx.get_exception(exception_id), exception_id)
            effect(tx, row, now)
            tx.set_exception_status([exception_id], status, actor, reason or action, now)
            detail = {"exception_id": exception_id, "reason": reason}
            tx.audit([AuditEntry(now, actor, action, row.entity, detail, row.correlation_id)])
            updated = tx.get_exception(exception_id)
        assert updated is not None
        return updated

    @staticmethod
    def _open(row: ExceptionRow | None, exception_id: int) -> ExceptionRow:
        if row is None:
            raise OperationNotFound(f"no exception {exception_id}")
        if row.status != "open":
            raise OperationError(f"exception {exception_id} is {row.status}, not open")
        return row
