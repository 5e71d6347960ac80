"""The Xero connector over real HTTP against the Xero sandbox: customers matched and written,
projects set up (tracking option, items, anchor), time recorded on work-in-progress drafts,
invoices made from it with charges and Xero's UK tax types, approved, credited and
allocated, the change feed, and every write found again from its idempotency key alone.
Each effect is read back with Xero's own API (:mod:`tests.xero_support`), never through the
connector under test."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from closeloop.connectors.xero.connector import XeroConnector
from closeloop.connectors.xero.marks import item_code, wip_reference
from closeloop.domain.commands import Applied, Permanent
from closeloop.domain.keys import task_key
from closeloop.domain.operations import (
    ChargeLine,
    CloseProject,
    CreditInvoice,
    InvoiceProject,
    MatchCustomer,
    PostInvoice,
)
from closeloop.domain.taxrules import TaxTreatment
from tests import xero_support
from tests.contract_support import fresh
from tests.xero_driving import (  # noqa: F401 - fixtures
    SYSTEM,
    api,
    applied,
    cmd,
    customer,
    entry,
    project,
    server,
    xero,
)

pytestmark = pytest.mark.timeout(120)


def test_a_customer_is_written_once_and_matched_by_its_tax_number(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("m")
    code = customer(xero, tag, f"GB{tag}")
    customer(xero, tag, f"GB{tag}")  # the same again: updated, not duplicated
    held = [c for c in api.listed("Contacts") if c.get("ContactNumber") == code]
    assert len(held) == 1 and held[0]["TaxNumber"] == f"GB{tag}"
    match = MatchCustomer(name="Someone Else", country="GB", tax_ids=(f"GB{tag}",))
    result = applied(xero.execute([cmd(match, tag)])[0])
    assert (result["kind"], result["party_code"]) == ("tax_id", code)
    assert result["party_id"] == held[0]["ContactID"]


def test_a_project_is_an_option_items_and_an_anchor(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("p")
    key = project(xero, customer(xero, tag), tag, treatment=TaxTreatment.OUTSIDE_SCOPE)
    categories = api.call("GET", "TrackingCategories").json()["TrackingCategories"]
    options = [o["Name"] for c in categories if c["Name"] == "Project" for o in c["Options"]]
    assert key in options
    items = {i["Code"]: i for i in api.listed("Items")}
    consulting = items[item_code(task_key(key, "Consulting"))]
    assert Decimal(str(consulting["SalesDetails"]["UnitPrice"])) == Decimal("150.00")
    assert consulting["SalesDetails"]["TaxType"] == "ZERORATEDOUTPUT"
    drafts = [i for i in api.listed("Invoices") if i.get("Reference") == wip_reference(key)]
    assert len(drafts) == 1 and drafts[0]["Status"] == "DRAFT"


def test_time_is_invoiced_once_with_charges_taxes_and_tracking_then_posted_and_credited(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("i")
    key = project(xero, customer(xero, tag), tag)
    batch = [
        entry(f"harvest-{tag}-1", key, "Consulting", date(2026, 11, 3), "7.5"),
        entry(f"harvest-{tag}-2", key, "Design", date(2026, 11, 4), "3.333"),
        entry(f"harvest-{tag}-3", key, "Consulting", date(2026, 12, 1), "2"),
        entry(f"harvest-{tag}-4", key, "No such role", date(2026, 11, 5), "1"),
    ]
    outcomes = xero.execute(batch)
    assert [type(o).__name__ for o in outcomes] == ["Applied"] * 3 + ["Permanent"]
    assert "not set up" in outcomes[3].message  # type: ignore[union-attr]

    reference = f"{key}/2026-11"
    milestone = ChargeLine(
        key=f"milestone:{tag}",
        kind="milestone",
        description="Kick-off",
        quantity=Decimal(1),
        unit_price=Decimal("1000.00"),
    )
    invoice = InvoiceProject(
        project_key=key,
        up_to=date(2026, 11, 30),
        reference=reference,
        invoice_date=date(2026, 11, 30),
        payment_terms_days=30,
        charges=(milestone,),
    )
    made = applied(xero.execute([cmd(invoice, reference)])[0])
    assert made["charges"] == [milestone.key] and made["state"] == "draft"
    # 7.5 x 150 + 3.333 x 112.50 (374.96 to the penny) + 1,000; VAT 20 % per line
    assert Decimal(made["untaxed_amount"]) == Decimal("2499.96")
    assert Decimal(made["tax_amount"]) == Decimal("225.00") + Decimal("74.99") + Decimal("200.00")
    again = applied(xero.execute([cmd(invoice, reference)])[0])
    assert again["number"] == made["number"]

    invoices = [i for i in api.listed("Invoices") if i.get("Reference") == reference]
    assert len(invoices) == 1
    lines = invoices[0]["LineItems"]
    assert {line["TaxType"] for line in lines} == {"OUTPUT2"}
    assert all(line["Tracking"][0]["Option"] == key for line in lines)
    wip = [i for i in api.listed("Invoices") if i.get("Reference") == wip_reference(key)]
    left = [line["Description"] for i in wip for line in i["LineItems"]]
    assert any(f"harvest-{tag}-3" in d for d in left)
    assert not any(f"harvest-{tag}-1" in d or f"harvest-{tag}-2" in d for d in left)

    posted = applied(xero.execute([cmd(PostInvoice(reference=reference), reference)])[0])
    assert posted["state"] == "posted"
    credit = CreditInvoice(
        reference=reference,
        credit_reference=f"{reference}/credit-1",
        reason="Kick-off disputed",
        line_keys=(milestone.key,),
    )
    note = applied(xero.execute([cmd(credit, credit.credit_reference)])[0])
    assert Decimal(note["total_amount"]) == Decimal("-1200.00")
    assert note["credited"] == reference
    owed = api.call("GET", f"Invoices/{invoices[0]['InvoiceID']}").json()["Invoices"][0]
    assert Decimal(str(owed["AmountDue"])) == Decimal("2999.95") - Decimal("1200.00")

    found = xero.find(
        [c.idempotency_key for c in (*batch[:3], cmd(invoice, reference))]
        + [cmd(credit, credit.credit_reference).idempotency_key, f"{SYSTEM}:post_invoice:nope"]
    )
    assert len(found) == 5 and f"{SYSTEM}:post_invoice:nope" not in found

    fed = [c for page in xero.read_changes("Invoices", None) for c in page]
    references = {c.payload.get("Reference") for c in fed}
    assert reference in references and wip_reference(key) not in references
    notes = [c for page in xero.read_changes("CreditNotes", None) for c in page]
    assert any(c.payload["CreditedReference"] == reference for c in notes)


def test_time_on_a_closed_project_is_refused_alone(xero: XeroConnector) -> None:
    tag = fresh("c")
    code = customer(xero, tag)
    closed, open_ = project(xero, code, tag), project(xero, code, tag + "o")
    applied(xero.execute([cmd(CloseProject(key=closed), closed)])[0])
    outcomes = xero.execute(
        [
            entry(f"harvest-{tag}-1", closed, "Consulting", date(2026, 11, 3), "1"),
            entry(f"harvest-{tag}-2", open_, "Consulting", date(2026, 11, 3), "1"),
        ]
    )
    assert isinstance(outcomes[0], Permanent) and "closed" in outcomes[0].message
    assert isinstance(outcomes[1], Applied)
