"""UK VAT tax rates of a Xero organisation and invoice totals computed as Xero computes them.

Tax types are Xero's UK names (Accounting API ``TaxType`` enum; Xero's "Tax types" page for
the UK): ``OUTPUT2`` 20% VAT on income, ``RROUTPUT`` 5%, ``ZERORATEDOUTPUT`` zero rated
income, ``EXEMPTOUTPUT`` exempt, ``ECZROUTPUTSERVICES`` zero-rated EC services (the seller's
side of a reverse-charged supply of services), ``ECZROUTPUT`` zero-rated EC goods,
``NONE`` no VAT.

Totals (Xero's "Invoices" page, ``LineAmountTypes``; the organisation's default "round tax
per line"):

- a line's ``LineAmount`` is ``Quantity * UnitAmount`` less ``DiscountRate`` percent,
  rounded to 2 decimals;
- ``Exclusive``: the line's tax is ``LineAmount * rate`` rounded to 2 decimals;
  ``SubTotal`` sums the line amounts, ``Total`` is ``SubTotal + TotalTax``;
- ``Inclusive``: the line amount includes its tax, which is
  ``LineAmount * rate / (1 + rate)`` rounded to 2 decimals; the untaxed amount is
  ``LineAmount - tax``; ``SubTotal`` sums the untaxed amounts, ``Total`` the line amounts;
- ``NoTax``: every line's tax is 0.

Rounding is half away from zero (Xero's documentation does not say; this is what its
examples show for halves).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from closeloop.sandboxes.xero.wire import CENT

LINE_AMOUNT_TYPES = ("Exclusive", "Inclusive", "NoTax")


@dataclass(frozen=True)
class TaxRate:
    """One tax rate: Xero's ``TaxType`` code, its name, its percent and report type."""

    tax_type: str
    name: str
    percent: Decimal
    report_tax_type: str

    def render(self) -> dict[str, Any]:
        """The ``TaxRate`` object of ``GET /TaxRates``."""
        return {
            "Name": self.name,
            "TaxType": self.tax_type,
            "ReportTaxType": self.report_tax_type,
            "CanApplyToAssets": False,
            "CanApplyToEquity": False,
            "CanApplyToExpenses": False,
            "CanApplyToLiabilities": False,
            "CanApplyToRevenue": True,
            "DisplayTaxRate": self.percent,
            "EffectiveRate": self.percent,
            "Status": "ACTIVE",
            "TaxComponents": [
                {
                    "Name": "VAT",
                    "Rate": self.percent,
                    "IsCompound": False,
                    "IsNonRecoverable": False,
                }
            ],
        }


UK_RATES: dict[str, TaxRate] = {
    rate.tax_type: rate
    for rate in (
        TaxRate("OUTPUT2", "20% (VAT on Income)", Decimal("20.0000"), "OUTPUT"),
        TaxRate("RROUTPUT", "5% (VAT on Income)", Decimal("5.0000"), "OUTPUT"),
        TaxRate("ZERORATEDOUTPUT", "Zero Rated Income", Decimal("0.0000"), "OUTPUT"),
        TaxRate("EXEMPTOUTPUT", "Exempt Income", Decimal("0.0000"), "EXEMPTOUTPUT"),
        TaxRate(
            "ECZROUTPUTSERVICES", "Zero Rated EC Services", Decimal("0.0000"), "ECOUTPUTSERVICES"
        ),
        TaxRate("ECZROUTPUT", "Zero Rated EC Goods Income", Decimal("0.0000"), "ECOUTPUT"),
        TaxRate("NONE", "No VAT", Decimal("0.0000"), "NONE"),
    )
}


def cents(value: Decimal) -> Decimal:
    """``value`` rounded to 2 decimals, half away from zero."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def line_amount(quantity: Decimal, unit_amount: Decimal, discount_rate: Decimal) -> Decimal:
    """``Quantity * UnitAmount`` less ``DiscountRate`` percent, to the penny."""
    return cents(quantity * unit_amount * (Decimal(100) - discount_rate) / Decimal(100))


def line_tax(amount: Decimal, percent: Decimal, amount_types: str) -> Decimal:
    """The tax of one line of ``amount`` at ``percent`` for ``amount_types``
    (``Exclusive``, ``Inclusive`` or ``NoTax``), to the penny."""
    if amount_types == "NoTax" or percent == 0:
        return Decimal("0.00")
    rate = percent / Decimal(100)
    if amount_types == "Inclusive":
        return cents(amount * rate / (1 + rate))
    return cents(amount * rate)


def totals(lines: list[tuple[Decimal, Decimal]], amount_types: str) -> tuple[Decimal, ...]:
    """``(SubTotal, TotalTax, Total)`` of lines given as ``(LineAmount, TaxAmount)``."""
    tax = sum((t for _, t in lines), Decimal("0.00"))
    amounts = sum((a for a, _ in lines), Decimal("0.00"))
    if amount_types == "Inclusive":
        return amounts - tax, tax, amounts
    return amounts, tax, amounts + tax
