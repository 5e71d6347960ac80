"""What an invoicing instance bills besides its time (part of :mod:`.invoice`): expenses,
retainer fees and overage, milestones. :mod:`.charges` decides each charge; this module keeps
them in the instance's data and turns them into answers and commands.

- Expenses (the ``expense_logged`` signal, from :mod:`.bill_expense`): held while the
  engagement is not mobilized, refused once it is closed; a billable one joins its period's
  charges at cost plus the deal's markup, one that is not billable is counted as cost.
- Retainer fees: each period's fee is invoiced alone when the period starts, from the
  engagement's start to its end date (``<project key>/<period>/retainer``); the hours beyond
  the included ones join the period's invoice at its end.
- Milestones: each accepted one is invoiced alone, a disputed one is held or, when its
  invoice was posted, credited (:mod:`.credit_notes`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from closeloop.domain.commands import Command
from closeloop.domain.operations import ChargeLine
from closeloop.domain.periods import BillingPeriod, PeriodKind, period_of
from closeloop.domain.records import Signal
from closeloop.flows.charges import (
    MilestoneDecision,
    decide_milestones,
    expense_charge,
    overage,
    overage_billed_before,
    retainer_fee,
)
from closeloop.flows.credit_notes import credit_command
from closeloop.flows.invoice_state import (
    HELD_STATUSES,
    dec,
    invoice_commands,
    new_slot,
    slot_of,
)


# --- expenses -----------------------------------------------------------------------------
def expense_logged(
    data: dict[str, Any], info: dict[str, Any], now: datetime, kind: PeriodKind
) -> list[Signal]:
    """A billable expense joins its ``kind`` period's invoice (at cost plus markup); one that
    is not billable is counted as cost; held until mobilized, refused once closed. The
    answers to the expense's instance."""
    expense = str(info["expense"])
    status = data["status"]
    if status in HELD_STATUSES:
        held = data.setdefault("held_expenses", {})
        held[expense] = dict(info)
        return [Signal("bill_expense", expense, "hold", {})]
    if status != "mobilized":
        reason = f"engagement {data['project_key']} was closed"
        return [Signal("bill_expense", expense, "refuse", {"reason": reason})]
    return take_expense(data, info, now, kind)


def held_expenses_answered(
    data: dict[str, Any], release: bool, now: datetime, kind: PeriodKind
) -> list[Signal]:
    """The engagement is no longer held: take the held expenses (``release``: it was
    mobilized) or refuse them (it was closed). The answers to their instances."""
    signals: list[Signal] = []
    held_expenses, data["held_expenses"] = data.get("held_expenses") or {}, {}
    for info in held_expenses.values():
        if release:
            signals += take_expense(data, info, now, kind)
        else:
            reason = f"engagement {data['project_key']} was closed"
            signals.append(Signal("bill_expense", info["expense"], "refuse", {"reason": reason}))
    return signals


def take_expense(
    data: dict[str, Any], info: dict[str, Any], now: datetime, kind: PeriodKind
) -> list[Signal]:
    """Count a non-billable expense as cost, or add a billable one to its ``kind`` period's
    charges (at cost plus markup); the answers to the expense's instance."""
    expense = str(info["expense"])
    if not info.get("billable"):
        costs = data.setdefault("costs", {})
        category = str(info.get("category") or "other")
        costs[category] = str(dec(costs.get(category)) + dec(info["amount"]))
        return [Signal("bill_expense", expense, "costed", {})]
    currency = data.get("currency") or "EUR"
    markup = (data.get("terms") or {}).get("expense_markup_percent")
    charge = expense_charge(info, markup, currency, data["project_key"])
    slot = slot_of(data, date.fromisoformat(info["date"]), kind)
    slot["last_date"] = max(slot.get("last_date") or "", info["date"])  # the PSA marks up to it
    charges = slot.setdefault("charges", [])
    if all(c["key"] != charge.key for c in charges):
        charges.append(charge.model_dump(mode="json"))
        slot["dirty"] = True
        slot["expenses"] = True
        data["last_recorded_at"] = now.isoformat()
    return [Signal("bill_expense", expense, "accepted", {"charge": charge.key})]


