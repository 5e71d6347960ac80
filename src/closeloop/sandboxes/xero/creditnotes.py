"""Credit notes (``ACCRECCREDIT``, ``ACCPAYCREDIT``) and their allocation to invoices,
following Xero's "Credit Notes" page.

A credit note is written like an invoice (``{"Type", "Contact": {"ContactID"}, "LineItems",
"LineAmountTypes", "Date", "Reference", "CreditNoteNumber", "Status"}``, totals and statuses
as :mod:`.invoices`), numbered ``CN-0001``...; its ``RemainingCredit`` starts at its
``Total``. ``PUT /CreditNotes/{id}/Allocations`` with ``{"Allocations": [{"Invoice":
{"InvoiceID"}, "Amount", "Date"}]}`` applies credit to invoices: both must be
``AUTHORISED`` and of the same contact, the amount positive and at most the credit
remaining and the invoice's ``AmountDue``. An allocation lowers ``RemainingCredit`` (the
credit note is ``PAID`` at 0) and raises the invoice's ``AmountCredited`` (the invoice is
``PAID`` when nothing is left due). An allocated credit note cannot be voided.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from closeloop.sandboxes.xero import contacts, invoices
from closeloop.sandboxes.xero.org import Organisation, public
from closeloop.sandboxes.xero.taxes import LINE_AMOUNT_TYPES, totals
from closeloop.sandboxes.xero.wire import day_msdate, money, parse_day


def check(
    org: Organisation, element: dict[str, Any], create_only: bool, unitdp: int = 2
) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one credit note and what :func:`apply` writes."""
    note_id = element.get("CreditNoteID")
    existing = org.credit_notes.get(str(note_id)) if note_id else None
    if note_id and (existing is None or create_only):
        return [f"Credit note {note_id} could not be found or already exists"], {}
    errors: list[str] = []
    current = existing["Status"] if existing else None
    status = element.get("Status", current or "DRAFT")
    if existing is None and status not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
        errors.append(f"Credit notes cannot be created with status {status}")
    elif current is not None and status not in invoices.NEXT_STATUS.get(current, set()):
        errors.append(f"{invoices.LOCKED}: the status cannot change from {current} to {status}")
    if existing and status == "VOIDED" and existing["_allocations"]:
        errors.append("Credit note cannot be voided as it has been allocated")
    kind = element.get("Type", existing["Type"] if existing else None)
    if kind not in ("ACCRECCREDIT", "ACCPAYCREDIT"):
        errors.append("Credit note Type must be ACCRECCREDIT or ACCPAYCREDIT")
    plan: dict[str, Any] = {"Status": status, "Type": kind}
    if existing is None or "LineItems" in element:
        if existing is not None and current not in ("DRAFT", "SUBMITTED"):
            return [*errors, invoices.LOCKED], plan
        amount_types = element.get("LineAmountTypes", "Exclusive")
        if amount_types not in LINE_AMOUNT_TYPES:
            errors.append("LineAmountTypes must be Exclusive, Inclusive or NoTax")
            amount_types = "Exclusive"
        plan["LineAmountTypes"] = amount_types
        lines = {**element, "LineAmountTypes": amount_types}
        plan["LineItems"] = invoices.build_lines(
            org, lines, unitdp, status, errors, kind != "ACCPAYCREDIT"
        )
    if existing is None:
        contact = element.get("Contact")
        contact_id = str(contact.get("ContactID")) if isinstance(contact, dict) else ""
        if contact_id not in org.contacts:
            errors.append("A Contact with a known ContactID must be specified")
        plan["_contact_id"] = contact_id
    if element.get("Date") is not None:
        try:
            plan["_date"] = parse_day(element["Date"])
        except ValueError:
            errors.append("Date is not a valid date")
    for name in ("Reference", "CreditNoteNumber"):
        if name in element:
            plan[name] = str(element[name] or "")
    currency = invoices.currency_of(org, element, existing, errors)
    if currency is not None:
        plan["CurrencyCode"] = currency
    return errors, plan


