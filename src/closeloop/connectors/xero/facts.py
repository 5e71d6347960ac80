"""A Xero organisation's records as reconciliation facts (:mod:`closeloop.ports.reconcile`),
in the shapes the Tryton connector gives them (:mod:`closeloop.connectors.tryton.facts`), so
that either ERP compares with the CRM and the PSA alike. How the hub's records look in Xero:
:mod:`.marks`.

Every list is read in bulk, never one call per record: ``Contacts``, ``Invoices`` (with their
line items) and ``CreditNotes`` in pages of 1,000 (:meth:`~.client.XeroClient.pages`);
``TrackingCategories`` and ``Items`` in one call each (Xero does not page them: the
OpenAPI's ``getItems`` and ``getTrackingCategories`` take no ``page``). Invoices are asked
for with ``Type=="ACCREC"`` and the ``Statuses`` ``DRAFT``, ``SUBMITTED``, ``AUTHORISED``,
``PAID`` and ``VOIDED`` (a ``DELETED`` draft is gone, as a deleted draft is in Tryton);
credit notes, whose list takes no ``Statuses``, with ``Type=="ACCRECCREDIT" AND
Status!="DELETED"``. Documents are paged in order of their number (``InvoiceNumber``,
``CreditNoteNumber``), so that one edited while the pages are read keeps its place and a new
one comes last. A domain's records are read whole, then yielded in pages of :data:`PAGE`
facts.

Xero's statuses as the canonical ``state``: ``DRAFT`` and ``SUBMITTED`` ``draft``,
``AUTHORISED`` ``posted``, ``PAID`` ``paid``, ``VOIDED`` ``cancelled``. Amounts are Decimals
to the penny; a credit note's are negative, as Tryton's are.

``customers``
    Every contact of the organisation, archived ones too (an organisation is one company:
    the comparison looks a customer up by the code its engagement was linked to). ``key``:
    the hub's customer code, ``ContactNumber`` (only the API sets it), else the
    ``ContactID`` (a customer matched without one: :func:`~.customers.contact_code`);
    ``external_id``: the ``ContactID``. ``legal_name``: ``Name``; ``tax_ids``: the
    ``TaxNumber`` upper case, alphanumerics only (one at most: Xero keeps one);
    ``country``, ``street`` (``AddressLine1`` to ``4`` joined), ``city``, ``postal_code``:
    of the ``POBOX`` address (Xero's billing address), else the ``STREET`` one; the country
    as ISO 3166-1 alpha-2 (Xero's ``Country`` is free text: a name is looked up, and left
    as written when unknown). ``currency`` and ``payment_terms_days`` are left out, as
    Tryton leaves them (the hub writes the currency and the due date on each invoice).
    Two contacts of one code (Xero does not forbid it): the active one, else the one
    changed last. ``modified_at``: ``UpdatedDateUTC``.
``projects``
    The options of the projects' tracking category (the connector's ``tracking_category``,
    its active category of that name, archived options included) named by a project key
    (:func:`~closeloop.domain.keys.split_engagement_code`). ``key``: the option's name;
    ``external_id``: its ``TrackingOptionID``. ``status``: ``open`` while the option is
    ``ACTIVE``, ``closed`` when ``ARCHIVED`` (closing a project archives it). ``rates``: the
    ``SalesDetails.UnitPrice`` of the project's items, an item being the project's when its
    ``Description`` is a task key ``<project key>:<task>`` and its ``Code`` the hub's for
    that key (:func:`~.marks.item_code`); a rate-change task ``<role> (from <ISO date>)``
    (:mod:`closeloop.flows.amend`) stands for its role from its day, and the latest in force
    today wins, as in Tryton. ``billing_method``: as the project's anchor draft says it
    (:func:`~.marks.anchor_of`; left out without an anchor). ``fee`` is left out: Xero keeps
    none. ``modified_at``: the latest ``UpdatedDateUTC`` of its items and anchor (Xero dates
    no tracking option: an option archived by hand leaves no date).
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

Calls per domain: ``customers`` one per 1,000 contacts; ``projects`` two, and one per 1,000
work-in-progress drafts; ``time`` one, and one per 1,000 invoices; ``invoices`` and
``charges`` one per 1,000 invoices and one per 1,000 credit notes (and one more on a list
whose count is a multiple of 1,000).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pycountry

from closeloop.connectors.xero.client import XeroClient, parse_msdate
from closeloop.connectors.xero.customers import contact_code
from closeloop.connectors.xero.marks import (
    anchor_of,
    day_of,
    is_anchor_line,
    item_code,
    mark_of,
    project_of_wip,
)
from closeloop.domain.keys import role_of, split_engagement_code
from closeloop.ports.reconcile import CHARGES, CUSTOMERS, INVOICES, PROJECTS, TIME, Fact

PAGE = 1000
"""Facts per page yielded (and records per call read: Xero's largest ``pageSize``)."""

DOMAINS = (CUSTOMERS, PROJECTS, TIME, INVOICES, CHARGES)
"""The reconciliation domains Xero holds records of."""

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


def read_facts(
    client: XeroClient,
    tracking_category: str,
    system: str,
    domain: str,
    *,
    today: date | None = None,
) -> Iterator[list[Fact]]:
    """Pages of up to :data:`PAGE` facts of ``domain`` (one of :data:`DOMAINS`) in the
    organisation of ``client``, named after the configured ``system``;
    ``tracking_category`` names the projects' tracking category (the connector's
    ``Accounts.tracking_category``); ``today``: the day whose rates are in force (default:
    today, UTC). The module docstring says what each domain holds.

    Raises ``ValueError`` at once for a domain Xero holds no records of; while reading,
    :class:`~closeloop.ports.connector.TransientError` when Xero cannot answer now (and
    :class:`~.client.XeroApiError` for a refusal).
    """
    if domain == CUSTOMERS:
        return customer_facts(client, system)
    if domain == PROJECTS:
        return project_facts(client, tracking_category, system, today=today)
    if domain == TIME:
        return time_facts(client, tracking_category, system)
    if domain == INVOICES:
        return invoice_facts(client, system)
    if domain == CHARGES:
        return charge_facts(client, system)
    raise ValueError(f"Xero holds no {domain!r} records to reconcile (it holds {DOMAINS})")


# --- domains ----------------------------------------------------------------------------
def customer_facts(client: XeroClient, system: str) -> Iterator[list[Fact]]:
    """The ``customers`` facts (module docstring)."""
    chosen: dict[str, dict[str, Any]] = {}
    for contact in client.list_all("Contacts", "Contacts", params={"includeArchived": "true"}):
        code = contact_code(contact)
        if code not in chosen or _rank_contact(contact) > _rank_contact(chosen[code]):
            chosen[code] = contact
    yield from _paged(_customer(code, c, system) for code, c in sorted(chosen.items()))


def project_facts(
    client: XeroClient, tracking_category: str, system: str, *, today: date | None = None
) -> Iterator[list[Fact]]:
    """The ``projects`` facts (module docstring), rates as in force on ``today`` (default:
    today, UTC)."""
    day = today or datetime.now(UTC).date()
    options = _options(client, tracking_category)
    items = _hub_items(client)
    anchors: dict[str, dict[str, Any]] = {}
    for draft in client.list_all(
        "Invoices",
        "Invoices",
        params={
            "where": 'Type=="ACCREC" AND Reference!=null AND Reference.EndsWith(" WIP")',
            "Statuses": "DRAFT",
            "order": "InvoiceNumber ASC",
        },
    ):
        key = project_of_wip(draft.get("Reference"))
        if (
            key is not None
            and anchor_of(draft) is not None
            and (key not in anchors or _moment(draft) > _moment(anchors[key]))
        ):
            anchors[key] = draft
    facts = []
    for key, option in sorted(options.items()):
        if split_engagement_code(key) is None:
            continue
        facts.append(_project(key, option, items.get(key, []), anchors.get(key), system, day))
    yield from _paged(facts)


def time_facts(client: XeroClient, tracking_category: str, system: str) -> Iterator[list[Fact]]:
    """The ``time`` facts (module docstring)."""
    items = {str(i["Code"]): i for i in _items(client)}
    chosen: dict[str, tuple[tuple[int, datetime], Fact]] = {}
    for invoice in _invoices(client):
        status = invoice.get("Status")
        if status not in ("DRAFT", "SUBMITTED", *_APPROVED):
            continue
        wip = project_of_wip(invoice.get("Reference")) is not None
        rank = (2 if status in _APPROVED else 0 if wip else 1, _moment(invoice))
        for line in invoice.get("LineItems") or []:
            fact = _line(line, invoice, items, tracking_category, system)
            if fact is not None and (fact.key not in chosen or rank > chosen[fact.key][0]):
                chosen[fact.key] = (rank, fact)
    yield from _paged(fact for _, (_, fact) in sorted(chosen.items()))


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
        rank = (fact.fields["state"] != "cancelled", _moment(record))
        if reference not in chosen or rank > chosen[reference][0]:
            chosen[reference] = (rank, fact)
    yield from _paged(fact for _, (_, fact) in sorted(chosen.items()))


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
    yield from _paged(sorted(facts, key=lambda f: f.key))


def hours_of(quantity: Any) -> Decimal:
    """A line's ``Quantity`` in hours, two places (half up); ``None`` is zero."""
    return _decimal(quantity).quantize(_CENT, rounding=ROUND_HALF_UP)


def country_code(text: str | None) -> str | None:
    """A Xero address's ``Country`` as ISO 3166-1 alpha-2: two letters upper-cased, a name
    looked up (``United Kingdom`` -> ``GB``), anything else as written; ``None`` when
    empty."""
    value = " ".join(str(text or "").split())
    if not value:
        return None
    if len(value) == 2 and value.isalpha():
        return value.upper()
    try:
        return str(pycountry.countries.lookup(value).alpha_2)
    except LookupError:
        return value


# --- reading ----------------------------------------------------------------------------
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


def _items(client: XeroClient) -> list[dict[str, Any]]:
    """Every item (one call: Xero does not page items)."""
    return list(client.request("GET", "Items").get("Items") or [])


def _hub_items(client: XeroClient) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The hub's items by project key: ``(task name, item)`` of each item whose
    ``Description`` is a task key and whose ``Code`` is the hub's for it."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for item in _items(client):
        task_key = str(item.get("Description") or "")
        project, separator, task = task_key.partition(":")
        if separator and task and item.get("Code") == item_code(task_key):
            found.setdefault(project, []).append((task, item))
    return found


def _options(client: XeroClient, name: str) -> dict[str, dict[str, Any]]:
    """The options (archived ones too) of the active tracking category ``name``, by name."""
    categories = (
        client.request("GET", "TrackingCategories", params={"includeArchived": "true"}).get(
            "TrackingCategories"
        )
        or []
    )
    for category in categories:
        if category.get("Name") == name and category.get("Status") == "ACTIVE":
            return {str(o.get("Name")): o for o in category.get("Options") or []}
    return {}


# --- mapping ----------------------------------------------------------------------------
def _customer(code: str, contact: dict[str, Any], system: str) -> Fact:
    addresses = contact.get("Addresses") or []
    address: dict[str, Any] = next(
        (a for kind in ("POBOX", "STREET") for a in addresses if a.get("AddressType") == kind),
        {},
    )
    tax = re.sub(r"[^0-9A-Z]", "", str(contact.get("TaxNumber") or "").upper())
    fields: dict[str, Any] = {
        "legal_name": str(contact.get("Name") or ""),
        "tax_ids": (tax,) if tax else (),
    }
    country = country_code(address.get("Country"))
    if country:
        fields["country"] = country
    street = " ".join(
        " ".join(str(address.get(f"AddressLine{n}") or "").split()) for n in range(1, 5)
    )
    for name, value in (
        ("street", street),
        ("city", address.get("City")),
        ("postal_code", address.get("PostalCode")),
    ):
        text = " ".join(str(value or "").split())
        if text:
            fields[name] = text
    return Fact(
        domain=CUSTOMERS,
        key=code,
        system=system,
        external_id=str(contact["ContactID"]),
        fields=fields,
        modified_at=parse_msdate(contact.get("UpdatedDateUTC")),
    )


def _project(
    key: str,
    option: dict[str, Any],
    items: list[tuple[str, dict[str, Any]]],
    anchor: dict[str, Any] | None,
    system: str,
    today: date,
) -> Fact:
    in_force: dict[str, tuple[date, Decimal]] = {}
    for task, item in items:
        role, since = role_of(task)
        start = since or date.min
        if start <= today and (role not in in_force or start >= in_force[role][0]):
            in_force[role] = (start, _decimal((item.get("SalesDetails") or {}).get("UnitPrice")))
    fields: dict[str, Any] = {
        "status": "closed" if option.get("Status") == "ARCHIVED" else "open",
        "rates": {role: rate for role, (_, rate) in sorted(in_force.items())},
    }
    described = anchor_of(anchor) if anchor is not None else None
    if described is not None:
        fields["billing_method"] = described.billing_method
    dated = [item for _, item in items] + ([anchor] if anchor is not None else [])
    return Fact(
        domain=PROJECTS,
        key=key,
        system=system,
        external_id=str(option.get("TrackingOptionID") or ""),
        fields=fields,
        modified_at=max(
            (m for r in dated if (m := parse_msdate(r.get("UpdatedDateUTC")))), default=None
        ),
    )


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
    total = _money(record.get("Total"))
    if credit:
        outstanding = _money(record.get("RemainingCredit"))
        paid = total - outstanding
        credited = _credited(record, references)
    else:
        outstanding = _money(record.get("AmountDue"))
        paid = _money(record.get("AmountPaid"))
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
    amount = _money(line.get("LineAmount"))
    if record.get("LineAmountTypes") == "Inclusive":
        amount -= _money(line.get("TaxAmount"))
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


# --- helpers ----------------------------------------------------------------------------
def _project_of(reference: str | None) -> str | None:
    """The project key of a hub invoice reference ``<project key>/...`` (``None`` for a
    reference of another form)."""
    project_key, separator, rest = (reference or "").partition("/")
    if separator and rest and split_engagement_code(project_key) is not None:
        return project_key
    return None


def _rank_contact(contact: dict[str, Any]) -> tuple[bool, datetime]:
    return contact.get("ContactStatus") == "ACTIVE", _moment(contact)


def _moment(record: dict[str, Any]) -> datetime:
    return parse_msdate(record.get("UpdatedDateUTC")) or datetime.min.replace(tzinfo=UTC)


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value if value is not None else 0))


def _money(value: Any) -> Decimal:
    return _decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)


def _paged(facts: Iterable[Fact]) -> Iterator[list[Fact]]:
    """``facts`` in lists of up to :data:`PAGE`."""
    page: list[Fact] = []
    for fact in facts:
        page.append(fact)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page
