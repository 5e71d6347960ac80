"""Invoicing in Tryton: a project's billable lines become a referenced customer invoice of
the connector's company, in the deal's currency with its payment term and legal mention
(:mod:`.invoice_terms`), posted; invoices read back; payments recorded (keys: see
:mod:`.operations`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.invoice_terms import (
    InvoiceRequest,
    MissingRateError,
    ensure_payment_terms,
    rate_refusals,
    tax_identifier,
    term_values,
)
from closeloop.connectors.tryton.keys import WORK_KEY
from closeloop.connectors.tryton.rates import rate_dates
from closeloop.connectors.tryton.rpc import TrytonRPC, TrytonUserError, after_write
from closeloop.connectors.tryton.setup import TrytonIds

__all__ = ["InvoiceRequest", "InvoiceState", "InvoicingOperations", "MissingRateError"]


@dataclass(frozen=True)
class InvoiceState:
    """An invoice as the hub reads it: ``due_date`` is the earliest maturity of its lines to
    pay (``None`` for a draft); ``legal_entity`` the code of its company's entity."""

    id: int
    reference: str | None
    number: str | None
    state: str
    party_code: str | None
    currency: str
    invoice_date: date | None
    untaxed_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    amount_to_pay: Decimal
    write_date: datetime
    due_date: date | None = None
    legal_entity: str | None = None


