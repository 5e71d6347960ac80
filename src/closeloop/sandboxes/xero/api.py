"""The Accounting API's resources over an :class:`~.org.Organisation`, without HTTP:
``route(org, method, path, params, body, since)`` answers ``(status, body)`` or raises
:class:`~.wire.XeroError`.

Routes (paths are case-insensitive, as Xero's): ``GET /Contacts``, ``GET /Contacts/{id}``,
``PUT|POST /Contacts``, ``POST /Contacts/{id}``; the same for ``Invoices`` (``{id}`` is an
``InvoiceID`` or an ``InvoiceNumber``), ``CreditNotes`` and ``Payments``;
``PUT /CreditNotes/{id}/Allocations``; ``GET /TaxRates``, ``GET /Accounts``,
``GET /Organisation``. Lists take ``where``, ``page``/``pageSize``, ``If-Modified-Since`` and
the list parameters ``IDs``, ``InvoiceNumbers``, ``ContactIDs``, ``Statuses``.

Writes take ``{"Contacts": [...]}`` (or ``Invoices``, ``Payments``) or one object. ``PUT``
creates only; ``POST`` creates or updates (by id). With ``summarizeErrors`` true (the
default) one bad element refuses the whole batch: 400 ``ValidationException`` whose
``Elements`` are the bad elements with their ``ValidationErrors``, nothing written (each
element is checked after the ones before it were applied, so two payments that together
overpay an invoice are refused; the records are restored from a copy when one fails). With
``summarizeErrors=false`` each element stands alone: 200, good elements written with
``StatusAttributeString`` ``OK``, bad ones echoed with ``ERROR``, ``ValidationErrors`` and
``HasErrors`` (invoices) or ``HasValidationErrors`` (contacts, payments) true.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from closeloop.sandboxes.xero import contacts, creditnotes, invoices, payments, settings
from closeloop.sandboxes.xero.org import Organisation, listing
from closeloop.sandboxes.xero.query import where
from closeloop.sandboxes.xero.taxes import UK_RATES
from closeloop.sandboxes.xero.wire import (
    XeroError,
    bad_request,
    envelope,
    not_found,
    validation_error,
)

Checker = Callable[[dict[str, Any]], tuple[list[str], dict[str, Any]]]
Applier = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _elements(body: Any, key: str, record_id: str | None, id_key: str) -> list[dict[str, Any]]:
    rows = body.get(key) if isinstance(body, dict) and key in body else [body]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or not rows:
        raise bad_request("PostDataInvalidException", f"The request must hold {key}")
    if record_id is not None:
        if len(rows) != 1:
            raise bad_request("PostDataInvalidException", "One element updates one record")
        rows = [{**rows[0], id_key: record_id}]
    return rows


def _batch(
    org: Organisation,
    elements: list[dict[str, Any]],
    summarize: bool,
    check: Checker,
    apply: Applier,
    render: Callable[[dict[str, Any]], dict[str, Any]],
    flag: str,
) -> list[dict[str, Any]]:
    def failed(element: dict[str, Any], errors: list[str]) -> dict[str, Any]:
        return element | {
            flag: True,
            "StatusAttributeString": "ERROR",
            "ValidationErrors": [{"Message": m} for m in errors],
        }

    answers, bad = [], []
    snapshot = org.snapshot() if summarize else None
    for element in elements:
        errors, plan = check(element)
        if errors:
            answers.append(failed(element, errors))
            bad.append(answers[-1])
        else:
            answers.append(render(apply(element, plan)) | {"StatusAttributeString": "OK"})
    if bad and snapshot is not None:
        org.restore(snapshot)
        raise validation_error(bad)
    return answers


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
    records lack keeps nothing)."""
    rows = list(store.values())
    for name, path in _LIST_FILTERS.items():
        if name not in params:
            continue
        wanted = {v.strip().strip('"').lower() for v in params[name].split(",") if v.strip()}
        keys = path or (id_key,)

        def value(record: dict[str, Any], keys: tuple[str, ...] = keys) -> str:
            found: Any = record
            for key in keys:
                found = found.get(key) if isinstance(found, dict) else None
            return str(found).lower()

        rows = [r for r in rows if value(r) in wanted]
    return rows


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
    resource = parts[0].lower() if parts else ""
    record_id = parts[1] if len(parts) > 1 else None
    if resource in ("accounts", "organisation") and method == "GET" and len(parts) == 1:
        now = org.clock()
        if resource == "organisation":
            return 200, envelope("Organisations", [settings.organisation(org)], now)
        rows = settings.accounts(org)
        if "where" in params:
            rows = [r for r in rows if where(params["where"])(r)]
        return 200, envelope("Accounts", rows, now)
    known = ("contacts", "invoices", "payments", "taxrates", "creditnotes")
    if len(parts) > 2 or resource not in known:
        if resource == "creditnotes" and len(parts) == 3 and parts[2].lower() == "allocations":
            return _allocations(org, method, parts[1], params, body)
        raise not_found()
    summarize = params.get("summarizeErrors", "true").lower() != "false"
    now = org.clock()
    if resource == "taxrates":
        if method != "GET" or record_id:
            raise not_found()
        rates = [rate.render() | {"TaxType": t} for t, rate in UK_RATES.items()]
        if "where" in params:
            rates = [r for r in rates if where(params["where"])(r)]
        return 200, envelope("TaxRates", rates, now)
    if resource == "contacts":
        key, store, id_key, flag = "Contacts", org.contacts, "ContactID", "HasValidationErrors"
        render: Callable[[dict[str, Any]], dict[str, Any]] = contacts.render

        def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
            return contacts.check(org, element, method == "PUT"), {}

        def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
            return contacts.apply(org, element)

    elif resource == "invoices":
        key, store, id_key, flag = "Invoices", org.invoices, "InvoiceID", "HasErrors"
        unitdp = 4 if params.get("unitdp") == "4" else 2

        def render(record: dict[str, Any]) -> dict[str, Any]:
            return payments.render_invoice(org, record)

        def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
            return invoices.check(org, element, method == "PUT", unitdp)

        def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
            return invoices.apply(org, element, plan)

        if record_id is not None and record_id not in store:
            numbered = [i for i in store.values() if i["InvoiceNumber"] == record_id]
            record_id = numbered[0]["InvoiceID"] if numbered else record_id
    elif resource == "creditnotes":
        key, store, id_key, flag = "CreditNotes", org.credit_notes, "CreditNoteID", "HasErrors"
        unitdp = 4 if params.get("unitdp") == "4" else 2
        render = creditnotes.render

        def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
            return creditnotes.check(org, element, method == "PUT", unitdp)

        def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
            return creditnotes.apply(org, element, plan)

    else:
        key, store, id_key, flag = "Payments", org.payments, "PaymentID", "HasValidationErrors"

        def render(record: dict[str, Any]) -> dict[str, Any]:
            return payments.render(org, record)

        def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
            return payments.check(org, element)

        def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
            return payments.apply(org, element, plan)

    if method == "GET":
        if record_id is not None:
            if record_id not in store:
                raise not_found()
            return 200, envelope(key, [render(store[record_id])], now)
        rows, pagination = listing(_filtered(store, id_key, params), params, since, render)
        answer = envelope(key, rows, now)
        if pagination is not None:
            answer["pagination"] = pagination
        return 200, answer
    if record_id is not None and (method == "PUT" or key == "Payments"):
        raise XeroError(405, {"Title": "Method Not Allowed", "Status": 405})
    if record_id is not None and record_id not in store:
        raise not_found()
    elements = _elements(body, key, record_id, id_key)
    return 200, envelope(key, _batch(org, elements, summarize, check, apply, render, flag), now)


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
    summarize = params.get("summarizeErrors", "true").lower() != "false"
    elements = _elements(body, "Allocations", None, "AllocationID")

    def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return creditnotes.check_allocation(org, org.credit_notes[note_id], element)

    def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        return creditnotes.allocate(org, org.credit_notes[note_id], element, plan)

    rows = _batch(org, elements, summarize, check, apply, lambda r: r, "HasErrors")
    return 200, envelope("Allocations", rows, org.clock())
