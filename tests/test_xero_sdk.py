"""The Xero sandbox refereed by Xero's official Python SDK (xero-python, generated from the
same Accounting OpenAPI description): the unchanged SDK, pointed at the sandbox by its
documented ``base_url`` and given a client-credentials token from the sandbox's own
``/connect/token``, creates and reads contacts, invoices (a batch with
``summarize_errors=False`` where one invalid element fails alone), payments that make an
invoice paid, credit notes allocated to an invoice, tracking categories and items; every
answer goes through the SDK's own deserialisation (dates, enums, money as ``Decimal``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from xero_python.accounting import Account as XeroAccount
from xero_python.accounting import (
    AccountingApi,
    Allocation,
    Allocations,
    Contact,
    Contacts,
    CreditNote,
    CreditNotes,
    Invoice,
    Invoices,
    Item,
    Items,
    LineAmountTypes,
    LineItem,
    LineItemTracking,
    Payment,
    Payments,
    Purchase,
    TrackingCategory,
    TrackingOption,
)
from xero_python.api_client import ApiClient, Configuration
from xero_python.api_client.oauth2 import OAuth2Token
from xero_python.exceptions import AccountingBadRequestException

from closeloop.sandboxes.xero.server import XeroServer
from closeloop.sandboxes.xero.tracking import UNKNOWN_OPTION
from tests.xero_support import ROOMY, running_xero

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XeroServer]:
    with running_xero(tmp_path_factory.mktemp("xero-sdk"), **ROOMY) as started:
        yield started


@pytest.fixture
def accounting(server: XeroServer) -> AccountingApi:
    """The SDK's AccountingApi at the sandbox, with a client-credentials token from it."""
    grant = httpx.post(
        server.token_url,
        auth=(server.client_id, server.client_secret),
        data={"grant_type": "client_credentials"},
    )
    assert grant.status_code == 200, grant.text
    token: dict[str, Any] = grant.json()
    saved: list[dict[str, Any]] = []
    client = ApiClient(
        Configuration(
            oauth2_token=OAuth2Token(client_id=server.client_id, client_secret=server.client_secret)
        ),
        pool_threads=1,
        oauth2_token_getter=lambda: token,
        oauth2_token_saver=saved.append,
    )
    return AccountingApi(client, base_url=server.base_url)


def consulting(amount: str, **fields: Any) -> LineItem:
    given = {
        "description": "Consulting",
        "quantity": Decimal("1"),
        "unit_amount": Decimal(amount),
        "account_code": "200",
        "tax_type": "OUTPUT2",
    }
    return LineItem(**(given | fields))


def new_contact(api: AccountingApi, tenant: str, name: str) -> Contact:
    made = api.create_contacts(tenant, Contacts(contacts=[Contact(name=name)]))
    contact: Contact = made.contacts[0]
    return contact


def test_contacts_are_created_and_read_through_the_sdk(
    server: XeroServer, accounting: AccountingApi
) -> None:
    tenant = server.tenant_id
    made = accounting.create_contacts(
        tenant,
        Contacts(
            contacts=[
                Contact(
                    name="SDK Buyer Ltd",
                    email_address="ap@sdk.example",
                    tax_number="GB123456789",
                    contact_number="SDK-1",
                )
            ]
        ),
    )
    created = made.contacts[0]
    assert created.contact_id and created.contact_status == "ACTIVE"
    read = accounting.get_contact(tenant, created.contact_id).contacts[0]
    assert (read.name, read.tax_number, read.contact_number) == (
        "SDK Buyer Ltd",
        "GB123456789",
        "SDK-1",
    )
    assert read.updated_date_utc is not None and read.updated_date_utc.tzinfo is not None
    listed = accounting.get_contacts(tenant, where='ContactNumber=="SDK-1"').contacts
    assert [c.contact_id for c in listed] == [created.contact_id]
    again = [
        accounting.create_contacts(
            tenant,
            Contacts(contacts=[Contact(name="SDK Replayed Ltd")]),
            idempotency_key="closeloop:contact:SDK-2",
        ).contacts[0]
        for _ in range(2)
    ]
    assert again[0].contact_id == again[1].contact_id  # the repeat is the first answer
    replayed = accounting.get_contacts(tenant, where='Name=="SDK Replayed Ltd"').contacts
    assert len(replayed) == 1


