"""Change orders of a mobilized engagement (part of :mod:`.mobilize`): a new version of the
deal is compared with the terms mobilized (:func:`closeloop.domain.change_orders.compare`)
and each change becomes commands of its own to the PSA and the ERP, with an audit line.

- A new role becomes a task in both projects at its rate.
- A rate change applies from the amendment's effective date (the deal's
  ``amendment_effective_date``, else the day of the new version): the ERP gets a new task
  ``<role> (from <date>)`` at the new rate and the role's time on or after that date is
  recorded against it, so time before keeps the old rate (Tryton invoices a task's time at
  the task's price); the PSA's task takes the new rate.
- Hours sold, the end date, the fee, milestones added, moved, renamed or re-valued: the
  projects are upserted with the new terms (an upsert never removes a task or milestone).
- A role removed: no new time of it is billed from the effective date (its task stays);
  a milestone removed before it was invoiced is no longer billed.
- A conflict with what is billed (a rate cut on invoiced time, an invoiced milestone
  re-valued or removed, a changed currency, entity, customer or billing method), or an
  amended deal that fails the checks of mobilization: a business exception for a person and
  nothing of that version is applied (never half-applied). A later version is compared with
  the terms last applied.
- Fields that changed but mean nothing to the engagement are written to the audit trail
  with the reason (no version is dropped without a trace).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import structlog

from closeloop.domain.canonical.sales import Opportunity
from closeloop.domain.change_orders import (
    Change,
    ChangeKind,
    ChangeOrder,
    Conflict,
    EngagementTerms,
    Milestone,
    compare,
)
from closeloop.domain.commands import Command, ExceptionClass, Impact
from closeloop.domain.keys import rate_task
from closeloop.domain.operations import ProjectMilestone, ProjectTask, UpsertProject
from closeloop.domain.records import AuditNote, BusinessIssue

log = structlog.get_logger(__name__)

NOT_APPLIED = "change order not applied"
PROJECT_CHANGES = frozenset(ChangeKind) - {ChangeKind.ROLE_REMOVED, ChangeKind.TERMS_CHANGED}


@dataclass(frozen=True)
class Amendment:
    """What a new version of a mobilized deal does: the engagement's ``data`` as it now
    stands, the ``commands`` to send, ``issues`` to open, ``audit`` lines, and whether the
    terms changed (``changed``: the invoicing must learn them)."""

    data: dict[str, Any]
    commands: tuple[Command, ...] = ()
    issues: tuple[BusinessIssue, ...] = ()
    audit: tuple[AuditNote, ...] = ()
    changed: bool = False


def terms_of(data: Mapping[str, Any]) -> EngagementTerms:
    """The change-order terms of an engagement's data (as :func:`.deal_terms.deal_data`
    makes it)."""
    removed = data.get("removed_roles") or {}
    sold = [r for r in data["roles"] if r["role"] not in removed]
    return EngagementTerms(
        rates={r["role"]: Decimal(r["rate"]) for r in sold},
        hours={r["role"]: Decimal(r["hours"]) for r in sold},
        currency=data["currency"],
        legal_entity=data.get("legal_entity"),
        customer=data["customer"]["crm_id"],
        start_date=date.fromisoformat(data["start_date"]),
        end_date=date.fromisoformat(data["end_date"]) if data.get("end_date") else None,
        name=data["name"],
        sow_reference=data.get("sow_reference"),
        billing_method=data.get("billing_method") or "time_and_materials",
        fee=Decimal(data["fee"]) if data.get("fee") else None,
        milestones={
            m["key"]: Milestone(
                name=m["name"],
                amount=Decimal(m["amount"]),
                planned_date=date.fromisoformat(m["planned_date"]) if m["planned_date"] else None,
            )
            for m in data.get("milestones") or []
        },
        retainer=data.get("retainer"),
        expense_markup_percent=(
            Decimal(data["expense_markup_percent"]) if data.get("expense_markup_percent") else None
        ),
    )


def effective_date(opportunity: Opportunity, version: str) -> date:
    """The day an amendment takes effect: the deal's ``amendment_effective_date``, else the
    day of its new version (a version is an ISO timestamp; another form: the UTC day now)."""
    if opportunity.amendment_effective_date is not None:
        return opportunity.amendment_effective_date
    try:
        return datetime.fromisoformat(version).date()
    except ValueError:
        return datetime.now(UTC).date()


def amend(
    data: dict[str, Any],
    opportunity: Opportunity,
    version: str,
    new_data: dict[str, Any] | None,
    problems: list[str],
    command: Callable[[dict[str, Any], str, UpsertProject, str], Command],
) -> Amendment:
    """Apply the deal's new ``version`` to the engagement ``data``.

    ``new_data``: the new version as :func:`.deal_terms.deal_data` makes it (``None`` when
    ``problems`` were found); ``command(data, role, operation, key)`` makes the command of
    ``role`` (``psa`` or ``erp``) with idempotency ``key``."""
    entity = data["deal_entity"]
    data = {**data, "version": version}
    if problems or new_data is None:
        message = (
            f"{NOT_APPLIED} to engagement {data['project_key']} (version {version}): "
            + "; ".join(problems)
            + "; the engagement keeps its terms until the deal is corrected"
        )
        issue = BusinessIssue(ExceptionClass.VALIDATION, Impact.REVENUE, entity, message)
        note = AuditNote("change_order_refused", entity, {"version": version, "problems": problems})
        return Amendment(data, issues=(issue,), audit=(note,))
    effective = effective_date(opportunity, version)
    invoiced_through = data.get("invoiced_through")
    order = compare(
        terms_of(data),
        terms_of(new_data),
        effective,
        date.fromisoformat(invoiced_through) if invoiced_through else None,
        frozenset(data.get("invoiced_roles") or ()),
        frozenset(data.get("invoiced_milestones") or ()),
    )
    order = _retroactive(order, data, version)
    if order.conflicts:
        return _conflicting(data, order, version)
    notes = [
        AuditNote(
            "change_order_ignored",
            entity,
            {"version": version, "field": name, "reason": why},
        )
        for name, why in order.ignored.items()
    ]
    for name, why in order.ignored.items():
        log.info("change order field ignored", engagement=data["project_key"], field=name, why=why)
    if not order.changes:
        statuses = _statuses(new_data)
        changed = statuses != _statuses(data)
        data["milestones"] = _merge_statuses(data.get("milestones") or [], statuses)
        return Amendment(data, audit=tuple(notes), changed=changed)
    data = _applied(data, new_data, order, effective)
    commands: list[Command] = []
    for change in order.changes:
        notes.append(
            AuditNote(
                "change_order",
                entity,
                {"version": version, **change.model_dump(mode="json"), "key": change.key()},
            )
        )
        if change.kind not in PROJECT_CHANGES:
            continue
        key = f"{data['project_key']}:change:{change.key()}"
        for role in ("psa", "erp"):
            commands.append(command(data, role, project_operation(data, role), key))
    return Amendment(data, tuple(commands), audit=tuple(notes), changed=True)


def _retroactive(order: ChangeOrder, data: dict[str, Any], version: str) -> ChangeOrder:
    """A rate change effective before the day its version was made, on an engagement whose
    time is already being recorded, is a conflict: time since that day may be in the ERP at
    the old rate (the hub picks a line's task when it records it)."""
    try:
        made = datetime.fromisoformat(version).date()
    except ValueError:
        return order
    if not data.get("billed"):
        return order
    late = [
        c
        for c in order.changes
        if c.kind is ChangeKind.RATE_CHANGED and c.effective_from and c.effective_from < made
    ]
    conflicts = tuple(
        Conflict(
            field=f"rates.{c.role}",
            before=c.before,
            after=c.after,
            reason=(
                f"the rate of {c.role} changes from {c.effective_from} (before the day it was "
                f"made, {made}) while time is already recorded: time since "
                f"{c.effective_from} may be in the ERP at {c.before}; make it effective from "
                f"{made} or later, or re-price that time by hand"
            ),
        )
        for c in late
    )
    return order.model_copy(update={"conflicts": order.conflicts + conflicts}) if late else order


def _conflicting(data: dict[str, Any], order: ChangeOrder, version: str) -> Amendment:
    entity = data["deal_entity"]
    reasons = [c.reason for c in order.conflicts]
    message = (
        f"{NOT_APPLIED} to engagement {data['project_key']} (version {version}): "
        + "; ".join(reasons)
        + "; nothing of this version was applied"
    )
    issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, entity, message)
    detail = {"version": version, "conflicts": [c.model_dump(mode="json") for c in order.conflicts]}
    return Amendment(
        data, issues=(issue,), audit=(AuditNote("change_order_conflict", entity, detail),)
    )


