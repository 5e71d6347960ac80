"""``closeloop tryton init``: prepare a fresh Tryton database, idempotently.

Company, currency, chart of accounts (Tryton's "Universal Chart of Accounts"), a fiscal year
with monthly periods and invoice sequences, a sales tax, a service product category and the
"Consulting" service product (unit: hour), and a bank payment method. Every step looks for
what an earlier run made before creating anything, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pycountry

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.money import minor_unit

SETUP_VERSION = 1
"""Bump when :func:`initialize` changes: sandboxes then build a new pristine database."""

CHART_TEMPLATE = "Universal Chart of Accounts"
RECEIVABLE_CODE = "1.2.1"  # Accounts, Notes And Loans Receivable
PAYABLE_CODE = "2.1.1"  # Trade Payables
REVENUE_CODE = "4.2.2"  # Services Revenue
TAX_CODE = "2.2.3"  # Accrued Taxes (Other Than Payroll)
CASH_CODE = "1.1.1"  # Cash and Cash Equivalents


@dataclass(frozen=True)
class TrytonSetup:
    """What the firm's ERP needs: its legal name, currency, fiscal years, sales tax rate,
    and the service product time is billed with."""

    company_name: str = "closeloop Consulting GmbH"
    currency: str = "EUR"
    fiscal_years: tuple[int, ...] = field(
        default_factory=lambda: tuple(datetime.now(UTC).year + d for d in (-1, 0, 1))
    )
    tax_name: str = "VAT 19%"
    tax_rate: Decimal = Decimal("0.19")
    service_name: str = "Consulting"
    service_list_price: Decimal = Decimal("100")


@dataclass
class TrytonIds:
    """Ids of what :func:`initialize` made or found, for the operations that need them."""

    company: int
    currency: int
    receivable: int
    payable: int
    revenue: int
    tax: int
    product: int
    hour: int
    payment_method: int
    journal_revenue: int


def _one(rpc: TrytonRPC, model: str, domain: list[Any]) -> int | None:
    rows = rpc.search_read(model, domain, ["id"], limit=1)
    return int(rows[0]["id"]) if rows else None


def ensure_currency(rpc: TrytonRPC, code: str) -> int:
    """The id of currency ``code``, created from ISO 4217 when missing."""
    found = _one(rpc, "currency.currency", [["code", "=", code]])
    if found:
        return found
    record = pycountry.currencies.get(alpha_3=code)
    digits = minor_unit(code)
    return rpc.create(
        "currency.currency",
        [
            {
                "name": record.name if record else code,
                "code": code,
                "symbol": code,
                "rounding": Decimal(1).scaleb(-digits),
                "digits": digits,
            }
        ],
    )[0]


def ensure_country(rpc: TrytonRPC, alpha_2: str) -> int:
    """The id of country ``alpha_2``, created from ISO 3166 when missing."""
    found = _one(rpc, "country.country", [["code", "=", alpha_2]])
    if found:
        return found
    record = pycountry.countries.get(alpha_2=alpha_2)
    if record is None:
        raise ValueError(f"{alpha_2!r} is not an ISO 3166 country code")
    return rpc.create(
        "country.country",
        [
            {
                "name": record.name,
                "code": alpha_2,
                "code3": record.alpha_3,
            }
        ],
    )[0]


def _account(rpc: TrytonRPC, company: int, code: str) -> int:
    found = _one(rpc, "account.account", [["company", "=", company], ["code", "=", code]])
    if found is None:
        raise LookupError(f"account {code} is missing from the chart of company {company}")
    return found


def initialize(rpc: TrytonRPC, setup: TrytonSetup) -> TrytonIds:
    """Make (or find) everything billing needs; returns the ids."""
    currency = ensure_currency(rpc, setup.currency)
    company = _one(rpc, "company.company", [])
    if company is None:
        party = rpc.create("party.party", [{"name": setup.company_name}])[0]
        company = rpc.create("company.company", [{"party": party, "currency": currency}])[0]
    if rpc.context.get("company") != company:
        rpc.write(
            "res.user", [rpc.uid or 0], {"companies": [["add", [company]]], "company": company}
        )
        rpc.reload_context()
    if _one(rpc, "account.account", [["company", "=", company]]) is None:
        template = _one(
            rpc, "account.account.template", [["name", "=", CHART_TEMPLATE], ["parent", "=", None]]
        )
        rpc.run_wizard(
            "account.create_chart",
            [
                ("start", {}),
                ("create_account", {"account": {"company": company, "account_template": template}}),
            ],
        )
    receivable = _account(rpc, company, RECEIVABLE_CODE)
    payable = _account(rpc, company, PAYABLE_CODE)
    defaults = rpc.search_read("account.configuration", [], ["default_account_receivable"])
    if not defaults or not defaults[0].get("default_account_receivable"):
        rpc.run_wizard(
            "account.create_chart",
            [
                (
                    "create_properties",
                    {
                        "properties": {
                            "company": company,
                            "account_receivable": receivable,
                            "account_payable": payable,
                        }
                    },
                )
            ],
        )
    for year in setup.fiscal_years:
        _ensure_fiscal_year(rpc, company, year)
    revenue = _account(rpc, company, REVENUE_CODE)
    tax_account = _account(rpc, company, TAX_CODE)
    tax = _one(rpc, "account.tax", [["name", "=", setup.tax_name], ["company", "=", company]])
    if tax is None:
        tax = rpc.create(
            "account.tax",
            [
                {
                    "name": setup.tax_name,
                    "description": setup.tax_name,
                    "type": "percentage",
                    "rate": setup.tax_rate,
                    "company": company,
                    "invoice_account": tax_account,
                    "credit_note_account": tax_account,
                }
            ],
        )[0]
    hour = _one(rpc, "product.uom", [["symbol", "=", "h"]])
    assert hour is not None
    category = _one(rpc, "product.category", [["name", "=", "Services"]])
    if category is None:
        category = rpc.create(
            "product.category",
            [
                {
                    "name": "Services",
                    "accounting": True,
                    "account_revenue": revenue,
                    "customer_taxes": [["add", [tax]]],
                }
            ],
        )[0]
    product = _one(rpc, "product.product", [["template.name", "=", setup.service_name]])
    if product is None:
        template_id = rpc.create(
            "product.template",
            [
                {
                    "name": setup.service_name,
                    "type": "service",
                    "default_uom": hour,
                    "list_price": setup.service_list_price,
                    "account_category": category,
                    "products": [["create", [{}]]],
                }
            ],
        )[0]
        product = _one(rpc, "product.product", [["template", "=", template_id]])
        assert product is not None
    cash_journal = _one(rpc, "account.journal", [["type", "=", "cash"]])
    revenue_journal = _one(rpc, "account.journal", [["type", "=", "revenue"]])
    assert cash_journal is not None and revenue_journal is not None
    method = _one(rpc, "account.invoice.payment.method", [["name", "=", "Bank"]])
    if method is None:
        cash = _account(rpc, company, CASH_CODE)
        method = rpc.create(
            "account.invoice.payment.method",
            [
                {
                    "name": "Bank",
                    "company": company,
                    "journal": cash_journal,
                    "debit_account": cash,
                    "credit_account": cash,
                }
            ],
        )[0]
    return find_ids(rpc, setup)


def find_ids(rpc: TrytonRPC, setup: TrytonSetup) -> TrytonIds:
    """The ids of what :func:`initialize` makes, looked up without writing anything (for a
    production ERP). Raises ``LookupError`` naming what is missing."""

    def need(what: str, found: int | None) -> int:
        if found is None:
            raise LookupError(f"Tryton has no {what}: run `closeloop tryton init` first")
        return found

    company = need("company", _one(rpc, "company.company", []))
    if rpc.context.get("company") != company:
        raise LookupError(f"the Tryton user {rpc.user!r} does not work in company {company}")
    return TrytonIds(
        company=company,
        currency=need(
            "currency " + setup.currency,
            _one(rpc, "currency.currency", [["code", "=", setup.currency]]),
        ),
        receivable=_account(rpc, company, RECEIVABLE_CODE),
        payable=_account(rpc, company, PAYABLE_CODE),
        revenue=_account(rpc, company, REVENUE_CODE),
        tax=need(
            "tax " + setup.tax_name,
            _one(rpc, "account.tax", [["name", "=", setup.tax_name], ["company", "=", company]]),
        ),
        product=need(
            "product " + setup.service_name,
            _one(rpc, "product.product", [["template.name", "=", setup.service_name]]),
        ),
        hour=need("unit h", _one(rpc, "product.uom", [["symbol", "=", "h"]])),
        payment_method=need(
            "payment method Bank",
            _one(rpc, "account.invoice.payment.method", [["name", "=", "Bank"]]),
        ),
        journal_revenue=need(
            "revenue journal", _one(rpc, "account.journal", [["type", "=", "revenue"]])
        ),
    )


def _ensure_fiscal_year(rpc: TrytonRPC, company: int, year: int) -> int:
    found = _one(rpc, "account.fiscalyear", [["company", "=", company], ["name", "=", str(year)]])
    if found:
        return found
    move_type = _one(rpc, "ir.sequence.type", [["name", "=", "Account Move"]])
    invoice_type = _one(rpc, "ir.sequence.type", [["name", "=", "Invoice"]])
    move_seq = rpc.create(
        "ir.sequence.strict",
        [{"name": f"Moves {year}", "sequence_type": move_type, "company": company}],
    )[0]
    invoice_seq = rpc.create(
        "ir.sequence.strict",
        [
            {
                "name": f"Invoices {year}",
                "sequence_type": invoice_type,
                "company": company,
                "prefix": f"INV/{year}/",
                "padding": 4,
            }
        ],
    )[0]
    fiscal_year = rpc.create(
        "account.fiscalyear",
        [
            {
                "name": str(year),
                "start_date": date(year, 1, 1),
                "end_date": date(year, 12, 31),
                "company": company,
                "move_sequence": move_seq,
                "invoice_sequences": [
                    [
                        "create",
                        [
                            {
                                "company": company,
                                "out_invoice_sequence": invoice_seq,
                                "out_credit_note_sequence": invoice_seq,
                                "in_invoice_sequence": invoice_seq,
                                "in_credit_note_sequence": invoice_seq,
                            }
                        ],
                    ]
                ],
            }
        ],
    )[0]
    rpc.call("account.fiscalyear", "create_period", [fiscal_year])
    return fiscal_year
