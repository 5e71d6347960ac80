"""Payments in Tryton: an amount paid on a customer invoice, through the pay wizard with the
company's "Bank" method; keyed by the payment move's ``description`` (the wizard's
description), with the invoice as the move's origin."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.invoice_reads import InvoiceReading


class PaymentOperations(InvoiceReading):
    """The payment part of :class:`~.operations.TrytonOperations` (a mixin: it needs ``rpc``
    and ``ids``)."""

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
