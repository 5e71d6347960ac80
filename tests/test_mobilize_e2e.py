"""Mobilize end to end: the Salesforce and Harvest sandboxes in their own processes, a real
Tryton, and the hub wired from settings. A closed-won deal whose account the ERP already knows
is matched and mobilized; a deal with an account lacking its tax id is blocked with a business
exception and the reason in Salesforce, and resumes by itself once the account is fixed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import Settings
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import find_ids
from closeloop.sandboxes.harvest.server import HarvestServer
from closeloop.sandboxes.salesforce.server import SalesforceServer
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.conftest import fresh_tax_id
from tests.harvest_support import Api as HarvestApi
from tests.harvest_support import running_harvest
from tests.salesforce_support import Api as SalesforceApi
from tests.salesforce_support import running_salesforce, wait_past
from tests.test_tryton import tryton  # noqa: F401 - the session's real Tryton

pytestmark = [pytest.mark.tryton, pytest.mark.timeout(300)]
PAST = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
ACME, BETA = "0015g00000ACME0AAA", "0015g00000BETA0AAA"
DEAL_A, DEAL_B = "0065g00000DEAL0AAA", "0065g00000DEAL1AAA"
ACME_VAT, BETA_UID = fresh_tax_id("DE"), fresh_tax_id("CH")  # unique in the shared Tryton


def seed() -> dict[str, Any]:
    def deal(rid: str, account: str, name: str) -> dict[str, Any]:
        return {
            "Id": rid,
            "Name": name,
            "AccountId": account,
            "StageName": "Closed Won",
            "CloseDate": "2026-02-27",
            "CurrencyIsoCode": "EUR",
            "Start_Date__c": "2026-03-02",
            "Billing_Method__c": "Time and Materials",
            "Finance_Approval__c": "Not Required",
            "SystemModstamp": PAST,
        }

    def line(deal_id: str, role: str, hours: int, rate: str) -> dict[str, Any]:
        return {
            "OpportunityId": deal_id,
            "Product2Id": "01t5g00000CONS0AAA",
            "Quantity": hours,
            "UnitPrice": rate,
            "Role__c": role,
            "CurrencyIsoCode": "EUR",
        }

    return {
        "Account": [
            {
                "Id": ACME,
                "Name": "ACME Consulting",
                "Legal_Name__c": "Acme Consulting GmbH",
                "BillingCountry": "Germany",
                "BillingCity": "Berlin",
                "BillingPostalCode": "10115",
                "Tax_Id__c": f"{ACME_VAT[:2]} {ACME_VAT[2:]}",  # as people type it
                "CurrencyIsoCode": "EUR",
                "SystemModstamp": PAST,
            },
            {
                "Id": BETA,
                "Name": "Beta Systems",
                "Legal_Name__c": "Beta Systems AG",
                "BillingCountry": "Switzerland",
                "BillingCity": "Zurich",
                "CurrencyIsoCode": "EUR",
                "SystemModstamp": PAST,
            },
        ],
        "Product2": [{"Id": "01t5g00000CONS0AAA", "Name": "Consulting"}],
        "Opportunity": [deal(DEAL_A, ACME, "Acme ERP rollout"), deal(DEAL_B, BETA, "Beta audit")],
        "OpportunityLineItem": [
            line(DEAL_A, "Senior Consultant", 80, "180.00"),
            line(DEAL_A, "Analyst", 40, "95.00"),
            line(DEAL_B, "Auditor", 60, "150.00"),
        ],
    }


@pytest.fixture
def systems(tmp_path: Path) -> Iterator[tuple[SalesforceServer, HarvestServer]]:
    with running_salesforce(tmp_path / "sf") as sf, running_harvest(tmp_path / "hv") as hv:
        yield sf, hv


def log_time(harvest: HarvestApi, project_id: int) -> dict[int, bool | None]:
    """Time on the mobilized project: two approved entries (to be billed), one waiting for
    approval, one approved on a task added in Harvest that Tryton does not have (refused).
    Returns ``{entry id: billed?}`` (``None``: refused)."""
    harvest.admin(
        "POST",
        "seed",
        json={
            "users": [
                {"id": 901, "first_name": "Kim", "last_name": "Allen", "email": "kim@firm.example"}
            ]
        },
    )
    tasks = {
        a["task"]["name"]: a["task"]["id"]
        for a in harvest.call("GET", f"projects/{project_id}/task_assignments").json()[
            "task_assignments"
        ]
    }
    workshop = harvest.call("POST", "tasks", json={"name": "Workshop"}).json()["id"]
    harvest.call("POST", f"projects/{project_id}/task_assignments", json={"task_id": workshop})
    harvest.call("POST", f"projects/{project_id}/user_assignments", json={"user_id": 901})
    plan = [("Senior Consultant", 7.5, True), ("Analyst", 4.0, True), ("Analyst", 2.0, False)]
    entries: dict[int, bool | None] = {}
    for task, hours, approve in [*plan, ("Workshop", 3.0, True)]:
        task_id = workshop if task == "Workshop" else tasks[task]
        body = {
            "project_id": project_id,
            "task_id": task_id,
            "spent_date": "2026-03-03",
            "hours": hours,
            "user_id": 901,
            "notes": f"{task} work",
        }
        created = harvest.call("POST", "time_entries", json=body).json()
        if approve:
            harvest.admin("POST", "approve", json={"ids": [created["id"]]})
        entries[created["id"]] = None if task == "Workshop" else approve
    return entries


def wire(tmp_path: Path, sf: SalesforceServer, hv: HarvestServer, tr: TrytonServer) -> Hub:
    entry = sf.as_json()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        worker={"poll_interval_s": 0.5, "retry_base_delay_s": 0.05, "retry_max_delay_s": 1},
        systems={
            "salesforce": {
                "kind": "salesforce",
                "url": entry["instance_url"],
                "client_id": entry["client_id"],
                "client_secret": entry["client_secret"],
                "user": entry["username"],
                "password": entry["password"],
                "organization_id": entry["organization_id"],
                "ca_bundle": entry["ca_bundle"],
                "objects": ["Opportunity"],
            },
            "harvest": {
                "kind": "harvest",
                "url": hv.base_url,
                "token": hv.token,
                "account_id": str(hv.account_id),
                "objects": [],
            },
            "tryton": {
                "kind": "tryton",
                "url": tr.url,
                "database": tr.database,
                "user": tr.user,
                "password": tr.password,
                "timeout_s": 30,
            },
        },
        flows={"mobilize": {}, "bill_time": {}, "invoice": {}, "status_back": {}},
    )
    return build_hub(settings, upgrade=True)


def test_closed_won_deals_are_mobilized_or_blocked_until_fixed(
    tmp_path: Path,
    systems: tuple[SalesforceServer, HarvestServer],
    tryton: TrytonServer,  # noqa: F811
) -> None:
    sf, hv = systems
    salesforce, harvest = SalesforceApi(sf), HarvestApi(hv)
    assert salesforce.admin("POST", "seed", json=seed()).status_code == 200
    rpc = TrytonRPC(tryton.url, tryton.database, tryton.user, tryton.password)
    ops = TrytonOperations(rpc, find_ids(rpc))
    existing = f"C-{time.monotonic_ns()}"  # the ERP already has Acme, under its own code
    ops.upsert_customer(existing, "Acme Consulting GmbH", "DE", [("eu_vat", ACME_VAT)])
    hub = wire(tmp_path, sf, hv, tryton)
    try:
        assert hub.worker.run_until_idle(timeout_s=120)
        deal_a = salesforce.call("GET", f"sobjects/Opportunity/{DEAL_A}").json()
        deal_b = salesforce.call("GET", f"sobjects/Opportunity/{DEAL_B}").json()
        assert deal_a["Mobilization_Status__c"] == "Mobilized", deal_a["Mobilization_Message__c"]
        assert deal_a["ERP_Customer_Id__c"] == existing  # matched by tax id, not created again
        assert "by tax id" in deal_a["Mobilization_Message__c"]
        assert deal_b["Mobilization_Status__c"] == "Blocked"
        assert "tax id is missing" in deal_b["Mobilization_Message__c"]
        (issue,) = hub.operations.list_exceptions("open", 10)
        assert issue.impact == "revenue" and "closed-won deal blocked" in issue.message
        projects = {p["code"]: p for p in harvest.call("GET", "projects").json()["projects"]}
        assert set(projects) == {f"SF-{DEAL_A}"}
        assert deal_a["PSA_Project_Id__c"] == str(projects[f"SF-{DEAL_A}"]["id"])
        rates = {
            a["task"]["name"]: a["hourly_rate"]
            for a in harvest.call(
                "GET", f"projects/{deal_a['PSA_Project_Id__c']}/task_assignments"
            ).json()["task_assignments"]
        }
        assert rates == {"Senior Consultant": 180.0, "Analyst": 95.0}
        works = ops.find_works([f"SF-{DEAL_A}"])
        assert f"SF-{DEAL_A}" in works
        assert len(ops.find_customers([existing, f"SF-{ACME}"])) == 1  # no second Acme

        fixed = salesforce.call("PATCH", f"sobjects/Account/{BETA}", json={"Tax_Id__c": BETA_UID})
        assert fixed.status_code == 204
        stamp = salesforce.call("GET", f"sobjects/Account/{BETA}").json()["SystemModstamp"]
        client = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
        wait_past(client, stamp)
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(timeout_s=120)
        deal_b = salesforce.call("GET", f"sobjects/Opportunity/{DEAL_B}").json()
        assert deal_b["Mobilization_Status__c"] == "Mobilized", (
            deal_b["Mobilization_Message__c"],
            hub.operations.stats(),
            [e.message for e in hub.operations.list_exceptions("open", 10)],
        )
        assert deal_b["ERP_Customer_Id__c"] == f"SF-{BETA}"  # created: no ERP customer matched
        assert hub.operations.list_exceptions("open", 10) == []

        # Bill time: approved billable hours on deal A's project become Tryton lines, once.
        entries = log_time(harvest, int(deal_a["PSA_Project_Id__c"]))
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(timeout_s=120)
        hub.worker.poll_all()  # a second look changes nothing
        assert hub.worker.run_until_idle(timeout_s=60)
        for entry_id, recorded in entries.items():
            marker = f"%[cl:harvest-{entry_id}]"
            lines = rpc.search_read("timesheet.line", [["description", "like", marker]], ["id"])
            assert len(lines) == (1 if recorded else 0), (entry_id, recorded)
        (refused,) = hub.operations.list_exceptions("open", 10)  # the task Tryton lacks
        workshop = [e for e, recorded in entries.items() if recorded is None]
        assert refused.entity == f"harvest:time_entry:{workshop[0]}"
    finally:
        hub.close()
        rpc.close()
        salesforce.close()
        harvest.close()


def test_an_ambiguous_customer_waits_for_a_person_then_the_link_serves_every_deal(
    tmp_path: Path,
    systems: tuple[SalesforceServer, HarvestServer],
    tryton: TrytonServer,  # noqa: F811
) -> None:
    """Two ERP customers tie for one account: both its deals block with the candidates named;
    a person links the account to one (``Operations.link``, as ``closeloop xref link``); both
    deals resume at once on that customer, and a later deal of the account is not matched
    again: the cross-reference answers it."""
    sf, hv = systems
    salesforce = SalesforceApi(sf)
    word = f"Gamma{time.monotonic_ns()}"  # unique in the shared Tryton
    gamma = "0015g00000GAMM0AAA"
    deals = ["0065g00000GAMM1AAA", "0065g00000GAMM2AAA", "0065g00000GAMM3AAA"]
    data = seed()
    data["Account"] = [
        {
            "Id": gamma,
            "Name": word,
            "Legal_Name__c": f"{word} Analytics GmbH",
            "BillingCountry": "Germany",
            "BillingStreet": "Hauptstr. 5",
            "BillingCity": "Berlin",
            "BillingPostalCode": "10115",
            "Tax_Id__c": fresh_tax_id("DE"),  # not in the ERP: matching goes by name
            "CurrencyIsoCode": "EUR",
            "SystemModstamp": PAST,
        }
    ]
    template = data["Opportunity"][0]
    data["Opportunity"] = [
        {**template, "Id": d, "AccountId": gamma, "Name": f"Gamma phase {n}"}
        for n, d in enumerate(deals[:2], 1)
    ]
    data["OpportunityLineItem"] = [
        {**data["OpportunityLineItem"][0], "OpportunityId": d} for d in deals[:2]
    ]
    assert salesforce.admin("POST", "seed", json=data).status_code == 200
    rpc = TrytonRPC(tryton.url, tryton.database, tryton.user, tryton.password)
    ops = TrytonOperations(rpc, find_ids(rpc))
    twins = [f"C-{word}-1", f"C-{word}-2"]
    address = {"line1": "Hauptstr. 5", "city": "Berlin", "postal_code": "10115"}
    for code in twins:
        ops.upsert_customer(code, f"{word} Analytics GmbH", "DE", address=address)
    hub = wire(tmp_path, sf, hv, tryton)
    try:
        assert hub.worker.run_until_idle(timeout_s=120)
        blocked = hub.operations.list_exceptions("open", 10)
        assert sorted(e.entity for e in blocked) == [
            f"salesforce:Opportunity:{d}" for d in deals[:2]
        ]
        for issue in blocked:
            assert issue.error_class.value == "duplicate"
            assert twins[0] in issue.message and twins[1] in issue.message
            assert f"closeloop xref link account salesforce:{gamma}" in issue.message

        moved = hub.operations.link(
            "account", ("salesforce", gamma), ("tryton", twins[1]), "kim", "same VAT on paper"
        )
        waiting = [("mobilize", f.business_key) for f in hub.operations.flows("mobilize")]
        assert len(waiting) == 2 and moved == sorted(waiting)
        assert hub.worker.run_until_idle(timeout_s=120)
        for d in deals[:2]:
            row = salesforce.call("GET", f"sobjects/Opportunity/{d}").json()
            assert row["Mobilization_Status__c"] == "Mobilized", row["Mobilization_Message__c"]
            assert row["ERP_Customer_Id__c"] == twins[1]
        assert hub.operations.list_exceptions("open", 10) == []

        later = {**data["Opportunity"][0], "Id": deals[2], "Name": "Gamma phase 3"}
        del later["SystemModstamp"]  # changed now: the next poll sees it
        line = {**data["OpportunityLineItem"][0], "OpportunityId": deals[2]}
        later_seed = {"Opportunity": [later], "OpportunityLineItem": [line]}
        assert salesforce.admin("POST", "seed", json=later_seed).status_code == 200
        stamp = salesforce.call("GET", f"sobjects/Opportunity/{deals[2]}").json()["SystemModstamp"]
        wait_past(hub.registry.connector("salesforce").client, stamp)  # type: ignore[attr-defined]
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(timeout_s=120)
        row = salesforce.call("GET", f"sobjects/Opportunity/{deals[2]}").json()
        assert row["Mobilization_Status__c"] == "Mobilized", row["Mobilization_Message__c"]
        assert row["ERP_Customer_Id__c"] == twins[1]
        kinds = {
            f.data["deal_id"]: f.data["customer_match_kind"]
            for f in hub.operations.flows("mobilize")
        }
        assert kinds == {deals[0]: "linked", deals[1]: "linked", deals[2]: "xref"}
        matches = [
            e for e in hub.operations.flows() if e.flow == "mobilize" and e.data.get("match_asked")
        ]
        assert len(matches) == 2  # the third deal never asked the ERP to match
    finally:
        hub.close()
        rpc.close()
        salesforce.close()
