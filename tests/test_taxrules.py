"""The VAT treatment table: domestic, EU reverse charge, outside the scope, no VAT, and the
cases a person must decide."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.domain.taxids import EU_VAT_COUNTRIES
from closeloop.domain.taxrules import (
    DEFAULT_RULES,
    REVERSE_CHARGE_MENTION,
    Relation,
    SellingEntity,
    TaxRule,
    TaxTreatment,
    UndecidableTax,
    decide,
    vat_area,
)

GMBH = SellingEntity(code="DE01", country="DE", standard_rate=Decimal("0.19"))
LTD = SellingEntity(code="GB01", country="GB", standard_rate=Decimal("0.20"))
SARL = SellingEntity(code="FR01", country="France", standard_rate=Decimal("0.20"))
AG = SellingEntity(code="CH01", country="CH", standard_rate=Decimal("0.081"))
INC = SellingEntity(code="US01", country="US", vat_registered=False)


@pytest.mark.parametrize(
    ("entity", "country", "registered", "treatment", "rate"),
    [
        (GMBH, "DE", True, TaxTreatment.DOMESTIC, "0.19"),
        (GMBH, "Germany", False, TaxTreatment.DOMESTIC, "0.19"),  # a consumer at home too
        (GMBH, "FR", True, TaxTreatment.REVERSE_CHARGE, "0"),
        (GMBH, "AT", True, TaxTreatment.REVERSE_CHARGE, "0"),
        (GMBH, "US", False, TaxTreatment.OUTSIDE_SCOPE, "0"),
        (GMBH, "CH", True, TaxTreatment.OUTSIDE_SCOPE, "0"),  # Switzerland: not the EU
        (GMBH, "GB", True, TaxTreatment.OUTSIDE_SCOPE, "0"),  # the UK left the EU VAT area
        (LTD, "GB", True, TaxTreatment.DOMESTIC, "0.20"),
        (LTD, "DE", True, TaxTreatment.OUTSIDE_SCOPE, "0"),
        (SARL, "NL", True, TaxTreatment.REVERSE_CHARGE, "0"),
        (AG, "CH", True, TaxTreatment.DOMESTIC, "0.081"),
        (INC, "US", True, TaxTreatment.NO_VAT, "0"),
        (INC, "DE", True, TaxTreatment.NO_VAT, "0"),
    ],
)
def test_each_case_gets_its_treatment_and_rate(
    entity: SellingEntity, country: str, registered: bool, treatment: TaxTreatment, rate: str
) -> None:
    decision = decide(entity, country, registered)
    assert decision.treatment is treatment
    assert decision.rate == Decimal(rate)
    assert decision.rule.startswith("rule ")


def test_reverse_charge_invoices_carry_the_legal_mention() -> None:
    decision = decide(GMBH, "FR", customer_registered=True)
    assert decision.mention == REVERSE_CHARGE_MENTION
    assert "2006/112/EC" in decision.mention and "Article 196" in decision.mention
    assert decide(GMBH, "DE", customer_registered=True).mention == ""


def test_an_eu_customer_without_a_vat_number_abroad_is_left_to_a_person() -> None:
    with pytest.raises(UndecidableTax) as refused:
        decide(GMBH, "FR", customer_registered=False)
    message = str(refused.value)
    assert "DE01 (DE) to a customer in FR (without a VAT number" in message
    assert "rule 4" in message and "VAT number" in message


def test_liechtenstein_shares_switzerland_s_vat_area() -> None:
    assert vat_area("LI") == vat_area("Switzerland") == "CH"
    decision = decide(AG, "LI", customer_registered=True)  # Swiss VAT, as at home
    assert (decision.treatment, decision.rate) == (TaxTreatment.DOMESTIC, Decimal("0.081"))
    assert vat_area("FR") == vat_area("DE") == "EU"


def test_the_table_is_data_a_firm_can_replace() -> None:
    """A firm that bills EU consumers abroad at its own rate (services under art. 45)."""
    rules = (
        TaxRule(
            relation=Relation.OTHER_MEMBER_STATE,
            customer_registered=False,
            treatment=TaxTreatment.DOMESTIC,
        ),
        *DEFAULT_RULES,
    )
    decision = decide(GMBH, "FR", customer_registered=False, rules=rules)
    assert (decision.treatment, decision.rate) == (TaxTreatment.DOMESTIC, Decimal("0.19"))
    with pytest.raises(UndecidableTax, match="no tax rule matches"):
        decide(GMBH, "FR", customer_registered=True, rules=rules[:1])


def test_a_country_that_is_none_is_refused() -> None:
    with pytest.raises(ValueError, match="Atlantis"):
        decide(GMBH, "Atlantis", customer_registered=True)


COUNTRIES = sorted(EU_VAT_COUNTRIES | {"GB", "CH", "LI", "US", "NO", "JP"})


@given(
    entity=st.sampled_from([GMBH, LTD, SARL, AG, INC]),
    country=st.sampled_from(COUNTRIES),
    registered=st.booleans(),
)
def test_every_case_is_decided_or_refused_and_only_domestic_sales_carry_vat(
    entity: SellingEntity, country: str, registered: bool
) -> None:
    try:
        decision = decide(entity, country, registered)
    except UndecidableTax:
        assert vat_area(country) == vat_area(entity.country) == "EU" and not registered
        assert country != entity.country
        return
    if decision.treatment is TaxTreatment.DOMESTIC:
        assert decision.rate == entity.standard_rate and entity.vat_registered
    else:
        assert decision.rate == 0
    if decision.treatment is TaxTreatment.REVERSE_CHARGE:
        assert registered and vat_area(country) == "EU" and decision.mention
