"""Customer invoices read back from Tryton: the hub's view of an invoice or credit note
(:class:`InvoiceState`), in the connector's company only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import TrytonIds

INVOICE_FIELDS = [
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
    "sequence_type_cache",
    "origin_invoices.reference",
]
"""What :meth:`InvoiceReading.read_invoices` reads of an invoice."""


@dataclass(frozen=True)
class InvoiceState:
    """An invoice as the hub reads it: ``due_date`` is the earliest maturity of its lines to
    pay (``None`` for a draft); ``legal_entity`` the code of its company's entity;
    ``is_credit_note``: a credit note (its lines credit another invoice's, or its total is
    negative), ``credited_reference`` the reference of the invoice it credits; ``charges``:
    the charge keys it bills, when the call that returned it says (:mod:`.charges`)."""

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
    is_credit_note: bool = False
    credited_reference: str | None = None
    charges: tuple[str, ...] = ()


class InvoiceReading:
    """Reading invoices back (a mixin of :class:`~.operations.TrytonOperations`: it needs
    ``rpc`` and ``ids``)."""

    rpc: TrytonRPC
    ids: TrytonIds

    def find_invoices(self, references: Sequence[str]) -> dict[str, InvoiceState]:
        """Customer invoices by reference."""
        if not references:
            return {}
        return {
            i.reference: i
            for i in self.read_invoices([["reference", "in", list(references)]])
            if i.reference
        }

    def read_invoices(
        self, domain: list[Any], *, limit: int | None = None, order: list[list[str]] | None = None
    ) -> list[InvoiceState]:
        """Customer invoices and credit notes of the connector's company matching ``domain``
        (one read)."""
        rows = self.rpc.search_read(
            "account.invoice",
            [["type", "=", "out"], ["company", "=", self.ids.company], *domain],
            INVOICE_FIELDS,
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
                is_credit_note=bool(r.get("origin_invoices."))
                or r["sequence_type_cache"] == "credit_note"
                or r["total_amount"] < 0,
                credited_reference=_credited_reference(r),
            )
            for r in rows
        ]


def _credited_reference(row: dict[str, Any]) -> str | None:
    """The reference of the invoice a credit note row credits (the first by reference when
    it credits several; ``None`` for an invoice, or an original without reference)."""
    references = [o["reference"] for o in row.get("origin_invoices.") or [] if o.get("reference")]
    return min(references) if references else None


def _due_date(lines_to_pay: list[dict[str, Any]]) -> date | None:
    """The earliest maturity date of an invoice's lines to pay (none for a draft)."""
    return min((p["maturity_date"] for p in lines_to_pay if p.get("maturity_date")), default=None)
