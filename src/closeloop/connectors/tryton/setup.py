"""``closeloop tryton init``: prepare a Tryton database for closeloop, idempotently, with one
company per legal entity.

Per entity (:class:`TrytonSetup`, made from a configured
:class:`~closeloop.domain.entities.LegalEntity`): a company whose party ``code`` is the
entity code (an existing company of that name whose party has no code of its own is
adopted: databases made by the earlier, single-company version; as Tryton never changes a
party's code, its party gets an identifier without type holding the entity code), in the
entity's currency;
its chart of accounts (Tryton's "Universal Chart of Accounts") with its receivable and
payable defaults; fiscal years with monthly periods and their own sequences (invoice numbers
``<entity>/<year>/0001``); its taxes by treatment and tax rules (:mod:`.taxes`); its revenue
account and domestic tax on the shared "Services" category; a "Bank" payment method. Shared
by all: the "Consulting" service product (unit: hour). The hub user gets every company, with
the company filter "all" (Tryton's record rules filter by the user's companies, whatever
company a call acts in). Every step looks for what an earlier run made before creating
anything, so running it again creates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.basics import (
    accounts,
    ensure_country,
    ensure_currencies,
    ensure_currency,
    one,
)
from closeloop.connectors.tryton.company import (
    ENTITY_FIELDS,
    ensure_chart,
    ensure_company,
    ensure_fiscal_years,
    ensure_product,
    ensure_user,
    entity_domain,
)
from closeloop.connectors.tryton.company import entity_code as entity_code_of
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.taxes import ensure_category, ensure_taxes, find_taxes
from closeloop.domain.entities import LegalEntity
from closeloop.domain.taxrules import TaxTreatment

__all__ = [
    "DEFAULT_ENTITY",
    "SETUP_VERSION",
    "TrytonIds",
    "TrytonSetup",
    "ensure_country",
    "ensure_currencies",
    "ensure_currency",
    "find_ids",
    "initialize",
    "initialize_entities",
]

SETUP_VERSION = 3
"""Bump when :func:`initialize` changes: sandboxes then build a new pristine database."""

SERVICE_NAME = "Consulting"
RECEIVABLE_CODE = "1.2.1"  # Accounts, Notes And Loans Receivable
PAYABLE_CODE = "2.1.1"  # Trade Payables
REVENUE_CODE = "4.2.2"  # Services Revenue
TAX_CODE = "2.2.3"  # Accrued Taxes (Other Than Payroll)
CASH_CODE = "1.1.1"  # Cash and Cash Equivalents
EXCHANGE_CODE = "6.2.1"  # Foreign Currency Transaction Gain (Loss)

DEFAULT_ENTITY = LegalEntity(
    code="DEFAULT",
    name="closeloop Consulting GmbH",
    country="DE",
    currency="EUR",
    vat_registered=True,
    standard_rate=Decimal("0.19"),
)
"""The one company of a database when the configuration names no legal entity."""


def _years() -> tuple[int, ...]:
    return tuple(datetime.now(UTC).year + d for d in (-1, 0, 1))


@dataclass(frozen=True)
class TrytonSetup:
    """What one legal entity's company needs: the entity ``code`` (its company party's
    code), legal name, country (ISO 3166 alpha-2), functional currency (ISO 4217), VAT
    registration and standard rate (a fraction), its fiscal years; and the shared service
    product time is billed with. The defaults are :data:`DEFAULT_ENTITY`'s."""

    code: str = DEFAULT_ENTITY.code
    company_name: str = DEFAULT_ENTITY.name
    country: str = DEFAULT_ENTITY.country
    currency: str = DEFAULT_ENTITY.currency
    vat_registered: bool = DEFAULT_ENTITY.vat_registered
    standard_rate: Decimal = DEFAULT_ENTITY.standard_rate
    fiscal_years: tuple[int, ...] = field(default_factory=_years)
    service_name: str = SERVICE_NAME
    service_list_price: Decimal = Decimal("100")

    @classmethod
    def for_entity(cls, entity: LegalEntity, **overrides: Any) -> TrytonSetup:
        """The setup of ``entity``'s company (``overrides``: other fields, e.g.
        ``fiscal_years``)."""
        return cls(
            **{
                "code": entity.code,
                "company_name": entity.name,
                "country": entity.country,
                "currency": entity.currency,
                "vat_registered": entity.vat_registered,
                "standard_rate": entity.standard_rate,
                **overrides,
            }
        )


@dataclass
class TrytonIds:
    """Ids of one company's records that :func:`initialize` made or found, for the
    operations that act in it: ``entity`` is the company party's code, ``currency`` and
    ``currency_code`` its functional currency, ``taxes`` and ``tax_rules`` by treatment
    (none for a company without VAT; no domestic tax at a standard rate of zero)."""

    company: int
    entity: str
    currency: int
    currency_code: str
    receivable: int
    payable: int
    revenue: int
    product: int
    hour: int
    payment_method: int
    journal_revenue: int
    taxes: dict[TaxTreatment, int] = field(default_factory=dict)
    tax_rules: dict[TaxTreatment, int] = field(default_factory=dict)

    @property
    def tax(self) -> int | None:
        """The domestic tax (``None`` without one)."""
        return self.taxes.get(TaxTreatment.DOMESTIC)


def initialize_entities(rpc: TrytonRPC, setups: Sequence[TrytonSetup]) -> dict[str, TrytonIds]:
    """:func:`initialize` each entity's company, in order (the first becomes the user's
    current company when the user has none); their ids by entity code. Raises
    ``ValueError`` for no setup or two with one code."""
    codes = [s.code for s in setups]
    if not codes or len(set(codes)) < len(codes):
        raise ValueError(f"one setup per legal entity, at least one: {codes}")
    return {s.code: initialize(rpc, s) for s in setups}


