"""The declarative mapping engine: every feature, every problem listed with its path."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.config.files import load_mappers
from closeloop.domain.changes import Change
from closeloop.domain.records import MappingError
from closeloop.mapping.engine import Mapper, read_path
from closeloop.mapping.spec import MappingSpec
from closeloop.mdm.ownership import OwnershipPolicy


def mapper(objects: dict[str, Any], value_maps: dict[str, Any] | None = None) -> Mapper:
    return Mapper(
        MappingSpec.model_validate(
            {"version": 1, "connection": "crm", "objects": objects, "value_maps": value_maps or {}}
        )
    )


ACCOUNT = {
    "canonical": "account",
    "fields": {
        "legal_name": {"coalesce": ["Legal_Name__c", "Name"]},
        "trading_name": {"concat": ["Name", "=(", "Brand__c", "=)"], "sep": ""},
        "country": {"path": "Billing.Country", "value_map": "countries", "keep_unmapped": True},
        "billing_address.city": "Billing.City",
        "billing_address.country": {
            "path": "Billing.Country",
            "value_map": "countries",
            "keep_unmapped": True,
        },
        "currency": {"path": "Currency", "format": "upper", "default": "EUR"},
        "tax_ids": {"path": "VAT__c", "as_list": True},
        "payment_terms_days": {"path": "Terms", "format": "integer"},
    },
}


def test_field_maps_nested_custom_fields_value_maps_and_defaults() -> None:
    result = mapper({"Account": ACCOUNT}, {"countries": {"Deutschland": "DE"}}).map(
        "Account",
        {
            "Name": "Acme",
            "Brand__c": "Acme Labs",
            "Billing": {"City": "Berlin", "Country": "Deutschland"},
            "VAT__c": "DE136695976",
            "Terms": "45",
        },
    )
    assert result.ok, result.problems
    assert result.data == {
        "legal_name": "Acme",
        "trading_name": "Acme(Acme Labs)",
        "legal_entity": None,
        "billing_address": {
            "line1": None,
            "line2": None,
            "city": "Berlin",
            "postal_code": None,
            "region": None,
            "country": "DE",
        },
        "country": "DE",
        "currency": "EUR",
        "tax_ids": [{"value": "DE136695976", "scheme": "eu_vat"}],
        "payment_terms_days": 45,
    }


def test_every_problem_is_listed_with_its_field_and_source() -> None:
    spec = {
        **ACCOUNT,
        "fields": {
            **ACCOUNT["fields"],
            "country": {"path": "Billing.Country", "value_map": "countries"},
        },
    }
    result = mapper({"Account": spec}, {"countries": {"Deutschland": "DE"}}).map(
        "Account",
        {
            "Billing": {"Country": "Germny"},
            "Terms": "soon",
            "Currency": "EURO",
        },
    )
    assert not result.ok and result.data is None
    assert sorted(str(p) for p in result.problems) == [
        "billing_address.city (from Billing.City): Field required",
        "billing_address.country (from Billing.Country): "
        "'Germny' is not an ISO 3166 country code or name",
        "country (from Billing.Country): 'Germny' is not in value map countries",
        "currency (from Currency): 'EURO' is not an ISO 4217 currency code",
        "legal_name (from Legal_Name__c or Name): Field required",
        "payment_terms_days (from Terms): 'soon' is not a whole number",
    ]


def test_dates_numbers_filters_lists_and_root_paths() -> None:
    invoice = {
        "canonical": "invoice",
        "fields": {
            "account": "Contact.ID",
            "invoice_date": {"path": "Date", "format": "date"},
            "due_date": {"path": "Due", "format": "date", "input_format": "%d/%m/%Y"},
            "currency": "Cur",
            "untaxed_amount.amount": {"path": "Net", "format": "decimal", "decimal_separator": ","},
            "untaxed_amount.currency": "Cur",
            "tax_amount.amount": "Tax",
            "tax_amount.currency": "Cur",
            "total.amount": "Total",
            "total.currency": "Cur",
            "amount_paid.amount": "Paid",
            "amount_paid.currency": {"path": "Cur", "when": "Paid"},
            "reference": "Refs[kind=po].value",
            "lines": {
                "path": "Lines",
                "each": {
                    "description": "Text",
                    "quantity": "Qty",
                    "unit_price.amount": "Price",
                    "unit_price.currency": "$.Cur",
                    "amount.amount": "Amount",
                    "amount.currency": "$.Cur",
                },
            },
        },
    }
    result = mapper({"Invoice": invoice}).map(
        "Invoice",
        {
            "Contact": {"ID": 42},
            "Date": "/Date(1539993600000+0000)/",
            "Due": "30/12/2018",
            "Cur": "NZD",
            "Net": "1.234,50",
            "Tax": 185.18,
            "Total": "1419.68",
            "Refs": [{"kind": "so", "value": "S-1"}, {"kind": "po", "value": "PO-7"}],
            "Lines": [
                {"Text": "Design", "Qty": 10, "Price": "100", "Amount": "1000"},
                {"Text": "Build", "Qty": 2.5, "Price": "93.80", "Amount": "234.50"},
            ],
        },
    )
    assert result.ok, [str(p) for p in result.problems]
    data = result.data or {}
    assert data["account"] == "42" and data["reference"] == "PO-7"
    assert (data["invoice_date"], data["due_date"]) == ("2018-10-20", "2018-12-30")
    assert data["untaxed_amount"] == {"amount": "1234.50", "currency": "NZD"}
    assert data["tax_amount"]["amount"] == "185.18"  # a JSON float read through its repr
    assert data["amount_paid"] is None  # no amount: no half-made Money from the currency
    assert [line["quantity"] for line in data["lines"]] == ["10", "2.5"]


def test_lookup_values_pick_from_object_maps() -> None:
    line = {
        "canonical": "opportunity_line_item",
        "fields": {
            "service": {"path": "Product", "value_map": "products", "pick": "task"},
            "role": {"path": "Product", "value_map": "products", "pick": "role"},
            "quantity_hours": "Hours",
            "unit_price.amount": {"path": "Product", "value_map": "products", "pick": "rate"},
            "unit_price.currency": {"const": "EUR"},
        },
    }
    products = {
        "products": {"SAP-C": {"task": "SAP consulting", "role": "consultant", "rate": "150"}}
    }
    m = mapper({"Line": line}, products)
    ok = m.map("Line", {"Product": "SAP-C", "Hours": "8"})
    assert ok.data == {
        "service": "SAP consulting",
        "role": "consultant",
        "quantity_hours": "8",
        "unit_price": {"amount": "150.00", "currency": "EUR"},
    }
    missing = m.map("Line", {"Product": "PMO", "Hours": "8"})
    assert "service (from Product): 'PMO' is not in value map products" in map(
        str, missing.problems
    )


SUMMED_LINE = {
    "canonical": "invoice_line",
    "fields": {
        "description": "Text",
        "quantity": {"const": "1"},
        "unit_price.amount": "Price",
        "unit_price.currency": {"const": "GBP"},
        "amount.amount": {
            "sum": ["Gross", "-Tax", "-Discount"],
            "only_if": {"path": "$.Mode", "equals": ["Inclusive", "Gross"]},
            "otherwise": "Gross",
        },
        "amount.currency": {"const": "GBP"},
    },
}


def test_sum_adds_and_subtracts_and_only_if_chooses_the_rule() -> None:
    m = mapper({"Line": SUMMED_LINE})
    base = {"Text": "Design", "Price": "120", "Gross": 120.0, "Tax": "20.00"}
    inclusive = m.map("Line", {**base, "Mode": "Inclusive"})
    assert inclusive.ok, [str(p) for p in inclusive.problems]
    assert (inclusive.data or {})["amount"] == {"amount": "100.00", "currency": "GBP"}
    # an absent part counts as zero; a value of the list of `equals` holds too
    gross = m.map("Line", {"Text": "x", "Price": "1", "Gross": "10.5", "Mode": "Gross"})
    assert (gross.data or {})["amount"]["amount"] == "10.50"
    # the condition does not hold (another value, or no value): `otherwise` gives the value
    for mode in ({"Mode": "Exclusive"}, {}):
        result = m.map("Line", {**base, **mode})
        assert (result.data or {})["amount"]["amount"] == "120.00", mode


def test_sum_problems_name_the_part_and_no_part_means_no_value() -> None:
    rules = {**SUMMED_LINE["fields"], "amount.amount": {"sum": ["Gross", "-Tax"]}}
    m = mapper({"Line": {"canonical": "invoice_line", "fields": rules}})
    bad = m.map("Line", {"Text": "x", "Price": "1", "Gross": "10", "Tax": "lots"})
    assert [str(p) for p in bad.problems] == [
        "amount.amount (from Gross - Tax): 'lots' at Tax is not a decimal number"
    ]
    none = m.map("Line", {"Text": "x", "Price": "1"})
    assert [str(p) for p in none.problems] == ["amount.amount (from Gross - Tax): Field required"]
    negated = {"sum": ["Gross", "-Tax"], "format": "negated", "default": "0"}
    line = {"canonical": "invoice_line", "fields": {**rules, "amount.amount": negated}}
    m = mapper({"Line": line})
    credit = m.map("Line", {"Text": "x", "Price": "1", "Gross": 12, "Tax": 2}).data or {}
    assert credit["amount"]["amount"] == "-10.00"
    nothing = m.map("Line", {"Text": "x", "Price": "1"}).data or {}
    assert nothing["amount"]["amount"] == "0.00"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"sum": ["A", "B"], "path": "C"}, "give one source, not path and sum"),
        ({"sum": ["A", "-"]}, "sum needs vendor paths"),
        ({"sum": []}, "sum needs vendor paths"),
        ({"path": "A", "only_if": {"path": "B", "equals": []}}, "equals needs a value"),
        ({"path": "A", "only_if": {"path": "B"}}, "equals"),
    ],
)
def test_sum_and_only_if_are_checked_in_the_file(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mapper({"Line": {"canonical": "invoice_line", "fields": {"amount.amount": rule}}})


def test_read_path_steps() -> None:
    payload = {"a": {"b": [{"k": "x", "v": 1}, {"k": "y", "v": None}]}}
    assert read_path(payload, "a.b.1.k") == "y"
    assert read_path(payload, "a.b[k=x].v") == 1
    assert read_path(payload, "a.b[k=y].v") is None
    missing = read_path(payload, "a.b[k=z].v")
    assert missing is read_path(payload, "a.nope") and missing is not None


def test_engine_mapper_raises_mapping_error_with_every_problem() -> None:
    m = mapper({"Account": ACCOUNT})
    engine_mapper = m.mapper_for("Account")
    change = Change(
        system="crm",
        object="Account",
        external_id="1",
        version="1",
        payload={"Billing": {"Country": "DE"}, "VAT__c": "DE1"},
    )
    with pytest.raises(MappingError) as info:
        engine_mapper(change)
    assert any("legal_name" in p for p in info.value.problems)
    assert any("tax_ids" in p and "length check" in p for p in info.value.problems)
    with pytest.raises(KeyError, match="no mapping for 'Lead'"):
        m.mapper_for("Lead")


countries = st.sampled_from(
    [
        ("DE", "DE136695976"),
        ("FR", "FR40303265045"),
        ("GB", "980780684"),
        ("US", "042103594"),
        ("AU", "83914571673"),
    ]
)
names = (
    st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
)


@given(
    name=names,
    country=countries,
    currency=st.sampled_from(["EUR", "USD", "GBP", "AUD"]),
    amount=st.decimals(min_value=0, max_value=10**8, places=2, allow_nan=False),
    stage=st.sampled_from(["Prospecting", "Closed Won", "Negotiation/Review"]),
)
def test_salesforce_round_trip(
    name: str, country: tuple[str, str], currency: str, amount: Decimal, stage: str
) -> None:
    """A canonical account and opportunity written in Salesforce's shape map back to
    themselves through the shipped mapping."""
    salesforce = load_mappers()["salesforce"]
    code, tax_id = country
    account = salesforce.map(
        "Account",
        {
            "Name": name,
            "BillingCountry": code,
            "BillingCity": "X",
            "Tax_Id__c": tax_id,
            "CurrencyIsoCode": currency,
        },
    )
    assert account.ok, account.problems
    assert account.data is not None
    assert (account.data["legal_name"], account.data["country"]) == (name, code)
    assert account.data["tax_ids"][0]["value"].endswith(tax_id[-6:])
    opportunity = salesforce.map(
        "Opportunity",
        {
            "Name": name,
            "AccountId": "001A",
            "StageName": stage,
            "IsWon": stage == "Closed Won",
            "CloseDate": "2026-11-30",
            "Amount": str(amount),
            "CurrencyIsoCode": currency,
        },
    )
    assert opportunity.ok, opportunity.problems
    assert opportunity.data is not None
    assert Decimal(opportunity.data["amount"]["amount"]) == amount
    assert opportunity.data["won"] == (stage == "Closed Won")


def test_ownership_refuses_non_owners_and_reports_drift() -> None:
    policy = OwnershipPolicy({"account": {"legal_name": "tryton", "tax_ids": "tryton"}})
    decision = policy.decide(
        "account",
        "salesforce",
        proposed={"legal_name": "ACME Inc", "trading_name": "Acme", "tax_ids": ["X"]},
        current={"legal_name": "ACME Incorporated", "tax_ids": ["X"]},
    )
    assert decision.allowed == {"trading_name": "Acme"}
    assert decision.refused == ("legal_name", "tax_ids")
    (drift,) = decision.drift
    assert str(drift) == (
        "account.legal_name is owned by tryton; salesforce has 'ACME Inc' "
        "where tryton has 'ACME Incorporated'"
    )
    assert policy.decide("account", "tryton", {"legal_name": "New"}).allowed == {
        "legal_name": "New"
    }


def test_the_engine_applies_declarative_mappings(tmp_path: Path) -> None:
    """A Salesforce Account change goes through the shipped mapping inside the engine: a
    good one becomes a canonical snapshot, a bad one a mapping exception naming every
    problem."""
    from closeloop.bootstrap import build_hub, mapped_binding
    from closeloop.config import Settings
    from closeloop.flows.mirror import MirrorFlow
    from tests.memory_system import MemorySystem

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}")
    erp = MemorySystem(name="erp")
    binding = mapped_binding(settings, "salesforce", "Account", [MirrorFlow("erp", "Customer")])
    hub = build_hub(settings, connectors={"erp": erp}, bindings=[binding], upgrade=True)
    try:
        hub.intake.accept(
            [
                {
                    "system": "salesforce",
                    "object": "Account",
                    "external_id": "001A",
                    "version": "1",
                    "payload": {
                        "Name": "Acme GmbH",
                        "BillingCountry": "Deutschland",
                        "BillingCity": "Berlin",
                        "Tax_Id__c": "DE 136 695 976",
                        "CurrencyIsoCode": "EUR",
                    },
                },
                {
                    "system": "salesforce",
                    "object": "Account",
                    "external_id": "001B",
                    "version": "1",
                    "payload": {
                        "Name": "Bad SARL",
                        "BillingCountry": "France",
                        "Tax_Id__c": "FR123",
                        "CurrencyIsoCode": "EURO",
                    },
                },
            ]
        )
        assert hub.worker.run_until_idle(10)
        (exception,) = hub.operations.list_exceptions()
    finally:
        hub.close()
    (written,) = erp.targets.values()
    assert written["tax_ids"] == [{"value": "DE136695976", "scheme": "eu_vat"}]
    assert written["country"] == "DE" and written["billing_address"]["city"] == "Berlin"
    assert (
        exception.error_class.value == "mapping" and exception.entity == "salesforce:Account:001B"
    )
    assert "tax_ids (from Tax_Id__c): [0] 'FR123' is not a valid EU VAT number" in exception.message
    assert "currency (from CurrencyIsoCode): 'EURO' is not an ISO 4217" in exception.message


def test_ownership_policy_comes_from_the_mapping_files(tmp_path: Path) -> None:
    from closeloop.config.files import ownership_policy

    mappers = load_mappers()
    policy = ownership_policy(mappers)
    assert policy.owner("account", "tax_ids") == "erp"  # the role: Tryton or Xero
    assert policy.owner("opportunity", "stage") == "salesforce"
    rival = tmp_path / "xero.yaml"
    rival.write_text(
        "version: 1\nconnection: xero\nobjects: {}\nownership:\n  account: {tax_ids: xero}\n"
    )
    with pytest.raises(ValueError, match=r"account\.tax_ids is owned by 'xero' here and by 'erp'"):
        ownership_policy(load_mappers([rival]))
