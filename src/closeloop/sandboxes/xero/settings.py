"""The organisation's settings as read by ``GET /Organisation`` and ``GET /Accounts``: a UK
company in GBP with a small chart of accounts (Xero's default UK chart's codes: 090 bank,
200 sales, 260 other revenue, 310 cost of goods sold, 400 advertising). Read-only in this
slice. Shapes follow the ``Organisation`` and ``Account`` schemas of the Accounting OpenAPI.
"""

from __future__ import annotations

import uuid
from typing import Any

from closeloop.sandboxes.xero.org import Organisation
from closeloop.sandboxes.xero.wire import msdate

# code: (name, Type, Class, TaxType)
CHART: dict[str, tuple[str, str, str, str]] = {
    "090": ("Business Bank Account", "BANK", "ASSET", "NONE"),
    "200": ("Sales", "REVENUE", "REVENUE", "OUTPUT2"),
    "260": ("Other Revenue", "REVENUE", "REVENUE", "OUTPUT2"),
    "310": ("Cost of Goods Sold", "DIRECTCOSTS", "EXPENSE", "INPUT2"),
    "400": ("Advertising", "OVERHEADS", "EXPENSE", "INPUT2"),
}


def account_id(org: Organisation, code: str) -> str:
    """The id of account ``code`` (stable for the tenant)."""
    return str(uuid.uuid5(uuid.UUID(org.tenant_id), code))


def accounts(org: Organisation) -> list[dict[str, Any]]:
    """The ``Account`` objects of ``GET /Accounts``."""
    rows = []
    for code, (name, kind, klass, tax_type) in CHART.items():
        row: dict[str, Any] = {
            "AccountID": account_id(org, code),
            "Code": code,
            "Name": name,
            "Type": kind,
            "Class": klass,
            "Status": "ACTIVE",
            "TaxType": tax_type,
            "EnablePaymentsToAccount": kind == "BANK",
            "ShowInExpenseClaims": False,
            "HasAttachments": False,
            "UpdatedDateUTC": msdate(org.created),
        }
        if kind == "BANK":
            row |= {
                "BankAccountNumber": "20202012345678",
                "BankAccountType": "BANK",
                "CurrencyCode": "GBP",
            }
        rows.append(row)
    return rows


def organisation(org: Organisation) -> dict[str, Any]:
    """The ``Organisation`` object of ``GET /Organisation``."""
    return {
        "OrganisationID": org.tenant_id,
        "Name": org.name,
        "LegalName": org.name,
        "PaysTax": True,
        "Version": "UK",
        "OrganisationType": "COMPANY",
        "OrganisationEntityType": "COMPANY",
        "BaseCurrency": "GBP",
        "CountryCode": "GB",
        "IsDemoCompany": False,
        "OrganisationStatus": "ACTIVE",
        "FinancialYearEndDay": 31,
        "FinancialYearEndMonth": 3,
        "SalesTaxBasis": "ACCRUALS",
        "SalesTaxPeriod": "QUARTERLY1",
        "DefaultSalesTax": "Tax Exclusive",
        "DefaultPurchasesTax": "Tax Exclusive",
        "CreatedDateUTC": msdate(org.created),
        "ShortCode": "!cl0op",
        "Class": "STANDARD",
        "Edition": "BUSINESS",
        "Addresses": [],
        "Phones": [],
        "ExternalLinks": [],
    }