def test_invoices_a_batch_an_update_and_a_payment_through_the_sdk(
    server: XeroServer, accounting: AccountingApi
) -> None:
    tenant = server.tenant_id
    buyer = new_contact(accounting, tenant, "SDK Invoiced Ltd")

    def draft(amount: str, **fields: Any) -> Invoice:
        return Invoice(
            type="ACCREC",
            contact=Contact(contact_id=buyer.contact_id),
            line_items=[consulting(amount, **fields)],
            line_amount_types=LineAmountTypes.EXCLUSIVE,
            date=date(2026, 3, 2),
            due_date=date(2026, 4, 1),
            reference="SDK/2026-03",
        )

    batch = accounting.create_invoices(
        tenant,
        Invoices(invoices=[draft("100.00"), draft("5.00", tax_type="NOSUCHTAX"), draft("0.03")]),
        summarize_errors=False,
    ).invoices
    assert [i.status_attribute_string for i in batch] == ["OK", "ERROR", "OK"]
    assert [i.has_errors for i in batch] == [False, True, False]
    assert "NOSUCHTAX" in batch[1].validation_errors[0].message
    first = batch[0]
    assert (first.sub_total, first.total_tax, first.total) == (
        Decimal("100.00"),
        Decimal("20.00"),
        Decimal("120.00"),
    )
    assert (first.date, first.due_date, first.status) == (
        date(2026, 3, 2),
        date(2026, 4, 1),
        "DRAFT",
    )
    assert batch[2].line_items[0].tax_amount == Decimal("0.01")

    read = accounting.get_invoice(tenant, first.invoice_id).invoices[0]
    assert read.invoice_number == first.invoice_number and read.amount_due == Decimal("120.00")
    assert read.line_amount_types == LineAmountTypes.EXCLUSIVE
    assert read.currency_code.value == "GBP"

    authorised = accounting.update_invoice(
        tenant, first.invoice_id, Invoices(invoices=[Invoice(status="AUTHORISED")])
    ).invoices[0]
    assert authorised.status == "AUTHORISED"

    paid = accounting.create_payments(
        tenant,
        Payments(
            payments=[
                Payment(
                    invoice=Invoice(invoice_id=first.invoice_id),
                    account=XeroAccount(code="090"),
                    amount=Decimal("120.00"),
                    date=date(2026, 3, 20),
                    reference="SDK payment",
                )
            ]
        ),
    ).payments[0]
    assert paid.amount == Decimal("120.00") and paid.date == date(2026, 3, 20)
    assert paid.status == "AUTHORISED" and paid.payment_type == "ACCRECPAYMENT"
    after = accounting.get_invoice(tenant, first.invoice_id).invoices[0]
    assert (after.status, after.amount_paid, after.amount_due) == ("PAID", Decimal("120.00"), 0)
    assert after.fully_paid_on_date == date(2026, 3, 20)
    assert [p.payment_id for p in after.payments] == [paid.payment_id]
    with pytest.raises(AccountingBadRequestException) as refused:
        accounting.update_invoice(
            tenant, first.invoice_id, Invoices(invoices=[Invoice(status="VOIDED")])
        )
    assert "PAID to VOIDED" in refused.value.reason  # Elements.0.ValidationErrors.0.Message
    listed = accounting.get_invoices(
        tenant,
        if_modified_since=first.updated_date_utc,
        where='Reference.StartsWith("SDK/")',
        order="Total DESC",
        contact_i_ds=[buyer.contact_id],
        statuses=["PAID", "DRAFT"],
        page=1,
        page_size=10,
    )
    assert [i.total for i in listed.invoices] == [Decimal("120.00"), Decimal("0.04")]
    assert (listed.pagination.item_count, listed.pagination.page_size) == (2, 10)


