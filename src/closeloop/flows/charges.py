"""What an engagement bills besides its recorded time, decided for :mod:`.invoice`: accepted
milestones, retainer fees and overage, re-billed expenses (pure decisions over the invoicing
instance's data; no I/O).

Charge keys (:class:`~closeloop.domain.operations.ChargeLine`) name what is billed, once per
ERP company, so they name the engagement's project: ``milestone:<project key>:<CRM id>``
(``...:2`` after a credit note, when it is billed again), ``retainer:<project key>:<period>``,
``overage:<project key>:<period>:<task>``, ``expense:<project key>:<PSA>-<id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.domain.billing_terms import marked_up
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.domain.operations import ChargeLine
from closeloop.domain.records import BusinessIssue

ACCEPTED, DISPUTED, PLANNED = "accepted", "disputed", "planned"


@dataclass
class MilestoneDecision:
    """What the milestones' statuses ask for: invoices to make (reference, charge), credits
    of milestone invoices disputed after posting (reference, charge key, milestone name),
    issues to open, entities whose issues are settled."""

    invoices: list[tuple[str, ChargeLine]] = field(default_factory=list)
    credits: list[tuple[str, str, str]] = field(default_factory=list)
    issues: list[BusinessIssue] = field(default_factory=list)
    resolves: list[str] = field(default_factory=list)


def milestone_entity(project_key: str, key: str) -> str:
    """The entity a milestone's business exceptions are about."""
    return f"{project_key}:milestone:{key}"


def decide_milestones(data: dict[str, Any]) -> MilestoneDecision:
    """Compare the plan's statuses (``data["terms"]["milestones"]``) with what was invoiced
    (``data["milestones"]``, updated in place): an accepted milestone not invoiced is
    invoiced (its own invoice ``<project key>/milestone-<id>``); a disputed one not invoiced
    is held with a business exception; one disputed after its invoice was posted is credited
    (and billed again once accepted), one disputed while its invoice is being made is
    credited once it is posted (``credit_when_posted``); one back to planned after its
    invoice, or accepted again after that: an exception, nothing undone or billed twice."""
    decision = MilestoneDecision()
    project_key = data["project_key"]
    tracked: dict[str, Any] = data.setdefault("milestones", {})
    for milestone in data.get("terms", {}).get("milestones") or []:
        key, status = milestone["key"], milestone["status"]
        entity = milestone_entity(project_key, key)
        mine = tracked.setdefault(key, {"attempt": 0, "invoiced": None, "reported": None})
        billed = mine["invoiced"]
        if status == ACCEPTED and billed is None:
            mine["attempt"] += 1
            attempt = mine["attempt"]
            reference = f"{project_key}/milestone-{key}" + (f"/{attempt}" if attempt > 1 else "")
            charge = ChargeLine(
                key=f"milestone:{project_key}:{key}" + (f":{attempt}" if attempt > 1 else ""),
                kind="milestone",
                description=f"Milestone: {milestone['name']}",
                quantity=Decimal(1),
                unit_price=Decimal(milestone["amount"]),
                task=key,
            )
            mine.update(invoiced=reference, charge=charge.key, amount=milestone["amount"])
            decision.invoices.append((reference, charge))
            if mine["reported"] == DISPUTED:
                decision.resolves.append(entity)
            mine["reported"] = None
        elif status == DISPUTED and mine["reported"] != DISPUTED:
            mine["reported"] = DISPUTED
            if billed is None:
                message = (
                    f"milestone {milestone['name']!r} of engagement {project_key} "
                    f"({milestone['amount']} {data.get('currency') or ''}) is disputed by the "
                    "client: held, not invoiced; it is invoiced once its status is Accepted"
                )
            elif _posted(data, billed):
                decision.credits.append((billed, mine["charge"], milestone["name"]))
                mine["invoiced"] = None
                message = (
                    f"milestone {milestone['name']!r} of engagement {project_key} was disputed "
                    f"after its invoice {billed} was posted: it is credited in full; it is "
                    "invoiced again once its status is Accepted"
                )
            else:
                mine["credit_when_posted"] = True
                message = (
                    f"milestone {milestone['name']!r} of engagement {project_key} was disputed "
                    f"while its invoice {billed} was being made: it is credited in full as soon "
                    "as it is posted, and invoiced again once its status is Accepted"
                )
            issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, entity, message)
            decision.issues.append(issue)
        elif status == ACCEPTED and billed is not None and mine["reported"] == PLANNED:
            mine["reported"] = None
            message = (
                f"milestone {milestone['name']!r} of engagement {project_key} is accepted again: "
                f"it was invoiced once as {billed} and is not invoiced twice"
            )
            decision.resolves.append(entity)
            issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, entity, message)
            decision.issues.append(issue)
        elif status == PLANNED and billed is not None and mine["reported"] != PLANNED:
            mine["reported"] = PLANNED
            message = (
                f"milestone {milestone['name']!r} of engagement {project_key} was invoiced as "
                f"{billed} and is back to Planned in the CRM: nothing was undone; if the client "
                f"should not pay it yet, credit it: closeloop credit {billed} --reason ..."
            )
            issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, entity, message)
            decision.issues.append(issue)
    return decision


