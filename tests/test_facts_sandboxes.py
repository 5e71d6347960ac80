"""Reconciliation's facts (closeloop.ports.reconcile) read from the Salesforce and Harvest
sandboxes, each in its own process over real HTTP(S): what was seeded, and what the hub's own
writes left, comes back with the port's keys, canonical names and types, and reading a domain
costs one request per page of each list it reads (counted by the client and by the sandbox)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from closeloop.connectors.catalog import BuildContext
from closeloop.connectors.harvest import plugin as harvest_plugin
from closeloop.connectors.harvest.connector import HarvestConnector
from closeloop.connectors.salesforce import plugin as salesforce_plugin
from closeloop.connectors.salesforce.connector import SalesforceConnector
from closeloop.domain.changes import parse_instant
from closeloop.domain.commands import Applied, Impact
from closeloop.domain.operations import (
    CloseProject,
    MarkBilled,
    Operation,
    ProjectTask,
    UpdateBillingTotals,
    UpdateEngagement,
    UpsertProject,
    role_command,
)
from closeloop.ports.reconcile import DOMAINS, Fact, FactSource
from closeloop.sandboxes.harvest.server import HarvestServer
from closeloop.sandboxes.salesforce.server import SalesforceServer
from tests import harvest_support, salesforce_support

pytestmark = pytest.mark.timeout(300)

PAGE = 2000  # records per page: a SOQL query's batch, Harvest's largest per_page


def read_all(source: FactSource, domain: str) -> list[Sequence[Fact]]:
    """Every page of ``domain``."""
    return list(source.read_facts(domain))


def by_key(pages: list[Sequence[Fact]]) -> dict[str, Fact]:
    facts = [fact for page in pages for fact in page]
    keyed = {fact.key: fact for fact in facts}
    assert len(keyed) == len(facts), "a key came twice"
    return keyed


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The calls by resource made between two snapshots of a call counter."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def run(connector: Any, operation: Operation, key: str) -> Applied:
    """Run ``operation`` as the hub sends it (one command through the connector's
    ``execute``); its outcome must be applied."""
    command = role_command(
        connector.system,
        operation,
        business_key=f"test:{key}",
        key=key,
        entity=key,
        impact=Impact.REVENUE,
    )
    (outcome,) = connector.execute([command])
    assert isinstance(outcome, Applied), outcome
    return outcome


# --- Salesforce ------------------------------------------------------------------------------
FILLER_ACCOUNTS = 2100  # more than one page of a query
MULLER = "0015g0000FACT01AAA"
BLUTH = "0015g0000FACT02AAA"
NOWHERE = "0015g0000FACT03AAA"
GONE = "0015g0000FACT04AAA"
MOBILIZED = "0065g0000FACT01AAA"
BLOCKED = "0065g0000FACT02AAA"
UNTOUCHED = "0065g0000FACT03AAA"
STAMP = "2026-02-03T10:15:00.000+0000"


def salesforce_seed() -> dict[str, list[dict[str, Any]]]:
    """Three accounts of every shape, fillers, and three deals (one the hub mobilized and
    billed later in the test, one it blocked, one it never touched)."""
    accounts = [
        {
            "Id": MULLER,
            "Name": "Müller Beratung",
            "Legal_Name__c": "Müller Beratung GmbH",
            "BillingCountry": "Germany",
            "Tax_Id__c": "de 136.695-976",
            "CurrencyIsoCode": "EUR",
            "Payment_Terms_Days__c": 30,
            "SystemModstamp": STAMP,
        },
        {
            "Id": BLUTH,
            "Name": "Bluth Company",
            "BillingCountry": "UK",  # a spelling the shipped mapping's value map knows
            "CurrencyIsoCode": "GBP",
            "SystemModstamp": STAMP,
        },
        {
            "Id": NOWHERE,
            "Name": "Atlantis Trading",
            "BillingCountry": "Atlantis",
            "Tax_Id__c": "  ",
            "CurrencyIsoCode": "USD",
            "Payment_Terms_Days__c": 60,
            "SystemModstamp": STAMP,
        },
        {"Id": GONE, "Name": "Deleted Ltd", "SystemModstamp": STAMP},
    ]
    accounts += [
        {"Id": f"0015g{i:010d}AAA", "Name": f"Filler {i:04d}", "CurrencyIsoCode": "EUR"}
        for i in range(FILLER_ACCOUNTS)
    ]
    deals = [
        salesforce_support.opportunity("Rollout", MULLER, Id=MOBILIZED, CurrencyIsoCode="EUR"),
        salesforce_support.opportunity(
            "Blocked deal", BLUTH, Id=BLOCKED, Mobilization_Status__c="Blocked"
        ),
        salesforce_support.opportunity("Prospect", NOWHERE, Id=UNTOUCHED),
    ]
    return {"Account": accounts, "Opportunity": deals}


def salesforce_connector(server: SalesforceServer, name: str, **settings: Any) -> Any:
    """The connector the hub builds for ``server`` (the plugin's sandbox settings and
    factory), as system ``name``."""
    raw = {**salesforce_plugin.sandbox_settings(server.as_json()), **settings}
    validated = salesforce_plugin.SalesforceSettings.model_validate(raw)
    return salesforce_plugin.build(name, validated, BuildContext())


@pytest.fixture(scope="module")
def salesforce(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalesforceServer]:
    """A sandbox org seeded with :func:`salesforce_seed`; one account deleted, one deal
    mobilized and billed by the hub's own writes."""
    with salesforce_support.running_salesforce(tmp_path_factory.mktemp("sf")) as server:
        api = salesforce_support.Api(server)
        try:
            seeded = api.admin("POST", "seed", json=salesforce_seed())
            assert seeded.status_code == 200, seeded.text
            assert api.call("DELETE", f"sobjects/Account/{GONE}").status_code == 204
        finally:
            api.close()
        hub = salesforce_connector(server, "crm")
        run(hub, UpdateEngagement(deal_id=MOBILIZED, status="Mobilized"), f"m:{MOBILIZED}")
        totals = UpdateBillingTotals(
            record="opportunity",
            record_id=MOBILIZED,
            invoiced=Decimal("12500.50"),
            paid=Decimal("5000"),
            outstanding=Decimal("7500.50"),
            overdue=Decimal("2500.25"),
            last_invoice_number="INV/2026/0042",
            payment_status="Overdue",
            currency="EUR",
        )
        run(hub, totals, f"t:{MOBILIZED}")
        hub.close()
        yield server


