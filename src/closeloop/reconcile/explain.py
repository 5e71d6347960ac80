"""Explaining findings: whether a difference is still in flight, already a person's
business exception, or drift, and its likely cause in words a finance or operations person
can act on.

From the hub's own records, read in one transaction: the outbox (a command about the record
not yet delivered means the change is in flight, not drift; a parked one names its
exception), the inbox (a record of an object the hub polls, changed after the newest version
the inbox holds, or held but not applied yet, is a change in flight too), the open business
exceptions about the record, and the commands the hub delivered (when it last wrote the
record, against when each system last changed it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime
from typing import Any

from closeloop.domain.changes import parse_instant
from closeloop.domain.commands import CommandStatus
from closeloop.flows.charges import milestone_entity
from closeloop.ports.reconcile import Fact
from closeloop.ports.store import CommandRow, DriftRow, ExceptionRow, UnitOfWork
from closeloop.reconcile.compare import DANGLING, MISSING, ORPHAN, Finding

IN_FLIGHT = "in_flight"
DRIFT = "drift"
EXCEPTION = "exception"
_OPEN_LIMIT = 100_000


def entities(finding: Finding) -> list[str]:
    """The outbox entities (as flows name their commands) of the record a finding is about,
    in each system it involves."""
    e = finding.engagement
    names: list[str] = []
    for system in {*finding.stale, *(finding.values or {})}:
        if finding.domain == "projects":
            names.append(f"{system}:project:{finding.key}")
        elif finding.domain == "customers" and e and e.customer_code:
            names.append(f"{system}:customer:{e.customer_code}")
        elif finding.domain == "charges":
            for fact in finding.facts.values():
                reference = fact.fields.get("invoice_reference")
                if reference:  # the invoice that carries it, in the ERP and the PSA
                    names.append(f"{system}:invoice:{reference}")
            if e:
                names.append(milestone_entity(e.project_key, finding.key.rsplit(":", 1)[-1]))
        elif finding.domain == "invoices":
            names.append(f"{system}:invoice:{finding.key}")
            if e:
                names.append(f"{system}:opportunity:{e.deal_id}")
    if finding.domain == "time" and e:
        psa = e.systems.get("psa", "")
        names.append(f"{psa}:time_entry:{finding.key.removeprefix(f'{psa}-')}")
        for fact in finding.facts.values():  # the PSA invoice that marks it billed
            if fact.fields.get("invoice_reference"):
                names.append(f"{psa}:invoice:{fact.fields['invoice_reference']}")
    if finding.domain == "customers" and e and e.account_id:
        names.append(f"{e.systems.get('crm')}:Account:{e.account_id}")
    return sorted(set(names))


class Explainer:
    """Explains findings against the hub's records in ``tx``; ``polled``: the ``(system,
    object)`` pairs the hub reads changes of (a newer version of such a record than the
    inbox holds is a change in flight)."""

    def __init__(self, tx: UnitOfWork, polled: Collection[tuple[str, str]] = ()) -> None:
        self.tx = tx
        self.polled = set(polled)
        self.open: dict[str, list[ExceptionRow]] = defaultdict(list)
        self.by_command: dict[int, ExceptionRow] = {}
        for row in tx.list_exceptions("open", _OPEN_LIMIT):
            self.open[row.entity].append(row)
            if row.command_id is not None:
                self.by_command[row.command_id] = row

    def explain(self, findings: list[Finding]) -> list[DriftRow]:
        """One report row per finding, in order."""
        wanted = [entities(f) for f in findings]
        commands: dict[str, list[CommandRow]] = defaultdict(list)
        for row in self.tx.commands_for_entities(sorted({n for ns in wanted for n in ns})):
            commands[row.command.entity].append(row)
        polled = [f for finding in findings for f in finding.facts.values() if self._is_polled(f)]
        self.received = self.tx.latest_received([_record(f) for f in polled])
        return [
            self._row(f, [c for n in names for c in commands[n]], names)
            for f, names in zip(findings, wanted, strict=True)
        ]

    def _is_polled(self, fact: Fact) -> bool:
        return (
            fact.object is not None
            and fact.modified_at is not None
            and (fact.system, fact.object) in self.polled
        )

    def _unread(self, finding: Finding) -> str | None:
        """Why a fact of ``finding`` is a change the hub has not applied yet (``None``: all
        were)."""
        for fact in finding.facts.values():
            if not self._is_polled(fact):
                continue
            assert fact.modified_at is not None
            version, status = self.received.get(_record(fact), ("", ""))
            try:
                seen = parse_instant(version) if version else None
            except ValueError:
                continue
            changed = (
                f"{fact.system} changed {fact.object} {fact.external_id} at {_at(fact.modified_at)}"
            )
            if seen is None or seen < fact.modified_at:
                return f"a change is still on its way: {changed}; the hub has not read it yet"
            if status == "pending":
                return f"a change is still on its way: {changed}; the hub has not applied it yet"
        return None

    def _row(self, finding: Finding, sent: list[CommandRow], names: list[str]) -> DriftRow:
        base: dict[str, Any] = {
            "domain": finding.domain,
            "kind": finding.kind,
            "key": finding.key,
            "field": finding.field,
            "values": finding.values,
            "owner": finding.owner,
        }
        waiting = [c for c in sent if c.status in (CommandStatus.PENDING, CommandStatus.IN_FLIGHT)]
        if waiting:
            c = waiting[-1]
            cause = (
                f"a change is still on its way: command #{c.id} ({c.command.operation}) to "
                f"{c.command.system} is {c.status.value} since {_at(c.created_at)}"
            )
            return DriftRow(**base, status=IN_FLIGHT, cause=cause)
        unread = self._unread(finding)
        if unread:
            return DriftRow(**base, status=IN_FLIGHT, cause=unread)
        parked = [c for c in sent if c.status is CommandStatus.PARKED]
        for c in reversed(parked):
            exception = self.by_command.get(c.id)
            if exception is not None:
                cause = (
                    f"command #{c.id} ({c.command.operation}) to {c.command.system} is parked: "
                    f"exception #{exception.id}: {exception.message}"
                )
                return DriftRow(**base, status=EXCEPTION, cause=cause, exception_id=exception.id)
        for name in names:
            for exception in self.open.get(name, []):
                cause = (
                    f"the hub refused or holds it: exception #{exception.id}: {exception.message}"
                )
                return DriftRow(**base, status=EXCEPTION, cause=cause, exception_id=exception.id)
        return DriftRow(**base, status=DRIFT, cause=self._cause(finding, sent))

    def _cause(self, finding: Finding, sent: list[CommandRow]) -> str:
        done = [c for c in sent if c.status is CommandStatus.DONE]
        if finding.kind == ORPHAN:
            (system,) = finding.stale or ("a system",)
            return (
                f"made outside the hub: {system} has {finding.key}, which the hub never made "
                "(created by hand, or by another tool)"
            )
        if finding.kind == DANGLING:
            gone = ", ".join(finding.stale)
            wrote = _last_write(done, None)
            return f"the record is gone from {gone}{wrote}: deleted or merged by hand?"
        if finding.kind == MISSING:
            (system,) = finding.stale
            wrote = _last_write(done, system)
            return f"{system} does not have it{wrote}: deleted by hand, or never created"
        owner = finding.owner
        owner_fact = finding.facts.get(owner) if owner else None
        owner_changed = owner_fact.modified_at if owner_fact else None
        parts = []
        for system in finding.stale:
            fact = finding.facts.get(system)
            changed = fact.modified_at if fact else None
            wrote_at = _last_write_at(done, system)
            wrote = _last_write(done, system)
            if changed and wrote_at and changed > wrote_at:
                parts.append(f"{system} was edited at {_at(changed)}, outside the hub{wrote}")
            elif (
                owner_changed
                and (changed is None or owner_changed >= changed)
                and (wrote_at is None or owner_changed > wrote_at)
            ):
                parts.append(
                    f"{owner} (the owner) changed it at {_at(owner_changed)}, outside the hub, "
                    f"and {system} was not updated" + (f" since{wrote[6:]}" if wrote else "")
                )
            elif wrote_at is None:
                when = f" (changed at {_at(changed)})" if changed else ""
                parts.append(f"{system} holds its own value{when}; the hub never wrote it")
            else:
                parts.append(f"{system} differs{wrote}")
        return "; ".join(parts) + f" (the owner is {owner or 'no system'})"


def _latest(done: list[CommandRow], system: str | None) -> CommandRow | None:
    """The hub's latest delivered command (to ``system``, or to any)."""
    mine = [c for c in done if system is None or c.command.system == system]
    return mine[-1] if mine else None


def _last_write_at(done: list[CommandRow], system: str) -> datetime | None:
    c = _latest(done, system)
    return (c.updated_at or c.created_at) if c else None


def _record(fact: Fact) -> tuple[str, str, str]:
    return (fact.system, str(fact.object), fact.external_id)


def _last_write(done: list[CommandRow], system: str | None) -> str:
    c = _latest(done, system)
    if c is None:
        return ""
    at = c.updated_at or c.created_at
    return f" after the hub last wrote it at {_at(at)} (command #{c.id}, {c.command.operation})"


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