def _applied(
    data: dict[str, Any], new: dict[str, Any], order: ChangeOrder, effective: date
) -> dict[str, Any]:
    """The engagement's data with the changes of ``order`` (from ``new``) applied."""
    rate_tasks = [dict(t) for t in data.get("rate_tasks") or []]
    removed = dict(data.get("removed_roles") or {})
    for change in order.changes:
        if change.kind is ChangeKind.RATE_CHANGED and change.role:
            rate_tasks.append(_rate_task(change, effective))
        elif change.kind is ChangeKind.ROLE_REMOVED and change.role:
            removed[change.role] = effective.isoformat()
        elif change.kind is ChangeKind.ROLE_ADDED and change.role:
            removed.pop(change.role, None)
    removed_now = [r for r in data["roles"] if r["role"] in removed]
    roles = list(new["roles"]) + [r for r in removed_now if r["role"] not in _roles(new)]
    base = base_rates(data)
    for r in roles:
        base.setdefault(r["role"], r["rate"])
    return {
        **data,
        "roles": roles,
        "base_rates": base,
        "rate_tasks": rate_tasks,
        "removed_roles": removed,
        "end_date": new.get("end_date"),
        "fee": new.get("fee"),
        "milestones": new.get("milestones") or [],
        "retainer": new.get("retainer"),
        "expense_markup_percent": new.get("expense_markup_percent"),
    }


