"""The commercial terms of a closed-won deal: what keeps it from mobilization, in words an
account manager can act on, and what the later steps of :mod:`.mobilize` keep of it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from closeloop.domain.canonical.sales import (
    BillingMethod,
    FinanceApproval,
    Opportunity,
    RateCard,
)
from closeloop.domain.money import minor_unit
from closeloop.domain.taxids import country_code, validate_tax_id


def commercial_problems(opportunity: Opportunity) -> list[str]:
    """What keeps a closed-won deal from mobilization, in words an account manager can act
    on (empty when it can go ahead)."""
    problems = []
    customer = opportunity.customer
    if customer is None:
        return ["the deal has no account"]
    if not (customer.legal_name or "").strip():
        problems.append("the account's legal name is missing")
    country = None
    if not (customer.country or "").strip():
        problems.append("the account's billing country is missing")
    else:
        try:
            country = country_code(customer.country or "")
        except ValueError:
            problems.append(f"the billing country {customer.country!r} is not a country")
    if not (customer.tax_id or "").strip():
        problems.append("the account's tax id is missing")
    elif country is not None:
        try:
            validate_tax_id(customer.tax_id or "", country)
        except ValueError as exc:
            problems.append(f"the tax id {customer.tax_id} is not valid: {exc}")
    currency = customer.currency or (opportunity.amount.currency if opportunity.amount else None)
    try:
        minor_unit(currency or "")
    except (KeyError, ValueError):
        problems.append(f"the currency {currency!r} is missing or unknown")
    if opportunity.billing_method is None:
        problems.append("the billing method is missing")
    elif opportunity.billing_method is not BillingMethod.TIME_AND_MATERIALS:
        problems.append(
            f"the billing method {opportunity.billing_method.value} is not mobilized "
            "automatically yet (time and materials is)"
        )
    problems += _rate_card_problems(opportunity)
    if opportunity.start_date is None:
        problems.append("the start date is missing")
    if opportunity.finance_approval is FinanceApproval.REJECTED:
        problems.append("finance rejected the deal")
    return problems


def _rate_card_problems(opportunity: Opportunity) -> list[str]:
    if not opportunity.line_items:
        return ["the deal has no line items to make a rate card from"]
    unnamed = [i.service for i in opportunity.line_items if not (i.role or "").strip()]
    if unnamed:
        return [f"line items without a role: {', '.join(unnamed)}"]
    try:
        _rate_card(opportunity)
    except (ValidationError, ValueError) as exc:
        return [f"the rate card is inconsistent: {exc}"]
    return []


def _rate_card(opportunity: Opportunity) -> RateCard:
    rates: dict[str, Any] = {}
    for item in opportunity.line_items:
        role = str(item.role)
        if role in rates and rates[role]["hourly_rate"] != item.unit_price:
            raise ValueError(f"role {role} is sold at two rates")
        rates[role] = {"role": role, "hourly_rate": item.unit_price}
    currency = opportunity.line_items[0].unit_price.currency
    return RateCard(name=opportunity.name, currency=currency, rates=tuple(rates.values()))


def deal_data(
    opportunity: Opportunity, deal_id: str, version: str, project_key: str
) -> dict[str, Any]:
    """What the later steps need, as JSON (the flow's persisted data); ``project_key`` is
    the engagement's key (:func:`closeloop.domain.keys.engagement_code`)."""
    customer = opportunity.customer
    assert customer is not None
    country = country_code(customer.country or "")
    scheme, tax_id = validate_tax_id(customer.tax_id or "", country)
    hours: dict[str, Decimal] = {}
    for item in opportunity.line_items:
        hours[str(item.role)] = hours.get(str(item.role), Decimal(0)) + item.quantity_hours
    card = _rate_card(opportunity)
    return {
        "deal_id": deal_id,
        "version": version,
        "name": opportunity.name,
        "project_key": project_key,
        "start_date": opportunity.start_date.isoformat() if opportunity.start_date else None,
        "currency": card.currency,
        "finance_approval": opportunity.finance_approval.value,
        "customer": {
            "crm_id": customer.crm_id or deal_id,
            "legal_name": (customer.legal_name or "").strip(),
            "country": country,
            "tax_id": tax_id,
            "tax_scheme": scheme,
            "street": customer.street,
            "city": customer.city,
            "postal_code": customer.postal_code,
        },
        "roles": [
            {"role": r.role, "rate": str(r.hourly_rate.amount), "hours": str(hours[r.role])}
            for r in card.rates
        ],
    }
