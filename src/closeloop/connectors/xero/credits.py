"""Credit notes in Xero: an invoice credited, in whole or by line, and the credit allocated.

A credit note is ``ACCRECCREDIT``, referenced with the hub's credit reference (by which it is
found again), holding copies of the invoice's lines (all of its marked lines, or those of the
charge keys asked; ``time`` names every time line) and a line saying what it credits and
why, approved, then allocated to the invoice for what the invoice still owes. A credit note
made before whose allocation was lost (an answer lost, Xero refusing for a limit) is
allocated when its command runs again; ``find`` takes it for done only once its credit is
used up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.xero.client import XeroClient
from closeloop.connectors.xero.invoicing import Invoicing, copy_line, document_payload
from closeloop.connectors.xero.marks import mark_of
from closeloop.connectors.xero.projects import ElementRefused
from closeloop.domain.operations import CreditInvoice

TIME_KEY = "time"
"""The line key that names every line of recorded time."""


class Credits:
    """The organisation's credit notes of the hub's invoices."""

    def __init__(self, client: XeroClient, invoicing: Invoicing) -> None:
        self.client = client
        self.invoicing = invoicing

    def credit(self, request: CreditInvoice) -> dict[str, Any]:
        """Credit the invoice ``request.reference`` (see the module docstring); the credit
        note's :func:`document_payload`. Raises ``LookupError`` for an unknown invoice,
        :class:`ElementRefused` for a draft one or a key it does not bill."""
        existing = self.invoicing.by_reference("CreditNotes", [request.credit_reference])
        invoice = self.invoicing.by_reference("Invoices", [request.reference]).get(
            request.reference
        )
        made = existing.get(request.credit_reference)
        if made is not None:  # made before (its answer or its allocation lost): allocate
            if invoice is not None and made.get("Status") == "AUTHORISED":
                self._allocate(made, invoice, request.credit_date or datetime.now(UTC).date())
            return document_payload(made, request.reference)
        if invoice is None:
            raise LookupError(f"no Xero invoice referenced {request.reference!r}")
        if invoice["Status"] not in ("AUTHORISED", "PAID"):
            raise ElementRefused(
                [f"invoice {request.reference} is not approved: nothing to credit"]
            )
        invoice = self.client.request("GET", f"Invoices/{invoice['InvoiceID']}")["Invoices"][0]
        lines = self._credited_lines(invoice, request.line_keys)
        issued = request.credit_date or datetime.now(UTC).date()
        note = {
            "Type": "ACCRECCREDIT",
            "Status": "AUTHORISED",
            "Contact": {"ContactID": invoice["Contact"]["ContactID"]},
            "Reference": request.credit_reference,
            "Date": issued.isoformat(),
            "CurrencyCode": invoice.get("CurrencyCode"),
            "LineAmountTypes": invoice.get("LineAmountTypes") or "Exclusive",
            "LineItems": [
                *lines,
                {
                    "Description": f"Credit of {request.reference}: {request.reason}",
                    "AccountCode": self.invoicing.projects.accounts.sales,
                },
            ],
        }
        answer = self.client.request("PUT", "CreditNotes", body={"CreditNotes": [note]})
        record = (answer.get("CreditNotes") or [{}])[0]
        self._allocate(record, invoice, issued)
        return document_payload(record, request.reference)

    def _credited_lines(self, invoice: dict[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
        """Copies of the invoice's lines to credit: every marked line, or those of ``keys``.
        Raises :class:`ElementRefused` for a key the invoice does not bill."""
        lines = [li for li in invoice.get("LineItems") or [] if mark_of(li.get("Description"))]
        if not keys:
            return [copy_line(li) for li in lines]
        chosen = []
        for key in keys:
            picked = [
                li
                for li in lines
                if (key == TIME_KEY and li.get("ItemCode"))
                or (mark_of(li.get("Description")) == key and not li.get("ItemCode"))
            ]
            if not picked:
                raise ElementRefused([f"invoice {invoice.get('Reference')} bills no {key!r}"])
            chosen += picked
        return [copy_line(li) for li in chosen]

    def _allocate(self, note: dict[str, Any], invoice: dict[str, Any], day: date) -> None:
        """Allocate what is left of the credit note to the invoice, up to what the invoice
        still owes."""
        owed = Decimal(str(invoice.get("AmountDue") or 0))
        left = note.get("RemainingCredit")
        amount = min(owed, Decimal(str(note.get("Total") if left is None else left) or 0))
        if amount > 0:
            self.client.request(
                "PUT",
                f"CreditNotes/{note['CreditNoteID']}/Allocations",
                body={
                    "Allocations": [
                        {
                            "Invoice": {"InvoiceID": invoice["InvoiceID"]},
                            "Amount": amount,
                            "Date": day.isoformat(),
                        }
                    ]
                },
            )