def test_a_credit_note_is_allocated_to_an_invoice_through_the_sdk(
    server: XeroServer, accounting: AccountingApi
) -> None:
    tenant = server.tenant_id
    buyer = new_contact(accounting, tenant, "SDK Credited Ltd")
    invoice = accounting.create_invoices(
        tenant,
        Invoices(
            invoices=[
                Invoice(
                    type="ACCREC",
                    contact=Contact(contact_id=buyer.contact_id),
                    line_items=[consulting("100.00")],
                    status="AUTHORISED",
                )
            ]
        ),
    ).invoices[0]
    note = accounting.create_credit_notes(
        tenant,
        CreditNotes(
            credit_notes=[
                CreditNote(
                    type="ACCRECCREDIT",
                    contact=Contact(contact_id=buyer.contact_id),
                    line_items=[consulting("25.00")],
                    status="AUTHORISED",
                    date=date(2026, 3, 3),
                )
            ]
        ),
    ).credit_notes[0]
    assert (note.total, note.remaining_credit, note.status) == (
        Decimal("30.00"),
        Decimal("30.00"),
        "AUTHORISED",
    )
    allocated = accounting.create_credit_note_allocation(
        tenant,
        note.credit_note_id,
        Allocations(
            allocations=[
                Allocation(
                    invoice=Invoice(invoice_id=invoice.invoice_id),
                    amount=Decimal("30.00"),
                    date=date(2026, 3, 4),
                )
            ]
        ),
    ).allocations[0]
    assert allocated.amount == Decimal("30.00") and allocated.date == date(2026, 3, 4)
    after = accounting.get_invoice(tenant, invoice.invoice_id).invoices[0]
    assert (after.amount_credited, after.amount_due) == (Decimal("30.00"), Decimal("90.00"))
    assert [c.credit_note_id for c in after.credit_notes] == [note.credit_note_id]
    spent = accounting.get_credit_note(tenant, note.credit_note_id).credit_notes[0]
    assert (spent.remaining_credit, spent.status) == (0, "PAID")


def test_tracking_and_items_through_the_sdk(server: XeroServer, accounting: AccountingApi) -> None:
    tenant = server.tenant_id
    region = accounting.create_tracking_category(
        tenant, TrackingCategory(name="SDK Region")
    ).tracking_categories[0]
    assert region.status == "ACTIVE"
    north = accounting.create_tracking_options(
        tenant, region.tracking_category_id, TrackingOption(name="North")
    ).options[0]
    assert north.status == "ACTIVE"
    listed = accounting.get_tracking_categories(tenant, include_archived=True)
    assert [o.name for o in listed.tracking_categories[0].options] == ["North"]
    made = accounting.create_items(
        tenant,
        Items(
            items=[
                Item(
                    code="SDK-DAY",
                    name="SDK day",
                    description="A day of work",
                    sales_details=Purchase(
                        unit_price=Decimal("950.00"), account_code="200", tax_type="OUTPUT2"
                    ),
                )
            ]
        ),
    ).items[0]
    assert made.sales_details.unit_price == Decimal("950.00")
    assert accounting.get_item(tenant, made.item_id).items[0].code == "SDK-DAY"
    buyer = new_contact(accounting, tenant, "SDK Tracked Ltd")

    def with_line(line: LineItem) -> Invoice:
        return Invoice(
            type="ACCREC", contact=Contact(contact_id=buyer.contact_id), line_items=[line]
        )

    answers = accounting.create_invoices(
        tenant,
        Invoices(
            invoices=[
                with_line(
                    LineItem(
                        item_code="SDK-DAY",
                        quantity=Decimal("2"),
                        tracking=[LineItemTracking(name="SDK Region", option="North")],
                    )
                ),
                with_line(
                    consulting(
                        "1.00", tracking=[LineItemTracking(name="SDK Region", option="South")]
                    )
                ),
            ]
        ),
        summarize_errors=False,
    ).invoices
    line = answers[0].line_items[0]
    assert (line.description, line.unit_amount, line.line_amount) == (
        "A day of work",
        Decimal("950.00"),
        Decimal("1900.00"),
    )
    assert (line.item.code, line.tracking[0].option) == ("SDK-DAY", "North")
    assert line.tracking[0].tracking_option_id == north.tracking_option_id
    assert answers[1].validation_errors[0].message == UNKNOWN_OPTION
