"""The acquired unit's Xero beside the group's Tryton behind the ``erp`` role: a routing rule
sends the deals of accounts in France, Belgium and the Netherlands to Xero, the rest to Tryton.
A firm's deals of both routes run through Mobilize, Bill time, Invoice and Status back over
the Salesforce, Harvest and Xero sandboxes and a real Tryton; then each ERP is read back with
its own API: every engagement's customer, project, time and invoices are in the ERP it was
routed to and nowhere else, the CRM shows what that ERP invoiced, and reconciliation finds
the five systems in agreement; again with Salesforce, Harvest and Xero failing calls and
the hub SIGKILLed during each phase."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import load_settings
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.firm import Firm, make_firm
from closeloop.devtools.demo.run import harvest_projects, log_and_approve_time, run_phase, seed_firm
from closeloop.reconcile.run import RunRequest
from closeloop.sandboxes.tryton.server import TrytonServer
from tests import xero_support
from tests.conftest import firm_seed
from tests.p2c_support import time_to_cash_config
from tests.test_project_to_cash_e2e import kill_hub_during
from tests.test_tryton import tryton  # noqa: F401 - the session's real Tryton
from tests.test_two_erps_e2e import ACQUIRED, entry, expected_erp, operations
from tests.test_xero_e2e import xero_server

pytestmark = [pytest.mark.tryton, pytest.mark.timeout(900)]
CONSOLE = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - progress is not under test


@pytest.fixture
def home(tmp_path: Path, tryton: TrytonServer) -> Iterator[Path]:  # noqa: F811
    """Fresh Salesforce, Harvest and Xero sandboxes."""
    try:
        state = sandboxctl.up(tmp_path, ("salesforce", "harvest", "xero"))
        sandboxctl.write_state(tmp_path, state)
        yield tmp_path
    finally:
        sandboxctl.down(tmp_path)


def config(home: Path, group: TrytonServer, roomy: bool = False) -> Path:
    data: dict[str, Any] = yaml.safe_load((home / "closeloop.yaml").read_text())
    data["systems"]["erp_group"] = entry(group)
    data["systems"]["erp_acquired"] = data["systems"].pop("xero")
    if roomy:  # the faults run is about faults: Xero's limits are the clean runs'
        data["systems"]["erp_acquired"]["requests_per_window"] = xero_support.ROOMY["minute"]
    data["roles"] = {
        "erp": {
            "systems": ["erp_group", "erp_acquired"],
            "rules": [
                {"field": "customer.country", "values": list(ACQUIRED), "system": "erp_acquired"}
            ],
            "default": "erp_group",
        }
    }
    return time_to_cash_config(home, data, "mixed-erps.yaml")


FAULTS = {"server_error": 0.06, "rate_limited": 0.03, "lost_response": 0.06, "seed": 3}
"""Salesforce, Harvest and Xero failing as they do: 503s, 429s, writes whose answers are
lost."""


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "faults-and-kills"])
def test_each_engagement_lives_in_tryton_or_xero_as_routed_and_only_there(
    home: Path,
    tryton: TrytonServer,  # noqa: F811
    faults: bool,
) -> None:
    """Clean; then with the vendors failing and the hub SIGKILLed in each phase (a
    ``closeloop run`` process killed, by its process group, once it got more work done),
    the same end state."""
    firm = make_firm(
        datetime.now(UTC).date(),
        clients=10,
        deals=12,
        consultants=6,
        seed=firm_seed(),
        names_from=48 if faults else 36,  # after the names of the other end-to-end tests
        entities=False,
    )
    group = operations(tryton)
    api = xero_support.Api(xero_server(home))
    hub_config = config(home, tryton, roomy=faults)
    hub = build_hub(load_settings(hub_config), upgrade=True)
    rng = random.Random(11)
    try:
        seed_firm(home, group, firm)  # the group's ERP knows some accounts already
        if faults:
            api.admin("PUT", "limits", json=xero_support.ROOMY).raise_for_status()
            for system in ("salesforce", "harvest", "xero"):
                sandboxctl.set_faults(home, system, FAULTS)
            kill_hub_during(home, hub_config, 2, rng)
        run_phase(hub, "mobilize", CONSOLE, settle_s=1, timeout_s=300)
        if faults:
            sandboxctl.set_faults(home, "harvest", {})  # the test's own look at the projects
        projects = harvest_projects(hub, firm)
        if faults:
            sandboxctl.set_faults(home, "harvest", FAULTS)
        log_and_approve_time(home, firm, projects)
        if faults:
            kill_hub_during(home, hub_config, 3, rng)
        run_phase(hub, "bill", CONSOLE, settle_s=1, timeout_s=600)
        for system in ("salesforce", "harvest", "xero"):
            sandboxctl.set_faults(home, system, {})
        counted = api.admin("GET", "calls").json()
        assert (sum(counted["faults_injected"].values()) > 0) == faults, counted
        assert counted["throttled"] == {}, counted  # never over Xero's limits
        api.admin("PUT", "limits", json=xero_support.ROOMY).raise_for_status()  # the checks
        check(hub, firm, group, api)
        report = hub.reconciler.run(RunRequest(trigger="test", actor="test"))
        assert report.status == "ok" and report.drifts == (), report.drifts
    finally:
        hub.close()
        api.close()
        group.rpc.close()


def check(hub: Hub, firm: Firm, group: TrytonOperations, api: xero_support.Api) -> None:
    """Each engagement in the ERP it was routed to and only there; the CRM shows what that
    ERP invoiced; both ERPs invoiced something."""
    flows = hub.operations.flows("mobilize")
    mobilized = {f.data["deal_id"]: f.data for f in flows if f.state == "mobilized"}
    assert set(mobilized) == set(firm.valid_deals) - {firm.needs_approval}
    routed = {d: data["systems"]["erp"] for d, data in mobilized.items()}
    assert routed == {d: expected_erp(firm, d) for d in mobilized}
    assert set(routed.values()) == {"erp_group", "erp_acquired"}
    salesforce = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
    deals = {
        r["Id"]: r
        for page in salesforce.query("SELECT Id, Invoiced_Amount__c FROM Opportunity")
        for r in page["records"]
    }
    documents = [d for d in api.listed("Invoices") if d["Status"] != "DELETED"]
    categories = api.call("GET", "TrackingCategories").json()["TrackingCategories"]
    options = {o["Name"] for c in categories for o in c["Options"]}
    invoiced = {"erp_group": 0, "erp_acquired": 0}
    for deal_id, erp in routed.items():
        key = f"SF-{deal_id}"
        in_tryton = group.read_invoices([["reference", "like", f"{key}/%"]])
        in_xero = [d for d in documents if str(d.get("Reference") or "").startswith(key + "/")]
        if erp == "erp_acquired":
            assert key in options and group.find_works([key]) == {}, key
            assert in_tryton == [], key
            total = sum((Decimal(str(d["Total"])) for d in in_xero), Decimal(0))
            assert all(d["Status"] in ("AUTHORISED", "PAID") for d in in_xero), key
        else:
            assert key in group.find_works([key]) and key not in options, key
            assert in_xero == [], key
            total = sum((i.total_amount for i in in_tryton), Decimal(0))
        invoiced[erp] += bool(in_xero or in_tryton)
        assert Decimal(str(deals[deal_id]["Invoiced_Amount__c"] or 0)) == total, key
    assert invoiced["erp_group"] and invoiced["erp_acquired"], invoiced
