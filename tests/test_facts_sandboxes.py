"""Reconciliation's facts (closeloop.ports.reconcile) read from the Salesforce and Harvest
sandboxes, each in its own process over real HTTP(S): what was seeded, and what the hub's own
writes left, comes back with the port's keys, canonical names and types, and reading a domain
costs one request per page of each list it reads (counted by the client and by the sandbox)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

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
from closeloop.flows.charges import expense_charge
from closeloop.ports.reconcile import DOMAINS, Fact, FactSource
from closeloop.sandboxes.harvest.server import HarvestServer
from closeloop.sandboxes.salesforce.schema import SHIPPED_SCHEMA
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
# the mobilized deal's fixed fee and plan: an amount, a share of the fee (50% of 14,445.65 is
# 7,222.825: 7,222.82 rounded half-even, as the hub bills it), the rest, and fillers enough
# that the plan runs over a page of the query
FEE = Decimal("14445.65")
FILLER_MILESTONES = 2100
BLUEPRINT = "a0M5g0000FACT01AAA"
BUILD = "a0M5g0000FACT02AAA"
GO_LIVE = "a0M5g0000FACT03AAA"
PHASE_ONE = "a0M5g0000FACT04AAA"  # the blocked deal's (it has no fee: no plan the hub bills)
PHASE_TWO = "a0M5g0000FACT05AAA"
IGNORED = "a0M5g0000FACT06AAA"  # the untouched deal's


def salesforce_milestones() -> list[dict[str, Any]]:
    """The mobilized deal's plan (three milestones and fillers adding up to :data:`FEE`), the
    blocked deal's (an amount and a share of a fee it lacks), the untouched deal's."""
    named: list[tuple[str, str, str, dict[str, Any]]] = [
        (BLUEPRINT, MOBILIZED, "Blueprint", {"Amount__c": 3000, "Status__c": "Accepted"}),
        (BUILD, MOBILIZED, "Build", {"Share__c": 50, "Status__c": "Planned"}),
        (GO_LIVE, MOBILIZED, "Go-live", {"Amount__c": 2122.83, "Status__c": "Disputed"}),
        (PHASE_ONE, BLOCKED, "Phase 1", {"Amount__c": 1000, "Status__c": "Accepted"}),
        (PHASE_TWO, BLOCKED, "Phase 2", {"Share__c": 50}),
        (IGNORED, UNTOUCHED, "Ignored", {"Amount__c": 500}),
    ]
    milestones: list[dict[str, Any]] = [
        {"Id": mid, "Opportunity__c": deal, "Name": name, "SystemModstamp": STAMP, **fields}
        for mid, deal, name, fields in named
    ]
    milestones += [
        {
            "Id": f"a0M5g{i:010d}AAA",
            "Opportunity__c": MOBILIZED,
            "Name": f"Filler {i:04d}",
            "Amount__c": 1,
        }
        for i in range(FILLER_MILESTONES)
    ]
    return milestones


def salesforce_seed() -> dict[str, list[dict[str, Any]]]:
    """Three accounts of every shape, fillers, and three deals (one the hub mobilized and
    billed later in the test, a fixed fee with its milestone plan; one it blocked; one it
    never touched), with their milestones."""
    accounts: list[dict[str, Any]] = [
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
        salesforce_support.opportunity(
            "Rollout",
            MULLER,
            Id=MOBILIZED,
            CurrencyIsoCode="EUR",
            Amount=float(FEE),
            Billing_Method__c="Fixed Fee",
        ),
        salesforce_support.opportunity(
            "Blocked deal", BLUTH, Id=BLOCKED, Mobilization_Status__c="Blocked"
        ),
        salesforce_support.opportunity("Prospect", NOWHERE, Id=UNTOUCHED),
    ]
    return {"Account": accounts, "Opportunity": deals, "Milestone__c": salesforce_milestones()}


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


def test_a_salesforce_org_is_a_fact_source_of_customers_invoices_and_charges(
    salesforce: SalesforceServer,
) -> None:
    connector = salesforce_connector(salesforce, "crm")
    assert isinstance(connector, SalesforceConnector) and isinstance(connector, FactSource)
    assert tuple(connector.fact_domains()) == ("customers", "invoices", "charges")
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


def test_charges_are_the_milestones_of_the_deals_the_hub_wrote_back_to_at_the_hubs_amounts(
    salesforce: SalesforceServer,
) -> None:
    connector = salesforce_connector(salesforce, "crm", key_prefix="NW")
    api = salesforce_support.Api(salesforce)
    try:
        counted = api.admin("GET", "stats").json()["calls"]
        before = dict(connector.client.calls)
        pages = read_all(connector, "charges")
        assert spent(before, connector.client.calls) == {"query": 2}  # 2,105 milestones
        assert spent(counted, api.admin("GET", "stats").json()["calls"]) == {"query": 2}
    finally:
        api.close()
        connector.close()
    # the mobilized deal's plan runs over the query's first page: it comes whole, with the
    # second page, and the blocked deal's after it
    assert [len(page) for page in pages] == [FILLER_MILESTONES + 3, 2]
    facts = by_key(pages)
    mobilized, blocked = f"NW-{MOBILIZED}", f"NW-{BLOCKED}"
    assert len(facts) == FILLER_MILESTONES + 5  # the untouched deal's milestone is left out
    assert f"milestone:NW-{UNTOUCHED}:{IGNORED}" not in facts
    build = facts[f"milestone:{mobilized}:{BUILD}"]
    assert (build.domain, build.system, build.external_id) == ("charges", "crm", BUILD)
    assert build.object is None and build.modified_at == parse_instant(STAMP)
    assert dict(build.fields) == {  # a share of the fee, as the hub computes it
        "kind": "milestone",
        "project_key": mobilized,
        "name": "Build",
        "status": "planned",
        "amount": Decimal("7222.82"),
    }
    assert isinstance(build.fields["amount"], Decimal)
    blueprint = facts[f"milestone:{mobilized}:{BLUEPRINT}"].fields
    assert (blueprint["status"], blueprint["amount"]) == ("accepted", Decimal("3000"))
    go_live = facts[f"milestone:{mobilized}:{GO_LIVE}"].fields
    assert (go_live["status"], go_live["amount"]) == ("disputed", Decimal("2122.83"))
    filler = facts[f"milestone:{mobilized}:a0M5g{7:010d}AAA"].fields
    assert (filler["status"], filler["amount"]) == ("planned", Decimal(1))  # the default status
    plan = [f for f in facts.values() if f.fields["project_key"] == mobilized]
    assert sum(f.fields["amount"] for f in plan) == FEE
    assert not any("plan_problem" in f.fields for f in plan)

    # no fee: the hub bills no plan; an amount is still the milestone's, a share has none
    phase_one = facts[f"milestone:{blocked}:{PHASE_ONE}"].fields
    phase_two = facts[f"milestone:{blocked}:{PHASE_TWO}"].fields
    assert phase_one["amount"] == Decimal("1000") and "amount" not in phase_two
    assert (phase_one["status"], phase_two["status"]) == ("accepted", "planned")
    assert phase_one["plan_problem"] == phase_two["plan_problem"]
    assert "needs its fee" in phase_two["plan_problem"]


def test_an_org_without_the_milestone_object_has_no_charges(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """As the change feed gives the deals of an org without milestones, reconciliation reads
    no milestones of it (one refused query), and no error."""
    home = tmp_path_factory.mktemp("sf-plain")
    shipped = yaml.safe_load(SHIPPED_SCHEMA.read_text())
    del shipped["custom_objects"], shipped["objects"]["Milestone__c"]
    for name in ("Milestone_Total__c", "Milestones_Accepted__c"):
        del shipped["objects"]["Opportunity"][name]
    Path(home, "schema.yaml").write_text(yaml.safe_dump(shipped))
    with salesforce_support.running_salesforce(home) as server:
        connector = salesforce_connector(server, "crm")
        try:
            assert read_all(connector, "charges") == []
            assert connector.client.calls.get("query") == 1
        finally:
            connector.close()


# --- Harvest ---------------------------------------------------------------------------------
ENTRIES = 2100  # more than one page of time entries
TM_CODE = "SF-0065g0000000TM1AAA"
FIXED_CODE = "SF-0065g0000000FF1AAA"
CLOSED_CODE = "SF-0065g0000000CL1AAA"
TASKS = {20: "Consulting", 21: "Project Management"}
PROJECT_STAMP = "2026-01-02T08:00:00Z"
ASSIGNMENT_STAMP = "2026-01-03T08:00:00Z"
BILLED_DAY = "2026-01-05"
EXPENSE_MONTH = ("2026-02-01", "2026-02-28")  # the expenses the hub marks billed
FILLER_EXPENSES = 2100  # more than one page of expenses
EXPENSE_STAMP = "2026-02-03T09:00:00Z"


def harvest_seed() -> dict[str, Any]:
    """The test firm of :func:`tests.harvest_support.firm`, its projects coded as the hub
    codes them (30 by time and materials, 31 a fixed fee) except 32, a project of the firm's
    own (code not a project key), with their timestamps; besides the firm's two expenses on
    30 (5000 approved, 5001 not), a non-billable approved one on 30, one on 32 and fillers
    on 31."""
    seed = harvest_support.firm(ENTRIES, approved_share=0.5)
    seed["expenses"] += [
        {
            "id": 5002,
            "project": {"id": 30},
            "user": {"id": 100},
            "expense_category": {"id": 50},
            "spent_date": "2026-02-01",
            "total_cost": 18.9,
            "billable": False,
            "is_closed": True,
            "updated_at": EXPENSE_STAMP,
        },
        {
            "id": 5003,
            "project": {"id": 32},
            "user": {"id": 100},
            "expense_category": {"id": 50},
            "spent_date": "2026-02-01",
            "total_cost": 99.0,
            "is_closed": True,
        },
    ]
    seed["expenses"] += [
        {
            "id": 6000 + i,
            "project": {"id": 31},
            "user": {"id": 100 + i % 5},
            "expense_category": {"id": 50},
            "spent_date": f"2026-03-{1 + i % 28:02d}",
            "total_cost": (12.5, 7.25, 130.0)[i % 3],
        }
        for i in range(FILLER_EXPENSES)
    ]
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
    billed_expenses: frozenset[int]  # the expenses its second mark_billed invoiced
    rate_edited_at: str  # updated_at of the rate edited by hand


def harvest_connector(server: HarvestServer, name: str) -> Any:
    """The connector the hub builds for ``server``, as system ``name``."""
    raw = harvest_plugin.sandbox_settings(server.as_json())
    validated = harvest_plugin.HarvestSettings.model_validate(raw)
    return harvest_plugin.build(name, validated, BuildContext())


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarvestWorld]:
    """The sandbox seeded with :func:`harvest_seed`, then: a project the hub sets up and
    closes, a day of the T&M project's approved time the hub marks billed, then a month of
    its approved billable expenses, a rate edited by hand and a task assignment archived by
    hand."""
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
            expense_number = f"{TM_CODE}/{EXPENSE_MONTH[0][:7]}"
            expenses = MarkBilled(
                number=expense_number,
                customer_name="Acme GmbH",
                project_keys=(TM_CODE,),
                period_start=date.fromisoformat(EXPENSE_MONTH[0]),
                period_end=date.fromisoformat(EXPENSE_MONTH[1]),
                expenses=True,
                time=False,
            )
            run(hub, expenses, expense_number)
            hub.close()
            listed = api.call("GET", "time_entries", params={"project_id": 30, "per_page": 2000})
            assert listed.json()["links"]["next"] is None, listed.text[:300]
            billed = frozenset(e["id"] for e in listed.json()["time_entries"] if e["is_billed"])
            on_tm = api.call("GET", "expenses", params={"project_id": 30, "per_page": 2000})
            billed_expenses = frozenset(x["id"] for x in on_tm.json()["expenses"] if x["is_billed"])
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
        yield HarvestWorld(server, seed, billed, billed_expenses, edited.json()["updated_at"])


def test_a_harvest_account_is_a_fact_source_of_projects_time_and_charges(
    harvest: HarvestWorld,
) -> None:
    connector = harvest_connector(harvest.server, "psa")
    assert isinstance(connector, HarvestConnector) and isinstance(connector, FactSource)
    assert tuple(connector.fact_domains()) == ("customers", "projects", "time", "charges")
    before = dict(connector.client.calls)
    for domain in ("invoices", "expenses"):
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
        listed = {p["code"]: p for p in api.listed("projects")}
        closed_id = listed[CLOSED_CODE]["id"]
    finally:
        api.close()
        connector.close()
    facts = by_key(pages)
    for code, fact in facts.items():  # the client, to pair it with the customer
        assert fact.fields["client_id"] == str(listed[code]["client"]["id"])
        fact.fields.pop("client_id")  # type: ignore[attr-defined]
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
    pages = read_counted(harvest, "time", {"time_entries": 2})  # 2,100 entries
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


def test_charges_are_the_expenses_on_the_hubs_projects_one_request_per_page(
    harvest: HarvestWorld,
) -> None:
    pages = read_counted(harvest, "charges", {"expenses": 2})  # 2,104 expenses
    assert all(0 < len(page) <= PAGE for page in pages)
    facts = by_key(pages)
    assert harvest.billed_expenses == {5000}  # approved and billable, in the month marked
    codes = {30: TM_CODE, 31: FIXED_CODE}
    expected = {
        f"expense:{codes[x['project']['id']]}:psa-{x['id']}": {
            "kind": "expense",
            "project_key": codes[x["project"]["id"]],
            "amount": Decimal(str(x["total_cost"])),
            "date": x["spent_date"],
            "approved": bool(x.get("is_closed")),
            "billable": x.get("billable", True),
            "billed": x["id"] in harvest.billed_expenses,
        }
        for x in harvest.seed["expenses"]
        if x["project"]["id"] in codes  # OLDWORK's expense (5003) is not the hub's
    }
    assert len(expected) == FILLER_EXPENSES + 3
    assert {key: dict(fact.fields) for key, fact in facts.items()} == expected
    billed = facts[f"expense:{TM_CODE}:psa-5000"]
    assert billed.fields["billed"] and billed.fields["amount"] == Decimal("42.5")
    assert (billed.domain, billed.system, billed.external_id) == ("charges", "psa", "5000")
    assert billed.object == "expenses"
    assert billed.modified_at is not None and billed.modified_at > parse_instant(EXPENSE_STAMP)
    unbillable = facts[f"expense:{TM_CODE}:psa-5002"]  # approved, in the month, not billable
    assert unbillable.fields["approved"] and not unbillable.fields["billed"]
    assert unbillable.modified_at == parse_instant(EXPENSE_STAMP)
    assert all(isinstance(fact.fields["amount"], Decimal) for fact in facts.values())


def test_charge_keys_are_the_keys_the_hub_bills_expenses_under(harvest: HarvestWorld) -> None:
    """``expense:<project key>:<PSA system>-<expense id>``: the configured system's name, as
    the expense flow's ``info["key"]`` and :func:`closeloop.flows.charges.expense_charge`
    make it."""
    connector = harvest_connector(harvest.server, "psa-eu")
    facts = by_key(read_all(connector, "charges"))
    connector.close()
    fact = facts[f"expense:{TM_CODE}:psa-eu-5001"]
    info = {"key": f"psa-eu-{fact.external_id}", "amount": "43.5", "category": "Travel"}
    line = expense_charge({**info, "date": fact.fields["date"]}, None, "EUR", TM_CODE)
    assert line.key == fact.key
    assert all(
        key == f"expense:{fact.fields['project_key']}:psa-eu-{fact.external_id}"
        for key, fact in facts.items()
    )


def test_harvest_clients_are_customers_read_in_one_list(harvest: HarvestWorld) -> None:
    connector = harvest_connector(harvest.server, "psa")
    api = harvest_support.Api(harvest.server)
    try:
        before = dict(connector.client.calls)
        facts = by_key(read_all(connector, "customers"))
        assert spent(before, connector.client.calls) == {"clients": 1}
        clients = api.listed("clients")
    finally:
        api.close()
        connector.close()
    assert set(facts) == {str(c["id"]) for c in clients} and clients
    for client in clients:
        fact = facts[str(client["id"])]
        assert fact.fields["legal_name"] == client["name"]
        assert fact.fields.get("currency") == client.get("currency")


def read_counted(harvest: HarvestWorld, domain: str, calls: dict[str, int]) -> list[Any]:
    """The pages of ``domain`` read from the Harvest sandbox, asserting the requests it
    cost (``calls``: by resource), as the connector's client and the sandbox count them."""
    connector = harvest_connector(harvest.server, "psa")
    api = harvest_support.Api(harvest.server)
    try:
        counted = api.admin("GET", "stats").json()["calls"]
        before = dict(connector.client.calls)
        pages = read_all(connector, domain)
        assert spent(before, connector.client.calls) == calls
        assert spent(counted, api.admin("GET", "stats").json()["calls"]) == calls
    finally:
        api.close()
        connector.close()
    return list(pages)
