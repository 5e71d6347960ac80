"""Invoicing in Tryton: a project's billable lines become a referenced customer invoice,
posted; invoices read back; payments recorded (keys: see :mod:`.operations`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import TrytonIds


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
        """Invoice the project's timesheet lines up to ``up_to`` as invoice ``reference``.

        Returns the (draft) invoice, or ``None`` when there was nothing to invoice. Raises
        ``LookupError`` for an unknown project.
        """
        found = self.find_invoices([reference])
        if reference in found:
            return found[reference]
        works = self.find_works([project_key])
        if project_key not in works:
            raise LookupError(f"project {project_key} does not exist in Tryton")
        project = works[project_key]["id"]
        adopted = self._adopt(project, reference, invoice_date or up_to)
        if adopted is None:
            self.rpc.write("project.work", [project], {"project_invoice_timesheet_up_to": up_to})
            (due,) = self.rpc.search_read(
                "project.work", [["id", "=", project]], ["amount_to_invoice"]
            )
            if not due["amount_to_invoice"]:
                return None  # Tryton refuses to invoice nothing
            self.rpc.call("project.work", "invoice", [project])
            adopted = self._adopt(project, reference, invoice_date or up_to)
        return adopted

    def _adopt(self, project: int, reference: str, invoice_date: date) -> InvoiceState | None:
        """Give ``reference`` to a draft invoice of ``project`` that has none yet."""
        works = self.rpc.search_read(
            "project.work", [["parent", "child_of", [project]]], ["timesheet_works"]
        )
        timesheet_works = [t for w in works for t in w["timesheet_works"]]
        lines = self.rpc.search_read(
            "timesheet.line",
            [
                ["work", "in", timesheet_works],
                ["invoice_line", "!=", None],
                ["invoice_line.invoice.reference", "=", None],
                ["invoice_line.invoice.state", "=", "draft"],
            ],
            ["invoice_line.invoice"],
            limit=1,
        )
        if not lines:
            return None
        invoice = lines[0]["invoice_line."]["invoice"]
        self.rpc.write(
            "account.invoice", [invoice], {"reference": reference, "invoice_date": invoice_date}
        )
        return self.read_invoices([["id", "=", invoice]])[0]

    def post_invoices(self, references: Sequence[str]) -> dict[str, InvoiceState]:
        """Post the draft invoices among ``references`` (posted ones are left as they are)."""
        found = self.find_invoices(references)
        drafts = [i.id for i in found.values() if i.state == "draft"]
        if drafts:
            self.rpc.call("account.invoice", "post", drafts)
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
