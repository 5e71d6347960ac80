"""Invoices in Xero, made from the work-in-progress drafts (:mod:`.marks`).

**Invoicing** a batch of projects reads their drafts and documents in one call per 12
projects (a document's ``Reference`` starts with its project key), then creates every new
invoice in one ``PUT`` (``summarizeErrors=false``: one refused invoice fails alone) and
takes the billed lines off their drafts in one ``POST`` (a draft left without lines is
deleted). An invoice is a draft (``DRAFT``) with the hub's reference; it holds the time lines
up to the day asked (copied with their item, rate, account, tax type and tracking), then the
charges not billed yet, then, when the tax treatment needs a mention, a description line
with it (Xero invoices have no free text field the API writes: a line is the usual place).
A time line already on a document of its project, or a charge key billed more often than
credited, is never billed again, so an invoice whose drafts were not cleaned after a lost
answer bills nothing twice. An invoice that already has the reference is taken as made.

**Posting** approves (``AUTHORISED``): Xero numbers invoices when they are made.

Credit notes are :mod:`.credits`; this module also holds what both read: the documents of
projects by reference and their payloads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import structlog

from closeloop.connectors.xero.client import (
    XeroClient,
    parse_msdate,
    quoted,
    validation_messages,
)
from closeloop.connectors.xero.marks import (
    Anchor,
    day_of,
    is_anchor_line,
    mark_of,
    marked,
    project_of_wip,
)
from closeloop.connectors.xero.projects import ElementRefused, Projects
from closeloop.domain.operations import ChargeLine, InvoiceProject

log = structlog.get_logger(__name__)
LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")
_LINE_FIELDS = (
    "Description",
    "Quantity",
    "UnitAmount",
    "DiscountRate",
    "ItemCode",
    "AccountCode",
    "TaxType",
)

STATES = {"DRAFT": "draft", "SUBMITTED": "draft", "AUTHORISED": "posted", "PAID": "paid"}
"""Xero's statuses as the flows name an ERP invoice's state."""


def document_payload(record: dict[str, Any], credited: str | None = None) -> dict[str, Any]:
    """An invoice or credit note as a command's result: ``reference``, ``number``,
    ``state`` (``draft``, ``posted``, ``paid``, ``voided``), ``currency``, dates, amounts
    (text; a credit note's negative, as the flows count them), ``amount_paid`` (what is
    settled: an invoice's payments and allocated credit, a credit note's allocated or
    refunded part; nothing for a draft or voided one),
    ``is_credit_note`` and ``credited`` (the reference of the invoice a credit note
    credits)."""
    credit = str(record.get("Type", "")).endswith("CREDIT")
    sign = Decimal(-1) if credit else Decimal(1)
    total = Decimal(str(record.get("Total") or 0))
    if record.get("Status") not in ("AUTHORISED", "PAID"):
        paid = Decimal(0)  # a draft or a voided document settles nothing
    elif credit:
        paid = total - Decimal(str(record.get("RemainingCredit") or 0))
    else:  # payments and allocated credit, as the shipped mapping counts them
        paid = Decimal(str(record.get("AmountPaid") or 0)) + Decimal(
            str(record.get("AmountCredited") or 0)
        )
    issued = parse_msdate(record.get("Date"))
    due_date = parse_msdate(record.get("DueDate"))
    return {
        "id": record.get("InvoiceID") or record.get("CreditNoteID"),
        "reference": record.get("Reference"),
        "number": record.get("InvoiceNumber") or record.get("CreditNoteNumber"),
        "state": STATES.get(str(record.get("Status")), "voided"),
        "currency": record.get("CurrencyCode"),
        "invoice_date": issued.date().isoformat() if issued else None,
        "due_date": due_date.date().isoformat() if due_date else None,
        "untaxed_amount": str(sign * Decimal(str(record.get("SubTotal") or 0))),
        "tax_amount": str(sign * Decimal(str(record.get("TotalTax") or 0))),
        "total_amount": str(sign * total),
        "amount_paid": str(sign * paid),
        "is_credit_note": credit,
        "credited": credited,
    }


def live(kind: str, clause: str) -> dict[str, str]:
    """List parameters for the live documents of ``kind`` matching ``clause``: invoices
    filter by ``Statuses``; credit notes take no ``Statuses`` (Xero's OpenAPI), so by
    ``where``."""
    if kind == "CreditNotes":
        dead = " AND ".join(f'Status!="{s}"' for s in ("VOIDED", "DELETED"))
        return {"where": f"({clause}) AND {dead}"}
    return {"where": clause, "Statuses": ",".join(LIVE)}


def made_payload(record: dict[str, Any]) -> dict[str, Any]:
    """The result of ``invoice_project`` for an invoice Xero holds: its
    :func:`document_payload` with ``charges``, the charge keys its lines bill."""
    charges = [
        str(mark_of(li.get("Description")))
        for li in record.get("LineItems") or []
        if mark_of(li.get("Description")) and not li.get("ItemCode")
    ]
    return document_payload(record) | {"charges": charges}


def copy_line(line: dict[str, Any]) -> dict[str, Any]:
    """A line to copy onto another document (its id and amounts left to Xero)."""
    copied = {k: line[k] for k in _LINE_FIELDS if line.get(k) is not None}
    tracking = [
        {"Name": t.get("Name"), "Option": t.get("Option")} for t in line.get("Tracking") or []
    ]
    return copied | ({"Tracking": tracking} if tracking else {})


class Invoicing:
    """The organisation's invoices and credit notes of the hub's projects."""

    def __init__(self, client: XeroClient, projects: Projects) -> None:
        self.client = client
        self.projects = projects

    # --- reads -------------------------------------------------------------------------------
    def documents(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The live drafts, invoices and credit notes of the projects ``keys`` (with their
        lines): one call per 12 projects and kind."""
        clauses = [
            f"Reference.StartsWith({quoted(k + sep)})" for k in sorted(set(keys)) for sep in " /"
        ]
        rows: list[dict[str, Any]] = []
        for kind in ("Invoices", "CreditNotes"):  # 12 projects (two clauses each) a call
            rows += self.client.where_in(kind, clauses, params=partial(live, kind), per_call=24)
        return rows

    def by_reference(self, kind: str, references: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The live documents of ``kind`` (``Invoices``, ``CreditNotes``) whose reference is
        one of ``references``, by reference (one call per 25)."""
        unique = sorted(set(references))
        clauses = [f"Reference=={quoted(r)}" for r in unique]
        rows = self.client.where_in(kind, clauses, params=partial(live, kind))
        return {str(row["Reference"]): row for row in rows}

    def uncleaned(self, projects: Sequence[str]) -> set[str]:
        """The projects of ``projects`` whose drafts still hold time an invoice bills (an
        invoice made whose clean-up never ran: its answer was lost). ``find`` does not take
        their invoices for done, so the engine runs them again, which adopts the invoice
        and cleans up."""
        if not projects:
            return set()
        documents = self.documents(projects)
        return {p for p in set(projects) if _stale(p, documents, {})}

    # --- invoicing ---------------------------------------------------------------------------
    def invoice(self, requests: Sequence[InvoiceProject]) -> list[dict[str, Any] | Exception]:
        """Invoice each request (see the module docstring); one result per request: the
        invoice's :func:`document_payload` with ``charges`` (the charge keys it bills),
        ``{"invoice": None}`` when there was nothing to bill, or the refusal."""
        keys = [r.project_key for r in requests]
        anchors = self.projects.anchors(keys)
        documents = self.documents(keys)
        results: list[dict[str, Any] | Exception] = []
        made: list[tuple[int, dict[str, Any], list[str]]] = []
        taken: dict[str, set[str]] = {}  # draft InvoiceID -> line keys billed now or before
        stale: set[str] = set()  # keys on a draft that an invoice bills already
        for position, request in enumerate(requests):
            anchor = anchors.get(request.project_key)
            done = [d for d in documents if d.get("Reference") == request.reference]
            stale |= _stale(request.project_key, documents, taken)
            if done:
                results.append(made_payload(done[0]))
            elif anchor is None:
                results.append(
                    LookupError(f"project {request.project_key!r} is not set up in Xero")
                )
            else:
                element, charges = self._element(request, anchor, documents, taken)
                if element is None:
                    results.append({"invoice": None})
                else:
                    results.append({})
                    made.append((position, element, charges))
        if made:
            self._create(made, results)
        billed_now = {
            str(mark_of(li.get("Description")))
            for p, element, _ in made
            if _ok(results[p])
            for li in element["LineItems"]
            if li.get("ItemCode")
        }
        self._clean(documents, taken, billed_now | stale)
        return results

    def _element(
        self,
        request: InvoiceProject,
        anchor: Anchor,
        documents: list[dict[str, Any]],
        taken: dict[str, set[str]],
    ) -> tuple[dict[str, Any] | None, list[str]]:
        project = request.project_key
        billed = _billed(project, documents)
        lines: list[dict[str, Any]] = []
        moved: dict[str, set[str]] = {}
        picked: set[str] = set()
        if request.include_time:
            for doc in documents:
                if project_of_wip(doc.get("Reference")) != project or doc.get("Type") != "ACCREC":
                    continue
                for li in doc.get("LineItems") or []:
                    key, day = mark_of(li.get("Description")), day_of(li.get("Description"))
                    if is_anchor_line(li) or key is None or day is None or day > request.up_to:
                        continue
                    moved.setdefault(str(doc["InvoiceID"]), set()).add(key)
                    if billed[key] <= 0 and key not in picked:  # once, and not billed yet
                        picked.add(key)
                        lines.append(copy_line(li))
        charges = [c for c in request.charges if billed[c.key] <= 0]
        lines += [self._charge(c, anchor, project) for c in charges]
        if not lines:
            return None, []
        for draft, keys in moved.items():
            taken.setdefault(draft, set()).update(keys)
        if request.mention:
            mention = request.mention
            if request.customer_tax_id:
                mention += f" Customer VAT number: {request.customer_tax_id}."
            lines.append(
                {
                    "Description": mention,
                    "AccountCode": anchor.account_code,
                    "TaxType": anchor.tax_type,
                }
            )
        issued = request.invoice_date or datetime.now(UTC).date()
        element = {
            "Type": "ACCREC",
            "Status": "DRAFT",
            "Contact": {"ContactID": anchor.contact_id},
            "Reference": request.reference,
            "Date": issued.isoformat(),
            "DueDate": (issued + timedelta(days=request.payment_terms_days or 0)).isoformat(),
            "CurrencyCode": (request.currency or anchor.currency).upper(),
            "LineAmountTypes": "Exclusive",
            "LineItems": lines,
        }
        return element, [c.key for c in charges]

    def _charge(self, charge: ChargeLine, anchor: Anchor, project: str) -> dict[str, Any]:
        description = charge.description
        if charge.receipt:
            description += f" (receipt: {charge.receipt})"
        account = (
            self.projects.accounts.expenses if charge.kind == "expense" else anchor.account_code
        )
        return {
            "Description": marked(description, charge.key),
            "Quantity": charge.quantity,
            "UnitAmount": charge.unit_price,
            "AccountCode": account,
            "TaxType": anchor.tax_type,
            "Tracking": self.projects.tracking(project),
        }

    def _create(
        self,
        made: list[tuple[int, dict[str, Any], list[str]]],
        results: list[dict[str, Any] | Exception],
    ) -> None:
        answer = self.client.request(
            "PUT",
            "Invoices",
            params={"summarizeErrors": "false"},
            body={"Invoices": [element for _, element, _ in made]},
        )
        for (position, _, charges), record in zip(made, answer.get("Invoices") or [], strict=False):
            messages = validation_messages(record)
            results[position] = (
                ElementRefused(messages)
                if messages
                else document_payload(record) | {"charges": charges}
            )

    def _clean(
        self, documents: list[dict[str, Any]], taken: dict[str, set[str]], billed: set[str]
    ) -> None:
        """Take the lines of keys ``billed`` (on an invoice now or before) off the drafts
        ``taken`` names; a draft left without lines is deleted."""
        updates = []
        for doc in documents:
            keys = taken.get(str(doc.get("InvoiceID")), set()) & billed
            if not keys:
                continue
            left = [
                copy_line(li) | {"LineItemID": li["LineItemID"]}
                for li in doc["LineItems"]
                if mark_of(li.get("Description")) not in keys
            ]
            if left:
                updates.append({"InvoiceID": doc["InvoiceID"], "LineItems": left})
            else:
                updates.append({"InvoiceID": doc["InvoiceID"], "Status": "DELETED"})
        if updates:
            answer = self.client.request(
                "POST", "Invoices", params={"summarizeErrors": "false"}, body={"Invoices": updates}
            )
            for element in answer.get("Invoices") or []:
                messages = validation_messages(element)
                if messages:  # the lines stay; they are never billed twice (see _element)
                    log.warning(
                        "xero_wip_not_cleaned", invoice=element.get("InvoiceID"), errors=messages
                    )

    # --- posting -----------------------------------------------------------------------------
    def post(self, references: Sequence[str]) -> list[dict[str, Any] | Exception]:
        """Approve each invoice ``references``; one result per reference: its
        :func:`document_payload`, or ``LookupError`` for an unknown reference."""
        found = self.by_reference("Invoices", references)
        drafts = [
            found[r]
            for r in dict.fromkeys(references)
            if r in found and found[r]["Status"] in ("DRAFT", "SUBMITTED")
        ]
        approved: dict[str, dict[str, Any] | Exception] = {}
        if drafts:
            answer = self.client.request(
                "POST",
                "Invoices",
                params={"summarizeErrors": "false"},
                body={
                    "Invoices": [
                        {"InvoiceID": d["InvoiceID"], "Status": "AUTHORISED"} for d in drafts
                    ]
                },
            )
            for draft, record in zip(drafts, answer.get("Invoices") or [], strict=False):
                messages = validation_messages(record)
                approved[str(draft["Reference"])] = ElementRefused(messages) if messages else record
        results: list[dict[str, Any] | Exception] = []
        for reference in references:
            record = approved.get(reference) or found.get(reference)
            if record is None:
                results.append(LookupError(f"no Xero invoice referenced {reference!r}"))
            elif isinstance(record, Exception):
                results.append(record)
            else:
                results.append(document_payload(record))
        return results


def _billed(project: str, documents: list[dict[str, Any]]) -> Counter[str]:
    """How often each key is billed on the project's invoices, net of its credit notes."""
    billed: Counter[str] = Counter()
    for doc in documents:
        if (doc.get("Reference") or "").startswith(project + "/"):
            sign = -1 if str(doc.get("Type")).endswith("CREDIT") else 1
            for li in doc.get("LineItems") or []:
                if mark_of(li.get("Description")):
                    billed[str(mark_of(li.get("Description")))] += sign
    return billed


def _stale(project: str, documents: list[dict[str, Any]], taken: dict[str, set[str]]) -> set[str]:
    """The keys of time lines still on the project's drafts though an invoice bills them (a
    clean-up whose call failed); each draft's noted in ``taken`` to be cleaned now."""
    billed = _billed(project, documents)
    stale: set[str] = set()
    for doc in documents:
        if project_of_wip(doc.get("Reference")) != project or doc.get("Type") != "ACCREC":
            continue
        for li in doc.get("LineItems") or []:
            key = mark_of(li.get("Description"))
            if key and li.get("ItemCode") and billed[key] > 0:
                stale.add(key)
                taken.setdefault(str(doc["InvoiceID"]), set()).add(key)
    return stale


def _ok(result: dict[str, Any] | Exception) -> bool:
    return not isinstance(result, Exception)
