"""What an invoice made and posted leaves behind (part of :mod:`.invoice`): the ERP's
results of ``invoice_project`` and ``post_invoice`` are kept (number, state, amounts, the
charges billed), and a posted invoice is told to :mod:`.status_back` (the period it invoiced
and what the PSA should mark billed) and to :mod:`.mobilize` (what is billed now, which
change orders must not contradict).
"""

from __future__ import annotations

from typing import Any

from closeloop.domain.commands import Applied, Command
from closeloop.domain.records import FlowState, FlowStep, Signal
from closeloop.flows.credit_notes import credit_command
from closeloop.flows.invoice_state import copy_data, invoiced_milestones


def invoice_applied(state: FlowState, operation: str, entity: str, outcome: Applied) -> FlowStep:
    """Keep the invoice's number, state and amounts (``None`` when there was nothing to
    invoice) after ``invoice_project`` or ``post_invoice``; a posted one is signalled
    (:func:`posted`), and credited at once when its milestone was disputed while it was
    being made."""
    data = copy_data(state.data)
    reference = entity.split(":", 2)[2]
    result = outcome.result
    signals = []
    commands = []
    if result.get("reference"):
        data["invoices"][reference] = {
            k: result.get(k)
            for k in ("number", "state", "untaxed_amount", "tax_amount", "total_amount")
        }
        if operation == "invoice_project" and result.get("charges") is not None:
            data.setdefault("charged", {})[reference] = list(result["charges"])
        if operation == "post_invoice":
            signals += posted(data, reference)
            commands += disputed_meanwhile(data, reference)
    else:
        data["invoices"].setdefault(reference, None)
    return FlowStep(
        state.state, data, commands=tuple(commands), signals=tuple(signals), wake_at=state.wake_at
    )


def disputed_meanwhile(data: dict[str, Any], reference: str) -> list[Command]:
    """Credit notes of the milestones of invoice ``reference`` that were disputed while it
    was being made (now that it is posted)."""
    commands = []
    for milestone in (data.get("milestones") or {}).values():
        if milestone.get("invoiced") == reference and milestone.pop("credit_when_posted", None):
            milestone["invoiced"] = None
            reason = "milestone disputed by the client while its invoice was being made"
            commands.append(credit_command(data, reference, reason, (milestone["charge"],), None))
    return commands


def posted(data: dict[str, Any], reference: str) -> list[Signal]:
    """The signals of the invoice ``reference`` posted: ``invoiced`` to :mod:`.status_back`
    when it billed a period's time or expenses; ``billed`` to :mod:`.mobilize` with the time
    (up to which day, of which roles) and the milestones it billed."""
    signals = []
    period = next(
        (p for p in data["periods"].values() if reference in p.get("references", [])), None
    )
    method = (data.get("terms") or {}).get("billing_method") or "time_and_materials"
    timed = period is not None and period.get("time", method == "time_and_materials")
    if period is not None and (timed or period.get("expenses")):
        signals.append(
            Signal(
                "status_back",
                f"status:{data['project_key']}",
                "invoiced",
                {
                    "reference": reference,
                    "period_end": period["end"],
                    "last_line_date": period.get("last_date") or period["end"],
                    "time": bool(timed),
                    "expenses": bool(period.get("expenses")),
                },
            )
        )
    if data.get("engagement"):  # whatever it billed, the deal no longer closes by itself
        billed: dict[str, Any] = {}
        if period is not None and timed:
            billed["through"] = period.get("last_date") or period["end"]
            billed["invoiced_roles"] = sorted(
                {e[1] for e in period.get("entries") or []} | set(period.get("roles") or [])
            )
        billed["invoiced_milestones"] = invoiced_milestones(data)
        signals.append(Signal("mobilize", data["engagement"], "billed", billed))
    return signals
