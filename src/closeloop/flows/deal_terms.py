"""The commercial terms of a closed-won deal: what keeps it from mobilization, in words an
account manager can act on, and what the later steps of :mod:`.mobilize` keep of it."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from closeloop.domain.billing_terms import billing_data, billing_problems
from closeloop.domain.canonical.sales import FinanceApproval, Opportunity, RateCard
from closeloop.domain.entities import LegalEntity, entity_problem
from closeloop.domain.money import minor_unit
from closeloop.domain.taxids import country_code, validate_tax_id
from closeloop.domain.taxrules import DEFAULT_RULES, TaxDecision, TaxRule, UndecidableTax, decide


def commercial_problems(
    opportunity: Opportunity,
    entities: Mapping[str, LegalEntity] | None = None,
    rules: tuple[TaxRule, ...] = DEFAULT_RULES,
) -> list[str]:
    """What keeps a closed-won deal from mobilization, in words an account manager can act
    on (empty when it can go ahead).

    With ``entities`` configured, the deal must name one of them that can invoice in the
    deal's currency, and the tax ``rules`` must decide its treatment
    (:func:`closeloop.domain.taxrules.decide`); a customer without a tax id is then a problem
    only where the rules need one (reverse charge). Without entities (one company, no tax
    decisions), every account needs a valid tax id.
    """
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
        if not entities:
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
    problems += billing_problems(opportunity, deal_currency(opportunity))
    problems += _rate_card_problems(opportunity)
    if entities:
        problems += _entity_problems(opportunity, entities, rules, country)
    if opportunity.start_date is None:
        problems.append("the start date is missing")
    if opportunity.finance_approval is FinanceApproval.REJECTED:
        problems.append("finance rejected the deal")
    return problems


def deal_currency(opportunity: Opportunity) -> str | None:
    """The deal's currency: its line items' (the rate card's), else its amount's."""
    if opportunity.line_items:
        return opportunity.line_items[0].unit_price.currency
    return opportunity.amount.currency if opportunity.amount else None


def _entity_problems(
    opportunity: Opportunity,
    entities: Mapping[str, LegalEntity],
    rules: tuple[TaxRule, ...],
    country: str | None,
) -> list[str]:
    """The selling entity's problems: unknown, or not invoicing in the deal's currency; and
    a tax treatment the rules cannot decide."""
    problem = entity_problem(opportunity.legal_entity, deal_currency(opportunity), entities)
    if problem:
        return [problem]
    if country is None:
        return []
    try:
        tax_decision(opportunity, entities, rules)
    except UndecidableTax as exc:
        return [str(exc)]
    return []


def _registered(opportunity: Opportunity) -> bool:
    """Whether the customer has a valid tax id (VAT number) for its country."""
    customer = opportunity.customer
    if customer is None or not (customer.tax_id or "").strip():
        return False
    try:
        validate_tax_id(customer.tax_id or "", country_code(customer.country or ""))
    except ValueError:
        return False
    return True


def tax_decision(
    opportunity: Opportunity,
    entities: Mapping[str, LegalEntity],
    rules: tuple[TaxRule, ...] = DEFAULT_RULES,
) -> TaxDecision:
    """The VAT treatment of the deal's invoices by its entity's ``rules``. Raises
    :class:`~closeloop.domain.taxrules.UndecidableTax` naming the rule, ``KeyError`` for an
    entity that is not configured, ``ValueError`` for an unknown country."""
    customer = opportunity.customer
    assert customer is not None
    entity = entities[str(opportunity.legal_entity).strip()]
    return decide(entity, customer.country or "", _registered(opportunity), rules)


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
    opportunity: Opportunity,
    deal_id: str,
    version: str,
    project_key: str,
    entities: Mapping[str, LegalEntity] | None = None,
    rules: tuple[TaxRule, ...] = DEFAULT_RULES,
) -> dict[str, Any]:
    """What the later steps need, as JSON (the flow's persisted data); ``project_key`` is
    the engagement's key (:func:`closeloop.domain.keys.engagement_code`). For a deal
    :func:`commercial_problems` found sound: with ``entities``, its ``legal_entity`` and the
    ``tax`` decision (treatment, mention, rule) come along; its billing terms by method
    (:func:`closeloop.domain.billing_terms.billing_data`), its ``end_date`` (the close date
    is not one: none) and ``sow_reference``."""
    customer = opportunity.customer
    assert customer is not None
    country = country_code(customer.country or "")
    scheme, tax_id = (
        validate_tax_id(customer.tax_id or "", country)
        if _registered(opportunity)
        else (None, None)
    )
    tax = None
    if entities:
        decision = tax_decision(opportunity, entities, rules)
        tax = {
            "treatment": decision.treatment.value,
            "mention": decision.mention,
            "rule": decision.rule,
            "rate": str(decision.rate),
        }
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
        "legal_entity": (opportunity.legal_entity or "").strip() or None if entities else None,
        "tax": tax,
        "payment_terms_days": customer.payment_terms_days,
        "customer": {
            "crm_id": customer.crm_id or deal_id,
            "legal_name": (customer.legal_name or "").strip(),
            "country": country,
            "tax_id": tax_id,
            "tax_scheme": scheme,
            "street": customer.street,
            "city": customer.city,
            "postal_code": customer.postal_code,
            "currency": customer.currency,
        },
        "roles": [
            {"role": r.role, "rate": str(r.hourly_rate.amount), "hours": str(hours[r.role])}
            for r in card.rates
        ],
        "sow_reference": opportunity.sow_reference,
        "end_date": opportunity.end_date.isoformat() if opportunity.end_date else None,
        **billing_data(opportunity, card.currency),
    }
