"""A Salesforce org's records as reconciliation's facts (:mod:`closeloop.ports.reconcile`):
its accounts (``customers``), the write-back on its deals (``invoices``) and those deals'
milestones (``charges``).

Each domain is one SOQL query through :meth:`SalesforceClient.query`, so reading it costs one
API request per page of 2,000 records (``nextRecordsUrl``), never one per record; a page of
facts is yielded per page of the query (``charges``: see below). The org must be
multi-currency (``CurrencyIsoCode`` on every record) and have the hub's custom fields
(:mod:`.translate`).

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

``charges``: every ``Milestone__c`` of an opportunity the hub has written its mobilization
to, read with one query on ``Milestone__c`` that brings the fields of its opportunity
(``Opportunity__r``) along, ordered by opportunity: a deal whose milestones end one page of
the query is held until the next page has begun with another deal (or the query ends), so
each deal's plan is read whole (its facts come with the later page). Key ``milestone:<project
key>:<milestone Id>`` (the project key as for ``invoices``), the charge key the hub bills the
milestone under (:func:`closeloop.flows.charges.decide_milestones`, without its attempt
suffix); external id the milestone ``Id``; ``object`` ``None`` (milestones are not polled on
their own: they come inside their opportunity's changes). ``kind`` ``"milestone"``,
``project_key``, ``name`` (``Name``), ``status`` (``Status__c`` through the shipped mapping's
``milestone_statuses``: ``planned``, ``accepted``, ``disputed``; a value it does not know as
Salesforce holds it, ``None`` when blank), ``amount`` (Decimal, in the deal's currency): what
the hub bills it at, from the plan as :func:`closeloop.domain.billing_terms.milestone_plan`
computes it from the milestones (``Amount__c`` or ``Share__c``) and the deal's fee
(``Amount``, in ``CurrencyIsoCode``, USD when the org has none, as the mapping reads them).
When the deal's plan is not one the hub can bill (no fee, a milestone with neither or both
of an amount and a share, a plan not adding up to the fee), the hub computes no amount: a
milestone given as an amount keeps its ``Amount__c``, one given as a share has no
``amount``, and every milestone of the deal carries ``plan_problem`` (the reason, in the
words of the hub's business exception).

A fact's ``modified_at`` is the record's ``SystemModstamp``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from closeloop.connectors.salesforce.client import SalesforceApiError, SalesforceClient
from closeloop.domain.billing_terms import milestone_plan
from closeloop.domain.canonical.sales import DealMilestone, Opportunity, OpportunityStage
from closeloop.domain.changes import parse_instant
from closeloop.domain.keys import engagement_code
from closeloop.domain.money import Money
from closeloop.domain.taxids import country_code
from closeloop.ports.reconcile import CHARGES, CUSTOMERS, INVOICES, Fact

DOMAINS = (CUSTOMERS, INVOICES, CHARGES)
"""The domains a Salesforce org holds records of."""

ACCOUNT_FIELDS = (
    "Id",
    "Name",
    "Legal_Name__c",
    "Tax_Id__c",
    "BillingCountry",
    "BillingStreet",
    "BillingCity",
    "BillingPostalCode",
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
MILESTONE_FIELDS = (
    "Id",
    "Name",
    "Opportunity__c",
    "Amount__c",
    "Share__c",
    "Status__c",
    "SystemModstamp",
    "Opportunity__r.Name",
    "Opportunity__r.AccountId",
    "Opportunity__r.CloseDate",
    "Opportunity__r.Amount",
    "Opportunity__r.CurrencyIsoCode",
)
"""A milestone's fields and its deal's: the fee and its currency, which the plan's amounts
need, and the fields every canonical opportunity has."""
DEFAULT_CURRENCY = "USD"
"""The deal's currency when the org keeps none (the shipped mapping's default)."""
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
        CHARGES: (
            f"SELECT {', '.join(MILESTONE_FIELDS)} FROM Milestone__c"
            " WHERE Opportunity__r.Mobilization_Status__c != null ORDER BY Opportunity__c, Id"
        ),
    }


def read_facts(
    client: SalesforceClient, domain: str, *, system: str, key_prefix: str
) -> Iterator[Sequence[Fact]]:
    """Pages of the facts of ``domain`` (one page per page of its query; empty pages are
    skipped): ``system`` is the configured system name, ``key_prefix`` the org's key prefix
    (the projects' keys of ``invoices`` and ``charges``).

    Raises ``ValueError`` at once for a domain not in :data:`DOMAINS`; while iterating, the
    client's errors (:class:`~closeloop.ports.connector.TransientError` when the org cannot
    answer now, :class:`~.client.SalesforceApiError` for a query the org refuses, e.g. a
    custom field it lacks).
    """
    makers: dict[str, Callable[[Mapping[str, Any]], Fact]] = {
        CUSTOMERS: lambda record: customer_fact(record, system),
        INVOICES: lambda record: invoice_fact(record, system, key_prefix),
    }
    if domain == CHARGES:
        return _milestone_pages(client, queries()[CHARGES], system, key_prefix)
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


def _milestone_pages(
    client: SalesforceClient, soql: str, system: str, key_prefix: str
) -> Iterator[Sequence[Fact]]:
    """The milestone facts, a page per page of the query, each deal's plan whole: the deal
    whose milestones end a page is held until its last milestone has come. An org without
    the ``Milestone__c`` object (the query's ``INVALID_TYPE``) has no milestones: no pages."""
    pages = client.query(soql)
    try:
        first = next(pages)
    except SalesforceApiError as exc:
        if exc.code == "INVALID_TYPE":  # an org without the Milestone__c object: no plans
            return
        raise
    deal: list[Mapping[str, Any]] = []
    for page in itertools.chain((first,), pages):
        facts: list[Fact] = []
        for record in page["records"]:
            if deal and record.get("Opportunity__c") != deal[0].get("Opportunity__c"):
                facts += milestone_facts(deal, system, key_prefix)
                deal = []
            deal.append(record)
        if facts:
            yield facts
    if deal:
        yield milestone_facts(deal, system, key_prefix)


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
    for name, source in (("street", "BillingStreet"), ("city", "BillingCity")):
        if _text(record.get(source)):
            fields[name] = " ".join(str(record[source]).split())
    if _text(record.get("BillingPostalCode")):
        fields["postal_code"] = str(record["BillingPostalCode"]).strip()
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


def milestone_facts(
    records: Sequence[Mapping[str, Any]], system: str, key_prefix: str
) -> list[Fact]:
    """The ``charges`` facts of one deal's milestones: ``records`` are every ``Milestone__c``
    of one opportunity (with the fields of :data:`MILESTONE_FIELDS`), of the system named
    ``system`` whose key prefix is ``key_prefix``. Amounts as the module docstring says.
    Raises ``ValueError`` for a bad prefix or ``SystemModstamp``, ``KeyError`` without
    ``Id`` or ``Opportunity__c``."""
    if not records:
        return []
    project_key = engagement_code(key_prefix, str(records[0]["Opportunity__c"]))
    amounts, problem = milestone_amounts(records)
    facts = []
    for record in records:
        fields: dict[str, Any] = {
            "kind": "milestone",
            "project_key": project_key,
            "name": str(record.get("Name") or ""),
            "status": milestone_status(record.get("Status__c")),
        }
        if amounts.get(str(record["Id"])) is not None:
            fields["amount"] = amounts[str(record["Id"])]
        if problem is not None:
            fields["plan_problem"] = problem
        facts.append(
            Fact(
                domain=CHARGES,
                key=f"milestone:{project_key}:{record['Id']}",
                system=system,
                external_id=str(record["Id"]),
                fields=fields,
                modified_at=_modified(record),
            )
        )
    return facts


def milestone_amounts(
    records: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Decimal | None], str | None]:
    """What the hub bills each of one deal's milestones at (``records`` as for
    :func:`milestone_facts`): milestone ``Id`` -> Decimal in the deal's currency, from
    :func:`~closeloop.domain.billing_terms.milestone_plan` of the deal's fee
    (``Opportunity__r.Amount`` in ``Opportunity__r.CurrencyIsoCode``) and milestones, and
    ``None``. For a plan the hub cannot bill: each milestone's ``Amount__c`` (``None`` for a
    milestone without one) and the problem, in the words of ``milestone_plan``."""
    deal = records[0].get("Opportunity__r") or {}
    currency = str(deal.get("CurrencyIsoCode") or DEFAULT_CURRENCY)
    try:
        fee = deal.get("Amount")
        plan = Opportunity.model_construct(  # checked where milestone_plan reads: fee, plan
            name=str(deal.get("Name") or records[0]["Opportunity__c"]),
            account=str(deal.get("AccountId") or ""),
            stage=OpportunityStage.CLOSED_WON,  # a deal the hub mobilized was won
            won=True,
            close_date=date.fromisoformat(str(deal.get("CloseDate") or date.min)),
            amount=None if fee is None else Money(amount=Decimal(str(fee)), currency=currency),
            milestones=tuple(deal_milestone(record) for record in records),
        )
        billed: dict[str, Decimal | None] = {
            str(m["key"]): Decimal(str(m["amount"])) for m in milestone_plan(plan, currency)
        }
        return billed, None
    except ValueError as exc:
        given = {str(r["Id"]): _decimal(r.get("Amount__c")) for r in records}
        return given, str(exc)