def test_a_salesforce_org_is_a_fact_source_of_customers_and_invoices(
    salesforce: SalesforceServer,
) -> None:
    connector = salesforce_connector(salesforce, "crm")
    assert isinstance(connector, SalesforceConnector) and isinstance(connector, FactSource)
    assert tuple(connector.fact_domains()) == ("customers", "invoices")
    assert set(connector.fact_domains()) <= set(DOMAINS)
    before = dict(connector.client.calls)
    for domain in ("projects", "time", "accounts"):
        with pytest.raises(ValueError, match=domain):
            connector.read_facts(domain)  # at once, before any page is asked for
    assert connector.client.calls == before  # and without a call
    connector.close()


def test_customers_are_every_account_in_canonical_form_one_request_per_page(
    salesforce: SalesforceServer,
) -> None:
    connector = salesforce_connector(salesforce, "crm-eu")
    api = salesforce_support.Api(salesforce)
    try:
        counted = api.admin("GET", "stats").json()["calls"]
        before = dict(connector.client.calls)
        pages = read_all(connector, "customers")
        assert spent(before, connector.client.calls) == {"query": 2}
        assert spent(counted, api.admin("GET", "stats").json()["calls"]) == {"query": 2}
    finally:
        api.close()
        connector.close()
    assert [len(page) for page in pages] == [PAGE, FILLER_ACCOUNTS + 3 - PAGE]
    facts = by_key(pages)
    assert GONE not in facts  # deleted: not a customer any more
    assert len(facts) == FILLER_ACCOUNTS + 3
    muller = facts[MULLER]
    assert (muller.domain, muller.system, muller.external_id) == ("customers", "crm-eu", MULLER)
    assert dict(muller.fields) == {
        "legal_name": "Müller Beratung GmbH",
        "tax_ids": ("DE136695976",),
        "country": "DE",
        "currency": "EUR",
        "payment_terms_days": 30,
    }
    assert isinstance(muller.fields["payment_terms_days"], int)
    assert muller.modified_at == parse_instant(STAMP)
    assert dict(facts[BLUTH].fields) == {  # Name for want of a legal name; no tax id, no terms
        "legal_name": "Bluth Company",
        "tax_ids": (),
        "country": "GB",
        "currency": "GBP",
    }
    assert dict(facts[NOWHERE].fields) == {  # a country no one knows is left out
        "legal_name": "Atlantis Trading",
        "tax_ids": (),
        "currency": "USD",
        "payment_terms_days": 60,
    }
    filler = facts[f"0015g{7:010d}AAA"]
    assert "country" not in filler.fields and filler.modified_at is not None


