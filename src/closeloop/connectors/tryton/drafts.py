"""Invoices drafted in Tryton from a project's time and charges: Tryton's project invoicing
bills the recorded time of a project invoiced on timesheets (its ``invoice`` button); the
charges not billed yet (:mod:`.charges`) are added to that draft, or make an invoice of
their own; references, dates and terms (:mod:`.invoice_terms`) are written on each. Keys:
the invoice ``reference`` (see :mod:`.operations`) and each charge line's note."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from closeloop.connectors.tryton.charges import (
    ChargeOperations,
    billed_lines,
    charge_line_values,
    net_billed,
)
from closeloop.connectors.tryton.invoice_reads import InvoiceReading, InvoiceState
from closeloop.connectors.tryton.invoice_sources import invoiced_projects, project_drafts
from closeloop.connectors.tryton.invoice_terms import (
    InvoiceRequest,
    ensure_payment_terms,
    tax_identifier,
    term_values,
)
from closeloop.connectors.tryton.rpc import TrytonUserError, after_write


@dataclass(frozen=True)
class InvoicePlan:
    """What one request bills: its project's time (``timed``: the request includes time and
    the project is invoiced on timesheets), the invoice already carrying its reference
    (``existing``, with the charge keys on it, ``billed``), the keys of the charges to add
    (``charges``) and their invoice line values (``lines``)."""

    request: InvoiceRequest
    project: int
    timed: bool
    existing: int | None = None
    billed: tuple[str, ...] = ()
    charges: tuple[str, ...] = ()
    lines: list[dict[str, Any]] = field(default_factory=list)


class InvoiceDrafting(InvoiceReading, ChargeOperations):
    """Drafting invoices (a mixin of :class:`~.operations.TrytonOperations`: it needs the
    session's caches below: payment term ids by days, currency ids by code)."""

    _payment_terms: dict[int, int]
    _currencies: dict[str, int]

    def create_invoices(self, requests: Sequence[InvoiceRequest]) -> list[InvoiceState | None]:
        """Invoice each project's timesheet lines up to its ``up_to`` date (when the request
        includes time and the project is invoiced on timesheets) and its charges not billed
        yet (:mod:`.charges`) as the customer invoice ``reference`` of the connector's
        company, dated ``invoice_date`` (default ``up_to``), in the request's currency, with
        its payment term, mention and VAT number (:func:`~.invoice_terms.term_values`);
        requests screened (:meth:`screen_invoices`). Returns, per request, the draft invoice
        with the charge keys it bills (``charges``), or ``None`` when the project had
        nothing to invoice. An invoice already carrying the reference is returned as it is.

        Time only: seven calls whatever the count: the projects and their tasks (with the
        customers' identifiers when a request names a VAT number); the up-to dates, written
        together; what each has to invoice; Tryton's ``invoice`` button on all that have
        something (one invoice per project, in the company's currency); the projects' draft
        invoices and their lines found through their timesheet lines; references, dates,
        currencies, payment terms, comments and charge lines written together; the invoices
        read. With charges: one search more (the charge keys billed, the invoices already
        referenced), one ``on_change`` per product, customer and tax rule not seen in this
        session (taxes, account), and for invoices of charges only one ``on_change`` per
        customer (address, receivable account) and one ``create`` for all; the three calls of
        the time are left out when no request bills time. Plus, once per session, one search
        of the "Net <N> days" terms it has not seen (and one create of those Tryton lacks),
        one read of currencies a request names that the screen did not see, and the expense
        products (:meth:`~.charges.ChargeOperations.ensure_expense_products`). A draft made
        by an earlier attempt whose answer was lost (no reference yet) is taken instead of
        invoicing the time again.

        Raises ``LookupError`` for an unknown project or currency, and Tryton's refusal
        (:class:`~.rpc.TrytonError`) of the button, of a charge's product or of any invoice:
        then none is invoiced.
        """
        if not requests:
            return []
        keys = [r.project_key for r in requests]
        if len(set(keys)) < len(keys):  # each would take the other's lines: one per call
            raise ValueError(f"one invoice per project per call: {sorted(keys)}")
        days = {r.payment_terms_days for r in requests if r.payment_terms_days is not None}
        terms = ensure_payment_terms(self.rpc, days, self._payment_terms) if days else {}
        own = self.ids.currency_code
        self._currency_ids([str(r.currency) for r in requests if r.currency not in (None, own)])
        projects, owner = invoiced_projects(self.rpc, self.ids.company, requests)
        plans = self._plans(requests, projects)
        timed = {p.project: p.request.up_to for p in plans if p.timed and p.existing is None}
        to_invoice: list[int] = []
        if timed:
            pairs: list[Any] = []
            for project, up_to in timed.items():
                pairs += [[project], {"project_invoice_timesheet_up_to": up_to}]
            self.rpc.call("project.work", "write", *pairs)
            due = self.rpc.search_read(
                "project.work", [["id", "in", sorted(timed)]], ["amount_to_invoice"]
            )
            to_invoice = [d["id"] for d in due if d["amount_to_invoice"]]
        charged = [p for p in plans if p.charges]
        heads = self.invoice_heads(
            projects[p.project]["party"]
            for p in charged
            if not p.timed or p.project not in to_invoice
        )
        if to_invoice:  # Tryton refuses the button for a project with nothing to invoice
            self.rpc.call("project.work", "invoice", to_invoice)
        # a refusal of the details written on the drafts parks the command (a resend adopts
        # the unreferenced draft and writes them again): not an endless ambiguous retry
        with after_write(refusals=(TrytonUserError,)):
            return self._adopt(plans, projects, owner, set(to_invoice), terms, heads)

    def _plans(
        self, requests: Sequence[InvoiceRequest], projects: dict[int, dict[str, Any]]
    ) -> list[InvoicePlan]:
        """What each request bills: its time (``timed``), the invoice already carrying its
        reference (with the charges on it), the charges to add (not billed yet, each key
        once in the batch) with their line values. Reads the billed charges (one search)
        and what the lines need (products, taxes) only when some request has charges."""
        by_key = {p["key"]: i for i, p in projects.items()}
        charged = [r for r in requests if r.charges]
        lines = billed_lines(
            self.rpc,
            self.ids.company,
            (c.key for r in charged for c in r.charges),
            (r.reference for r in charged),
        )
        billed = set(net_billed(lines))
        on_reference: dict[str, tuple[int, list[str]]] = {}
        for line in lines:
            if line.reference:
                on_reference.setdefault(line.reference, (line.invoice, []))[1].append(line.key)
        products = self.charge_products(c for r in charged for c in r.charges)
        plans = []
        for request in requests:
            project = projects[by_key[request.project_key]]
            existing, keys = on_reference.get(request.reference, (None, []))
            todo = [] if existing else [c for c in request.charges if c.key not in billed]
            billed.update(c.key for c in todo)
            values: list[dict[str, Any]] = []
            if todo:
                party = int(project["party"])
                rule = (project.get("party.") or {}).get("customer_tax_rule")
                defaults = self.line_defaults(party, rule, (products[c.key] for c in todo))
                currency = self._currencies.get(str(request.currency), self.ids.currency)
                values = charge_line_values(
                    todo,
                    products,
                    defaults,
                    party=party,
                    company=self.ids.company,
                    currency=currency,
                )
            timed = request.include_time and project["project_invoice_method"] == "timesheet"
            plans.append(
                InvoicePlan(
                    request=request,
                    project=project["id"],
                    timed=timed,
                    existing=existing,
                    billed=tuple(sorted(set(keys))),
                    charges=tuple(c.key for c in todo),
                    lines=values,
                )
            )
        return plans

    def _currency_ids(self, codes: Sequence[str]) -> dict[str, int]:
        """Currency ids by code, read once per session. Raises ``LookupError`` for one
        Tryton does not have."""
        wanted = sorted(set(codes) - set(self._currencies))
        if wanted:
            rows = self.rpc.search_read("currency.currency", [["code", "in", wanted]], ["code"])
            self._currencies.update({str(r["code"]): int(r["id"]) for r in rows})
            unknown = [c for c in wanted if c not in self._currencies]
            if unknown:
                raise LookupError(f"currency {', '.join(unknown)} does not exist in Tryton")
        return {c: self._currencies[c] for c in codes}

    def _adopt(
        self,
        plans: Sequence[InvoicePlan],
        projects: dict[int, dict[str, Any]],
        owner: dict[int, int],
        invoiced: set[int],
        terms: dict[int, int],
        heads: dict[int, dict[str, Any]],
    ) -> list[InvoiceState | None]:
        """Give each request the invoice that carries its reference, else (time) a draft of
        its project that carries none: the newest when the button just ran on the project
        (the lines invoiced now), else the oldest (an earlier attempt's, whose answer was
        lost), else (charges) a new invoice; write references, dates, terms
        (:func:`~.invoice_terms.term_values`) and charge lines in one call, create the
        invoices of charges only in one call."""
        timed = [p for p in plans if p.timed and p.existing is None]
        drafts, invoice_lines = (
            project_drafts(self.rpc, owner, [p.request.reference for p in timed])
            if timed
            else ({}, {})
        )
        chosen: list[int | None] = []
        pairs: list[Any] = []
        creates: list[tuple[int, dict[str, Any]]] = []
        for position, plan in enumerate(plans):
            request = plan.request
            invoice = plan.existing
            if invoice is None and plan.timed:
                mine = drafts.setdefault(plan.project, {})
                same = [i for i, ref in mine.items() if ref == request.reference]
                free = sorted(
                    (i for i, ref in mine.items() if ref is None),
                    reverse=plan.project in invoiced,
                )
                invoice = same[0] if same else (free[0] if free else None)
                values = {}
                if invoice is not None and not same:
                    mine[invoice] = request.reference
                    values = self._terms(
                        plan, projects, terms, sorted(invoice_lines.get(invoice, ()))
                    )
                if invoice is not None and plan.lines:
                    values["lines"] = [*values.get("lines", []), ["create", plan.lines]]
                if values:
                    pairs += [[invoice], values]
            if invoice is None and plan.lines:
                project = projects[plan.project]
                values = {
                    "company": self.ids.company,
                    "type": "out",
                    "journal": self.ids.journal_revenue,
                    "party": project["party"],
                    "currency": self.ids.currency,
                    "description": project["name"],
                    **heads.get(int(project["party"]), {}),
                    **self._terms(plan, projects, terms, []),
                    "lines": [["create", plan.lines]],
                }
                creates.append((position, values))
            chosen.append(invoice)
        if pairs:
            self.rpc.call("account.invoice", "write", *pairs)
        if creates:
            made = self.rpc.create("account.invoice", [values for _, values in creates])
            for (position, _), invoice in zip(creates, made, strict=True):
                chosen[position] = invoice
        ids = sorted({i for i in chosen if i is not None})
        found = {i.id: i for i in self.read_invoices([["id", "in", ids]])} if ids else {}
        return [
            replace(found[i], charges=tuple(sorted({*p.billed, *p.charges})))
            if i is not None and i in found
            else None
            for i, p in zip(chosen, plans, strict=True)
        ]

    def _terms(
        self,
        plan: InvoicePlan,
        projects: dict[int, dict[str, Any]],
        terms: dict[int, int],
        lines: list[int],
    ) -> dict[str, Any]:
        """:func:`~.invoice_terms.term_values` of ``plan``'s request."""
        request = plan.request
        party = projects[plan.project].get("party.") or {}
        identifier = party.get("tax_identifier.")
        return term_values(
            request,
            company_currency=self.ids.currency_code,
            currency=self._currencies.get(str(request.currency)),
            lines=lines,
            term=terms.get(request.payment_terms_days)
            if request.payment_terms_days is not None
            else None,
            identifier=tax_identifier([identifier] if identifier else [], request.customer_tax_id),
        )