# --- milestones ---------------------------------------------------------------------------
def milestone_commands(
    data: dict[str, Any], issued: date, payment_terms_days: int
) -> tuple[list[Command], MilestoneDecision]:
    """What the milestones' statuses ask for (:func:`.charges.decide_milestones`): the
    commands invoicing each accepted milestone alone and crediting each disputed after its
    invoice was posted, dated ``issued``; and the decision (its issues to open and resolve)."""
    decision = decide_milestones(data)
    commands: list[Command] = []
    for reference, charge in decision.invoices:
        commands += invoice_commands(data, reference, None, issued, (charge,), payment_terms_days)
    for reference, key, name in decision.credits:
        reason = f"milestone {name!r} disputed by the client after its invoice"
        commands.append(credit_command(data, reference, reason, (key,), issued))
    return commands, decision


# --- retainers ----------------------------------------------------------------------------
def retainer_fees(
    data: dict[str, Any], today: date, kind: PeriodKind, payment_terms_days: int
) -> list[Command]:
    """The fee of every retainer period that has started by ``today`` (from the
    engagement's start to its end date) and is not invoiced yet."""
    terms = data.get("terms") or {}
    if not terms.get("retainer") or not terms.get("start_date"):
        return []
    commands = []
    for period in retainer_periods(terms, today, kind):
        slot = new_slot(data, period)
        if slot.get("retainer_invoiced"):
            continue
        reference = f"{data['project_key']}/{period.label}/retainer"
        slot["retainer_invoiced"] = reference
        fee = retainer_fee(period.label, terms["retainer"], data["project_key"])
        commands += invoice_commands(data, reference, None, today, (fee,), payment_terms_days)
    return commands


def retainer_periods(terms: dict[str, Any], today: date, kind: PeriodKind) -> list[BillingPeriod]:
    """The ``kind`` periods of the engagement (``terms``' start and end dates) that have
    started by ``today``."""
    day = date.fromisoformat(terms["start_date"])
    last = date.fromisoformat(terms["end_date"]) if terms.get("end_date") else None
    periods = []
    while day <= today and (last is None or day <= last):
        period = period_of(day, kind)
        periods.append(period)
        day = period.end + timedelta(days=1)
    return periods


def next_retainer(data: dict[str, Any], kind: PeriodKind) -> list[datetime]:
    """When the first retainer period whose fee is not invoiced starts (in the past when
    one is due now), unless the engagement has ended by then."""
    terms = data.get("terms") or {}
    if not terms.get("retainer") or not terms.get("start_date"):
        return []
    day = date.fromisoformat(terms["start_date"])
    last = date.fromisoformat(terms["end_date"]) if terms.get("end_date") else None
    while last is None or day <= last:
        period = period_of(day, kind)
        if not (data["periods"].get(period.label) or {}).get("retainer_invoiced"):
            return [datetime.combine(day, time(), UTC)]
        day = period.end + timedelta(days=1)
    return []


def retainer_overage(
    slot: dict[str, Any], terms: dict[str, Any], carried: Decimal, project_key: str, *, due: bool
) -> tuple[list[ChargeLine], Decimal]:
    """The overage lines of a retainer period's ``slot`` (:func:`.charges.overage`, with the
    hours ``carried`` from the last period), none until the period's invoice is ``due``
    (what they would bill is then not counted as billed); and the hours the next period
    carries (the unused ones when they roll over). The carry is always what the period's
    recorded time leaves: time recorded late in an invoiced period lowers it, and the next
    period, invoiced already, bills the hours its smaller allowance no longer covers on a
    follow-up invoice (:meth:`.invoice.InvoiceFlow.on_timer`), so that what a period's
    invoices bill never depends on when its time arrived. Nothing without a retainer."""
    retainer = terms.get("retainer")
    if not retainer:
        return [], carried
    lines, unused = overage(slot, retainer, terms.get("rates") or {}, carried, project_key)
    carry = unused if retainer.get("unused_hours") == "roll_over" else Decimal(0)
    if not due:
        slot["overage_billed"] = overage_billed_before(slot, lines)
        lines = []
    return lines, carry