def test_invoices_are_the_deals_the_hub_wrote_back_to_keyed_by_project_key(
    salesforce: SalesforceServer,
) -> None:
    connector = salesforce_connector(salesforce, "crm", key_prefix="NW")
    before = dict(connector.client.calls)
    pages = read_all(connector, "invoices")
    assert spent(before, connector.client.calls) == {"query": 1}
    connector.close()
    facts = by_key(pages)
    assert set(facts) == {f"NW-{MOBILIZED}", f"NW-{BLOCKED}"}  # the untouched deal is left out
    billed = facts[f"NW-{MOBILIZED}"]
    assert (billed.domain, billed.system, billed.external_id) == ("invoices", "crm", MOBILIZED)
    assert dict(billed.fields) == {
        "invoiced": Decimal("12500.50"),
        "paid": Decimal("5000"),
        "outstanding": Decimal("7500.50"),
        "overdue": Decimal("2500.25"),
        "last_invoice_number": "INV/2026/0042",
        "payment_status": "Overdue",
        "currency": "EUR",
        "account_id": MULLER,
        "mobilization_status": "Mobilized",
    }
    assert all(isinstance(billed.fields[k], Decimal) for k in ("invoiced", "paid", "overdue"))
    api = salesforce_support.Api(salesforce)
    record = api.call("GET", f"sobjects/Opportunity/{MOBILIZED}").json()
    api.close()
    assert billed.modified_at == parse_instant(record["SystemModstamp"])  # the hub's write
    blocked = facts[f"NW-{BLOCKED}"].fields
    assert [blocked[k] for k in ("invoiced", "paid", "outstanding", "overdue")] == [Decimal(0)] * 4
    assert blocked["last_invoice_number"] is None and blocked["payment_status"] is None
    assert blocked["account_id"] == BLUTH and blocked["mobilization_status"] == "Blocked"

    default = salesforce_connector(salesforce, "crm")  # no key_prefix setting: the plugin's
    assert set(by_key(read_all(default, "invoices"))) == {f"SF-{MOBILIZED}", f"SF-{BLOCKED}"}
    default.close()


# --- Harvest ---------------------------------------------------------------------------------
ENTRIES = 2100  # more than one page of time entries
TM_CODE = "SF-0065g0000000TM1AAA"
FIXED_CODE = "SF-0065g0000000FF1AAA"
CLOSED_CODE = "SF-0065g0000000CL1AAA"
TASKS = {20: "Consulting", 21: "Project Management"}
PROJECT_STAMP = "2026-01-02T08:00:00Z"
ASSIGNMENT_STAMP = "2026-01-03T08:00:00Z"
BILLED_DAY = "2026-01-05"


def harvest_seed() -> dict[str, Any]:
    """The test firm of :func:`tests.harvest_support.firm`, its projects coded as the hub
    codes them (30 by time and materials, 31 a fixed fee) except 32, a project of the firm's
    own (code not a project key), with their timestamps."""
    seed = harvest_support.firm(ENTRIES, approved_share=0.5)
    codes = {30: TM_CODE, 31: FIXED_CODE, 32: "OLDWORK"}
    for project in seed["projects"]:
        project.update(code=codes[project["id"]], updated_at=PROJECT_STAMP)
        if project["id"] == 31:
            project.update(is_fixed_fee=True, fee=24000.0, bill_by="none")
    for assignment in seed["task_assignments"]:
        assignment["updated_at"] = ASSIGNMENT_STAMP
    return seed


