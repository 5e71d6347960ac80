"""Which VAT treatment a services invoice gets, from a table of rules (data, not code).

The hub does not compute tax: it decides the *treatment* of an invoice line from the selling
legal entity and the customer, and the ERP applies its own tax for that treatment. The rules
follow the general rule for business-to-business services of the EU VAT Directive (Council
Directive 2006/112/EC): the place of supply is where the customer is established (art. 44),
so a supply to a business in another member state is taxed there by the customer under the
reverse charge (art. 196, the invoice carrying the mention of art. 226(11a)), and a supply to
a customer outside the supplier's VAT area is outside the scope of the supplier's VAT. The UK
(HMRC VAT Notice 741A) and Switzerland apply the same principle for their own areas.

A rule matches on the *relation* of customer to entity (:class:`Relation`) and on whether
the customer is VAT-registered; the first matching rule decides. A rule without a treatment
means the case cannot be decided automatically: :func:`decide` raises
:class:`UndecidableTax` with the rule's reason, which becomes a business exception. The
default table (:data:`DEFAULT_RULES`) can be replaced (``rules`` of :func:`decide`).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from closeloop.domain.errors import InputError
from closeloop.domain.taxids import EU_VAT_COUNTRIES, country_code

REVERSE_CHARGE_MENTION = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Council Directive 2006/112/EC, Article 196)"
)
OUTSIDE_SCOPE_MENTION = "Outside the scope of VAT: services supplied to a customer abroad"


class TaxTreatment(StrEnum):
    """How an invoice line is taxed."""

    DOMESTIC = "domestic"  # the entity's standard rate
    REVERSE_CHARGE = "reverse_charge"  # 0 %, the customer accounts for the VAT
    OUTSIDE_SCOPE = "outside_scope"  # 0 %, exported outside the entity's VAT area
    NO_VAT = "no_vat"  # the entity charges no VAT (e.g. a US company)


class Relation(StrEnum):
    """Where the customer is, seen from the selling entity."""

    NOT_REGISTERED = "entity_not_registered"  # the entity has no VAT registration
    SAME_TERRITORY = "same_vat_territory"  # its country, or one VAT territory (CH with LI)
    OTHER_MEMBER_STATE = "other_eu_member_state"  # intra-Community: both in the EU
    OUTSIDE_AREA = "outside_vat_area"


class TaxRule(BaseModel):
    """One row of the table: for customers in ``relation`` (and, when set, whose VAT
    registration is ``customer_registered``), ``treatment`` with the invoice ``mention``;
    ``treatment`` ``None``: undecidable, ``reason`` says why and what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relation: Relation
    customer_registered: bool | None = None
    treatment: TaxTreatment | None
    mention: str = ""
    reason: str = ""


class SellingEntity(BaseModel):
    """What the rules need of a legal entity: its ``country`` (ISO 3166), whether it is
    VAT-registered, and its standard rate (a fraction, ``0.19`` for 19 %)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1)
    country: str
    vat_registered: bool = True
    standard_rate: Decimal = Field(default=Decimal(0), ge=0, lt=1)


class TaxDecision(BaseModel):
    """The treatment of an invoice: its ``rate`` (a fraction), the ``mention`` the invoice
    must carry, and the rule that decided, in words (for the audit)."""

    model_config = ConfigDict(frozen=True)

    treatment: TaxTreatment
    rate: Decimal
    mention: str
    rule: str


class UndecidableTax(InputError):
    """No rule decides the case, or its rule says a person must: the message names the rule
    and what to do."""


DEFAULT_RULES: tuple[TaxRule, ...] = (
    TaxRule(relation=Relation.NOT_REGISTERED, treatment=TaxTreatment.NO_VAT),
    TaxRule(relation=Relation.SAME_TERRITORY, treatment=TaxTreatment.DOMESTIC),
    TaxRule(
        relation=Relation.OTHER_MEMBER_STATE,
        customer_registered=True,
        treatment=TaxTreatment.REVERSE_CHARGE,
        mention=REVERSE_CHARGE_MENTION,
    ),
    TaxRule(
        relation=Relation.OTHER_MEMBER_STATE,
        customer_registered=False,
        treatment=None,
        reason=(
            "a customer in another EU member state without a VAT number: reverse charge "
            "needs the customer's VAT number (Directive 2006/112/EC art. 196); add it to the "
            "account, or decide the treatment by hand"
        ),
    ),
    TaxRule(
        relation=Relation.OUTSIDE_AREA,
        treatment=TaxTreatment.OUTSIDE_SCOPE,
        mention=OUTSIDE_SCOPE_MENTION,
    ),
)
"""Business-to-business services, as the module docstring explains."""


def vat_area(country: str) -> str:
    """The VAT area of ``country`` (ISO 3166 alpha-2 or an English name): ``EU`` for a
    member state, ``CH`` for Switzerland and Liechtenstein (one VAT territory), else the
    country itself. Raises ``ValueError`` for what is not a country."""
    code = country_code(country)
    if code in EU_VAT_COUNTRIES:
        return "EU"
    if code in ("CH", "LI"):
        return "CH"
    return code


def relation(entity: SellingEntity, customer_country: str) -> Relation:
    """Where a customer in ``customer_country`` is, seen from ``entity``."""
    if not entity.vat_registered:
        return Relation.NOT_REGISTERED
    if country_code(customer_country) == country_code(entity.country):
        return Relation.SAME_TERRITORY
    area = vat_area(entity.country)
    if vat_area(customer_country) != area:
        return Relation.OUTSIDE_AREA
    return Relation.OTHER_MEMBER_STATE if area == "EU" else Relation.SAME_TERRITORY


def decide(
    entity: SellingEntity,
    customer_country: str,
    customer_registered: bool,
    rules: tuple[TaxRule, ...] = DEFAULT_RULES,
) -> TaxDecision:
    """The treatment of ``entity``'s services to a customer in ``customer_country`` who is
    (or is not) VAT-registered, by the first matching rule of ``rules``.

    Raises :class:`UndecidableTax` naming the case and the rule's reason when the rule
    leaves it to a person or no rule matches; ``ValueError`` for an unknown country.
    """
    where = relation(entity, customer_country)
    case = (
        f"{entity.code} ({country_code(entity.country)}) to a customer in "
        f"{country_code(customer_country)} ({'with' if customer_registered else 'without'} "
        f"a VAT number, {where.value})"
    )
    for number, rule in enumerate(rules, start=1):
        if rule.relation is not where:
            continue
        if rule.customer_registered not in (None, customer_registered):
            continue
        if rule.treatment is None:
            raise UndecidableTax(
                f"tax treatment undecided for {case}: rule {number}: {rule.reason}"
            )
        rate = entity.standard_rate if rule.treatment is TaxTreatment.DOMESTIC else Decimal(0)
        said = f"rule {number}: {where.value} -> {rule.treatment.value}"
        return TaxDecision(treatment=rule.treatment, rate=rate, mention=rule.mention, rule=said)
    raise UndecidableTax(f"tax treatment undecided for {case}: no tax rule matches")