class InvoicingOperations:
    """The invoicing part of :class:`~.operations.TrytonOperations` (a mixin: it needs
    ``rpc``, ``ids`` and ``find_works`` from the class that combines it, and the session's
    caches below: payment term ids by days, currency ids by code, each currency's earliest
    rate date)."""

    rpc: TrytonRPC
    ids: TrytonIds
    _payment_terms: dict[int, int]
    _currencies: dict[str, int]
    _rates_since: dict[str, date]

    def find_works(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Provided by the project operations."""
        raise NotImplementedError

    def find_invoices(self, references: Sequence[str]) -> dict[str, InvoiceState]:
        """Customer invoices by reference."""
        if not references:
            return {}
        return {
            i.reference: i
            for i in self.read_invoices([["reference", "in", list(references)]])
            if i.reference
        }

    def invoice_project(
        self, project_key: str, up_to: date, reference: str, invoice_date: date | None = None
    ) -> InvoiceState | None:
        """Invoice one project (:meth:`invoice_projects`): the draft invoice, or ``None``."""
        request = InvoiceRequest(project_key, up_to, reference, invoice_date)
        return self.invoice_projects([request])[0]

    def screen_invoices(self, requests: Sequence[InvoiceRequest]) -> dict[str, Exception]:
        """What Tryton would refuse to post among ``requests``, decided before anything is
        created, by reference: a :class:`MissingRateError` for a request in a foreign
        currency without a rate of that currency and of the company's on or before its
        invoice date. One read of rates, only when some request is in a foreign currency
        that this session has not yet seen rates for (currencies and earliest rate dates
        found are remembered)."""
        own = self.ids.currency_code
        foreign = [r for r in requests if r.currency and r.currency != own]
        if not foreign:
            return {}
        since = self._rates_since
        if rate_refusals(foreign, own, self.ids.entity, since):  # not known yet: read
            codes = sorted({str(r.currency) for r in foreign} | {own})
            found = rate_dates(self.rpc, codes, max(r.dated for r in foreign))
            for code, (currency, earliest) in found.items():
                self._currencies[code] = currency
                since[code] = min(earliest, since.get(code, earliest))
        return dict(rate_refusals(foreign, own, self.ids.entity, since))

    def invoice_projects(self, requests: Sequence[InvoiceRequest]) -> list[InvoiceState | None]:
        """Screen ``requests`` (:meth:`screen_invoices`), then :meth:`create_invoices`.

        Raises the first refusal of the screen (:class:`MissingRateError`: then nothing is
        created), and what :meth:`create_invoices` raises.
        """
        refused = self.screen_invoices(requests)
        if refused:
            raise next(iter(refused.values()))
        return self.create_invoices(requests)

    def create_invoices(self, requests: Sequence[InvoiceRequest]) -> list[InvoiceState | None]:
        """Invoice each project's timesheet lines up to its ``up_to`` date as the customer
        invoice ``reference`` of the connector's company, dated ``invoice_date`` (default
        ``up_to``), in the request's currency, with its payment term, mention and VAT number
        (:func:`~.invoice_terms.term_values`); requests screened (:meth:`screen_invoices`).
        Returns, per request, the draft invoice, or ``None`` when the project had nothing to
        invoice.

        Seven calls whatever the count: the projects and their tasks (with the customers'
        identifiers when a request names a VAT number); the up-to dates, written together;
        what each has to invoice; Tryton's ``invoice`` button on all that have something
        (one invoice per project, in the company's currency); the projects' draft invoices
        and their lines found through their timesheet lines; references, dates, currencies,
        payment terms and comments written together; the invoices read. Plus, once per
        session, one search of the "Net <N> days" terms it has not seen (and one create of
        those Tryton lacks), and one read of currencies a request names that the screen did
        not see. A draft made by an earlier attempt whose answer was lost (no reference
        yet), or one already carrying the request's reference, is taken instead of
        invoicing again.

        Raises ``LookupError`` for an unknown project or currency, and Tryton's refusal
        (:class:`~.rpc.TrytonError`) of the button for any project: then none is invoiced.
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
        comments = [WORK_KEY.format(key=r.project_key) for r in requests]
        fields = ["comment", "parent", "timesheet_works"]
        if any(r.customer_tax_id for r in requests):  # the party's tax identifier, as
            fields.append("party.tax_identifier.code")  # Tryton picks it (a tax type)
        works = self.rpc.search_read(
            "project.work",
            [
                ["company", "=", self.ids.company],
                ["OR", [["comment", "in", comments]], [["parent.comment", "in", comments]]],
            ],
            fields,
            context={"active_test": False},
        )
        project_of_key = {
            w["comment"].split(":", 1)[1]: w["id"] for w in works if w["comment"] in comments
        }
        unknown = [r.project_key for r in requests if r.project_key not in project_of_key]
        if unknown:
            raise LookupError(f"project {', '.join(unknown)} does not exist in Tryton")
        projects = set(project_of_key.values())
        owner = {
            t: (w["id"] if w["id"] in projects else w["parent"])
            for w in works
            for t in w["timesheet_works"]
        }
        identifiers = {
            w["id"]: [found]
            for w in works
            if w["id"] in projects and (found := (w.get("party.") or {}).get("tax_identifier."))
        }
        wanted = {project_of_key[r.project_key]: r.up_to for r in requests}
        pairs: list[Any] = []
        for project, up_to in wanted.items():
            pairs += [[project], {"project_invoice_timesheet_up_to": up_to}]
        self.rpc.call("project.work", "write", *pairs)
        due = self.rpc.search_read(
            "project.work", [["id", "in", sorted(wanted)]], ["amount_to_invoice"]
        )
        to_invoice = [d["id"] for d in due if d["amount_to_invoice"]]
        if to_invoice:  # Tryton refuses the button for a project with nothing to invoice
            self.rpc.call("project.work", "invoice", to_invoice)
        # a refusal of the details written on the drafts parks the command (a resend adopts
        # the unreferenced draft and writes them again): not an endless ambiguous retry
        with after_write(refusals=(TrytonUserError,)):
            return self._adopt(requests, project_of_key, owner, set(to_invoice), terms, identifiers)

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
        requests: Sequence[InvoiceRequest],
        project_of_key: dict[str, int],
        owner: dict[int, int],
        invoiced: set[int],
        terms: dict[int, int],
        identifiers: dict[int, list[dict[str, Any]]],
    ) -> list[InvoiceState | None]:
        """Give each request the draft invoice of its project that carries its reference,
        else one that carries none: the newest when the button just ran on the project (the
        lines invoiced now), else the oldest (an earlier attempt's, whose answer was lost);
        write references, dates and terms (:func:`~.invoice_terms.term_values`) in one
        call."""
        references = [r.reference for r in requests]
        lines = self.rpc.search_read(
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
        chosen: list[int | None] = []
        pairs: list[Any] = []
        for request in requests:
            project = project_of_key[request.project_key]
            mine = drafts.setdefault(project, {})
            same = [i for i, ref in mine.items() if ref == request.reference]
            free = sorted(
                (i for i, ref in mine.items() if ref is None), reverse=project in invoiced
            )
            invoice = same[0] if same else (free[0] if free else None)
            chosen.append(invoice)
            if invoice is not None and not same:
                mine[invoice] = request.reference
                values = term_values(
                    request,
                    company_currency=self.ids.currency_code,
                    currency=self._currencies.get(str(request.currency)),
                    lines=sorted(invoice_lines.get(invoice, ())),
                    term=terms.get(request.payment_terms_days)
                    if request.payment_terms_days is not None
                    else None,
                    identifier=tax_identifier(
                        identifiers.get(project, []), request.customer_tax_id
                    ),
                )
                pairs += [[invoice], values]
        if pairs:
            self.rpc.call("account.invoice", "write", *pairs)
        ids = sorted({i for i in chosen if i is not None})
        found = {i.id: i for i in self.read_invoices([["id", "in", ids]])} if ids else {}
        return [found.get(i) if i is not None else None for i in chosen]

    def post_invoices(self, references: Sequence[str]) -> dict[str, InvoiceState]:
        """Post the draft invoices among ``references`` in one call (posted ones are left as
        they are); the invoices by reference after it. Three calls. Raises Tryton's refusal
        (:class:`~.rpc.TrytonError`, a closed period say) of any: then none is posted."""
        found = self.find_invoices(references)
        drafts = [i.id for i in found.values() if i.state == "draft"]
        if drafts:
            self.rpc.call("account.invoice", "post", drafts)
            with after_write():
                found = self.find_invoices(references)
        return found

    def read_invoices(
        self, domain: list[Any], *, limit: int | None = None, order: list[list[str]] | None = None
    ) -> list[InvoiceState]:
        """Customer invoices of the connector's company matching ``domain``."""
        rows = self.rpc.search_read(
            "account.invoice",
            [["type", "=", "out"], ["company", "=", self.ids.company], *domain],
            [
                "reference",
                "number",
                "state",
                "party.code",
                "currency.code",
                "invoice_date",
                "untaxed_amount",
                "tax_amount",
                "total_amount",
                "amount_to_pay",
                "write_date",
                "create_date",
                "lines_to_pay.maturity_date",
            ],
            limit=limit,
            order=order,
        )
        return [
            InvoiceState(
                id=r["id"],
                reference=r["reference"],
                number=r["number"],
                state=r["state"],
                party_code=(r.get("party.") or {}).get("code"),
                currency=(r.get("currency.") or {}).get("code", ""),
                invoice_date=r["invoice_date"],
                untaxed_amount=r["untaxed_amount"],
                tax_amount=r["tax_amount"],
                total_amount=r["total_amount"],
                amount_to_pay=r["amount_to_pay"] or Decimal(0),
                write_date=r["write_date"] or r["create_date"],
                due_date=_due_date(r.get("lines_to_pay.") or []),
                legal_entity=self.ids.entity,
            )
            for r in rows
        ]

    def record_payment(self, reference: str, key: str, amount: Decimal, on: date) -> bool:
        """Pay ``amount`` on invoice ``reference`` through the Bank method (partial payments
        allowed); ``False`` when a payment with ``key`` was already recorded.

        Raises ``LookupError`` for an unknown invoice.
        """
        found = self.find_invoices([reference])
        if reference not in found:
            raise LookupError(f"invoice {reference} does not exist in Tryton")
        invoice = found[reference].id
        if self.rpc.search_read(
            "account.move",
            [["description", "=", key], ["origin", "=", f"account.invoice,{invoice}"]],
            ["id"],
            limit=1,
        ):
            return False
        ctx = {
            **self.rpc.context,
            "active_model": "account.invoice",
            "active_id": invoice,
            "active_ids": [invoice],
        }
        session, _, _ = self.rpc.call_raw("wizard.account.invoice.pay.create", [ctx])
        try:
            start = self.rpc.call_raw(
                "wizard.account.invoice.pay.execute", [session, {}, "start", ctx]
            )
            values = _defaults(start)
            values.update(
                {
                    "amount": amount,
                    "payment_method": self.ids.payment_method,
                    "date": on,
                    "description": key,
                }
            )
            answer = self.rpc.call_raw(
                "wizard.account.invoice.pay.execute", [session, {"start": values}, "choice", ctx]
            )
            if answer.get("view"):  # partial payment: say so
                ask = {**_defaults(answer), "type": "partial"}
                self.rpc.call_raw(
                    "wizard.account.invoice.pay.execute",
                    [session, {"start": values, "ask": ask}, "pay", ctx],
                )
        finally:
            self.rpc.call_raw("wizard.account.invoice.pay.delete", [session, ctx])
        return True


def _due_date(lines_to_pay: list[dict[str, Any]]) -> date | None:
    """The earliest maturity date of an invoice's lines to pay (none for a draft)."""
    return min((p["maturity_date"] for p in lines_to_pay if p.get("maturity_date")), default=None)


def _defaults(answer: dict[str, Any]) -> dict[str, Any]:
    """A wizard view's defaults without the ``field.`` helper keys (tryton.md)."""
    return {k: v for k, v in answer["view"]["defaults"].items() if not k.endswith(".")}
