"""The billing terms of a deal by its billing method, checked and turned into what the
engagement's flows keep: pure decisions, no I/O.

- **Time and materials**: approved hours at the rate card's rates.
- **Fixed fee** (``fixed_fee``, or ``milestone``, its CRM synonym): the deal's ``amount`` is the
  fee; its milestone plan (the CRM's milestones: an amount or a share of the fee each) must add
  up to the fee exactly, in the fee's currency. A share becomes an amount rounded half-even to
  the currency's minor unit; the rounding difference, if any, is the plan's and blocks it like
  any other difference (a finance person fixes the plan, the hub does not guess which
  milestone takes the cent). Time is recorded for cost and margin, never billed.
- **Retainer**: ``amount_per_period`` invoiced at the start of each billing period for
  ``included_hours``; hours beyond them billed at the rate card at the period's end; unused
  hours expire or roll over to the next period.

Expenses of any deal are re-billed at cost plus ``expense_markup_percent``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.domain.canonical.sales import BillingMethod, Opportunity
from closeloop.domain.money import round_to_currency

FIXED = (BillingMethod.FIXED_FEE, BillingMethod.MILESTONE)
HUNDRED = Decimal(100)


def billing_problems(opportunity: Opportunity, currency: str | None) -> list[str]:
    """What keeps the deal's billing terms from being mobilized, in words an account
    manager can act on (empty when they are sound). ``currency``: the deal's (ISO 4217)."""
    method = opportunity.billing_method
    if method is None:
        return ["the billing method is missing"]
    if method in FIXED:
        try:
            milestone_plan(opportunity, currency or "")
        except ValueError as exc:
            return [str(exc)]
    if method is BillingMethod.RETAINER and opportunity.retainer is None:
        return ["a retainer deal needs its retainer amount per period (and included hours)"]
    return []


def milestone_plan(opportunity: Opportunity, currency: str) -> list[dict[str, Any]]:
    """The fixed-fee deal's milestones as ``{"key", "name", "amount", "planned_date",
    "status"}`` (amounts as strings, in ``currency``), in the CRM's order.

    Raises ``ValueError`` naming the problem: no fee, no milestone, a milestone with neither
    or both of an amount and a share, or a plan that does not add up to the fee (with the
    difference)."""
    fee = opportunity.amount
    if fee is None or fee.amount <= 0:
        raise ValueError("a fixed-fee deal needs its fee (the opportunity's amount)")
    if not opportunity.milestones:
        raise ValueError(
            "a fixed-fee deal needs a milestone plan (milestones adding up to the fee)"
        )
    plan: list[dict[str, Any]] = []
    total = Decimal(0)
    for milestone in opportunity.milestones:
        if (milestone.amount is None) == (milestone.share_percent is None):
            raise ValueError(
                f"milestone {milestone.name!r} needs an amount or a share of the fee (one of them)"
            )
        if milestone.amount is not None:
            amount = milestone.amount
        else:
            amount = fee.amount * (milestone.share_percent or Decimal(0)) / HUNDRED
        amount = round_to_currency(amount, currency)
        if amount <= 0:
            raise ValueError(f"milestone {milestone.name!r} has no amount")
        total += amount
        plan.append(
            {
                "key": milestone.crm_id,
                "name": milestone.name,
                "amount": str(amount),
                "planned_date": _iso(milestone.planned_date),
                "status": milestone.status.value,
            }
        )
    if total != fee.amount:
        difference = fee.amount - total
        raise ValueError(
            f"the milestone plan adds up to {total} {currency} but the fee is {fee.amount} "
            f"{currency}: a difference of {difference:+} {currency}; correct the milestones"
        )
    return plan


def billing_data(opportunity: Opportunity, currency: str) -> dict[str, Any]:
    """The billing terms the engagement's flows keep (JSON): ``billing_method`` (one of
    ``time_and_materials``, ``fixed_fee``, ``retainer``), ``fee`` and ``milestones`` for a
    fixed fee, ``retainer`` for a retainer, ``expense_markup_percent``. For terms
    :func:`billing_problems` found sound."""
    method = opportunity.billing_method or BillingMethod.TIME_AND_MATERIALS
    data: dict[str, Any] = {
        "billing_method": "fixed_fee" if method in FIXED else method.value,
        "fee": None,
        "milestones": [],
        "retainer": None,
        "expense_markup_percent": (
            str(opportunity.expense_markup_percent)
            if opportunity.expense_markup_percent is not None
            else None
        ),
    }
    if method in FIXED:
        assert opportunity.amount is not None
        data["fee"] = str(opportunity.amount.amount)
        data["milestones"] = milestone_plan(opportunity, currency)
    elif method is BillingMethod.RETAINER and opportunity.retainer is not None:
        terms = opportunity.retainer
        data["retainer"] = {
            "amount_per_period": str(round_to_currency(terms.amount_per_period, currency)),
            "included_hours": str(terms.included_hours),
            "unused_hours": terms.unused_hours.value,
        }
    return data


def marked_up(amount: Decimal, markup_percent: str | None, currency: str) -> Decimal:
    """An expense re-billed with the deal's markup: ``amount`` x (1 + markup / 100), rounded
    half-even to ``currency``'s minor unit (no markup: at cost)."""
    factor = Decimal(1) + (Decimal(markup_percent) / HUNDRED if markup_percent else Decimal(0))
    return round_to_currency(amount * factor, currency)


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None
