"""Comparing time and invoices (see :mod:`.compare` for the shapes and rules).

Time: each PSA time entry against the ERP timesheet line that carries its key (hours, day,
project, task), the PSA's billed flag against the ERP's invoice of the line (time and
materials engagements: an invoice credited in full to be billed again leaves its time
unbilled; an entry billed in the PSA that the ERP never recorded, as a PSA importing by
date range flags an entry the ERP refused, is drift too), entries the hub recorded that the
ERP no longer has, and lines whose entry is gone from the PSA. Entries the hub held or
refused are its exception queue's, not drift.

Invoices: each engagement's ERP invoices (posted and paid, credit notes included) against
the CRM deal's write-back (invoiced and outstanding amounts, last invoice number); invoices
the hub made that the ERP no longer has; and invoices of the hub's form (``<project key>/
...``) for the CRM's deals that the hub never made.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from closeloop.ports.reconcile import INVOICES, TIME, Fact
from closeloop.reconcile.compare import (
    DANGLING,
    MISSING,
    ORPHAN,
    Facts,
    Finding,
    erp_side,
    mismatch,
)
from closeloop.reconcile.view import Engagement, HubView

CENT = Decimal("0.01")
_TIME_FIELDS = ("hours", "date", "project_key", "task")
_COUNTED = ("posted", "paid")


def compare_time(facts: Facts, view: HubView) -> list[Finding]:
    """Time entries against timesheet lines, engagement by engagement (module docstring)."""
    found: list[Finding] = []
    by_system = facts.get(TIME, {})
    engagements = {k: e for k, e in view.engagements.items() if e.provisioned}
    pairs = {(e.systems.get("psa"), e.systems.get("erp")) for e in engagements.values()}
    for psa, erp in sorted(p for p in pairs if p[0] in by_system and p[1] in by_system):
        assert psa is not None and erp is not None
        entries = {k: f for k, f in by_system[psa].items() if _ours(f, engagements, psa, erp)}
        lines = {k: f for k, f in by_system[erp].items() if _ours(f, engagements, psa, erp)}
        for key, entry in sorted(entries.items()):
            engagement = engagements[entry.fields["project_key"]]
            line = lines.get(key)
            state = view.recorded.get(key)
            if line is None:
                if entry.fields.get("billed") and engagement.billing_method == "time_and_materials":
                    never = {psa: True, erp: None}  # billed in the PSA, never in the ERP
                    found.append(
                        mismatch(TIME, key, "billed", never, erp, {psa: entry}, engagement)
                    )
                elif state == "recorded":
                    values = {psa: "present", erp: "absent"}
                    found.append(
                        Finding(
                            TIME, MISSING, key, None, values, psa, (erp,), {psa: entry}, engagement
                        )
                    )
                continue
            for name in _TIME_FIELDS:
                a, b = entry.fields.get(name), line.fields.get(name)
                if a is not None and b is not None and a != b:
                    found.append(
                        mismatch(
                            TIME,
                            key,
                            name,
                            {psa: a, erp: b},
                            psa,
                            {psa: entry, erp: line},
                            engagement,
                        )
                    )
            found.extend(_billed(key, entry, line, engagement, view, psa, erp))
        for key, line in sorted(lines.items()):
            if key not in entries and key.startswith(f"{psa}-"):
                engagement = engagements[line.fields["project_key"]]
                gone: dict[str, Any] = {psa: None, erp: line.external_id}
                found.append(
                    Finding(TIME, DANGLING, key, None, gone, psa, (erp,), {erp: line}, engagement)
                )
    return found


def _ours(fact: Fact, engagements: dict[str, Engagement], psa: str, erp: str) -> bool:
    engagement = engagements.get(str(fact.fields.get("project_key")))
    return (
        engagement is not None
        and engagement.systems.get("psa") == psa
        and engagement.systems.get("erp") == erp
    )


def _billed(
    key: str, entry: Fact, line: Fact, e: Engagement, view: HubView, psa: str, erp: str
) -> list[Finding]:
    if e.billing_method != "time_and_materials" or "billed" not in entry.fields:
        return []
    reference = line.fields.get("invoice_reference")
    invoiced = bool(reference) and reference not in view.rebilled
    if bool(entry.fields["billed"]) == invoiced:
        return []
    values = {psa: bool(entry.fields["billed"]), erp: reference}
    return [mismatch(TIME, key, "billed", values, erp, {psa: entry, erp: line}, e)]


def compare_invoices(facts: Facts, view: HubView, deals: set[str]) -> list[Finding]:
    """ERP invoices against the CRM's write-back, per engagement (module docstring)."""
    found: list[Finding] = []
    by_system = facts.get(INVOICES, {})
    for key, e in sorted(view.engagements.items()):
        crm, erp = e.systems.get("crm"), e.systems.get("erp")
        if not e.provisioned or crm not in by_system or erp not in by_system:
            continue
        assert crm is not None and erp is not None
        invoices = {r: f for r, f in by_system[erp].items() if f.fields.get("project_key") == key}
        for reference, made in sorted(view.invoices.items()):
            if (
                reference.startswith(f"{key}/")
                and made.get("state") in _COUNTED
                and reference not in invoices
            ):
                values: dict[str, Any] = {"hub": made.get("number"), erp: None}
                found.append(
                    Finding(INVOICES, DANGLING, reference, None, values, None, (erp,), {}, e)
                )
        deal = by_system[crm].get(key)
        if deal is not None:
            found.extend(_write_back(key, deal, invoices, e, crm, erp))
    known = set(view.invoices)
    for system, facts_of in sorted(by_system.items()):
        for reference, fact in sorted(facts_of.items()):
            project_key = str(fact.fields.get("project_key") or "")
            if (
                not project_key
                or project_key not in deals
                or fact.fields.get("state") == "cancelled"
            ):
                continue
            credited = fact.fields.get("credited_reference")
            if reference in known or (credited and str(credited) in known):
                continue
            found.append(
                Finding(
                    INVOICES,
                    ORPHAN,
                    reference,
                    None,
                    {system: fact.fields.get("number")},
                    None,
                    (system,),
                    {system: fact},
                    view.engagements.get(project_key),
                )
            )
    return found


