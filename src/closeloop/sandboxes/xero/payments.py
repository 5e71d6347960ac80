"""Payments against invoices (``PUT``/``POST /Payments``), following Xero's "Payments" page.

An element is ``{"Invoice": {"InvoiceID"}|{"InvoiceNumber"}, "Account": {"AccountID"}|
{"Code"}, "Date", "Amount", "Reference"}``. The invoice must be ``AUTHORISED``, the amount
positive and at most its ``AmountDue``, the account a bank account of the organisation (the
sandbox has one: code ``090``, "Business Bank Account"). A payment raises the invoice's
``AmountPaid``, lowers its ``AmountDue``, and makes it ``PAID`` (with ``FullyPaidOnDate``)
when nothing is left due. Refusals are validation errors of the element.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from closeloop.sandboxes.xero import invoices
from closeloop.sandboxes.xero.org import Organisation, public
from closeloop.sandboxes.xero.settings import account_id
from closeloop.sandboxes.xero.wire import day_msdate, money, parse_day

BANK_CODE = "090"
BANK_NAME = "Business Bank Account"


def bank_account_id(org: Organisation) -> str:
    """The id of the organisation's bank account (stable for the tenant)."""
    return account_id(org, BANK_CODE)


def _invoice(org: Organisation, reference: Any) -> dict[str, Any] | None:
    if not isinstance(reference, dict):
        return None
    if reference.get("InvoiceID"):
        return org.invoices.get(str(reference["InvoiceID"]))
    number = reference.get("InvoiceNumber")
    found = [i for i in org.invoices.values() if number and i["InvoiceNumber"] == number]
    return found[0] if found else None


def check(org: Organisation, element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one payment and what :func:`apply` writes."""
    errors: list[str] = []
    invoice = _invoice(org, element.get("Invoice"))
    if invoice is None:
        return ["Invoice could not be found"], {}
    if invoice["Status"] != "AUTHORISED":
        errors.append("Payments can only be made against Authorised documents")
    account = element.get("Account") or {}
    if not (
        isinstance(account, dict)
        and (account.get("Code") == BANK_CODE or account.get("AccountID") == bank_account_id(org))
    ):
        errors.append("Account could not be found or is not a bank account")
    try:
        amount = money(element.get("Amount"), "Amount")
    except ValueError as exc:
        return [*errors, str(exc)], {}
    if amount <= 0:
        errors.append("Payment amount must be greater than zero")
    elif amount > invoice["AmountDue"]:
        errors.append("Payment amount exceeds the amount outstanding on this document")
    try:
        day = parse_day(element["Date"]) if element.get("Date") else org.clock().date()
    except ValueError:
        errors.append("Date is not a valid date")
        day = org.clock().date()
    return errors, {"invoice": invoice, "amount": amount, "date": day}


def apply(org: Organisation, element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Record one checked payment and update its invoice; the stored payment."""
    invoice = plan["invoice"]
    amount: Decimal = plan["amount"].quantize(Decimal("0.01"))
    record = {
        "PaymentID": str(uuid.uuid4()),
        "Date": day_msdate(plan["date"]),
        "Amount": amount,
        "Reference": str(element.get("Reference") or ""),
        "CurrencyRate": Decimal("1.0000"),
        "PaymentType": "ACCRECPAYMENT" if invoice["Type"] == "ACCREC" else "ACCPAYPAYMENT",
        "Status": "AUTHORISED",
        "IsReconciled": False,
        "HasAccount": True,
        "HasValidationErrors": False,
        "Account": {"AccountID": bank_account_id(org), "Code": BANK_CODE},
        "_invoice_id": invoice["InvoiceID"],
    }
    org.payments[record["PaymentID"]] = record
    invoice["AmountPaid"] += amount
    invoice["_payments"].append(record["PaymentID"])
    invoices.recompute(invoice)
    if invoice["AmountDue"] == 0:
        invoice["Status"] = "PAID"
        invoice["_paid_on"] = plan["date"]
    org.touch(invoice)
    org.touch(record)
    return record


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The payment as nested in its invoice."""
    keys = ("PaymentID", "Date", "Amount", "Reference", "CurrencyRate", "HasAccount")
    return {k: record[k] for k in keys} | {"HasValidationErrors": False}


def render(org: Organisation, record: dict[str, Any]) -> dict[str, Any]:
    """The ``Payment`` object Xero answers, with its invoice's summary."""
    invoice = org.invoices[record["_invoice_id"]]
    return public(record) | {
        "Invoice": {
            "InvoiceID": invoice["InvoiceID"],
            "InvoiceNumber": invoice["InvoiceNumber"],
            "Type": invoice["Type"],
            "Contact": invoice["Contact"],
            "CurrencyCode": invoice["CurrencyCode"],
        }
    }


def render_invoice(org: Organisation, invoice: dict[str, Any]) -> dict[str, Any]:
    """An invoice as answered, with its payments' summaries."""
    return invoices.render(org, invoice, [summary(org.payments[p]) for p in invoice["_payments"]])
