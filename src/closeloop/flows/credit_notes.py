"""Credit notes of an invoicing instance (part of :mod:`.invoice`): a posted invoice is
credited, in full or by line key, when a person asks (the ``credit`` signal, from
``closeloop credit`` or the operations API) or when a milestone is disputed after its invoice
was posted (:mod:`.invoice_charges`).

Each credit is a ``credit_invoice`` command to the engagement's ERP, referenced
``<invoice reference>/credit-<n>``; the credit note made is kept in the instance's data and
told to :mod:`.status_back` (with whether the credited work is to be billed again).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.operations import CreditInvoice, role_command
from closeloop.domain.records import FlowState, FlowStep, Signal
from closeloop.flows.invoice_state import copy_data, invoiced_milestones


def credit_asked(data: dict[str, Any], info: dict[str, Any], day: date) -> Command:
    """The ``credit`` signal ``info`` (``reference``, ``reason``, optional ``line_keys`` and
    ``rebill``): the command crediting the invoice on ``day``; whether it is billed again is
    kept for :mod:`.status_back`."""
    command = credit_command(
        data,
        str(info["reference"]),
        str(info["reason"]),
        tuple(info.get("line_keys") or ()),
        day,
    )
    data.setdefault("rebill", {})[str(info["reference"])] = bool(info.get("rebill"))
    return command


def credit_command(
    data: dict[str, Any], reference: str, reason: str, keys: tuple[str, ...], day: date | None
) -> Command:
    """Credit the invoice ``reference`` for ``reason`` on ``day`` (``None``: the day the ERP
    makes it): the lines of charge ``keys``, or all of it when there are none; each credit
    of one invoice is numbered."""
    counts = data.setdefault("credit_counts", {})
    counts[reference] = counts.get(reference, 0) + 1
    data.setdefault("credit_keys", {})[f"{reference}/credit-{counts[reference]}"] = list(keys)
    credit = CreditInvoice(
        reference=reference,
        credit_reference=f"{reference}/credit-{counts[reference]}",
        reason=reason,
        line_keys=keys,
        credit_date=day,
    )
    erp = data["erp"]
    return role_command(
        erp,
        credit,
        business_key=data["business_key"],
        key=credit.credit_reference,
        entity=f"{erp}:invoice:{credit.credit_reference}",
        impact=Impact.REVENUE,
    )


def credited(state: FlowState, entity: str, outcome: Applied) -> FlowStep:
    """A credit note was made: keep its number, state and amount, and tell
    :mod:`.status_back` which invoice it credits. A milestone it credits is no longer
    invoiced (it is invoiced again, under a new key, once accepted), which :mod:`.mobilize`
    learns (a credited milestone may be re-valued)."""
    data = copy_data(state.data)
    result = outcome.result
    credit_reference = entity.split(":", 2)[2]
    credited = str(result.get("credited") or credit_reference.rsplit("/credit-", 1)[0])
    data.setdefault("credits", {})[credit_reference] = {
        k: result.get(k) for k in ("number", "state", "total_amount")
    } | {"credited": credited}
    keys = (data.get("credit_keys") or {}).get(credit_reference) or []
    signals = []
    for milestone in (data.get("milestones") or {}).values():
        if milestone.get("invoiced") == credited and (not keys or milestone.get("charge") in keys):
            milestone["invoiced"] = None
    if data.get("engagement"):
        milestones = invoiced_milestones(data)
        signals.append(
            Signal("mobilize", data["engagement"], "billed", {"invoiced_milestones": milestones})
        )
    signal = Signal(
        "status_back",
        f"status:{data['project_key']}",
        "credited",
        {
            "reference": credited,
            "credit_reference": credit_reference,
            "rebill": bool((data.get("rebill") or {}).get(credited)),
        },
    )
    return FlowStep(state.state, data, signals=(signal, *signals), wake_at=state.wake_at)