@dataclass(frozen=True)
class HarvestWorld:
    """The seeded sandbox and what the test's own writes changed in it."""

    server: HarvestServer
    seed: dict[str, Any]
    billed: frozenset[int]  # the entries the hub's mark_billed invoiced
    rate_edited_at: str  # updated_at of the rate edited by hand


def harvest_connector(server: HarvestServer, name: str) -> Any:
    """The connector the hub builds for ``server``, as system ``name``."""
    raw = harvest_plugin.sandbox_settings(server.as_json())
    validated = harvest_plugin.HarvestSettings.model_validate(raw)
    return harvest_plugin.build(name, validated, BuildContext())


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarvestWorld]:
    """The sandbox seeded with :func:`harvest_seed`, then: a project the hub sets up and
    closes, a day of the T&M project's approved time the hub marks billed, a rate edited by
    hand and a task assignment archived by hand."""
    with harvest_support.running_harvest(tmp_path_factory.mktemp("harvest")) as server:
        api = harvest_support.Api(server)
        try:
            seed = harvest_seed()
            seeded = api.admin("POST", "seed", json=seed)
            assert seeded.status_code == 200, seeded.text
            hub = harvest_connector(server, "psa")
            project = UpsertProject(
                key=CLOSED_CODE,
                name="Short engagement",
                customer_name="Acme GmbH",
                currency="EUR",
                tasks=(
                    ProjectTask(name="Consulting", hourly_rate=Decimal("180")),
                    ProjectTask(name="Design", hourly_rate=Decimal("140.50")),
                ),
            )
            run(hub, project, CLOSED_CODE)
            run(hub, CloseProject(key=CLOSED_CODE), CLOSED_CODE)
            number = f"{TM_CODE}/2026-01"
            mark = MarkBilled(
                number=number,
                customer_name="Acme GmbH",
                project_keys=(TM_CODE,),
                period_start=date.fromisoformat(BILLED_DAY),
                period_end=date.fromisoformat(BILLED_DAY),
            )
            run(hub, mark, number)
            hub.close()
            listed = api.call("GET", "time_entries", params={"project_id": 30, "per_page": 2000})
            assert listed.json()["links"]["next"] is None, listed.text[:300]
            billed = frozenset(e["id"] for e in listed.json()["time_entries"] if e["is_billed"])
            assignments = {
                (a["project"]["id"], a["task"]["id"]): a["id"]
                for a in api.listed("task_assignments")
            }
            edited = api.call(
                "PATCH",
                f"projects/30/task_assignments/{assignments[(30, 20)]}",
                json={"hourly_rate": 175.0},
            )
            assert edited.status_code == 200, edited.text
            archived = api.call(
                "PATCH",
                f"projects/31/task_assignments/{assignments[(31, 21)]}",
                json={"is_active": False},
            )
            assert archived.status_code == 200, archived.text
        finally:
            api.close()
        yield HarvestWorld(server, seed, billed, edited.json()["updated_at"])


def test_a_harvest_account_is_a_fact_source_of_projects_and_time(harvest: HarvestWorld) -> None:
    connector = harvest_connector(harvest.server, "psa")
    assert isinstance(connector, HarvestConnector) and isinstance(connector, FactSource)
    assert tuple(connector.fact_domains()) == ("projects", "time")
    before = dict(connector.client.calls)
    for domain in ("customers", "invoices", "expenses"):
        with pytest.raises(ValueError, match=domain):
            connector.read_facts(domain)
    assert connector.client.calls == before
    connector.close()


