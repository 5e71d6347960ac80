"""Repairing drift from the owner's value, through the engine; or handing it to a person.

A repair is never a write of reconciliation's own: it is an ordinary outbox command (its
idempotency key tagged with the run, so it is sent once per run and never mistaken for the
original write), or a signal to the flow that owns the propagation, which sends the
command itself; retries, rate limits and the audit trail are the engine's. What is
repaired:

- a CRM deal's invoicing figures that differ from the ERP's invoices: the ``status_back``
  instance sends the ERP's figures again (and its account's);
- a project closed by its owner (the ERP for billing, or the deal itself) and open in
  another system: ``close_project`` to that system.

Everything else becomes a business exception (class ``drift``) for a person, with what
each system holds and what to do: drift with no clear owner (orphans, records deleted by
hand), a repair that would touch a posted financial document (time or an invoice already
invoiced), and fields the hub has no operation to write (the CRM's customer master, a
project reopened, a deleted timesheet line). One exception per record and field: a later
run finds it open and does not open another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from closeloop.domain.commands import Command, ExceptionClass, Impact
from closeloop.domain.operations import CloseProject, role_command
from closeloop.domain.records import Signal
from closeloop.engine.registry import Registry
from closeloop.engine.runtime import FlowFailure, FlowRuntime
from closeloop.ports.store import (
    AuditEntry,
    DriftRow,
    ExceptionRow,
    NewCommand,
    NewException,
    UnitOfWork,
)
from closeloop.reconcile.compare import MISMATCH, Finding
from closeloop.reconcile.explain import DRIFT, EXCEPTION

log = structlog.get_logger(__name__)
REPAIRED = "repaired"
PLANNED = "planned"

FLOW = "reconcile"
"""The flow name repair commands carry (no instance: their results need no answer)."""


@dataclass(frozen=True, slots=True)
class Repair:
    """What to do about one drift: ``plan`` in words, and the ``command``, ``signal`` or
    ``exception`` that does it (exactly one)."""

    plan: str
    command: Command | None = None
    signal: Signal | None = None
    exception: NewException | None = None


class Repairer:
    """Carries out repairs in ``tx`` (module docstring): ``open`` are the open exceptions by
    entity (a drift that already has one gets no second), ``actor`` who asked."""

    def __init__(
        self,
        tx: UnitOfWork,
        registry: Registry,
        now: datetime,
        actor: str,
        open_exceptions: Mapping[str, Sequence[ExceptionRow]],
    ) -> None:
        self.tx = tx
        self.registry = registry
        self.now = now
        self.actor = actor
        self.open = open_exceptions
        self.opened: dict[str, int] = {}  # this run's, by entity

    def repair(
        self, rows: list[DriftRow], findings: list[Finding], tag: str, dry_run: bool
    ) -> list[DriftRow]:
        """Each drift row (status ``drift``) repaired, planned (``dry_run``) or handed to a
        person; the others as they are. One signal per flow instance however many of its
        fields drifted."""
        runtime = FlowRuntime(self.tx, self.registry, self.now)
        signalled: set[tuple[str, str]] = set()
        out = []
        for row, finding in zip(rows, findings, strict=True):
            if row.status != DRIFT:
                out.append(row)
                continue
            repair = plan(row, finding, tag)
            if repair.signal is not None and not self._can_reassert(repair.signal):
                repair = Repair(_by_hand(row, finding), exception=_exception(row, finding))
            if dry_run:
                out.append(replace(row, status=PLANNED, repair=repair.plan))
                continue
            status, exception_id = REPAIRED, None
            if repair.command is not None:
                self.tx.add_commands([NewCommand(repair.command, FLOW, None)], self.now)
            elif repair.signal is not None:
                target = (repair.signal.flow, repair.signal.business_key)
                if target not in signalled:
                    signalled.add(target)
                    try:
                        runtime.offer_signals([repair.signal])
                    except FlowFailure as failure:
                        log.warning("repair failed", entity=drift_entity(row), error=str(failure))
                        out.append(replace(row, repair=f"{repair.plan}: failed: {failure}"))
                        continue
            elif repair.exception is not None:
                held = self.open.get(repair.exception.entity)
                exception_id = held[0].id if held else self.opened.get(repair.exception.entity)
                if exception_id is None:
                    (exception_id,) = self.tx.open_exceptions([repair.exception], self.now)
                    self.opened[repair.exception.entity] = exception_id
                status = EXCEPTION
            detail = {"plan": repair.plan, "cause": row.cause, "values": row.values}
            entry = AuditEntry(self.now, self.actor, "repair", drift_entity(row), detail, None)
            self.tx.audit([entry])
            out.append(replace(row, status=status, repair=repair.plan, exception_id=exception_id))
        runtime.buffer.write(self.tx, self.now)
        return out

    def _can_reassert(self, signal: Signal) -> bool:
        """Whether the flow instance the signal asks to send its figures again has them."""
        found = self.tx.get_flows([(signal.flow, signal.business_key)])
        state = found.get((signal.flow, signal.business_key))
        return state is not None and bool(state.data.get("client")) and "invoices" in state.data


def with_people(
    rows: list[DriftRow], open_exceptions: Mapping[str, Sequence[ExceptionRow]]
) -> list[DriftRow]:
    """Drift that a person already has as an open business exception of an earlier run is
    theirs: shown with it, not counted again."""
    out = []
    for row in rows:
        held = open_exceptions.get(drift_entity(row))
        if row.status == DRIFT and held:
            row = replace(
                row,
                status=EXCEPTION,
                exception_id=held[0].id,
                cause=f"{row.cause} (with a person: exception #{held[0].id})",
            )
        out.append(row)
    return out


def drift_entity(row: DriftRow) -> str:
    """The entity of a drift's business exception: ``reconcile:<domain>:<key>[:<field>]``."""
    return f"reconcile:{row.domain}:{row.key}" + (f":{row.field}" if row.field else "")


