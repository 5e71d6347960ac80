"""Project to cash with Xero as the ERP: a firm's deals run through Mobilize, Bill time,
Invoice and Status back over the Salesforce, Harvest and Xero sandboxes (the hub's own
processes and real HTTP between them); then Xero is read back with its own API: each
engagement's customer (a contact), project (a tracking option and its items), approved time
(once each, on an approved invoice or still in work in progress after the period), invoices
approved with the hub's references, and the CRM showing what Xero invoiced and Harvest the
time billed; reconciliation then finds the three systems in agreement. The clean run keeps
within Xero's real limits (60 calls a minute, 5 at once), never refused by one, as the
sandbox counts; the same end state comes when Xero fails a call in ten (503, 429, an answer
lost after the write)."""

from __future__ import annotations

import os
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
from closeloop.connectors.xero.marks import mark_of, project_of_wip
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.acquired import contact
from closeloop.devtools.demo.firm import Firm, make_firm
from closeloop.devtools.demo.run import harvest_projects, log_and_approve_time, run_phase
from closeloop.reconcile.run import RunRequest
from closeloop.sandboxes.xero.server import XeroServer
from tests import xero_support
from tests.conftest import firm_seed
from tests.p2c_support import time_to_cash_config

pytestmark = pytest.mark.timeout(600)
CONSOLE = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - progress is not under test


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """Fresh Salesforce, Harvest and Xero sandboxes and a hub configuration on them."""
    try:
        state = sandboxctl.up(tmp_path, ("salesforce", "harvest", "xero"))
        sandboxctl.write_state(tmp_path, state)
        yield tmp_path
    finally:
        sandboxctl.down(tmp_path)


def config(home: Path, roomy: bool = False) -> Path:
    data: dict[str, Any] = yaml.safe_load((home / "closeloop.yaml").read_text())
    assert set(data["systems"]) == {"salesforce", "harvest", "xero"}
    if roomy:  # the faults run is about faults: Xero's limits are the clean run's
        data["systems"]["xero"]["requests_per_window"] = xero_support.ROOMY["minute"]
    return time_to_cash_config(home, data, "xero-firm.yaml")


def xero_server(home: Path) -> XeroServer:
    entry = sandboxctl.read_state(home)["xero"]
    return XeroServer(
        entry["pid"],
        entry["url"],
        entry["client_id"],
        entry["client_secret"],
        entry["tenant_id"],
        Path(entry["log"]),
    )


FAULTS = {"server_error": 0.04, "rate_limited": 0.04, "lost_response": 0.04, "seed": 11}
"""Xero failing as it does: 503s, 429s (not the hub's doing: Xero's own), and writes applied
whose answers never come back."""


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "faults"])
def test_a_firm_on_xero_is_invoiced_from_approved_time_and_reported_back(
    home: Path, faults: bool
) -> None:
    firm = make_firm(
        datetime.now(UTC).date(),
        clients=10,
        deals=12,
        consultants=6,
        seed=firm_seed(),
        entities=False,
    )
    hub = build_hub(load_settings(config(home, roomy=faults)), upgrade=True)
    api = xero_support.Api(xero_server(home))
    try:
        seed(home, firm, api)
        if faults:
            api.admin("PUT", "limits", json=xero_support.ROOMY).raise_for_status()
            sandboxctl.set_faults(home, "xero", FAULTS)
        run_phase(hub, "mobilize", CONSOLE, settle_s=1, timeout_s=300)
        log_and_approve_time(home, firm, harvest_projects(hub, firm))
        run_phase(hub, "bill", CONSOLE, settle_s=1, timeout_s=400)
        sandboxctl.set_faults(home, "xero", {})
        counted = api.admin("GET", "calls").json()  # Xero's limits, as the sandbox counts them
        assert counted["throttled"] == {} and counted["peak_concurrent"] <= 5, counted
        assert faults or counted["peak_minute"] <= 60, counted
        assert (sum(counted["faults_injected"].values()) >= 3) == faults, counted
        api.admin("PUT", "limits", json=xero_support.ROOMY).raise_for_status()  # for the checks
        check(hub, firm, api)
        report = hub.reconciler.run(RunRequest(trigger="test", actor="test"))
        assert report.status == "ok", report
        assert all(report.records.get(d) for d in report.domains), report.records
        assert report.drifts == (), report.drifts  # Salesforce, Harvest and Xero agree
    finally:
        hub.close()
        api.close()


