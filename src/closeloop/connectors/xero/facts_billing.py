"""A Xero organisation's billing documents as reconciliation facts: the ``time``,
``invoices`` and ``charges`` domains of :mod:`.facts` (which reads the others and says how
lists are read), in the shapes the Tryton connector gives them.

``time``
    Every line carrying an entry key (``[cl:<key>]``) and an ``ItemCode`` (a time line: a
    charge line has none) on a work-in-progress draft (``<project key> WIP``) or an invoice,
    neither deleted nor voided (a voided invoice's time is held nowhere live: the
    comparison finds it missing). ``key``: the marker's key; ``external_id``: the
    ``LineItemID``. ``project_key``: the line's option of the projects' category, else its
    item's project, else its document's (left out when none is a project key); ``task``: the
    task of its item's key, a rate-change task's mapped back to its role (left out for an
    item not the hub's); ``date``: the ISO date the description starts with (left out when
    it does not); ``hours``: ``Quantity``, two places (half up); ``invoice_reference``: its
    document's reference when that is approved (``AUTHORISED``, ``PAID``: billed; a
    work-in-progress draft approved by hand too, which the comparison then shows billed),
    else ``None`` (on a draft, or an invoice not approved yet: not billed; Tryton counts a
    draft invoice's lines as invoiced). A key on several documents (a draft not cleaned
    after a lost answer) is the approved document's line, else a draft invoice's, else the
    latest changed draft's. ``modified_at``: its document's ``UpdatedDateUTC``.
``invoices``
    The ``ACCREC`` invoices and ``ACCRECCREDIT`` credit notes whose ``Reference`` has the
    hub's form ``<project key>/...``. ``key``: the reference; ``external_id``: the
    ``InvoiceID`` or ``CreditNoteID``; ``object``: ``Invoices`` or ``CreditNotes`` (the
    connector's change feed). ``project_key``, ``currency`` (``CurrencyCode``), ``state``,
    ``number`` (``InvoiceNumber``, ``CreditNoteNumber``), ``total`` (``Total``),
    ``paid`` (an invoice's ``AmountPaid``; a credit note's ``Total`` less its
    ``RemainingCredit``: refunded or allocated), ``outstanding`` (an invoice's
    ``AmountDue``, a credit note's ``RemainingCredit``), ``invoice_date`` (``Date``),
    ``due_date`` (``DueDate``; ``None`` for a credit note), ``credited_reference``: for a
    credit note, the invoice reference its own one starts with (``<invoice
    reference>/credit-<n>``), else that of the invoice of its first allocation; ``None`` for
    an invoice. (``paid`` is Xero's only: Tryton gives none, and no comparison reads it.)
    Two documents of one reference: a live one before a voided one, then the one changed
    last. ``modified_at``: ``UpdatedDateUTC``.
``charges``
    One fact per line carrying a charge key (``[cl:<kind>:<project key>:...]``) and no
    ``ItemCode``, on an invoice (not a work-in-progress draft) or a credit note, of every
    status but deleted (the comparison decides what a draft or a voided one counts for).
    ``key``: ``<charge key>@<LineItemID>``; ``external_id``: the ``LineItemID``.
    ``charge``: the charge key, a milestone's without its attempt suffix; ``kind``: its
    first part; ``project_key``: its second; ``amount``: the line's untaxed amount
    (``LineAmount``, less its ``TaxAmount`` on a document whose amounts include tax),
    negative on a credit note; ``invoice_reference`` and ``state``: its document's. So the
    lines of one charge add up to what is billed net of credit notes. ``modified_at``: its
    document's ``UpdatedDateUTC``.

Calls per domain: ``time`` one, and one per 1,000 invoices; ``invoices`` and
``charges`` one per 1,000 invoices and one per 1,000 credit notes (and one more on a list
whose count is a multiple of 1,000).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from closeloop.connectors.xero.client import XeroClient, parse_msdate
from closeloop.connectors.xero.marks import (
    day_of,
    is_anchor_line,
    item_code,
    mark_of,
    project_of_wip,
)
from closeloop.domain.keys import role_of, split_engagement_code
from closeloop.ports.reconcile import CHARGES, INVOICES, TIME, Fact

PAGE = 1000
"""Facts per page yielded (and records per call read: Xero's largest ``pageSize``)."""

INVOICE_OBJECT = "Invoices"

CREDIT_NOTE_OBJECT = "CreditNotes"
"""The change feed's objects (the connector's ``OBJECTS``)."""

STATES = {
    "DRAFT": "draft",
    "SUBMITTED": "draft",
    "AUTHORISED": "posted",
    "PAID": "paid",
    "VOIDED": "cancelled",
}
"""Xero's statuses of the documents read, as the canonical ``state``."""

_APPROVED = ("AUTHORISED", "PAID")

_CENT = Decimal("0.01")


def time_facts(client: XeroClient, tracking_category: str, system: str) -> Iterator[list[Fact]]:
    """The ``time`` facts (module docstring)."""
    items = {str(i["Code"]): i for i in read_items(client)}
    chosen: dict[str, tuple[tuple[int, datetime], Fact]] = {}
    for invoice in _invoices(client):
        status = invoice.get("Status")
        if status not in ("DRAFT", "SUBMITTED", *_APPROVED):
            continue
        wip = project_of_wip(invoice.get("Reference")) is not None
        rank = (2 if status in _APPROVED else 0 if wip else 1, updated_at(invoice))
        for line in invoice.get("LineItems") or []:
            fact = _line(line, invoice, items, tracking_category, system)
            if fact is not None and (fact.key not in chosen or rank > chosen[fact.key][0]):
                chosen[fact.key] = (rank, fact)
    yield from paged(fact for _, (_, fact) in sorted(chosen.items()))


def invoice_facts(client: XeroClient, system: str) -> Iterator[list[Fact]]:
    """The ``invoices`` facts (module docstring)."""
    invoices = _invoices(client)
    references = {str(i["InvoiceID"]): i.get("Reference") for i in invoices}
    chosen: dict[str, tuple[tuple[bool, datetime], Fact]] = {}
    documents = [(i, False) for i in invoices] + [(n, True) for n in _credit_notes(client)]
    for record, credit in documents:
        reference = str(record.get("Reference") or "")
        if record.get("Status") not in STATES or _project_of(reference) is None:
            continue
        fact = _document(record, credit, references, system)
        rank = (fact.fields["state"] != "cancelled", updated_at(record))
        if reference not in chosen or rank > chosen[reference][0]:
            chosen[reference] = (rank, fact)
    yield from paged(fact for _, (_, fact) in sorted(chosen.items()))


def charge_facts(client: XeroClient, system: str) -> Iterator[list[Fact]]:
    """The ``charges`` facts (module docstring)."""
    facts = []
    documents = [(i, False) for i in _invoices(client)]
    documents += [(n, True) for n in _credit_notes(client)]
    for record, credit in documents:
        if record.get("Status") not in STATES or project_of_wip(record.get("Reference")):
            continue
        for line in record.get("LineItems") or []:
            fact = _charge(line, record, credit, system)
            if fact is not None:
                facts.append(fact)
    yield from paged(sorted(facts, key=lambda f: f.key))


def hours_of(quantity: Any) -> Decimal:
    """A line's ``Quantity`` in hours, two places (half up); ``None`` is zero."""
    return decimal_of(quantity).quantize(_CENT, rounding=ROUND_HALF_UP)


def _invoices(client: XeroClient) -> list[dict[str, Any]]:
    """The organisation's customer invoices (drafts included) but deleted ones, with lines."""
    return client.list_all(
        "Invoices",
        "Invoices",
        params={
            "where": 'Type=="ACCREC"',
            "Statuses": ",".join(STATES),
            "order": "InvoiceNumber ASC",
        },
    )


def _credit_notes(client: XeroClient) -> list[dict[str, Any]]:
    """The organisation's customer credit notes but deleted ones, with lines."""
    return client.list_all(
        "CreditNotes",
        "CreditNotes",
        params={
            "where": 'Type=="ACCRECCREDIT" AND Status!="DELETED"',
            "order": "CreditNoteNumber ASC",
        },
    )


def read_items(client: XeroClient) -> list[dict[str, Any]]:
    """Every item (one call: Xero does not page items)."""
    return list(client.request("GET", "Items").get("Items") or [])


def _line(
    line: dict[str, Any],
    invoice: dict[str, Any],
    items: dict[str, dict[str, Any]],
    tracking_category: str,
    system: str,
) -> Fact | None:
    """A time line's fact; ``None`` for any other line (module docstring)."""
    description = line.get("Description")
    key = mark_of(description)
    if key is None or not line.get("ItemCode") or is_anchor_line(line):
        return None
    task_key = str((items.get(str(line["ItemCode"])) or {}).get("Description") or "")
    item_project, separator, task = task_key.partition(":")
    if not separator or item_code(task_key) != line["ItemCode"]:
        item_project, task = "", ""
    reference = invoice.get("Reference")
    tracked = next(
        (
            str(t.get("Option"))
            for t in line.get("Tracking") or []
            if t.get("Name") == tracking_category and t.get("Option")
        ),
        None,
    )
    project_key = next(
        (
            k
            for k in (tracked, item_project, project_of_wip(reference), _project_of(reference))
            if k and split_engagement_code(k) is not None
        ),
        None,
    )
    fields: dict[str, Any] = {}
    if project_key is not None:
        fields["project_key"] = project_key
    if task:
        fields["task"] = role_of(task)[0]
    day = day_of(description)
    if day is not None:
        fields["date"] = day.isoformat()
    fields["hours"] = hours_of(line.get("Quantity"))
    approved = invoice.get("Status") in _APPROVED
    fields["invoice_reference"] = reference if approved else None
    return Fact(
        domain=TIME,
        key=key,
        system=system,
        external_id=str(line.get("LineItemID") or ""),
        fields=fields,
        modified_at=parse_msdate(invoice.get("UpdatedDateUTC")),
    )


def _document(
    record: dict[str, Any], credit: bool, references: dict[str, Any], system: str
) -> Fact:
    reference = str(record["Reference"])
    sign = Decimal(-1) if credit else Decimal(1)
    total = money(record.get("Total"))
    if credit:
        outstanding = money(record.get("RemainingCredit"))
        paid = total - outstanding
        credited = _credited(record, references)
    else:
        outstanding = money(record.get("AmountDue"))
        paid = money(record.get("AmountPaid"))
        credited = None
    issued, due = parse_msdate(record.get("Date")), parse_msdate(record.get("DueDate"))
    return Fact(
        domain=INVOICES,
        key=reference,
        system=system,
        external_id=str(record["CreditNoteID" if credit else "InvoiceID"]),
        fields={
            "project_key": _project_of(reference),
            "currency": record.get("CurrencyCode"),
            "state": STATES[str(record["Status"])],
            "number": record.get("CreditNoteNumber" if credit else "InvoiceNumber"),
            "total": sign * total,
            "paid": sign * paid,
            "outstanding": sign * outstanding,
            "invoice_date": issued.date().isoformat() if issued else None,
            "due_date": due.date().isoformat() if due and not credit else None,
            "credited_reference": credited,
        },
        modified_at=parse_msdate(record.get("UpdatedDateUTC")),
        object=CREDIT_NOTE_OBJECT if credit else INVOICE_OBJECT,
    )


def _credited(note: dict[str, Any], references: dict[str, Any]) -> str | None:
    """The reference of the invoice a credit note credits: its own reference's stem
    (``<invoice reference>/credit-<n>``), else its first allocation's invoice's."""
    reference = str(note.get("Reference") or "")
    if "/credit-" in reference:
        return reference.rsplit("/credit-", 1)[0]
    for allocation in note.get("Allocations") or []:
        invoice = allocation.get("Invoice") or {}
        found = invoice.get("Reference") or references.get(str(invoice.get("InvoiceID")))
        if found:
            return str(found)
    return None


def _charge(line: dict[str, Any], record: dict[str, Any], credit: bool, system: str) -> Fact | None:
    """A charge line's fact; ``None`` for any other line (module docstring)."""
    key = mark_of(line.get("Description"))
    if key is None or line.get("ItemCode") or ":" not in key:
        return None
    parts = key.split(":")
    charge = ":".join(parts[:3]) if parts[0] == "milestone" else key
    amount = money(line.get("LineAmount"))
    if record.get("LineAmountTypes") == "Inclusive":
        amount -= money(line.get("TaxAmount"))
    fields: dict[str, Any] = {"charge": charge, "kind": parts[0]}
    if parts[1]:
        fields["project_key"] = parts[1]
    fields |= {
        "amount": -amount if credit else amount,
        "invoice_reference": record.get("Reference"),
        "state": STATES[str(record["Status"])],
    }
    return Fact(
        domain=CHARGES,
        key=f"{key}@{line.get('LineItemID')}",
        system=system,
        external_id=str(line.get("LineItemID") or ""),
        fields=fields,
        modified_at=parse_msdate(record.get("UpdatedDateUTC")),
    )


def _project_of(reference: str | None) -> str | None:
    """The project key of a hub invoice reference ``<project key>/...`` (``None`` for a
    reference of another form)."""
    project_key, separator, rest = (reference or "").partition("/")
    if separator and rest and split_engagement_code(project_key) is not None:
        return project_key
    return None


def updated_at(record: dict[str, Any]) -> datetime:
    """A record's ``UpdatedDateUTC`` (an aware datetime; the earliest one when it has none)."""
    return parse_msdate(record.get("UpdatedDateUTC")) or datetime.min.replace(tzinfo=UTC)


def decimal_of(value: Any) -> Decimal:
    """A JSON number or text as a Decimal (``None`` is zero)."""
    return value if isinstance(value, Decimal) else Decimal(str(value if value is not None else 0))


def money(value: Any) -> Decimal:
    """An amount to the penny (half up), as Xero rounds."""
    return decimal_of(value).quantize(_CENT, rounding=ROUND_HALF_UP)


def paged(facts: Iterable[Fact]) -> Iterator[list[Fact]]:
    """``facts`` in lists of up to :data:`PAGE`."""
    page: list[Fact] = []
    for fact in facts:
        page.append(fact)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page