def test_projects_are_the_hubs_projects_with_status_rates_and_fee(harvest: HarvestWorld) -> None:
    connector = harvest_connector(harvest.server, "psa")
    api = harvest_support.Api(harvest.server)
    try:
        counted = api.admin("GET", "stats").json()["calls"]
        before = dict(connector.client.calls)
        pages = read_all(connector, "projects")
        expected_calls = {"projects": 1, "task_assignments": 1}  # all projects' rates in one list
        assert spent(before, connector.client.calls) == expected_calls
        assert spent(counted, api.admin("GET", "stats").json()["calls"]) == expected_calls
        closed_id = next(p["id"] for p in api.listed("projects") if p["code"] == CLOSED_CODE)
    finally:
        api.close()
        connector.close()
    facts = by_key(pages)
    assert set(facts) == {TM_CODE, FIXED_CODE, CLOSED_CODE}  # OLDWORK is not the hub's
    tm = facts[TM_CODE]
    assert (tm.domain, tm.system, tm.external_id) == ("projects", "psa", "30")
    assert dict(tm.fields) == {
        "status": "open",
        "billing_method": "time_and_materials",
        "rates": {"Consulting": Decimal("175"), "Project Management": Decimal("125")},
    }
    assert tm.modified_at == parse_instant(harvest.rate_edited_at)  # the rate edited by hand
    fixed = facts[FIXED_CODE]
    assert dict(fixed.fields) == {
        "status": "open",
        "billing_method": "fixed_fee",
        "fee": Decimal("24000"),
        "rates": {"Consulting": Decimal("160")},  # its other assignment is archived
    }
    closed = facts[CLOSED_CODE]
    assert closed.external_id == str(closed_id)
    assert dict(closed.fields) == {
        "status": "closed",
        "billing_method": "time_and_materials",
        "rates": {"Consulting": Decimal("180"), "Design": Decimal("140.50")},
    }
    for fact in facts.values():
        assert all(isinstance(rate, Decimal) for rate in fact.fields["rates"].values())


def test_time_is_every_entry_on_the_hubs_projects_one_request_per_page(
    harvest: HarvestWorld,
) -> None:
    connector = harvest_connector(harvest.server, "psa")
    api = harvest_support.Api(harvest.server)
    try:
        counted = api.admin("GET", "stats").json()["calls"]
        before = dict(connector.client.calls)
        pages = read_all(connector, "time")
        assert spent(before, connector.client.calls) == {"time_entries": 2}  # 2,100 entries
        assert spent(counted, api.admin("GET", "stats").json()["calls"]) == {"time_entries": 2}
    finally:
        api.close()
        connector.close()
    assert all(0 < len(page) <= PAGE for page in pages)
    facts = by_key(pages)
    codes = {30: TM_CODE, 31: FIXED_CODE}
    expected = {
        f"psa-{entry['id']}": {
            "project_key": codes[entry["project"]["id"]],
            "task": TASKS[entry["task"]["id"]],
            "date": entry["spent_date"],
            "hours": Decimal(str(entry["hours"])).quantize(Decimal("0.01")),
            "approved": entry["is_closed"],
            "billable": True,
            "billed": entry["id"] in harvest.billed,
        }
        for entry in harvest.seed["time_entries"]
        if entry["project"]["id"] in codes  # OLDWORK's time is not the hub's
    }
    assert len(expected) == ENTRIES * 2 // 3
    assert {key: dict(fact.fields) for key, fact in facts.items()} == expected
    assert harvest.billed and all(
        facts[f"psa-{i}"].fields["date"] == BILLED_DAY and facts[f"psa-{i}"].fields["approved"]
        for i in harvest.billed
    )
    first = harvest.seed["time_entries"][3]  # 7.25 hours on the T&M project
    fact = facts[f"psa-{first['id']}"]
    assert fact.external_id == str(first["id"]) and fact.system == "psa"
    assert isinstance(fact.fields["hours"], Decimal) and fact.fields["hours"] == Decimal("7.25")
    assert fact.fields["hours"].as_tuple().exponent == -2
    assert fact.modified_at == parse_instant(first["updated_at"])


def test_harvest_lists_are_read_whole_before_facts_are_given(harvest: HarvestWorld) -> None:
    """A domain's lists are read (and checked against Harvest's count) before its first page
    of facts is yielded: a failure leaves the caller with no half-read domain."""
    connector = harvest_connector(harvest.server, "psa")
    pages = connector.read_facts("time")
    before = dict(connector.client.calls)
    first = next(pages)
    assert spent(before, connector.client.calls) == {"time_entries": 2}
    assert len(first) == ENTRIES * 2 // 3
    assert next(pages, None) is None
    connector.close()


def test_time_keys_carry_the_configured_system_name(harvest: HarvestWorld) -> None:
    connector = harvest_connector(harvest.server, "psa-eu")
    facts = by_key(read_all(connector, "time"))
    connector.close()
    assert facts and all(
        key == f"psa-eu-{fact.external_id}" and fact.system == "psa-eu"
        for key, fact in facts.items()
    )
