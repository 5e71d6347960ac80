"""The acquired UK unit's side of the demo: its Xero as its finance team uses it.

The unit (:data:`~closeloop.devtools.demo.entities.ACQUIRED_ENTITY`) came with its clients
already in its Xero (:func:`seed_contacts`: the hub matches them by VAT number, as it matches
the group's in Tryton); its clients pay in Xero (:func:`clients_pay`); and the demo's
summary reads its invoices back from Xero (:func:`invoice_rows`), beside Tryton's, in one
shape (:class:`InvoiceRow`).

Everything goes through the hub's own Xero client (its token, tenant, limits and call
counts): what the demo's finance team does in Xero costs the organisation's quota too, as a
person working in Xero would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.bootstrap import Hub
from closeloop.connectors.xero.client import XeroClient
from closeloop.connectors.xero.invoicing import document_payload
from closeloop.devtools.demo.entities import ACQUIRED_ENTITY, ACQUIRED_ERP
from closeloop.devtools.demo.firm import Firm

BANK_ACCOUNT = "090"
"""The bank account payments go to (Xero's default UK chart: 090 Business Bank Account)."""


@dataclass(frozen=True)
class InvoiceRow:
    """One posted (or paid) engagement invoice as the summary counts it, whichever ERP holds
    it: ``erp`` (``tryton`` or ``xero``), ``entity`` (legal entity code), ``reference``,
    ``currency``, amounts (``Decimal``, in ``currency``), ``to_pay`` (outstanding) and
    ``due`` (``None`` when the ERP gives none)."""

    erp: str
    entity: str
    reference: str
    currency: str
    untaxed: Decimal
    tax: Decimal
    total: Decimal
    to_pay: Decimal
    due: date | None


def xero_client(hub: Hub) -> XeroClient | None:
    """The hub's client of the acquired unit's Xero (``None`` when it has no such system)."""
    if ACQUIRED_ERP not in hub.settings.systems:
        return None
    client: XeroClient = hub.registry.connector(ACQUIRED_ERP).client  # type: ignore[attr-defined]
    return client


def contact(customer: dict[str, Any], number: str | None = None) -> dict[str, Any]:
    """A Xero contact (``PUT /Contacts`` element) of a customer shaped as
    ``Firm.erp_customers``: name, VAT number (``TaxNumber``; empty without one), billing
    (``POBOX``) address, and ``ContactNumber`` when ``number`` is given (only the API sets
    it: a contact a person made has none)."""
    made: dict[str, Any] = {
        "Name": customer["name"],
        "TaxNumber": next((n for _scheme, n in customer["tax_ids"]), ""),
        "Addresses": [
            {
                "AddressType": "POBOX",
                "AddressLine1": customer["address"]["line1"],
                "City": customer["address"]["city"],
                "PostalCode": customer["address"]["postal_code"],
                "Country": customer["country"],
            }
        ],
    }
    return made if number is None else {**made, "ContactNumber": number}


def seed_contacts(hub: Hub, firm: Firm) -> int:
    """The acquired unit's existing clients (``firm.acquired_customers``) as contacts in its
    Xero, made by its finance team long ago (:func:`contact`, without the hub's
    ``ContactNumber``). Returns how many were made."""
    client = xero_client(hub)
    if client is None or not firm.acquired_customers:
        return 0
    contacts = [contact(c) for c in firm.acquired_customers]
    client.request("PUT", "Contacts", body={"Contacts": contacts})
    return len(contacts)


def _engagement_invoices(client: XeroClient) -> list[dict[str, Any]]:
    """The engagements' approved and paid sales invoices (their references start ``SF-``)."""
    params = {"where": 'Type=="ACCREC" AND Reference.StartsWith("SF-")'}
    return [
        row
        for row in client.list_all("Invoices", "Invoices", params=params)
        if row.get("Status") in ("AUTHORISED", "PAID")
    ]


def clients_pay(hub: Hub, on: date, *, late: bool = False) -> dict[str, Decimal]:
    """The acquired unit's clients pay in Xero on ``on``: at first (``late=False``) every
    second of its open engagement invoices (in order of reference) in full; later
    (``late=True``) half of those left, the rest staying overdue. Returns the amounts paid by
    invoice reference."""
    client = xero_client(hub)
    if client is None:
        return {}
    open_ = sorted(
        (r for r in _engagement_invoices(client) if r.get("Status") == "AUTHORISED"),
        key=lambda r: str(r["Reference"]),
    )
    paying = open_[::2]
    payments = [
        {
            "Invoice": {"InvoiceID": record["InvoiceID"]},
            "Account": {"Code": BANK_ACCOUNT},
            "Amount": str(Decimal(str(record["AmountDue"]))),
            "Date": on.isoformat(),
            "Reference": f"PAY-{record['Reference']}" + ("-late" if late else ""),
        }
        for record in paying
    ]
    for start in range(0, len(payments), 50):
        client.request("PUT", "Payments", body={"Payments": payments[start : start + 50]})
    return {str(r["Reference"]): Decimal(str(r["AmountDue"])) for r in paying}


def invoice_rows(hub: Hub) -> list[InvoiceRow]:
    """The acquired unit's approved and paid engagement invoices, read back from Xero."""
    client = xero_client(hub)
    if client is None:
        return []
    rows = []
    for record in _engagement_invoices(client):
        doc = document_payload(record)
        total = Decimal(doc["total_amount"])
        rows.append(
            InvoiceRow(
                erp=ACQUIRED_ERP,
                entity=ACQUIRED_ENTITY.code,
                reference=str(doc["reference"]),
                currency=str(doc["currency"]),
                untaxed=Decimal(doc["untaxed_amount"]),
                tax=Decimal(doc["tax_amount"]),
                total=total,
                to_pay=total - Decimal(doc["amount_paid"]),
                due=date.fromisoformat(doc["due_date"]) if doc["due_date"] else None,
            )
        )
    return rows
