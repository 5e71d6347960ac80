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
one comes last. A domain's records are read whole, then yielded in pages of
:data:`~.facts_billing.PAGE` facts.

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
``time``, ``invoices``, ``charges``
    The billing documents' facts: :mod:`.facts_billing`.

Calls per domain: ``customers`` one per 1,000 contacts; ``projects`` two, and one per 1,000
work-in-progress drafts; the others: :mod:`.facts_billing`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pycountry

from closeloop.connectors.xero.client import XeroClient, parse_msdate
from closeloop.connectors.xero.customers import contact_code
from closeloop.connectors.xero.facts_billing import (
    charge_facts,
    decimal_of,
    invoice_facts,
    paged,
    read_items,
    time_facts,
    updated_at,
)
from closeloop.connectors.xero.marks import (
    anchor_of,
    item_code,
    project_of_wip,
)
from closeloop.domain.keys import role_of, split_engagement_code
from closeloop.ports.reconcile import CHARGES, CUSTOMERS, INVOICES, PROJECTS, TIME, Fact

DOMAINS = (CUSTOMERS, PROJECTS, TIME, INVOICES, CHARGES)
"""The reconciliation domains Xero holds records of."""


def read_facts(
    client: XeroClient,
    tracking_category: str,
    system: str,
    domain: str,
    *,
    today: date | None = None,
) -> Iterator[list[Fact]]:
    """Pages of up to :data:`~.facts_billing.PAGE` facts of ``domain`` (one of
    :data:`DOMAINS`) in the organisation of ``client``, named after the configured ``system``;
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


def customer_facts(client: XeroClient, system: str) -> Iterator[list[Fact]]:
    """The ``customers`` facts (module docstring)."""
    chosen: dict[str, dict[str, Any]] = {}
    for contact in client.list_all("Contacts", "Contacts", params={"includeArchived": "true"}):
        code = contact_code(contact)
        if code not in chosen or _rank_contact(contact) > _rank_contact(chosen[code]):
            chosen[code] = contact
    yield from paged(_customer(code, c, system) for code, c in sorted(chosen.items()))


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
            and (key not in anchors or updated_at(draft) > updated_at(anchors[key]))
        ):
            anchors[key] = draft
    facts = []
    for key, option in sorted(options.items()):
        if split_engagement_code(key) is None:
            continue
        facts.append(_project(key, option, items.get(key, []), anchors.get(key), system, day))
    yield from paged(facts)


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


def _hub_items(client: XeroClient) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The hub's items by project key: ``(task name, item)`` of each item whose
    ``Description`` is a task key and whose ``Code`` is the hub's for it."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for item in read_items(client):
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
            in_force[role] = (start, decimal_of((item.get("SalesDetails") or {}).get("UnitPrice")))
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


def _rank_contact(contact: dict[str, Any]) -> tuple[bool, datetime]:
    return contact.get("ContactStatus") == "ACTIVE", updated_at(contact)