def _write_back(
    key: str, deal: Fact, invoices: dict[str, Fact], e: Engagement, crm: str, erp: str
) -> list[Finding]:
    counted = [f for f in invoices.values() if f.fields.get("state") in _COUNTED]
    totals = {
        "invoiced": sum((Decimal(str(f.fields["total"])) for f in counted), Decimal(0)),
        "outstanding": sum((Decimal(str(f.fields["outstanding"])) for f in counted), Decimal(0)),
    }
    facts = {crm: deal, **erp_side(erp, invoices.values())}
    found = []
    for name, total in totals.items():
        shown = Decimal(str(deal.fields.get(name) or 0)).quantize(CENT)
        if shown != total.quantize(CENT):
            found.append(mismatch(INVOICES, key, name, {erp: total, crm: shown}, erp, facts, e))
    issued = [f for f in counted if not f.fields.get("credited_reference")]
    if issued:
        last = max(
            issued, key=lambda f: (str(f.fields.get("invoice_date")), str(f.fields["number"]))
        )
        number = deal.fields.get("last_invoice_number")
        if number != last.fields["number"]:
            values = {erp: last.fields["number"], crm: number}
            found.append(mismatch(INVOICES, key, "last_invoice_number", values, erp, facts, e))
    return found


def deals_of(facts: Facts, view: HubView) -> set[str]:
    """The project keys of the CRM's deals (those that carry a write-back) and of the hub's
    engagements: what a record of the hub's form must name to be judged an orphan."""
    keys: set[str] = set(view.engagements)
    crms = {e.systems.get("crm") for e in view.engagements.values()}
    for system, deals in facts.get(INVOICES, {}).items():
        if system in crms:
            keys.update(deals)
    return keys
