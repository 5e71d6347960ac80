"""A Salesforce org's records as reconciliation's facts (:mod:`closeloop.ports.reconcile`):
its accounts (``customers``) and the write-back on its deals (``invoices``).

Each domain is one SOQL query through :meth:`SalesforceClient.query`, so reading it costs one
API request per page of 2,000 records (``nextRecordsUrl``), never one per record; a page of
facts is yielded per page of the query. The org must be multi-currency (``CurrencyIsoCode``
on every record) and have the hub's custom fields (:mod:`.translate`).

``customers``: every account. Key and external id: the account ``Id``. ``legal_name`` is
``Legal_Name__c``, else ``Name``; ``tax_ids`` the ``Tax_Id__c`` in upper case without
anything but letters and digits (a one-element tuple, ``()`` when blank); ``country`` the
``BillingCountry`` as ISO 3166-1 alpha-2, normalized as the shipped mapping does (its
``countries`` value map, then an ISO code or English name), left out when blank or unknown;
``currency`` the ``CurrencyIsoCode``; ``payment_terms_days`` the ``Payment_Terms_Days__c``
as an int, left out when null.

``invoices``: every opportunity the hub has written its mobilization to
(``Mobilization_Status__c`` set). Key: the engagement's project key
(:func:`~closeloop.domain.keys.engagement_code` of the connector's key prefix and the
opportunity ``Id``); external id: the ``Id``. ``invoiced``, ``paid``, ``outstanding``,
``overdue`` (Decimal, null read as 0, in the deal's currency), ``last_invoice_number`` and
``payment_status`` (str or ``None``), and beyond the port's fields ``currency``
(``CurrencyIsoCode``), ``account_id`` (``AccountId``) and ``mobilization_status``.

A fact's ``modified_at`` is the record's ``SystemModstamp``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import yaml

from closeloop.connectors.salesforce.client import SalesforceClient
from closeloop.domain.changes import parse_instant
from closeloop.domain.keys import engagement_code
from closeloop.domain.taxids import country_code
from closeloop.ports.reconcile import CUSTOMERS, INVOICES, Fact

DOMAINS = (CUSTOMERS, INVOICES)
"""The domains a Salesforce org holds records of."""

ACCOUNT_FIELDS = (
    "Id",
    "Name",
    "Legal_Name__c",
    "Tax_Id__c",
    "BillingCountry",
    "CurrencyIsoCode",
    "Payment_Terms_Days__c",
    "SystemModstamp",
)
OPPORTUNITY_FIELDS = (
    "Id",
    "AccountId",
    "CurrencyIsoCode",
    "Mobilization_Status__c",
    "Invoiced_Amount__c",
    "Paid_Amount__c",
    "Outstanding_Amount__c",
    "Overdue_Amount__c",
    "Last_Invoice_Number__c",
    "Payment_Status__c",
    "SystemModstamp",
)
AMOUNTS = {
    "invoiced": "Invoiced_Amount__c",
    "paid": "Paid_Amount__c",
    "outstanding": "Outstanding_Amount__c",
    "overdue": "Overdue_Amount__c",
}
"""The canonical amount fields of an ``invoices`` fact and the opportunity fields they read."""

_NOT_ALPHANUMERIC = re.compile(r"[^0-9A-Z]")


def queries() -> dict[str, str]:
    """The SOQL query of each domain."""
    return {
        CUSTOMERS: f"SELECT {', '.join(ACCOUNT_FIELDS)} FROM Account ORDER BY Id",
        INVOICES: (
            f"SELECT {', '.join(OPPORTUNITY_FIELDS)} FROM Opportunity"
            " WHERE Mobilization_Status__c != null ORDER BY Id"
        ),
    }


def read_facts(
    client: SalesforceClient, domain: str, *, system: str, key_prefix: str
) -> Iterator[Sequence[Fact]]:
    """Pages of the facts of ``domain`` (one page per page of its query; empty pages are
    skipped): ``system`` is the configured system name, ``key_prefix`` the org's key prefix
    (the projects' keys of ``invoices``).

    Raises ``ValueError`` at once for a domain not in :data:`DOMAINS`; while iterating, the
    client's errors (:class:`~closeloop.ports.connector.TransientError` when the org cannot
    answer now, :class:`~.client.SalesforceApiError` for a query the org refuses, e.g. a
    custom field it lacks).
    """
    makers: dict[str, Callable[[Mapping[str, Any]], Fact]] = {
        CUSTOMERS: lambda record: customer_fact(record, system),
        INVOICES: lambda record: invoice_fact(record, system, key_prefix),
    }
    if domain not in makers:
        raise ValueError(f"Salesforce holds no {domain!r} facts (its domains: {DOMAINS})")
    return _pages(client, queries()[domain], makers[domain])


def _pages(
    client: SalesforceClient, soql: str, make: Callable[[Mapping[str, Any]], Fact]
) -> Iterator[Sequence[Fact]]:
    for page in client.query(soql):
        facts = [make(record) for record in page["records"]]
        if facts:
            yield facts


def customer_fact(record: Mapping[str, Any], system: str) -> Fact:
    """The ``customers`` fact of an account record (with the fields of
    :data:`ACCOUNT_FIELDS`) of the system named ``system``. Raises ``ValueError`` for a
    record without a parseable ``SystemModstamp``, ``KeyError`` without ``Id``."""
    fields: dict[str, Any] = {
        "legal_name": _text(record.get("Legal_Name__c")) or str(record.get("Name") or ""),
        "tax_ids": tax_ids(record.get("Tax_Id__c")),
    }
    country = billing_country(record.get("BillingCountry"))
    if country is not None:
        fields["country"] = country
    if record.get("CurrencyIsoCode"):
        fields["currency"] = str(record["CurrencyIsoCode"])
    if record.get("Payment_Terms_Days__c") is not None:
        fields["payment_terms_days"] = int(Decimal(str(record["Payment_Terms_Days__c"])))
    return Fact(
        domain=CUSTOMERS,
        key=str(record["Id"]),
        system=system,
        external_id=str(record["Id"]),
        fields=fields,
        modified_at=_modified(record),
        object="Account",
    )


def invoice_fact(record: Mapping[str, Any], system: str, key_prefix: str) -> Fact:
    """The ``invoices`` fact of an opportunity record (with the fields of
    :data:`OPPORTUNITY_FIELDS`) of the system named ``system`` whose key prefix is
    ``key_prefix``. Raises ``ValueError`` for a bad prefix or ``SystemModstamp``."""
    fields: dict[str, Any] = {name: money(record.get(source)) for name, source in AMOUNTS.items()}
    fields.update(
        last_invoice_number=_text(record.get("Last_Invoice_Number__c")),
        payment_status=_text(record.get("Payment_Status__c")),
        currency=_text(record.get("CurrencyIsoCode")),
        account_id=_text(record.get("AccountId")),
        mobilization_status=_text(record.get("Mobilization_Status__c")),
    )
    return Fact(
        domain=INVOICES,
        key=engagement_code(key_prefix, str(record["Id"])),
        system=system,
        external_id=str(record["Id"]),
        fields=fields,
        modified_at=_modified(record),
        object="Opportunity",
    )


def tax_ids(value: Any) -> tuple[str, ...]:
    """A ``Tax_Id__c`` as the port's ``tax_ids``: upper case, letters and digits only, as a
    sorted tuple (``"de 123.456.789"`` -> ``("DE123456789",)``; blank -> ``()``)."""
    compact = _NOT_ALPHANUMERIC.sub("", str(value or "").upper())
    return (compact,) if compact else ()


def billing_country(value: Any) -> str | None:
    """A ``BillingCountry`` as ISO 3166-1 alpha-2 (``"France"`` -> ``"FR"``, ``"UK"`` ->
    ``"GB"``): the shipped mapping's ``countries`` value map first, then an ISO code or
    English name; ``None`` when blank or not a country."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return country_code(str(_country_spellings().get(text, text)))
    except ValueError:
        return None


def money(value: Any) -> Decimal:
    """A currency field's JSON value as a Decimal (``null`` -> ``Decimal(0)``)."""
    return Decimal(0) if value is None else Decimal(str(value))


@functools.cache
def _country_spellings() -> Mapping[str, Any]:
    """The ``countries`` value map of the shipped mapping (``USA`` -> ``US``, ...)."""
    shipped = resources.files(__package__ or __name__) / "mappings" / "salesforce.yaml"
    spec = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    return dict((spec.get("value_maps") or {}).get("countries") or {})


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _modified(record: Mapping[str, Any]) -> datetime | None:
    stamp = record.get("SystemModstamp")
    return parse_instant(str(stamp)) if stamp else None
