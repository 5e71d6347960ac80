"""Invoices: create in batch, update (status, reference, lines), read, with the totals and
status rules of Xero's "Invoices" page.

An element is ``{"Type": "ACCREC"|"ACCPAY", "Contact": {"ContactID"}|{"Name"},
"LineItems": [{"Description", "Quantity", "UnitAmount", "AccountCode", "TaxType",
"DiscountRate", "LineAmount"?, "ItemCode"?, "Tracking"?}], "LineAmountTypes", "Date",
"DueDate", "Reference", "InvoiceNumber", "Status", "CurrencyCode"}``. A line's
``ItemCode`` fills what the line leaves out (:mod:`.items`); its ``Tracking`` is checked and
stored whole (:mod:`.tracking`). ``UnitAmount`` is rounded to ``unitdp`` (2, or 4 when
asked) as Xero does, before ``LineAmount`` is computed; a ``LineAmount`` sent must equal
``Quantity * UnitAmount`` less the discount. Totals: :mod:`.taxes`. An update (``POST``
with the ``InvoiceID``) that sends ``LineItems`` replaces every line with those sent (a
line sent with its ``LineItemID`` keeps it); the fields it leaves out stay as they were.

Statuses: created ``DRAFT`` (default), ``SUBMITTED`` or ``AUTHORISED``. Allowed changes:
``DRAFT`` and ``SUBMITTED`` to each other, to ``AUTHORISED`` or ``DELETED``;
``AUTHORISED`` to ``VOIDED`` when nothing is paid; ``PAID`` only by payments. A refused
change is a validation error of the element (400 ``ValidationException``). Lines and
amounts of a ``PAID``, ``VOIDED`` or ``DELETED`` invoice, or one with payments, cannot be
edited ("Invoice not of valid status for modification").
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.sandboxes.xero import contacts, items, tracking
from closeloop.sandboxes.xero.org import Organisation, public
from closeloop.sandboxes.xero.settings import CHART
from closeloop.sandboxes.xero.taxes import (
    LINE_AMOUNT_TYPES,
    UK_RATES,
    line_amount,
    line_tax,
    totals,
)
from closeloop.sandboxes.xero.wire import day_msdate, money, parse_day

ACCOUNT_CODES = {code for code, row in CHART.items() if row[1] != "BANK"}
BASE_CURRENCY = "GBP"
NEXT_STATUS = {
    "DRAFT": {"DRAFT", "SUBMITTED", "AUTHORISED", "DELETED"},
    "SUBMITTED": {"SUBMITTED", "DRAFT", "AUTHORISED", "DELETED"},
    "AUTHORISED": {"AUTHORISED", "VOIDED"},
    "PAID": {"PAID"},
    "VOIDED": {"VOIDED"},
    "DELETED": {"DELETED"},
}
LOCKED = "Invoice not of valid status for modification"


def currency_of(
    org: Organisation,
    element: dict[str, Any],
    existing: dict[str, Any] | None,
    errors: list[str],
) -> str | None:
    """The currency a document is written in: ``CurrencyCode``, else the one it has, else
    the base currency; one the organisation has not set up is refused (Xero: "The currency
    X is not set up for this organisation"), and a posted document's cannot change."""
    current = existing["CurrencyCode"] if existing else None
    currency = str(element.get("CurrencyCode") or current or BASE_CURRENCY).upper()
    if currency not in org.currencies:
        errors.append(f"The currency {currency} is not set up for this organisation")
        return None
    if (
        current
        and currency != current
        and existing
        and existing["Status"]
        not in (
            "DRAFT",
            "SUBMITTED",
        )
    ):
        errors.append(LOCKED)
        return None
    return currency


def build_lines(
    org: Organisation,
    element: dict[str, Any],
    unitdp: int,
    status: str,
    errors: list[str],
    sales: bool = True,
) -> list[dict[str, Any]]:
    """The stored line items of ``element`` (the ``ItemCode`` defaults of :mod:`.items`
    applied, ``Tracking`` resolved by :mod:`.tracking`, amounts and tax computed); problems
    are appended to ``errors``. ``sales``: a sales document (else a purchase one)."""
    amount_types = element.get("LineAmountTypes", "Exclusive")
    lines = element.get("LineItems")
    if not isinstance(lines, list) or not lines:
        errors.append("Invoice must contain at least one line item")
        return []
    made = []
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict):
            errors.append(f"Line item {number} must be an object")
            continue
        line = items.line_defaults(org, line, sales, errors)
        try:
            quantity = money(line.get("Quantity", 1), "Quantity")
            given = line.get("LineAmount")
            default_unit = given if given is not None and "UnitAmount" not in line else 0
            unit = money(line.get("UnitAmount", default_unit), "UnitAmount")
            unit = unit.quantize(Decimal(1).scaleb(-unitdp))
            discount = money(line.get("DiscountRate", 0), "DiscountRate")
        except ValueError as exc:
            errors.append(str(exc))
            continue
        amount = line_amount(quantity, unit, discount)
        if given is not None and money(given, "LineAmount") != amount:
            errors.append(
                f"Line item {number}: the LineAmount {given} does not equal Quantity * "
                f"UnitAmount less the discount ({amount})"
            )
        if not str(line.get("Description") or "").strip() and not line.get("ItemCode"):
            errors.append("Description cannot be empty")
        tax_type = line.get("TaxType") or ("NONE" if amount_types == "NoTax" else "OUTPUT2")
        rate = UK_RATES.get(tax_type)
        if rate is None:
            errors.append(f"The TaxType code '{tax_type}' does not exist or cannot be used")
            continue
        code = line.get("AccountCode")
        if code is not None and str(code) not in ACCOUNT_CODES:
            errors.append(f"Account code '{code}' is not a valid code for this document.")
        elif code is None and status in ("SUBMITTED", "AUTHORISED"):
            errors.append("Account code must be specified")
        made.append(
            {
                "LineItemID": str(line.get("LineItemID") or uuid.uuid4()),
                "ItemCode": line.get("ItemCode"),
                "Item": line.get("Item"),
                "Description": str(line.get("Description") or ""),
                "Quantity": quantity,
                "UnitAmount": unit,
                "DiscountRate": discount,
                "AccountCode": None if code is None else str(code),
                "TaxType": tax_type,
                "TaxAmount": line_tax(amount, rate.percent, amount_types),
                "LineAmount": amount,
                "Tracking": tracking.resolve(org, line.get("Tracking"), errors),
            }
        )
    return made


