"""Reconciliation end to end: the Salesforce and Harvest sandboxes and a real Tryton, after
the hub synced a small firm, then records edited by hand in each system the way people do:
a customer renamed in the ERP, a time entry's hours corrected in Harvest (approval withdrawn,
hours changed, approved again), a deal's invoiced amount overwritten in Salesforce, a project
archived in Harvest only, and a project made in Harvest outside the hub. The report names
exactly those drifts with their owner and cause; ``--repair`` fixes the one with an owner's
value to send (the invoiced amount, from the ERP's invoices), the others become business
exceptions for a person, and the next run (the command line's) finds no drift."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from closeloop.bootstrap import build_hub
from closeloop.config import load_settings
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.run import (
    entity_operations,
    harvest_projects,
    log_and_approve_time,
    run_phase,
    seed_firm,
)
from closeloop.domain.commands import ExceptionClass
from closeloop.ports.reconcile import Fact
from closeloop.reconcile.run import RunRequest, drift_total
from tests.test_project_to_cash_e2e import (
    CONSOLE,
    config,
    firm_for_test,
    home,  # noqa: F401 - the fixture
    load_pound_rate,
)
from tests.test_tryton import tryton  # noqa: F401 - the session's real Tryton

pytestmark = [pytest.mark.tryton, pytest.mark.timeout(900)]


def test_hand_edits_in_each_system_are_found_explained_and_repaired_or_handed_over(
    home: Path,  # noqa: F811
) -> None:
    firm = firm_for_test(home, names_from=24)
    load_pound_rate(home, firm)
    firm.no_rate = {}
    hub_config = config(home)
    hub = build_hub(load_settings(hub_config), upgrade=True)
    entities = entity_operations(sandboxctl.read_state(home))
    sf = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
    hv = hub.registry.connector("harvest").client  # type: ignore[attr-defined]
    try:
        seed_firm(home, entities["DE-GMBH"], firm)
        run_phase(hub, "mobilize", CONSOLE, settle_s=1, timeout_s=300)
        log_and_approve_time(home, firm, harvest_projects(hub, firm))
        run_phase(hub, "bill", CONSOLE, settle_s=1, timeout_s=600)
        synced = hub.reconciler.run()
        assert drift_total(synced) == 0, synced.drifts

        engagements = [
            f.data
            for f in hub.operations.flows("mobilize")
            if f.state == "mobilized" and f.data["systems"]["erp"] == "tryton"
        ]
        invoiced = {
            f.data["project_key"]
            for f in hub.operations.flows("status_back")
            if f.business_key.startswith("status:") and f.data.get("invoices")
        }
        # 1. finance renames a customer in the ERP (one the GmbH alone sells to: parties
        # are shared by the companies, each ERP connection would report it)
        erps_of: dict[str, set[str]] = {}
        for flow in hub.operations.flows("mobilize"):
            account = (flow.data.get("customer") or {}).get("crm_id")
            if account and flow.data.get("systems"):
                erps_of.setdefault(account, set()).add(flow.data["systems"]["erp"])
        renamed = next(
            e
            for e in engagements
            if e.get("erp_customer_code") and erps_of[e["customer"]["crm_id"]] == {"tryton"}
        )
        ops = entities["DE-GMBH"]
        (party,) = ops.rpc.search_read(
            "party.party", [["code", "=", renamed["erp_customer_code"]]], ["id"]
        )
        ops.rpc.write("party.party", [party["id"]], {"name": "Renamed By Finance AG"})
        # 2. a manager corrects a recorded, not yet invoiced time entry in Harvest
        line = next(
            f
            for f in facts(hub, "tryton", "time")
            if f.fields.get("invoice_reference") is None and f.fields.get("project_key")
        )
        entry_id = int(line.key.removeprefix("harvest-"))
        assert sandboxctl.harvest_withdraw_approval(home, [entry_id]) == 1
        hours = float(line.fields["hours"]) + 1.5
        hv.request("PATCH", f"time_entries/{entry_id}", body={"hours": hours})
        sandboxctl.harvest_approve(home, {"ids": [entry_id]})
        # 3. someone overwrites a deal's invoiced amount in Salesforce
        billed = next(e for e in engagements if e["project_key"] in invoiced)
        sf.request(
            "PATCH", f"sobjects/Opportunity/{billed['deal_id']}", body={"Invoiced_Amount__c": 1}
        )
        # 4. a project archived in Harvest only
        archived = next(
            e
            for e in engagements
            if e["project_key"] not in (line.fields["project_key"], billed["project_key"])
        )
        project = harvest_project(hv, archived["project_key"])
        hv.request("PATCH", f"projects/{project['id']}", body={"is_active": False})
        # 5. a project of a blocked deal made in Harvest by hand
        blocked = next(iter(firm.blocked))
        hv.request(
            "POST",
            "projects",
            body={
                "client_id": project["client"]["id"],
                "name": "Made by hand",
                "code": f"SF-{blocked}",
                "is_billable": True,
                "bill_by": "Project",
                "budget_by": "none",
            },
        )
        run_phase(hub, "edits", CONSOLE, settle_s=1, timeout_s=300)  # the hub sees them

        report = hub.reconciler.run()
        found = {(d.domain, d.kind, d.key, d.field): d for d in report.drifts}
        assert set(found) == {
            ("customers", "mismatch", renamed["customer"]["crm_id"], "legal_name"),
            ("time", "mismatch", line.key, "hours"),
            ("invoices", "mismatch", billed["project_key"], "invoiced"),
            ("projects", "mismatch", archived["project_key"], "status"),
            ("projects", "orphan", f"SF-{blocked}", None),
        }, report.drifts
        name = found[("customers", "mismatch", renamed["customer"]["crm_id"], "legal_name")]
        assert name.owner == "tryton" and name.values["tryton"] == "Renamed By Finance AG"
        assert "tryton (the owner) changed it" in name.cause
        time_drift = found[("time", "mismatch", line.key, "hours")]
        assert (
            time_drift.owner == "harvest" and "harvest (the owner) changed it" in time_drift.cause
        )
        amount = found[("invoices", "mismatch", billed["project_key"], "invoiced")]
        assert amount.owner == "tryton" and amount.values["salesforce"] == "1.00"
        assert "salesforce was edited at" in amount.cause
        status = found[("projects", "mismatch", archived["project_key"], "status")]
        assert status.owner == "tryton" and status.values == {"harvest": "closed", "tryton": "open"}
        assert "harvest was edited at" in status.cause
        orphan = found[("projects", "orphan", f"SF-{blocked}", None)]
        assert orphan.owner is None and "made outside the hub" in orphan.cause

        plan = hub.reconciler.run(RunRequest(repair=True, dry_run=True))
        assert {d.status for d in plan.drifts} == {"planned"}
        repaired = hub.reconciler.run(RunRequest(repair=True, actor="ops@example.com"))
        statuses = {(d.domain, d.field): d.status for d in repaired.drifts}
        assert statuses == {
            ("customers", "legal_name"): "exception",
            ("time", "hours"): "exception",
            ("invoices", "invoiced"): "repaired",
            ("projects", "status"): "exception",
            ("projects", None): "exception",
        }
        run_phase(hub, "repairs", CONSOLE, settle_s=1, timeout_s=300)
        deal = sf.request("GET", f"sobjects/Opportunity/{billed['deal_id']}")
        assert deal["Invoiced_Amount__c"] != 1  # the ERP's figure again
        people = [
            e
            for e in hub.operations.list_exceptions("open", 1000)
            if e.error_class is ExceptionClass.DRIFT
        ]
        assert len(people) == 4 and all("reconciliation found drift" in e.message for e in people)
    finally:
        hub.close()
        for each in entities.values():
            each.rpc.close()
    # the command line, as a person runs it the next morning: no drift, four with people
    done = subprocess.run(
        [sys.executable, "-m", "closeloop.cli", "reconcile", "-c", str(hub_config), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    after: dict[str, Any] = json.loads(done.stdout)
    assert after["status"] == "ok"
    with_person = sum(kinds.get("with_person", 0) for kinds in after["counts"].values())
    assert with_person == 4, after["counts"]


def facts(hub: Any, system: str, domain: str) -> list[Fact]:
    """Every fact of ``domain`` that ``system``'s connector reads."""
    source = hub.registry.connector(system)
    return [f for page in source.read_facts(domain) for f in page]


def harvest_project(hv: Any, code: str) -> dict[str, Any]:
    """The Harvest project coded ``code``."""
    projects, _ = hv.list_all("projects")
    return next(p for p in projects if p.get("code") == code)
