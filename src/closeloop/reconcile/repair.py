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

from dataclasses import dataclass

from closeloop.domain.commands import Command, ExceptionClass, Impact
from closeloop.domain.operations import CloseProject, role_command
from closeloop.domain.records import Signal
from closeloop.ports.store import DriftRow, NewException
from closeloop.reconcile.compare import MISMATCH, Finding

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
