"""How the hub's records look in a Xero organisation, so that they can be found again from
the hub's keys alone (a lost answer is found, not repeated).

- A **project** is an option of the tracking category ``Project`` named by the project key
  (tracking is on every Xero plan and reports revenue by project; closing the project
  archives its option), plus one **item** per task, whose code is :func:`item_code` of the
  task key and whose sales details carry the task's hourly rate, the account and the tax
  type of the engagement's tax treatment (``IsSold`` false for a task whose time is recorded
  for cost only: fixed fee and retainer engagements).
- Its unbilled time lives on **work-in-progress drafts**: draft ACCREC invoices whose
  ``Reference`` is ``<project key> WIP`` (:func:`wip_reference`). The first, the project's
  *anchor*, holds one description line (:meth:`Anchor.line`) whose marker carries the
  billing method, the tax type and the account (Xero may not keep an account code on a line
  of no amount), the draft itself the customer and the currency; each batch of time adds a new
  draft of its lines (append only, so workers on several machines never overwrite each
  other's lines). Invoicing moves the lines up to a day onto the invoice and takes them off
  their drafts; a draft left empty is deleted.
- Every line the hub writes carries its key in its description as ``[cl:<key>]``
  (:func:`marked`): a time entry's key, a charge's key; a time line's description starts with
  its ISO date.
- An **invoice** carries the hub's invoice reference in ``Reference``; a credit note its
  credit reference.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.domain.taxrules import TaxTreatment

WIP = " WIP"
ANCHOR = "cl-anchor"
_MARK = re.compile(r"\[cl:([^\]]+)\]")
_ANCHOR = re.compile(r"\[cl-anchor ([^\]]*)\]")

DEFAULT_TAX_TYPES: dict[str, str] = {
    TaxTreatment.DOMESTIC.value: "OUTPUT2",
    TaxTreatment.REVERSE_CHARGE.value: "ECZROUTPUTSERVICES",
    TaxTreatment.OUTSIDE_SCOPE.value: "ZERORATEDOUTPUT",
    TaxTreatment.NO_VAT.value: "NONE",
}
"""Xero UK tax types by tax treatment: 20% VAT on income for a domestic sale; zero-rated EC
services for a supply the customer reverse-charges; zero-rated income for services supplied
outside the UK's VAT area (HMRC VAT Notice 700/12: their value still goes in box 6 of the VAT
return, which Xero's ``NONE`` would leave out); no VAT where the entity charges none."""


def wip_reference(project_key: str) -> str:
    """The ``Reference`` of a project's work-in-progress drafts."""
    return project_key + WIP


def project_of_wip(reference: str | None) -> str | None:
    """The project key of a work-in-progress draft's reference, else ``None``."""
    text = reference or ""
    return text[: -len(WIP)] if text.endswith(WIP) and len(text) > len(WIP) else None


def item_code(task_key: str) -> str:
    """The code of a task's item: ``CL`` and 24 hex digits of the task key's SHA-256 (Xero's
    item codes are at most 30 characters; a task key is longer)."""
    return "CL" + hashlib.sha256(task_key.encode()).hexdigest()[:24].upper()


def marked(text: str, key: str) -> str:
    """A line description carrying ``key``."""
    return f"{text} [cl:{key}]"


def mark_of(description: str | None) -> str | None:
    """The key a line's description carries, else ``None``."""
    found = _MARK.search(description or "")
    return found.group(1) if found else None


def time_description(day: date, employee: str, task: str, key: str) -> str:
    """A time line's description: its day first, then who and which task, then its key."""
    return marked(f"{day.isoformat()} {employee}: {task}", key)


def day_of(description: str | None) -> date | None:
    """The day a time line's description starts with."""
    try:
        return date.fromisoformat((description or "")[:10])
    except ValueError:
        return None


@dataclass(frozen=True)
class Anchor:
    """What the anchor draft of a project says: its project key, customer (``ContactID``),
    currency, tax type, sales account and billing method; ``invoice_id`` of the draft."""

    project_key: str
    contact_id: str
    currency: str
    tax_type: str
    account_code: str
    billing_method: str
    invoice_id: str = ""

    def line(self) -> dict[str, Any]:
        """The anchor's one line (no amount)."""
        return {
            "Description": (
                f"Work in progress of {self.project_key}, kept by closeloop: do not approve "
                f"[{ANCHOR} {self.billing_method} {self.tax_type} {self.account_code}]"
            ),
            "Quantity": Decimal(0),
            "UnitAmount": Decimal(0),
            "AccountCode": self.account_code,
            "TaxType": self.tax_type,
        }


def anchor_of(record: dict[str, Any]) -> Anchor | None:
    """The :class:`Anchor` a draft is, else ``None``."""
    key = project_of_wip(record.get("Reference"))
    if key is None or record.get("Status") != "DRAFT":
        return None
    for line in record.get("LineItems") or []:
        found = _ANCHOR.search(str(line.get("Description") or ""))
        if found:  # the marker carries what Xero may not keep on a line of no amount
            method, tax_type, account = [*found.group(1).split(), "", ""][:3]
            return Anchor(
                project_key=key,
                contact_id=str((record.get("Contact") or {}).get("ContactID") or ""),
                currency=str(record.get("CurrencyCode") or ""),
                tax_type=tax_type or str(line.get("TaxType") or ""),
                account_code=account or str(line.get("AccountCode") or ""),
                billing_method=method,
                invoice_id=str(record.get("InvoiceID") or ""),
            )
    return None


def is_anchor_line(line: dict[str, Any]) -> bool:
    """Whether ``line`` is an anchor's line."""
    return bool(_ANCHOR.search(str(line.get("Description") or "")))