def _posted(data: Mapping[str, Any], reference: str) -> bool:
    """Whether the instance saw the invoice ``reference`` posted (or paid)."""
    invoice = (data.get("invoices") or {}).get(reference) or {}
    return invoice.get("state") in ("posted", "paid")


def expense_charge(
    info: Mapping[str, Any], markup_percent: str | None, currency: str, project_key: str
) -> ChargeLine:
    """The invoice line of a billable expense ``info`` (``key``, ``amount``, ``category``,
    ``date``, ``notes``, ``receipt``) of the project ``project_key``: its amount plus the
    deal's markup, in ``currency``."""
    amount = marked_up(Decimal(info["amount"]), markup_percent, currency)
    notes = f" - {info['notes']}" if info.get("notes") else ""
    return ChargeLine(
        key=f"expense:{project_key}:{info['key']}",
        kind="expense",
        description=f"Expense {info['date']}: {info['category']}{notes}",
        quantity=Decimal(1),
        unit_price=amount,
        category=info["category"],
        receipt=info.get("receipt"),
    )


def retainer_fee(label: str, terms: Mapping[str, Any], project_key: str) -> ChargeLine:
    """The retainer fee of the project ``project_key`` for period ``label``'s included
    hours."""
    return ChargeLine(
        key=f"retainer:{project_key}:{label}",
        kind="retainer",
        description=f"Retainer {label} ({terms['included_hours']} h included)",
        quantity=Decimal(1),
        unit_price=Decimal(terms["amount_per_period"]),
    )


def task_on(schedule: Mapping[str, list[dict[str, Any]]], role: str, day: date) -> dict[str, Any]:
    """The entry of ``role``'s rate schedule (:func:`.amend.rate_schedule`) in force on
    ``day``: its task and rate. Raises ``KeyError`` for a role the deal does not sell."""
    entries = schedule[role]
    chosen = entries[0]
    for entry in entries:
        if entry["from"] is None or date.fromisoformat(entry["from"]) <= day:
            chosen = entry
    return chosen


def overage(
    slot: dict[str, Any],
    terms: Mapping[str, Any],
    schedule: Mapping[str, Any],
    carried: Decimal,
    project_key: str,
) -> tuple[list[ChargeLine], Decimal]:
    """A retainer period's overage and the hours it leaves unused.

    The period's recorded hours (``slot["entries"]``: ``[date, role, hours]``) are taken in
    date order against the included hours (plus ``carried`` from the last period when unused
    hours roll over); the hours beyond them are billed at the rate in force on their day,
    one line per task, less what earlier invoices of the period billed
    (``slot["overage_billed"]``, updated in place). Returns the lines and the unused hours."""
    allowance = Decimal(terms["included_hours"]) + carried
    used = Decimal(0)
    over: dict[str, Decimal] = {}
    rates: dict[str, str] = {}
    for day, role, hours in sorted(slot.get("entries") or [], key=lambda e: (e[0], e[1])):
        hours = Decimal(hours)
        inside = max(Decimal(0), min(hours, allowance - used))
        used += hours
        beyond = hours - inside
        if beyond > 0:
            entry = task_on(schedule, role, date.fromisoformat(day))
            over[entry["task"]] = over.get(entry["task"], Decimal(0)) + beyond
            rates[entry["task"]] = entry["rate"]
    billed = slot.setdefault("overage_billed", {})
    lines = []
    label = slot["label"]
    for task, hours in sorted(over.items()):
        before = billed.get(task) or {"hours": "0", "lines": 0}
        new = hours - Decimal(before["hours"])
        if new <= 0:
            continue
        count = before["lines"] + 1
        billed[task] = {"hours": str(hours), "lines": count}
        lines.append(
            ChargeLine(
                key=f"overage:{project_key}:{label}:{task}" + (f":{count}" if count > 1 else ""),
                kind="overage",
                description=f"{task}: {new} h beyond the retainer's included hours, {label}",
                quantity=new,
                unit_price=Decimal(rates[task]),
                task=task,
            )
        )
    return lines, max(Decimal(0), allowance - used)


def overage_billed_before(slot: dict[str, Any], lines: list[ChargeLine]) -> dict[str, Any]:
    """The slot's billed overage (``slot["overage_billed"]``) as it was before ``lines``,
    which :func:`overage` counted as billed but which are not invoiced yet."""
    billed = dict(slot.get("overage_billed") or {})
    for line in lines:
        task = str(line.task)
        before = billed[task]
        hours = Decimal(before["hours"]) - line.quantity
        if before["lines"] <= 1 and hours <= 0:
            billed.pop(task)
        else:
            billed[task] = {"hours": str(hours), "lines": before["lines"] - 1}
    return billed
