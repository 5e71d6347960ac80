"""Billable items, invoices and payments (the ERP side)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

from pydantic import Field, model_validator

from closeloop.domain.canonical.base import Canonical, CurrencyCode, Quantity, Ref
from closeloop.domain.lifecycle import BillableItemState, InvoiceState
from closeloop.domain.money import Money, round_to_currency


class BillableKind(StrEnum):
    """What a billable item bills."""

    TIME = "time"
    EXPENSE = "expense"
    MILESTONE = "milestone"
    RETAINER = "retainer"


class BillableItem(Canonical):
    """Something billable: ``amount`` is ``quantity`` times ``unit_price``, rounded."""

    CANONICAL_TYPE = "billable_item"
    kind: BillableKind
    source: Ref = Field(description="the time entry, expense or milestone it bills")
    project: Ref
    quantity: Quantity
    unit_price: Money
    amount: Money
    state: BillableItemState = BillableItemState.CAPTURED
    period: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")

    @model_validator(mode="after")
    def _amount(self) -> BillableItem:
        expected = self.unit_price * self.quantity
        if self.amount != expected:
            raise ValueError(f"amount {self.amount} is not quantity x unit price = {expected}")
        return self


class TaxLine(Canonical):
    """Tax on an invoice line: ``rate`` as a fraction (0.19 for 19 %)."""

    CANONICAL_TYPE = "tax_line"
    name: str = Field(min_length=1)
    rate: Quantity
    amount: Money


class InvoiceLine(Canonical):
    """One invoice line."""

    CANONICAL_TYPE = "invoice_line"
    description: str = Field(min_length=1)
    quantity: Quantity
    unit_price: Money
    amount: Money
    taxes: tuple[TaxLine, ...] = ()
    project: Ref | None = None


class Invoice(Canonical):
    """A customer invoice or credit note.

    ``untaxed_amount``, ``tax_amount`` and ``total`` must agree with the lines (to the minor
    unit); ``amount_paid`` is at most the total (in absolute value: a credit note's amounts
    are negative). Version 2: ``credited_reference``, the reference of the invoice a credit
    note credits.
    """

    CANONICAL_TYPE = "invoice"
    SCHEMA_VERSION = 2
    number: str | None = None
    account: Ref
    engagement: Ref | None = None
    reference: str | None = None
    invoice_date: date | None = None
    due_date: date | None = None
    currency: CurrencyCode
    lines: tuple[InvoiceLine, ...] = ()
    untaxed_amount: Money
    tax_amount: Money
    total: Money
    amount_paid: Money | None = None
    state: InvoiceState = InvoiceState.DRAFT
    is_credit_note: bool = False
    credited_reference: str | None = None

    @model_validator(mode="after")
    def _totals(self) -> Invoice:
        problems = []
        amounts = [self.untaxed_amount, self.tax_amount, self.total]
        if self.amount_paid is not None:
            amounts.append(self.amount_paid)
        if any(a.currency != self.currency for a in amounts):
            problems.append(f"amounts must be in the invoice currency {self.currency}")
        elif self.untaxed_amount + self.tax_amount != self.total:
            problems.append(
                f"total {self.total} is not untaxed {self.untaxed_amount} + tax {self.tax_amount}"
            )
        if self.lines and not problems:
            untaxed = sum((line.amount.amount for line in self.lines), Decimal(0))
            tax = sum((t.amount.amount for line in self.lines for t in line.taxes), Decimal(0))
            if round_to_currency(untaxed, self.currency) != self.untaxed_amount.amount:
                problems.append(
                    f"lines add up to {untaxed}, untaxed amount is {self.untaxed_amount}"
                )
            has_taxes = any(line.taxes for line in self.lines)
            if has_taxes and round_to_currency(tax, self.currency) != self.tax_amount.amount:
                problems.append(f"line taxes add up to {tax}, tax amount is {self.tax_amount}")
        if (
            self.amount_paid is not None
            and not problems
            and abs(self.total.amount) < abs(self.amount_paid.amount)
        ):
            problems.append(f"amount paid {self.amount_paid} exceeds the total {self.total}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def outstanding(self) -> Money:
        """What is still due."""
        return self.total - (self.amount_paid or Money.zero(self.currency))


class Payment(Canonical):
    """A payment received against an invoice."""

    CANONICAL_TYPE = "payment"
    invoice: Ref
    payment_date: date
    amount: Money
    method: str | None = None
    reference: str | None = None