def _rate_task(change: Change, effective: date) -> dict[str, str]:
    return {
        "role": str(change.role),
        "from": effective.isoformat(),
        "rate": str(change.after),
        "task": rate_task(str(change.role), effective),
    }


def _roles(data: Mapping[str, Any]) -> set[str]:
    return {r["role"] for r in data["roles"]}


def _statuses(data: Mapping[str, Any]) -> dict[str, str]:
    return {m["key"]: m["status"] for m in data.get("milestones") or []}


def _merge_statuses(milestones: list[dict[str, Any]], statuses: dict[str, str]) -> list[Any]:
    return [{**m, "status": statuses.get(m["key"], m["status"])} for m in milestones]


def rate_schedule(data: Mapping[str, Any]) -> dict[str, list[dict[str, str | None]]]:
    """Each role's rates over time, oldest first: ``{"from": ISO date or None, "rate",
    "task"}``; time of a role on a day goes to the task of the latest entry starting on or
    before it (the role's own task, at the rate it was first sold at, from the start)."""
    base = base_rates(data)
    schedule: dict[str, list[dict[str, str | None]]] = {
        r["role"]: [{"from": None, "rate": base[r["role"]], "task": r["role"]}]
        for r in data["roles"]
    }
    for task in data.get("rate_tasks") or []:
        schedule.setdefault(task["role"], []).append(
            {"from": task["from"], "rate": task["rate"], "task": task["task"]}
        )
    for entries in schedule.values():
        entries.sort(key=lambda e: e["from"] or "")
    return schedule


def base_rates(data: Mapping[str, Any]) -> dict[str, str]:
    """The rate of each role's own task: the rate it was first sold at (a rate change adds
    a task instead of re-pricing this one)."""
    base = dict(data.get("base_rates") or {})
    for r in data["roles"]:
        base.setdefault(r["role"], r["rate"])
    return base


def project_operation(data: Mapping[str, Any], role: str) -> UpsertProject:
    """The engagement's project as ``role`` (``psa`` or ``erp``) should hold it now: every
    role a task (the ERP's at the rate it was mobilized with, plus a task per rate change;
    the PSA's at the current rate), the fee, milestones and end date."""
    base = base_rates(data)
    tasks = []
    for r in data["roles"]:
        rate = r["rate"] if role == "psa" else base[r["role"]]
        tasks.append(
            ProjectTask(name=r["role"], hourly_rate=Decimal(rate), budget_hours=Decimal(r["hours"]))
        )
    if role == "erp":
        tasks += [
            ProjectTask(name=t["task"], hourly_rate=Decimal(t["rate"]))
            for t in data.get("rate_tasks") or []
        ]
    tax = data.get("tax") or {}
    return UpsertProject(
        key=data["project_key"],
        name=data["name"],
        customer_name=data["customer"]["legal_name"],
        customer_code=data.get("erp_customer_code"),
        currency=data["currency"],
        starts_on=data["start_date"],
        ends_on=data.get("end_date"),
        legal_entity=data.get("legal_entity"),
        tax_treatment=tax.get("treatment"),
        billing_method=data.get("billing_method") or "time_and_materials",
        fee=Decimal(data["fee"]) if data.get("fee") else None,
        milestones=tuple(
            ProjectMilestone(
                key=m["key"],
                name=m["name"],
                amount=Decimal(m["amount"]),
                planned_date=m["planned_date"],
            )
            for m in data.get("milestones") or []
        ),
        tasks=tuple(tasks),
    )
