"""The Accounting API's resources over an :class:`~.org.Organisation`, without HTTP:
``route(org, method, path, params, body, since)`` answers ``(status, body)`` or raises
:class:`~.wire.XeroError`.

Routes (paths are case-insensitive, as Xero's): ``GET /Contacts``, ``GET /Contacts/{id}``,
``PUT|POST /Contacts``, ``POST /Contacts/{id}``; the same for ``Invoices`` (``{id}`` is an
``InvoiceID`` or an ``InvoiceNumber``), ``CreditNotes``, ``Items`` (``{id}`` is an ``ItemID``
or a ``Code``) and ``Payments`` (no ``POST /Payments/{id}``);
``PUT /CreditNotes/{id}/Allocations``; ``/TrackingCategories`` (:mod:`.tracking_api`);
``GET /TaxRates``, ``GET /Accounts``, ``GET /Organisation``. Lists take ``where`` and
``order`` (:mod:`.query`), ``page``/``pageSize``, ``If-Modified-Since``, the list
parameters ``IDs``, ``InvoiceNumbers``, ``ContactIDs``, ``Statuses``, ``searchTerm``, and
on contacts ``includeArchived``.

Writes are batches (:mod:`.batch`): ``PUT`` creates only; ``POST`` creates or updates (by
id; items also by ``Code``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pycountry

from closeloop.sandboxes.xero import (
    batch,
    contacts,
    creditnotes,
    invoices,
    items,
    payments,
    settings,
    tracking_api,
)
from closeloop.sandboxes.xero.org import Organisation, listing
from closeloop.sandboxes.xero.query import where
from closeloop.sandboxes.xero.taxes import UK_RATES
from closeloop.sandboxes.xero.wire import XeroError, envelope, not_found

_LIST_FILTERS = {
    "IDs": None,  # the resource's own id
    "InvoiceNumbers": ("InvoiceNumber",),
    "ContactIDs": ("Contact", "ContactID"),
    "Statuses": ("Status",),
}


def _filtered(
    store: dict[str, dict[str, Any]], id_key: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    """The records of ``store`` kept by the comma-separated list parameters Xero documents
    for lists (``IDs``, ``InvoiceNumbers``, ``ContactIDs``, ``Statuses``; a parameter the
    records lack keeps nothing; credit notes take none of them, as the Accounting OpenAPI
    says, so they are ignored there), by ``searchTerm`` (contacts and invoices) and, for
    contacts, without the ``ARCHIVED`` ones unless ``includeArchived=true``."""
    rows = list(store.values())
    for name, path in _LIST_FILTERS.items():
        if name not in params or id_key == "CreditNoteID":  # Xero's CreditNotes take none
            continue
        wanted = {v.strip().strip('"').lower() for v in params[name].split(",") if v.strip()}
        keys = path or (id_key,)

        def value(record: dict[str, Any], keys: tuple[str, ...] = keys) -> str:
            found: Any = record
            for key in keys:
                found = found.get(key) if isinstance(found, dict) else None
            return str(found).lower()

        rows = [r for r in rows if value(r) in wanted]
    if id_key == "ContactID" and params.get("includeArchived", "false").lower() != "true":
        rows = [r for r in rows if r.get("ContactStatus") != "ARCHIVED"]
    term = params.get("searchTerm", "").strip().lower()
    if term:
        fields = _SEARCHED.get(id_key, ())
        rows = [r for r in rows if any(term in str(r.get(f) or "").lower() for f in fields)]
    return rows


# searchTerm: "a case-insensitive text search across" these fields (Xero's OpenAPI)
_SEARCHED = {
    "ContactID": ("Name", "FirstName", "LastName", "ContactNumber", "EmailAddress"),
    "InvoiceID": ("InvoiceNumber", "Reference"),
}


@dataclass
class _Resource:
    """One writable resource: its answer key, records, id, error flag and functions."""

    key: str
    store: dict[str, dict[str, Any]]
    id_key: str
    flag: str | None
    render: Callable[[dict[str, Any]], dict[str, Any]]
    check: Callable[[dict[str, Any], bool], tuple[list[str], dict[str, Any]]]
    apply: batch.Applier
    alias: str | None = None  # another field a path's {id} may give (InvoiceNumber, Code)


def _resource(org: Organisation, name: str, params: dict[str, str]) -> _Resource | None:
    unitdp = 4 if params.get("unitdp") == "4" else 2
    if name == "contacts":
        return _Resource(
            "Contacts",
            org.contacts,
            "ContactID",
            "HasValidationErrors",
            contacts.render,
            lambda e, create: (contacts.check(org, e, create), {}),
            lambda e, plan: contacts.apply(org, e),
        )
    if name == "invoices":
        return _Resource(
            "Invoices",
            org.invoices,
            "InvoiceID",
            "HasErrors",
            lambda r: payments.render_invoice(org, r),
            lambda e, create: invoices.check(org, e, create, unitdp),
            lambda e, plan: invoices.apply(org, e, plan),
            "InvoiceNumber",
        )
    if name == "creditnotes":
        return _Resource(
            "CreditNotes",
            org.credit_notes,
            "CreditNoteID",
            "HasErrors",
            lambda r: creditnotes.render(org, r),
            lambda e, create: creditnotes.check(org, e, create, unitdp),
            lambda e, plan: creditnotes.apply(org, e, plan),
            "CreditNoteNumber",
        )
    if name == "items":
        return _Resource(
            "Items",
            org.items,
            "ItemID",
            None,
            items.render,
            lambda e, create: items.check(org, e, create, unitdp),
            lambda e, plan: items.apply(org, e, plan),
            "Code",
        )
    if name == "payments":
        return _Resource(
            "Payments",
            org.payments,
            "PaymentID",
            "HasValidationErrors",
            lambda r: payments.render(org, r),
            lambda e, create: payments.check(org, e),
            lambda e, plan: payments.apply(org, e, plan),
        )
    return None


def _settings(
    org: Organisation, resource: str, params: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """``GET /Organisation``, ``/Accounts``, ``/TaxRates`` and ``/Currencies`` (read-only)."""
    now = org.clock()
    if resource == "organisation":
        return 200, envelope("Organisations", [settings.organisation(org)], now)
    if resource == "currencies":
        key, rows = (
            "Currencies",
            [
                {"Code": c, "Description": getattr(pycountry.currencies.get(alpha_3=c), "name", c)}
                for c in org.currencies
            ],
        )
    elif resource == "accounts":
        key, rows = "Accounts", settings.accounts(org)
    else:
        key, rows = "TaxRates", [rate.render() | {"TaxType": t} for t, rate in UK_RATES.items()]
    if "where" in params:
        rows = [r for r in rows if where(params["where"])(r)]
    return 200, envelope(key, rows, now)


def route(
    org: Organisation,
    method: str,
    path: str,
    params: dict[str, str],
    body: Any,
    since: datetime | None,
) -> tuple[int, dict[str, Any]]:
    """Answer one Accounting call (under ``org.lock``)."""
    parts = [p for p in path.split("/") if p]
    name = parts[0].lower() if parts else ""
    if name in ("accounts", "organisation", "taxrates", "currencies"):
        if method != "GET" or len(parts) > 1:
            raise not_found()
        return _settings(org, name, params)
    if name == "trackingcategories":
        return tracking_api.route(org, method, parts[1:], params, body)
    if name == "creditnotes" and len(parts) == 3 and parts[2].lower() == "allocations":
        return _allocations(org, method, parts[1], params, body)
    resource = _resource(org, name, params)
    if resource is None or len(parts) > 2:
        raise not_found()
    record_id = parts[1] if len(parts) > 1 else None
    if record_id is not None and record_id not in resource.store and resource.alias:
        alias = resource.alias
        named = [
            r for r in resource.store.values() if str(r.get(alias, "")).lower() == record_id.lower()
        ]
        record_id = named[0][resource.id_key] if named else record_id
    now = org.clock()
    if method == "GET":
        if record_id is not None:
            if record_id not in resource.store:
                raise not_found()
            return 200, envelope(resource.key, [resource.render(resource.store[record_id])], now)
        kept = _filtered(resource.store, resource.id_key, params)
        rows, pagination = listing(kept, params, since, resource.render)
        answer = envelope(resource.key, rows, now)
        if pagination is not None:
            answer["pagination"] = pagination
        return 200, answer
    if record_id is not None and (method == "PUT" or resource.key == "Payments"):
        raise XeroError(405, {"Title": "Method Not Allowed", "Status": 405})
    if record_id is not None and record_id not in resource.store:
        raise not_found()
    rows = batch.elements(body, resource.key, record_id, resource.id_key)
    answers = batch.write(
        org,
        rows,
        batch.summarize(params),
        lambda e: resource.check(e, method == "PUT"),
        resource.apply,
        resource.render,
        resource.flag,
    )
    return 200, envelope(resource.key, answers, now)


def _allocations(
    org: Organisation, method: str, note_id: str, params: dict[str, str], body: Any
) -> tuple[int, dict[str, Any]]:
    """``PUT /CreditNotes/{id}/Allocations``: allocate credit to invoices (a batch, with
    ``summarizeErrors`` as other writes)."""
    note = org.credit_notes.get(note_id)
    if note is None:
        raise not_found()
    if method != "PUT":
        raise XeroError(405, {"Title": "Method Not Allowed", "Status": 405})
    rows = batch.elements(body, "Allocations", None, "AllocationID")

    def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return creditnotes.check_allocation(org, org.credit_notes[note_id], element)

    def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        return creditnotes.allocate(org, org.credit_notes[note_id], element, plan)

    answers = batch.write(
        org, rows, batch.summarize(params), check, apply, lambda r: r, "HasErrors"
    )
    return 200, envelope("Allocations", answers, org.clock())