def check(
    org: Organisation, element: dict[str, Any], create_only: bool, unitdp: int = 2
) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one element and what :func:`apply` writes."""
    errors: list[str] = []
    invoice_id = element.get("InvoiceID")
    existing = org.invoices.get(str(invoice_id)) if invoice_id else None
    if invoice_id and (existing is None or create_only):
        missing = existing is None
        return (
            [
                f"Invoice with InvoiceID {invoice_id} could not be found"
                if missing
                else "An invoice with this InvoiceID already exists"
            ],
            {},
        )
    current = existing["Status"] if existing else None
    status = element.get("Status", current or "DRAFT")
    if existing is None and status not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
        errors.append(f"Invoices cannot be created with status {status}")
    elif current is not None and status not in NEXT_STATUS.get(current, set()):
        errors.append(f"{LOCKED}: the status cannot change from {current} to {status}")
    if (
        current == "AUTHORISED"
        and status == "VOIDED"
        and existing
        and (existing["AmountPaid"] or existing["AmountCredited"])
    ):
        errors.append("Invoice cannot be voided as it has a payment or credit note allocated to it")
    plan: dict[str, Any] = {"Status": status}
    kind = element.get("Type", existing["Type"] if existing else None)
    if kind not in ("ACCREC", "ACCPAY"):
        errors.append("Invoice Type must be ACCREC or ACCPAY")
    plan["Type"] = kind
    editing = existing is None or any(
        k in element for k in ("LineItems", "LineAmountTypes", "Contact")
    )
    if (
        existing is not None
        and editing
        and (
            current in ("PAID", "VOIDED", "DELETED")
            or (existing["AmountPaid"] or existing["AmountCredited"])
        )
    ):
        return [*errors, LOCKED], plan
    amount_types = element.get(
        "LineAmountTypes", existing["LineAmountTypes"] if existing else "Exclusive"
    )
    if amount_types not in LINE_AMOUNT_TYPES:
        errors.append("LineAmountTypes must be Exclusive, Inclusive or NoTax")
        amount_types = "Exclusive"
    plan["LineAmountTypes"] = amount_types
    if existing is None or "LineItems" in element or "LineAmountTypes" in element:
        source = (
            element
            if "LineItems" in element or existing is None
            else {"LineItems": [{**line, "LineAmount": None} for line in existing["LineItems"]]}
        )
        plan["LineItems"] = build_lines(
            org,
            {**source, "LineAmountTypes": amount_types},
            unitdp,
            status,
            errors,
            kind != "ACCPAY",
        )
    elif (
        status in ("SUBMITTED", "AUTHORISED")
        and existing is not None
        and any(line["AccountCode"] is None for line in existing["LineItems"])
    ):
        errors.append("Account code must be specified")
    contact = element.get("Contact")
    if existing is None or contact is not None:
        if not isinstance(contact, dict):
            errors.append("A Contact must be specified")
        elif contact.get("ContactID"):
            if str(contact["ContactID"]) not in org.contacts:
                errors.append(f"Contact with ContactID {contact['ContactID']} could not be found")
            plan["_contact_id"] = str(contact["ContactID"])
        elif isinstance(contact.get("Name"), str) and contact["Name"].strip():
            plan["_contact_name"] = contact["Name"].strip()
        else:
            errors.append("A Contact must be specified")
    currency = currency_of(org, element, existing, errors)
    if currency is not None:
        plan["CurrencyCode"] = currency
    for name, key in (("Date", "_date"), ("DueDate", "_due")):
        if element.get(name) is not None:
            try:
                plan[key] = parse_day(element[name])
            except ValueError:
                errors.append(f"{name} is not a valid date")
    for name in ("Reference", "InvoiceNumber"):
        if name in element:
            plan[name] = str(element[name] or "")
    return errors, plan


def apply(org: Organisation, element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Write one checked element; the stored invoice."""
    invoice_id = element.get("InvoiceID")
    record = org.invoices.get(str(invoice_id)) if invoice_id else None
    if record is None:
        record = {
            "InvoiceID": str(uuid.uuid4()),
            "InvoiceNumber": plan.get("InvoiceNumber") or org.next_invoice_number(),
            "Reference": "",
            "CurrencyCode": BASE_CURRENCY,
            "AmountPaid": Decimal("0.00"),
            "AmountCredited": Decimal("0.00"),
            "_date": org.clock().date(),
            "_due": None,
            "_payments": [],
        }
        org.invoices[record["InvoiceID"]] = record
    if "_contact_id" in plan:
        record["Contact"] = contacts.summary(org.contacts[plan["_contact_id"]])
    elif "_contact_name" in plan:
        found = [
            c for c in org.contacts.values() if c["Name"].lower() == plan["_contact_name"].lower()
        ]
        made = found[0] if found else contacts.apply(org, {"Name": plan["_contact_name"]})
        record["Contact"] = contacts.summary(made)
    for key in (
        "Type",
        "Status",
        "LineAmountTypes",
        "LineItems",
        "Reference",
        "InvoiceNumber",
        "CurrencyCode",
        "_date",
        "_due",
    ):
        if key in plan:
            record[key] = plan[key]
    recompute(record)
    org.touch(record)
    return record


