"""Invoicing in Tryton: a project's billable lines become a referenced customer invoice,
posted; invoices read back; payments recorded (keys: see :mod:`.operations`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.keys import WORK_KEY
from closeloop.connectors.tryton.rpc import TrytonRPC, after_write
from closeloop.connectors.tryton.setup import TrytonIds


@dataclass(frozen=True)
class InvoiceRequest:
    """Invoice project ``project_key``'s lines up to ``up_to`` as ``reference``, dated
    ``invoice_date`` (default ``up_to``)."""

    project_key: str
    up_to: date
    reference: str
    invoice_date: date | None = None


@dataclass(frozen=True)
class InvoiceState:
    """An invoice as the hub reads it."""

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


class InvoicingOperations:
    """The invoicing part of :class:`~.operations.TrytonOperations` (a mixin: it needs
    ``rpc``, ``ids`` and ``find_works`` from the class that combines it)."""

    rpc: TrytonRPC
    ids: TrytonIds

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
        return self.invoice_projects([InvoiceRequest(project_key, up_to, reference, invoice_date)])[
            0
        ]

    def invoice_projects(self, requests: Sequence[InvoiceRequest]) -> list[InvoiceState | None]:
        """Invoice each project's timesheet lines up to its ``up_to`` date as the customer
        invoice ``reference``, dated ``invoice_date`` (default ``up_to``). Returns, per
        request, the draft invoice, or ``None`` when the project had nothing to invoice.

        Seven calls whatever the count: the projects and their tasks; the up-to dates,
        written together; what each has to invoice; Tryton's ``invoice`` button on all that
        have something (one invoice per project); the projects' draft invoices found through
        their timesheet lines; references and dates written together; the invoices read.
        A draft made by an earlier attempt whose answer was lost (no reference yet), or one
        already carrying the request's reference, is taken instead of invoicing again.

        Raises ``LookupError`` for an unknown project, and Tryton's refusal
        (:class:`~.rpc.TrytonError`) of the button for any project: then none is invoiced.
        """
        if not requests:
            return []
        keys = [r.project_key for r in requests]
        if len(set(keys)) < len(keys):  # each would take the other's lines: one per call
            raise ValueError(f"one invoice per project per call: {sorted(keys)}")
        comments = [WORK_KEY.format(key=r.project_key) for r in requests]
        works = self.rpc.search_read(
            "project.work",
            ["OR", [["comment", "in", comments]], [["parent.comment", "in", comments]]],
            ["comment", "parent", "timesheet_works"],
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
        with after_write():
            return self._adopt(requests, project_of_key, owner, set(to_invoice))

    def _adopt(
        self,
        requests: Sequence[InvoiceRequest],
        project_of_key: dict[str, int],
        owner: dict[int, int],
        invoiced: set[int],
    ) -> list[InvoiceState | None]:
        """Give each request the draft invoice of its project that carries its reference,
        else one that carries none: the newest when the button just ran on the project (the
        lines invoiced now), else the oldest (an earlier attempt's, whose answer was lost);
        write references and dates in one call."""
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
            ["work", "invoice_line.invoice", "invoice_line.invoice.reference"],
        )
        drafts: dict[int, dict[int, str | None]] = {}
        for line in lines:
            invoice_line = line["invoice_line."]
            invoice = invoice_line["invoice"]
            reference = (invoice_line.get("invoice.") or {}).get("reference")
            drafts.setdefault(owner[line["work"]], {})[invoice] = reference
        chosen: list[int | None] = []
        pairs: list[Any] = []
        for request in requests:
            mine = drafts.setdefault(project_of_key[request.project_key], {})
            same = [i for i, ref in mine.items() if ref == request.reference]
            project = project_of_key[request.project_key]
            free = sorted(
                (i for i, ref in mine.items() if ref is None), reverse=project in invoiced
            )
            invoice = same[0] if same else (free[0] if free else None)
            chosen.append(invoice)
            if invoice is not None and not same:
                mine[invoice] = request.reference
                values = {
                    "reference": request.reference,
                    "invoice_date": request.invoice_date or request.up_to,
                }
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
        """Customer invoices matching ``domain``."""
        rows = self.rpc.search_read(
            "account.invoice",
            [["type", "=", "out"], *domain],
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


def _defaults(answer: dict[str, Any]) -> dict[str, Any]:
    """A wizard view's defaults without the ``field.`` helper keys (tryton.md)."""
    return {k: v for k, v in answer["view"]["defaults"].items() if not k.endswith(".")}