def seed(home: Path, firm: Firm, api: xero_support.Api) -> None:
    """The CRM's accounts and deals, Harvest's consultants, and the customers Xero holds
    already (some with their VAT number, some to be matched by name and address)."""
    sandboxctl.seed(home, "salesforce", firm.salesforce)
    sandboxctl.seed(home, "harvest", {"users": firm.consultants})
    contacts = [contact(c, number=c["code"]) for c in firm.erp_customers]
    api.call("PUT", "Contacts", json={"Contacts": contacts}).raise_for_status()


def check(hub: Hub, firm: Firm, api: xero_support.Api) -> None:
    flows = hub.operations.flows("mobilize")
    mobilized = {f.data["deal_id"]: f.data for f in flows if f.state == "mobilized"}
    others = {f.data.get("deal_id"): (f.state, f.data.get("blocked_reason")) for f in flows}
    exceptions = [(e.entity, e.message) for e in hub.operations.list_exceptions()]
    assert set(mobilized) == set(firm.valid_deals) - {firm.needs_approval}, (others, exceptions)
    matched = {d["customer_match_kind"] for d in mobilized.values()}
    assert {"tax_id", "none"} <= matched, matched
    contacts = {c.get("ContactNumber") or c["ContactID"]: c for c in api.listed("Contacts")}
    categories = api.call("GET", "TrackingCategories").json()["TrackingCategories"]
    options = {o["Name"] for c in categories if c["Name"] == "Project" for o in c["Options"]}
    documents = [d for d in api.listed("Invoices") if d["Status"] != "DELETED"]
    harvest = hub.registry.connector("harvest").client  # type: ignore[attr-defined]
    entries = harvest.list_all("time_entries")[0]
    salesforce = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
    deals = {
        r["Id"]: r
        for page in salesforce.query("SELECT Id, Invoiced_Amount__c FROM Opportunity")
        for r in page["records"]
    }
    seen: list[str] = []
    for deal_id, data in mobilized.items():
        key = f"SF-{deal_id}"
        assert data["erp_customer_code"] in contacts and key in options
        invoices = [d for d in documents if str(d.get("Reference") or "").startswith(key + "/")]
        assert all(i["Status"] in ("AUTHORISED", "PAID") for i in invoices), key
        billed = {
            str(mark_of(li["Description"]))
            for i in invoices
            for li in i["LineItems"]
            if li.get("ItemCode")
        }
        waiting = {
            str(mark_of(li["Description"]))
            for d in documents
            if project_of_wip(d.get("Reference")) == key
            for li in d["LineItems"]
            if li.get("ItemCode")
        }
        seen += [*billed, *waiting]
        approved = {
            f"harvest-{e['id']}"
            for e in entries
            if (e.get("project") or {}).get("code") == key and e["is_closed"]
        }
        assert approved == billed | waiting, key
        harvest_billed = {f"harvest-{e['id']}" for e in entries if e.get("is_billed")}
        early = sorted(
            li["Description"][:10]
            for d in documents
            if project_of_wip(d.get("Reference")) == key
            for li in d["LineItems"]
            if str(mark_of(li["Description"])) in harvest_billed
        )
        refs = sorted(str(i.get("Reference")) for i in invoices)
        assert billed <= harvest_billed and not early, (key, early[:5], len(early), refs)
        total = sum((Decimal(str(i["Total"])) for i in invoices), Decimal(0))
        assert Decimal(str(deals[deal_id]["Invoiced_Amount__c"] or 0)) == total, key
    assert len(seen) == len(set(seen))  # each entry once in Xero
    assert any(str(d.get("Reference") or "").count("/") for d in documents)  # something invoiced
