"""The demo summary's billing section: invoices by billing method, milestones invoiced and
held, expenses billed, change orders applied and credit notes, read from the hub's flows
and audit trail after the last phase."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console

from closeloop.domain.records import FlowState
from closeloop.ports.store import AuditEntry


def billing_section(flows: list[FlowState], audit: list[AuditEntry]) -> dict[str, Any]:
    """``{"invoices_by_method", "milestones", "expenses", "change_orders", "credit_notes"}``
    from the flows' states (``mobilize``, ``invoice``, ``bill_expense``) and the audit."""
    method = {
        f.data.get("project_key"): f.data.get("billing_method") or "time_and_materials"
        for f in flows
        if f.flow == "mobilize" and f.data.get("project_key")
    }
    by_method: dict[str, int] = {}
    milestones = {"invoiced": 0, "held": 0, "planned": 0}
    credits = []
    for f in flows:
        if f.flow != "invoice":
            continue
        key = f.data.get("project_key")
        made = [r for r, i in (f.data.get("invoices") or {}).items() if i]
        label = method.get(key, "time_and_materials")
        by_method[label] = by_method.get(label, 0) + len(made)
        for tracked in (f.data.get("milestones") or {}).values():
            if tracked.get("invoiced"):
                milestones["invoiced"] += 1
            elif tracked.get("reported") == "disputed":
                milestones["held"] += 1
        for reference, credit in (f.data.get("credits") or {}).items():
            credits.append(
                {
                    "credit_note": reference,
                    "credits": credit.get("credited"),
                    "number": credit.get("number"),
                    "total": credit.get("total_amount"),
                }
            )
    expenses = [f for f in flows if f.flow == "bill_expense"]
    billed = [f for f in expenses if f.state == "accepted"]
    amount = sum((Decimal(f.data["info"]["amount"]) for f in billed), Decimal(0))
    changes = [a for a in audit if a.action == "change_order"]
    return {
        "invoices_by_method": by_method,
        "milestones": milestones,
        "expenses": {
            "billed": len(billed),
            "billed_at_cost": str(amount),
            "cost_only": sum(f.state == "costed" for f in expenses),
            "refused": sum(f.state == "refused" for f in expenses),
        },
        "change_orders": [
            {
                "engagement": a.entity,
                "change": a.detail.get("kind"),
                "before": a.detail.get("before"),
                "after": a.detail.get("after"),
            }
            for a in changes
        ],
        "credit_notes": credits,
    }


def print_billing(console: Console, billing: dict[str, Any]) -> None:
    """The billing section in a few lines."""
    methods = ", ".join(
        f"{m.replace('_', ' ')} {n}" for m, n in sorted(billing["invoices_by_method"].items())
    )
    console.print(f"invoices by billing method: {methods or 'none'}")
    m = billing["milestones"]
    console.print(f"milestones: {m['invoiced']} invoiced, {m['held']} held (disputed)")
    e = billing["expenses"]
    console.print(
        f"expenses: {e['billed']} billed ({e['billed_at_cost']} at cost, before markup), "
        f"{e['cost_only']} cost only, {e['refused']} refused"
    )
    console.print(f"change orders applied: {len(billing['change_orders'])}")
    for change in billing["change_orders"]:
        console.print(f"  {change['change']}: {change['before']} -> {change['after']}")
    for credit in billing["credit_notes"]:
        console.print(
            f"credit note {credit['number']} ({credit['total']}) credits {credit['credits']}"
        )
