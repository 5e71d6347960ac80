"""Where an invoice's time comes from in Tryton: the requests' projects (with their tasks'
timesheet works) and the draft invoices Tryton's project invoicing made of their timesheet
lines (:mod:`.drafts`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from closeloop.connectors.tryton.invoice_terms import InvoiceRequest
from closeloop.connectors.tryton.keys import WORK_KEY
from closeloop.connectors.tryton.rpc import TrytonRPC


def invoiced_projects(
    rpc: TrytonRPC, company: int, requests: Sequence[InvoiceRequest]
) -> tuple[dict[int, dict[str, Any]], dict[int, int]]:
    """The projects of ``requests`` in company ``company`` (``project.work`` rows by id,
    with their ``key``, party, invoice method, and what the requests' terms and charges
    need of the party), and the project of each of their tasks' timesheet works. One read.
    Raises ``LookupError`` for a project Tryton does not have."""
    comments = [WORK_KEY.format(key=r.project_key) for r in requests]
    fields = ["comment", "parent", "timesheet_works", "name", "party", "project_invoice_method"]
    if any(r.customer_tax_id for r in requests):  # the party's tax identifier, as
        fields.append("party.tax_identifier.code")  # Tryton picks it (a tax type)
    if any(r.charges for r in requests):
        fields.append("party.customer_tax_rule")
    works = rpc.search_read(
        "project.work",
        [
            ["company", "=", company],
            ["OR", [["comment", "in", comments]], [["parent.comment", "in", comments]]],
        ],
        fields,
        context={"active_test": False},
    )
    projects = {
        w["id"]: {**w, "key": w["comment"].split(":", 1)[1]}
        for w in works
        if w["comment"] in comments
    }
    unknown = {r.project_key for r in requests} - {p["key"] for p in projects.values()}
    if unknown:
        raise LookupError(f"project {', '.join(sorted(unknown))} does not exist in Tryton")
    owner = {
        t: (w["id"] if w["id"] in projects else w["parent"])
        for w in works
        for t in w["timesheet_works"]
    }
    return projects, owner


def project_drafts(
    rpc: TrytonRPC, owner: dict[int, int], references: list[str]
) -> tuple[dict[int, dict[int, str | None]], dict[int, set[int]]]:
    """The draft customer invoices of the projects found through their timesheet lines
    (``owner``: the project of each timesheet work), unreferenced or referenced as one of
    ``references`` (``{project: {invoice: reference}}``), and the invoice lines of each.
    One search."""
    lines = rpc.search_read(
        "timesheet.line",
        [
            ["work", "in", sorted(owner)],
            ["invoice_line.invoice.state", "=", "draft"],
            ["invoice_line.invoice.type", "=", "out"],
            [
                "OR",
                ["invoice_line.invoice.reference", "=", None],
                ["invoice_line.invoice.reference", "in", references],
            ],
        ],
        ["work", "invoice_line", "invoice_line.invoice", "invoice_line.invoice.reference"],
    )
    drafts: dict[int, dict[int, str | None]] = {}
    invoice_lines: dict[int, set[int]] = {}
    for line in lines:
        invoice_line = line["invoice_line."]
        invoice = invoice_line["invoice"]
        reference = (invoice_line.get("invoice.") or {}).get("reference")
        drafts.setdefault(owner[line["work"]], {})[invoice] = reference
        invoice_lines.setdefault(invoice, set()).add(int(line["invoice_line"]))
    return drafts, invoice_lines
