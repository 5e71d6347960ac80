"""Comparing charges: expenses and milestones, as their owners hold them and as the ERP
billed them (see :mod:`.compare` for the shapes and rules).

The ERP's side is its invoice and credit-note lines carrying a charge key
(``closeloop:<charge key>``); a key's lines add up to what is billed net of credit notes,
so an expense or a milestone credited in full is not billed, whatever its lines.

Expenses: each billable PSA expense of a mobilized engagement against the ERP: an expense
the PSA shows billed must be billed in the ERP, and one billed in the ERP must show billed in
the PSA (its amount is not compared: the markup in force when it was billed, which a change
order may have changed since, is not kept per expense).

Milestones: each milestone of a fixed-fee engagement's plan in the CRM against the ERP: an
accepted milestone must be billed once at its amount; a milestone billed in the ERP must be
accepted in the CRM (one disputed after its invoice is credited by the hub; until that
credit note is made, the hub's command is in flight).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from closeloop.ports.reconcile import CHARGES, Fact
from closeloop.reconcile.compare import MISSING, Facts, Finding, erp_side, mismatch
from closeloop.reconcile.view import Engagement, HubView


def billed_in(facts: Facts, erp: str) -> dict[str, tuple[Decimal, list[Fact]]]:
    """The ERP ``erp``'s charge lines by charge key: the net amount billed and the lines."""
    lines: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts.get(CHARGES, {}).get(erp, {}).values():
        if fact.fields.get("state") not in ("cancelled", "draft"):
            lines[str(fact.fields["charge"])].append(fact)
    return {
        charge: (sum((Decimal(str(f.fields["amount"])) for f in group), Decimal(0)), group)
        for charge, group in lines.items()
    }


def compare_charges(facts: Facts, view: HubView) -> list[Finding]:
    """Expenses and milestones of every mobilized engagement (module docstring)."""
    found: list[Finding] = []
    by_system = facts.get(CHARGES, {})
    billed_by_erp: dict[str, dict[str, tuple[Decimal, list[Fact]]]] = {}
    for key, e in sorted(view.engagements.items()):
        psa, erp, crm = (e.systems.get(r) for r in ("psa", "erp", "crm"))
        if not e.provisioned or erp not in by_system or erp is None:
            continue
        if erp not in billed_by_erp:
            billed_by_erp[erp] = billed_in(facts, erp)
        billed = billed_by_erp[erp]
        if psa in by_system and psa is not None:
            found += _expenses(key, e, by_system[psa], billed, psa, erp)
        if crm in by_system and crm is not None and e.billing_method == "fixed_fee":
            found += _milestones(key, e, by_system[crm], billed, crm, erp)
    return found


def _expenses(
    key: str,
    e: Engagement,
    psa_facts: Mapping[str, Fact],
    billed: dict[str, tuple[Decimal, list[Fact]]],
    psa: str,
    erp: str,
) -> list[Finding]:
    found: list[Finding] = []
    prefix = f"expense:{key}:"
    for charge, expense in sorted(psa_facts.items()):
        if not charge.startswith(prefix) or not expense.fields.get("billable"):
            continue
        net, lines = billed.get(charge, (Decimal(0), []))
        facts = {psa: expense, **erp_side(erp, lines)}
        shown_billed = bool(expense.fields.get("billed"))
        if shown_billed != (net > 0):
            values: dict[str, Any] = {psa: shown_billed, erp: net}
            found.append(mismatch(CHARGES, charge, "billed", values, erp, facts, e))
    return found


def _milestones(
    key: str,
    e: Engagement,
    crm_facts: Mapping[str, Fact],
    billed: dict[str, tuple[Decimal, list[Fact]]],
    crm: str,
    erp: str,
) -> list[Finding]:
    found: list[Finding] = []
    prefix = f"milestone:{key}:"
    planned = {c: f for c, f in crm_facts.items() if c.startswith(prefix)}
    charges = {c for c in billed if c.startswith(prefix)}
    for charge in sorted(set(planned) | charges):
        milestone = planned.get(charge)
        net, lines = billed.get(charge, (Decimal(0), []))
        facts = erp_side(erp, lines)
        if milestone is None:  # billed for a milestone the plan no longer has
            if net > 0:
                values: dict[str, Any] = {crm: None, erp: net}
                found.append(mismatch(CHARGES, charge, "status", values, crm, facts, e))
            continue
        facts[crm] = milestone
        accepted = milestone.fields.get("status") == "accepted"
        amount = milestone.fields.get("amount")
        if accepted and net <= 0:
            values = {crm: "accepted", erp: "not billed"}
            found.append(Finding(CHARGES, MISSING, charge, "billed", values, crm, (erp,), facts, e))
        elif not accepted and net > 0:
            values = {crm: milestone.fields.get("status"), erp: net}
            found.append(mismatch(CHARGES, charge, "status", values, crm, facts, e))
        elif accepted and amount is not None and net != Decimal(str(amount)):
            values = {crm: Decimal(str(amount)), erp: net}
            found.append(mismatch(CHARGES, charge, "amount", values, crm, facts, e))
    return found
