"""Legal entities, currencies and tax treatments on the way from a closed-won deal to its
invoices: what blocks a deal (unknown entity, a currency its entity does not invoice in, a
treatment the rules cannot decide), what the ERP is told (the entity, the treatment, the
invoice's currency, terms and mention), and the exchange rates configuration."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from closeloop.config import ConfigError, load_settings
from closeloop.domain.commands import Applied
from closeloop.domain.entities import LegalEntity, RatesConfig, read_rates_file
from closeloop.domain.errors import InputError
from closeloop.domain.records import FlowState, FlowStep, Signal
from closeloop.domain.taxrules import REVERSE_CHARGE_MENTION
from closeloop.flows.invoice import InvoiceFlow
from closeloop.flows.mobilize import BLOCKED, MobilizeFlow
from tests.flow_roles import ROLES
from tests.test_mobilize import DEAL, deal, xref_answer

NOW = datetime(2026, 3, 10, tzinfo=UTC)
ENTITIES = {
    "DE-GMBH": LegalEntity(
        code="DE-GMBH",
        name="Northwind Advisory GmbH",
        country="DE",
        currency="EUR",
        standard_rate=Decimal("0.19"),
        invoice_currencies=("CHF", "USD"),
    ),
    "US-INC": LegalEntity(
        code="US-INC",
        name="Northwind Advisory Inc.",
        country="US",
        currency="USD",
        vat_registered=False,
    ),
}
FLOW = MobilizeFlow(ROLES, entities=ENTITIES)
FRENCH = {
    "country": "France",
    "tax_id": "FR40303265045",
    "legal_name": "Lumen Media SAS",
    "city": "Paris",
}


def blocked_reason(**changes: Any) -> str:
    step = FLOW.on_record(None, deal(**changes))
    assert step is not None and step.state == "blocked", step
    (issue,) = step.issues
    assert issue.message.startswith(BLOCKED) and issue.impact == "revenue"
    (status,) = step.commands  # the account manager sees it on the opportunity
    assert status.payload["status"] == "Blocked"
    return issue.message


def test_a_deal_without_an_entity_or_with_an_unknown_one_is_blocked_naming_the_choices() -> None:
    assert "names no selling legal entity" in blocked_reason()
    reason = blocked_reason(legal_entity="FR-SAS")
    assert "'FR-SAS' is not configured" in reason and "DE-GMBH, US-INC" in reason


def test_a_currency_the_entity_does_not_invoice_in_blocks_the_deal() -> None:
    items = [
        {
            "service": "Consulting",
            "role": "Analyst",
            "quantity_hours": "40",
            "unit_price": {"amount": "95.00", "currency": "GBP"},
        }
    ]
    reason = blocked_reason(legal_entity="DE-GMBH", line_items=items)
    assert "DE-GMBH cannot invoice in GBP" in reason and "CHF, EUR, USD" in reason


def test_an_eu_customer_abroad_without_a_vat_number_is_left_to_a_person() -> None:
    reason = blocked_reason(legal_entity="DE-GMBH", customer={**FRENCH, "tax_id": ""})
    assert "tax treatment undecided" in reason and "art. 196" in reason
    assert "FR" in reason


def test_a_domestic_customer_needs_no_vat_number() -> None:
    step = FLOW.on_record(None, deal(legal_entity="DE-GMBH", customer={"tax_id": ""}))
    assert step is not None and step.state == "matching"
    assert step.data["tax"]["treatment"] == "domestic" and step.data["tax"]["rate"] == "0.19"


def provisioned(**changes: Any) -> FlowStep:
    """The deal matched to an ERP customer the cross-reference knows: both projects asked."""
    matching = FLOW.on_record(None, deal(**changes))
    assert matching is not None and matching.state == "matching"
    held = FlowState("mobilize", "engagement:c-1", matching.state, matching.data)
    step = FLOW.on_signal(held, xref_answer("C-0042"), NOW)
    assert step is not None and step.state == "provisioning"
    return step


@pytest.mark.parametrize(
    ("entity", "customer", "treatment"),
    [
        ("DE-GMBH", {}, "domestic"),
        ("DE-GMBH", FRENCH, "reverse_charge"),
        ("DE-GMBH", {"country": "United States", "tax_id": "", "city": "Boston"}, "outside_scope"),
        ("US-INC", FRENCH, "no_vat"),
    ],
)
def test_the_erp_project_carries_the_entity_and_the_treatment(
    entity: str, customer: dict[str, str], treatment: str
) -> None:
    items = None
    if entity == "US-INC":
        items = [
            {
                "service": "Consulting",
                "role": "Analyst",
                "quantity_hours": "40",
                "unit_price": {"amount": "120.00", "currency": "USD"},
            }
        ]
    changes: dict[str, Any] = {"legal_entity": entity, "customer": customer}
    if items:
        changes["line_items"] = items
    step = provisioned(**changes)
    erp = next(c for c in step.commands if c.system == "tryton")
    assert erp.payload["legal_entity"] == entity
    assert erp.payload["tax_treatment"] == treatment


def test_the_invoice_goes_out_in_the_deals_currency_with_its_terms_and_mention() -> None:
    step = provisioned(
        legal_entity="DE-GMBH", customer={**FRENCH, "payment_terms_days": 14, "currency": "EUR"}
    )
    data = {**step.data, "psa_project_id": "77", "erp_project_id": 78}
    done = FLOW.on_result(
        FlowState("mobilize", "engagement:c-1", "provisioning", data),
        "upsert_project",
        "tryton:project:x",
        Applied({"project_id": 78}),
    )
    assert done is not None and done.state == "mobilized"
    invoicing = next(s for s in done.signals if s.flow == "invoice")
    assert invoicing.data["mention"] == REVERSE_CHARGE_MENTION
    assert invoicing.data["customer_tax_id"] == "FR40303265045"
    assert invoicing.data["payment_terms_days"] == 14 and invoicing.data["currency"] == "EUR"

    flow = InvoiceFlow(settle_s=0)
    key = invoicing.business_key
    opened = flow.on_signal(None, invoicing, NOW)
    assert opened is not None
    recorded = Signal("invoice", key, "recorded", {"date": "2026-03-03", "hours": "8"})
    after = flow.on_signal(FlowState("invoice", key, opened.state, opened.data), recorded, NOW)
    assert after is not None
    due = flow.on_timer(
        FlowState("invoice", key, after.state, after.data), datetime(2026, 4, 2, tzinfo=UTC)
    )
    assert due is not None
    invoice = due.commands[0]
    assert invoice.operation == "invoice_project"
    assert invoice.payload["currency"] == "EUR" and invoice.payload["payment_terms_days"] == 14
    assert invoice.payload["mention"] == REVERSE_CHARGE_MENTION
    assert invoice.payload["customer_tax_id"] == "FR40303265045"
    assert invoice.payload["reference"] == f"SF-{DEAL}/2026-03"


# --- configuration --------------------------------------------------------------------------
def test_entities_and_rates_come_from_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "rates.csv").write_text(
        "date,currency,rate,source\n2026-11-02,CHF,0.9312,ECB\n2026-11-02,USD,1.0823,ECB\n"
    )
    (tmp_path / "closeloop.yaml").write_text(
        "legal_entities:\n"
        "  GB-LTD: {name: Northwind Ltd, country: United Kingdom, currency: gbp,"
        " standard_rate: '0.20'}\n"
        "exchange_rates: {base: EUR, file: rates.csv}\n"
    )
    settings = load_settings(tmp_path / "closeloop.yaml")
    entity = settings.legal_entities["GB-LTD"]
    assert (entity.code, entity.country, entity.currency) == ("GB-LTD", "GB", "GBP")
    rates = settings.exchange_rates.all_rates()
    assert [(r.currency, r.rate) for r in rates] == [
        ("CHF", Decimal("0.9312")),
        ("EUR", Decimal(1)),  # the base, at 1 on each date
        ("USD", Decimal("1.0823")),
    ]


def test_a_bad_entity_or_rate_is_refused_naming_where(tmp_path: Path) -> None:
    (tmp_path / "closeloop.yaml").write_text(
        "legal_entities:\n  XX: {name: X, country: Atlantis, currency: EUR}\n"
    )
    with pytest.raises(ConfigError, match=r"legal_entities\.XX\.country"):
        load_settings(tmp_path / "closeloop.yaml")
    bad = tmp_path / "bad.csv"
    bad.write_text("date,currency,rate,source\n2026-11-02,CHF,0.93,ECB\n2026-11-03,CHF,-1,ECB\n")
    with pytest.raises(InputError, match="line 3"):
        read_rates_file(bad)
    twice = RatesConfig(
        rates=(
            {"currency": "CHF", "valid_from": date(2026, 11, 2), "rate": "0.93", "source": "A"},
            {"currency": "CHF", "valid_from": date(2026, 11, 2), "rate": "0.94", "source": "B"},
        )
    )
    with pytest.raises(InputError, match="two rates for CHF on 2026-11-02"):
        twice.all_rates()


def test_a_deal_routed_to_another_entitys_books_is_blocked() -> None:
    flow = MobilizeFlow(ROLES, entities=ENTITIES, system_entities={"tryton": "US-INC"})
    step = flow.on_record(None, deal(legal_entity="DE-GMBH"))
    assert step is not None and step.state == "blocked"
    assert "routed to tryton, which books for US-INC" in step.issues[0].message


def test_entities_need_a_rate_when_registered_and_erp_systems_a_company(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give its standard_rate"):
        LegalEntity(code="FR-SAS", name="X SAS", country="FR", currency="EUR")
    (tmp_path / "closeloop.yaml").write_text(
        "legal_entities:\n"
        "  DE-GMBH: {name: A GmbH, country: DE, currency: EUR, standard_rate: '0.19'}\n"
        "  US-INC: {name: A Inc., country: US, currency: USD, vat_registered: false}\n"
        "systems:\n"
        "  tryton: {kind: tryton, url: 'http://127.0.0.1:1', database: d, user: u,"
        " password: p}\n"
    )
    with pytest.raises(ConfigError, match=r"systems\.tryton needs a company"):
        load_settings(tmp_path / "closeloop.yaml")


def test_an_account_without_terms_gets_the_configured_default() -> None:
    flow = InvoiceFlow(settle_s=0, payment_terms_days=21)
    key = "billing:SF-1"
    info = {"status": "mobilized", "engagement": "engagement:c-1", "erp": "tryton"}
    opened = flow.on_signal(None, Signal("invoice", key, "engagement", info), NOW)
    assert opened is not None
    recorded = Signal("invoice", key, "recorded", {"date": "2026-03-03", "hours": "8"})
    after = flow.on_signal(FlowState("invoice", key, opened.state, opened.data), recorded, NOW)
    assert after is not None
    due = flow.on_timer(
        FlowState("invoice", key, after.state, after.data), datetime(2026, 4, 2, tzinfo=UTC)
    )
    assert due is not None and due.commands[0].payload["payment_terms_days"] == 21