def apply(org: Organisation, element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Write one checked credit note; the stored record."""
    note_id = element.get("CreditNoteID")
    record = org.credit_notes.get(str(note_id)) if note_id else None
    if record is None:
        org.credit_note_number += 1
        record = {
            "CreditNoteID": str(uuid.uuid4()),
            "CreditNoteNumber": plan.get("CreditNoteNumber") or f"CN-{org.credit_note_number:04d}",
            "Reference": "",
            "CurrencyCode": invoices.BASE_CURRENCY,
            "Contact": contacts.summary(org.contacts[plan["_contact_id"]]),
            "_date": org.clock().date(),
            "_allocations": [],
        }
        org.credit_notes[record["CreditNoteID"]] = record
    for key in (
        "Type",
        "Status",
        "LineAmountTypes",
        "LineItems",
        "Reference",
        "CurrencyCode",
        "_date",
    ):
        if key in plan:
            record[key] = plan[key]
    pairs = [(line["LineAmount"], line["TaxAmount"]) for line in record["LineItems"]]
    record["SubTotal"], record["TotalTax"], record["Total"] = totals(
        pairs, record["LineAmountTypes"]
    )
    allocated = sum((a["Amount"] for a in record["_allocations"]), Decimal("0.00"))
    record["RemainingCredit"] = record["Total"] - allocated
    org.touch(record)
    return record


def check_allocation(
    org: Organisation, note: dict[str, Any], element: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one allocation of ``note`` and what is written."""
    target = element.get("Invoice")
    invoice = org.invoices.get(str(target.get("InvoiceID"))) if isinstance(target, dict) else None
    if invoice is None:
        return ["Invoice could not be found"], {}
    errors = []
    if note["Status"] != "AUTHORISED" or invoice["Status"] != "AUTHORISED":
        errors.append("Credit notes and invoices must be Authorised to be allocated")
    if invoice["Contact"]["ContactID"] != note["Contact"]["ContactID"]:
        errors.append("The credit note and the invoice must be for the same contact")
    try:
        amount = money(element.get("Amount"), "Amount").quantize(Decimal("0.01"))
        day = parse_day(element["Date"]) if element.get("Date") else org.clock().date()
    except ValueError as exc:
        return [*errors, str(exc)], {}
    if amount <= 0:
        errors.append("Amount must be greater than zero")
    elif amount > note["RemainingCredit"]:
        errors.append("Amount must be less than or equal to the remaining credit")
    elif amount > invoice["AmountDue"]:
        errors.append("Amount must be less than or equal to the invoice's amount due")
    return errors, {"invoice": invoice, "amount": amount, "date": day}


def allocate(
    org: Organisation, note: dict[str, Any], element: dict[str, Any], plan: dict[str, Any]
) -> dict[str, Any]:
    """Apply one checked allocation; the ``Allocation`` answered."""
    invoice, amount = plan["invoice"], plan["amount"]
    allocation = {"AllocationID": str(uuid.uuid4()), "Amount": amount, "Date": plan["date"]}
    note["_allocations"].append(allocation | {"InvoiceID": invoice["InvoiceID"]})
    note["RemainingCredit"] -= amount
    if note["RemainingCredit"] == 0:
        note["Status"] = "PAID"
    invoice["AmountCredited"] += amount
    invoice.setdefault("_credit_notes", []).append(
        {
            "CreditNoteID": note["CreditNoteID"],
            "CreditNoteNumber": note["CreditNoteNumber"],
            "AppliedAmount": amount,
            "Total": note["Total"],
        }
    )
    invoices.recompute(invoice)
    if invoice["AmountDue"] == 0:
        invoice["Status"] = "PAID"
        invoice["_paid_on"] = plan["date"]
    org.touch(invoice)
    org.touch(note)
    return {
        "AllocationID": allocation["AllocationID"],
        "Amount": amount,
        "Date": day_msdate(plan["date"]),
        "Invoice": {"InvoiceID": invoice["InvoiceID"], "InvoiceNumber": invoice["InvoiceNumber"]},
        "CreditNote": {"CreditNoteID": note["CreditNoteID"]},
    }


def render(org: Organisation, record: dict[str, Any]) -> dict[str, Any]:
    """The ``CreditNote`` object Xero answers."""
    body = public(record)
    body["Date"] = day_msdate(record["_date"])
    body["LineItems"] = invoices.render_lines(org, record["LineItems"])
    body["Allocations"] = [
        {
            "AllocationID": a["AllocationID"],
            "Amount": a["Amount"],
            "Date": day_msdate(a["Date"]),
            "Invoice": {"InvoiceID": a["InvoiceID"]},
        }
        for a in record["_allocations"]
    ]
    body.update(CurrencyRate=Decimal("1.0000"), HasErrors=False, HasAttachments=False)
    return body