def plan(row: DriftRow, finding: Finding, tag: str) -> Repair:
    """How to repair ``row`` (a drift of ``finding``); ``tag`` names the run (``run-12``).
    Pure."""
    e = finding.engagement
    if finding.kind == MISMATCH and e is not None:
        if finding.domain == "invoices" and finding.stale == (e.systems.get("crm"),):
            signal = Signal("status_back", f"status:{e.project_key}", "reassert", {"tag": tag})
            return Repair(
                f"send {finding.owner}'s invoicing figures to {e.systems['crm']} again "
                "(update_billing_totals, with the account's)",
                signal=signal,
            )
        if finding.domain == "projects" and finding.field == "status":
            owner_value = row.values.get(finding.owner or "")
            if owner_value == "closed" and finding.stale:
                (system, *more) = finding.stale
                if not more:
                    command = role_command(
                        system,
                        CloseProject(key=e.project_key),
                        business_key=e.instance,
                        key=f"{e.project_key}:{tag}",
                        entity=f"{system}:project:{e.project_key}",
                        impact=Impact.REPORTING,
                    )
                    return Repair(f"close project {e.project_key} in {system}", command=command)
    return Repair(_by_hand(row, finding), exception=_exception(row, finding))


def _by_hand(row: DriftRow, finding: Finding) -> str:
    if finding.owner is None:
        return "no clear owner: a person decides (business exception)"
    invoiced = any(
        f.fields.get("invoice_reference") or f.fields.get("state") in ("posted", "paid")
        for f in finding.facts.values()
    )
    if finding.field == "billed":
        return "the PSA's billed flag differs from the ERP's invoice: a person decides"
    if invoiced:
        return "a posted invoice would change: a person decides (business exception)"
    return "the hub has no operation to write it: a person corrects it (business exception)"


def _exception(row: DriftRow, finding: Finding) -> NewException:
    shown = ", ".join(f"{s}: {v!r}" for s, v in row.values.items())
    what = f"{row.domain} {row.key}" + (f" {row.field}" if row.field else "")
    advice = _advice(finding)
    message = f"reconciliation found drift in {what} ({row.kind}; {shown}): {row.cause}. {advice}"
    impact = Impact.REVENUE if row.domain in ("time", "invoices") else Impact.REPORTING
    return NewException(ExceptionClass.DRIFT, impact, drift_entity(row), message)


def _advice(finding: Finding) -> str:
    owner = finding.owner
    if owner is None:
        return "No system owns it: check the record, then fix or remove it where it is wrong."
    if finding.field == "billed":
        reference = next(
            (
                f.fields["invoice_reference"]
                for f in finding.facts.values()
                if f.fields.get("invoice_reference")
            ),
            None,
        )
        stale = ", ".join(finding.stale) or "the PSA"
        if reference:
            return (
                f"{owner}'s invoice {reference} is the truth: in {stale}, the entry belongs on "
                f"the PSA invoice numbered {reference} (replay its mark_billed exception, or "
                "mark it by hand)."
            )
        return (
            f"{owner} never recorded this time: in {stale}, take the entry off its PSA "
            "invoice, or record and invoice it in the ERP."
        )
    invoiced = [
        str(f.fields.get("invoice_reference"))
        for f in finding.facts.values()
        if f.fields.get("invoice_reference")
    ]
    if invoiced:
        return (
            f"Its time is on posted invoice {invoiced[0]}: credit it "
            f"(closeloop credit {invoiced[0]} --line time --rebill --reason ...) or set "
            f"{owner} back to the invoiced value."
        )
    stale = ", ".join(finding.stale) or "the other system"
    return f"{owner} owns it: set {stale} to {owner}'s value, or correct {owner} if it is wrong."