def recompute(record: dict[str, Any]) -> None:
    """Set ``SubTotal``, ``TotalTax``, ``Total`` and ``AmountDue`` from the lines and
    payments."""
    pairs = [(line["LineAmount"], line["TaxAmount"]) for line in record["LineItems"]]
    record["SubTotal"], record["TotalTax"], record["Total"] = totals(
        pairs, record["LineAmountTypes"]
    )
    record["AmountDue"] = record["Total"] - record["AmountPaid"] - record["AmountCredited"]


def _day(value: date | None) -> str | None:
    return None if value is None else day_msdate(value)


def render_lines(org: Organisation, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored line items as answered: fields without a value left out, ``Tracking`` with
    the current names."""
    return [
        {k: v for k, v in line.items() if v is not None and not (k == "DiscountRate" and not v)}
        | {"Tracking": tracking.current(org, line["Tracking"])}
        for line in lines
    ]


def render(
    org: Organisation, record: dict[str, Any], payments: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``Invoice`` object Xero answers (``Payments`` as their summaries)."""
    body = public(record)
    body["Date"] = _day(record["_date"])
    if record["_due"] is not None:
        body["DueDate"] = _day(record["_due"])
    if record.get("_paid_on") is not None:
        body["FullyPaidOnDate"] = _day(record["_paid_on"])
    body["LineItems"] = render_lines(org, record["LineItems"])
    body["CurrencyRate"] = Decimal("1.0000")
    body["Payments"] = payments or []
    body["CreditNotes"] = record.get("_credit_notes", [])
    body.update(HasErrors=False, IsDiscounted=False, SentToContact=False, HasAttachments=False)
    return body
