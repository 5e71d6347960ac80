"""What the demo firm's deals sold other than by time and materials must come to, computed
here from the firm's terms and Harvest's records (for the end-to-end checks of
tests/p2c_support.py): rates after change orders, the charges each invoice bills (accepted
milestones, retainer fees and overage, re-billed expenses) and the milestones held."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from closeloop.devtools.demo.firm import Firm

if TYPE_CHECKING:
    from tests.p2c_support import FinalState

CENT = Decimal("0.01")


def current_rates(firm: Firm, deal_id: str) -> dict[str, Decimal]:
    """The deal's rates as the PSA shows them now: a rate change applied."""
    info = firm.deals[deal_id]
    changed = {role: rate for role, (_, rate) in (info.get("rate_changes") or {}).items()}
    return {**info["rates"], **changed}


def rate_on(firm: Firm, deal_id: str, role: str, day: date) -> Decimal:
    """The rate of ``role``'s time on ``day``: the new one from a change's effective date."""
    info = firm.deals[deal_id]
    change = (info.get("rate_changes") or {}).get(role)
    if change is not None and day >= change[0]:
        return Decimal(change[1])
    return Decimal(info["rates"][role])


def months(first: date, last: date) -> list[date]:
    """The first days of the months from ``first``'s to ``last``'s."""
    day, found = first.replace(day=1), []
    while day <= last:
        found.append(day)
        day = (day + timedelta(days=32)).replace(day=1)
    return found


def charges_expected(firm: Firm, final: FinalState, today: date) -> dict[str, Decimal]:
    """By billing period (the reference of its first invoice; follow-ups share it): the
    untaxed amount of its charges. Accepted milestones alone on their invoice; each retainer
    month's fee (from the deal's start to ``today``'s month) and, on the month's invoices,
    the hours beyond the included ones (unused hours roll over); approved billable expenses
    plus the markup on their month's invoices."""
    charged: dict[str, Decimal] = defaultdict(Decimal)
    for deal_id, case in firm.billing.items():
        key = f"SF-{deal_id}"
        for milestone in case.get("milestones") or []:
            if milestone.get("status") == "Accepted":
                charged[f"{key}/milestone-{milestone['id']}"] += milestone["amount"]
        if case["method"] == "retainer":
            for month in months(firm.deals[deal_id]["start"], today):
                charged[f"{key}/{month:%Y-%m}/retainer"] += case["amount"]
            for reference, amount in overage(firm, final, deal_id, case, today):
                charged[reference] += amount
    for expense in final.expenses:
        deal_id = str(expense["project"]["code"] or "").removeprefix("SF-")
        case = firm.billing.get(deal_id) or {}
        if "markup" not in case or not (expense["is_closed"] and expense["billable"]):
            continue
        factor = 1 + case["markup"] / 100
        amount = (Decimal(str(expense["total_cost"])) * factor).quantize(CENT, ROUND_HALF_EVEN)
        charged[f"SF-{deal_id}/{expense['spent_date'][:7]}"] += amount
    return dict(charged)


def overage(
    firm: Firm, final: FinalState, deal_id: str, case: dict[str, Any], today: date
) -> list[tuple[str, Decimal]]:
    """The retainer's months with hours beyond the included ones (plus those rolled over):
    ``(reference, amount)``, the hours beyond taken in date order at their role's rate.
    Every month of the retainer from the deal's start to ``today``'s counts, those without
    time too: a month whose fee was invoiced and whose hours went unused rolls them over."""
    by_month: dict[str, list[tuple[str, str, Decimal]]] = defaultdict(list)
    for entry in final.entries:
        if entry["project"]["code"] == f"SF-{deal_id}" and final.lines.get(str(entry["id"])):
            hours = Decimal(str(entry["hours"]))
            by_month[entry["spent_date"][:7]].append(
                (entry["spent_date"], entry["task"]["name"], hours)
            )
    found, carried = [], Decimal(0)
    retained = {f"{m:%Y-%m}" for m in months(firm.deals[deal_id]["start"], today)}
    for month in sorted(retained | set(by_month)):
        allowance, used = case["included_hours"] + carried, Decimal(0)
        beyond: dict[str, Decimal] = defaultdict(Decimal)
        for _day, role, hours in sorted(by_month[month]):
            inside = max(Decimal(0), min(hours, allowance - used))
            used += hours
            if hours > inside:
                beyond[role] += hours - inside
        carried = max(Decimal(0), allowance - used) if case["roll_over"] else Decimal(0)
        if beyond:
            rates = firm.deals[deal_id]["rates"]
            amount = sum((h * Decimal(rates[r]) for r, h in beyond.items()), Decimal(0))
            found.append((f"SF-{deal_id}/{month}", amount))
    return found


def held_milestones(firm: Firm) -> set[str]:
    """The exception entities of the disputed milestones (held, not invoiced)."""
    return {
        f"SF-{deal_id}:milestone:{m['id']}"
        for deal_id, case in firm.billing.items()
        for m in case.get("milestones") or []
        if m.get("status") == "Disputed"
    }


def check_billing(firm: Firm, final: FinalState) -> None:
    """What the other checks leave: each credit note credits an invoice finance credited, in
    full (its amounts negative), and no other invoice is credited; Harvest shows the billable
    approved expenses of the deals that re-bill them billed (by the hub's invoice of their
    month), the others not."""
    notes = [i for i in final.invoices.values() if i.is_credit_note]
    assert sorted(str(i.credited_reference) for i in notes) == sorted(firm.credited), notes
    for note in notes:
        credited = final.invoices[str(note.credited_reference)]
        assert note.total_amount == -credited.total_amount, (note, credited)
        assert note.untaxed_amount == -credited.untaxed_amount
        assert str(note.reference).startswith(f"{credited.reference}/credit-")
    spent = [
        e
        for e in final.expenses
        if "markup" in firm.billing.get(str(e["project"]["code"] or "").removeprefix("SF-"), {})
    ]
    assert spent, "no expense was logged"
    for expense in spent:
        billed = bool(expense["billable"] and expense["is_closed"])
        assert expense["is_billed"] == billed, expense
        if billed:
            reference = f"{expense['project']['code']}/{expense['spent_date'][:7]}"
            assert expense["invoice"]["number"] == reference, expense