def ensure_exchange_accounts(rpc: TrytonRPC, company: int, account: int) -> None:
    """The company's currency exchange gain and loss account (``account.configuration``,
    company-dependent): Tryton books there the difference when an invoice in another
    currency is paid at another rate than it was posted at, and refuses the payment's
    reconciliation without one."""
    ctx = {"company": company}
    rows = rpc.search_read(
        "account.configuration", [], ["currency_exchange_debit_account"], context=ctx
    )
    if rows and rows[0].get("currency_exchange_debit_account"):
        return
    values = {
        "currency_exchange_debit_account": account,
        "currency_exchange_credit_account": account,
    }
    rpc.write("account.configuration", [rows[0]["id"] if rows else 1], values, context=ctx)


def initialize(rpc: TrytonRPC, setup: TrytonSetup) -> TrytonIds:
    """Make (or find) everything billing needs in ``setup``'s company; returns its ids.

    Raises ``ValueError`` when the entity's company exists with another currency (Tryton
    cannot change a company's currency), ``LookupError`` for a chart without the accounts
    closeloop uses, and Tryton's refusals (:class:`~.rpc.TrytonError`).
    """
    currency = ensure_currency(rpc, setup.currency)
    company = ensure_company(rpc, setup, currency)
    ensure_user(rpc, company)
    ensure_chart(rpc, company, RECEIVABLE_CODE, PAYABLE_CODE)
    found = accounts(rpc, company, (REVENUE_CODE, TAX_CODE, CASH_CODE, EXCHANGE_CODE))
    ensure_exchange_accounts(rpc, company, found[EXCHANGE_CODE])
    ensure_fiscal_years(rpc, company, setup)
    taxes = ensure_taxes(rpc, company, setup, found[TAX_CODE])
    category = ensure_category(rpc, company, found[REVENUE_CODE], taxes.get(TaxTreatment.DOMESTIC))
    ensure_product(rpc, company, setup, category)
    bank = [["name", "=", "Bank"], ["company", "=", company]]
    if one(rpc, "account.invoice.payment.method", bank) is None:
        cash_journal = one(rpc, "account.journal", [["type", "=", "cash"]])
        rpc.create(
            "account.invoice.payment.method",
            [
                {
                    "name": "Bank",
                    "company": company,
                    "journal": cash_journal,
                    "debit_account": found[CASH_CODE],
                    "credit_account": found[CASH_CODE],
                }
            ],
            context={"company": company},
        )
    return find_ids(rpc, setup.code)


def find_ids(rpc: TrytonRPC, entity_code: str | None = None) -> TrytonIds:
    """The ids of what :func:`initialize` makes in the company of legal entity
    ``entity_code`` (its party's code; ``None``: the user's current company), looked up
    without writing anything (for a production ERP). About ten reads.

    Raises ``LookupError`` naming what is missing (run ``closeloop tryton init``), or when
    the user does not work in that company.
    """

    def need(what: str, found: int | None) -> int:
        if found is None:
            raise LookupError(f"Tryton has no {what}: run `closeloop tryton init` first")
        return found

    if not rpc.context:
        rpc.login()
    fields = [*ENTITY_FIELDS, "currency", "currency.code"]
    if entity_code:
        domain: list[Any] = entity_domain(entity_code)
    else:
        current = rpc.context.get("company")
        if not current:
            raise LookupError(
                f"the Tryton user {rpc.user!r} has no current company: run "
                "`closeloop tryton init` first"
            )
        domain = [["id", "=", current]]
    rows = rpc.search_read("company.company", domain, fields, limit=1)
    if not rows:
        raise LookupError(
            f"Tryton has no company for legal entity {entity_code}: run "
            "`closeloop tryton init` with the entity configured"
        )
    row = rows[0]
    company = int(row["id"])
    entity = entity_code or entity_code_of(row)
    companies = rpc.context.get("companies")
    shows_all = rpc.context.get("company_filter", "all") == "all"
    if company != rpc.context.get("company") and (
        (companies is not None and company not in companies) or not shows_all
    ):
        raise LookupError(
            f"the Tryton user {rpc.user!r} does not work in the company of {entity}: give it "
            "that company with the company filter 'all' (`closeloop tryton init` does)"
        )
    found = accounts(rpc, company, (RECEIVABLE_CODE, PAYABLE_CODE, REVENUE_CODE))
    taxes, rules = find_taxes(rpc, company)
    bank = [["name", "=", "Bank"], ["company", "=", company]]
    return TrytonIds(
        company=company,
        entity=entity,
        currency=int(row["currency"]),
        currency_code=str((row.get("currency.") or {}).get("code")),
        receivable=found[RECEIVABLE_CODE],
        payable=found[PAYABLE_CODE],
        revenue=found[REVENUE_CODE],
        product=need(
            "service product",
            one(rpc, "product.product", [["template.name", "=", SERVICE_NAME]]),
        ),
        hour=need("unit h", one(rpc, "product.uom", [["symbol", "=", "h"]])),
        payment_method=need(
            f"payment method Bank in the company of {entity}",
            one(rpc, "account.invoice.payment.method", bank),
        ),
        journal_revenue=need(
            "revenue journal", one(rpc, "account.journal", [["type", "=", "revenue"]])
        ),
        taxes=taxes,
        tax_rules=rules,
    )