def deal_milestone(record: Mapping[str, Any]) -> DealMilestone:
    """A ``Milestone__c`` record as the canonical milestone the shipped mapping makes of it
    (for the plan's amounts: its id, name, amount and share). Raises ``ValueError`` naming
    the milestone and what the canonical model refuses (a share over 100, a blank name)."""
    name = str(record.get("Name") or "")
    try:
        return DealMilestone(
            crm_id=str(record["Id"]),
            name=name,
            amount=_decimal(record.get("Amount__c")),
            share_percent=_decimal(record.get("Share__c")),
        )
    except ValidationError as exc:
        wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"milestone {name or record['Id']!r} is not valid: {wrong}") from None


def milestone_status(value: Any) -> str | None:
    """A ``Status__c`` as the port's status: the shipped mapping's ``milestone_statuses``
    (``"Accepted"`` -> ``"accepted"``); a value it does not know as it is; ``None`` when
    blank."""
    text = _text(value)
    if text is None:
        return None
    return str(_value_map("milestone_statuses").get(text, text))


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


def _country_spellings() -> Mapping[str, Any]:
    """The ``countries`` value map of the shipped mapping (``USA`` -> ``US``, ...)."""
    return _value_map("countries")


@functools.cache
def _value_map(name: str) -> Mapping[str, Any]:
    """The value map ``name`` of the shipped mapping."""
    shipped = resources.files(__package__ or __name__) / "mappings" / "salesforce.yaml"
    spec = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    return dict((spec.get("value_maps") or {}).get(name) or {})


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _modified(record: Mapping[str, Any]) -> datetime | None:
    stamp = record.get("SystemModstamp")
    return parse_instant(str(stamp)) if stamp else None
