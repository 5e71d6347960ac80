"""Two ERPs of one kind behind the ``erp`` role: two real Tryton databases, each on its own
server, and a routing rule (accounts in France, Belgium and the Netherlands go to the
acquired unit's ERP, the rest to the group's). A firm's deals of both routes run through
Mobilize, Bill time, Invoice and Status back over the Salesforce and Harvest sandboxes; then
each ERP is read back: every engagement's customer, project, time and invoices are in the
ERP it was routed to and nowhere else, and the CRM and the PSA show what that ERP invoiced.
"""

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
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import find_ids
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.firm import COUNTRIES, Firm, make_firm
from closeloop.devtools.demo.run import harvest_projects, log_and_approve_time, run_phase, seed_firm
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.conftest import firm_seed
from tests.p2c_support import time_to_cash_config
from tests.test_tryton import tryton  # noqa: F401 - the session's real Tryton

pytestmark = [pytest.mark.tryton, pytest.mark.timeout(900)]
CONSOLE = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - progress is not under test
ACQUIRED = ("FR", "BE", "NL")  # the acquired unit's countries: its own ERP
ERPS = ("erp_group", "erp_acquired")


@pytest.fixture(scope="module")
def second_tryton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """A second real Tryton (its own server and database), restored from the pristine copy."""
    from closeloop.devtools.sandboxctl import start_tryton

    uri = os.environ.get("CLOSELOOP_TEST_TRYTON_URI", "sqlite://")
    server = start_tryton(
        tmp_path_factory.mktemp("acquired"), uri=uri, database=f"cl_acq_{os.getpid()}"
    )
    yield server
    server.stop()


@pytest.fixture
def home(
    tmp_path: Path,
    tryton: TrytonServer,  # noqa: F811
    second_tryton: TrytonServer,
) -> Iterator[Path]:
    """Fresh Salesforce and Harvest sandboxes and a hub configuration with both ERPs."""
    try:
        state = sandboxctl.up(tmp_path, ("salesforce", "harvest"))
        sandboxctl.write_state(tmp_path, state)
        yield tmp_path
    finally:
        sandboxctl.down(tmp_path)


def entry(server: TrytonServer) -> dict[str, Any]:
    return {
        "kind": "tryton",
        "url": server.url,
        "database": server.database,
        "user": server.user,
        "password": server.password,
        "timeout_s": 10,
    }


def config(home: Path, group: TrytonServer, acquired: TrytonServer) -> Path:
    data: dict[str, Any] = yaml.safe_load((home / "closeloop.yaml").read_text())
    data["systems"] |= {"erp_group": entry(group), "erp_acquired": entry(acquired)}
    data["roles"] = {
        "erp": {
            "systems": list(ERPS),
            "rules": [
                {"field": "customer.country", "values": list(ACQUIRED), "system": "erp_acquired"}
            ],
            "default": "erp_group",
        }
    }
    return time_to_cash_config(home, data, "two-erps.yaml")


def operations(server: TrytonServer) -> TrytonOperations:
    rpc = TrytonRPC(server.url, server.database, server.user, server.password)
    return TrytonOperations(rpc, find_ids(rpc))


def expected_erp(firm: Firm, deal_id: str) -> str:
    """The ERP the rule routes a deal to, from the country the firm gave its account."""
    deal = next(r for r in firm.salesforce["Opportunity"] if r["Id"] == deal_id)
    account = next(r for r in firm.salesforce["Account"] if r["Id"] == deal["AccountId"])
    by_name = {name: code for code, (name, *_rest) in COUNTRIES.items()}
    return "erp_acquired" if by_name.get(account["BillingCountry"]) in ACQUIRED else "erp_group"


def test_each_engagement_lives_in_the_erp_it_was_routed_to_and_only_there(
    home: Path,
    tryton: TrytonServer,  # noqa: F811
    second_tryton: TrytonServer,
) -> None:
    firm = make_firm(
        datetime.now(UTC).date(),
        clients=10,
        deals=12,
        consultants=6,
        seed=firm_seed(),
        names_from=24,  # after the 24 names of the two firms of test_project_to_cash_e2e
        entities=False,  # one company, in EUR: this test is about routing between ERPs
    )
    erps = {"erp_group": operations(tryton), "erp_acquired": operations(second_tryton)}
    hub = build_hub(load_settings(config(home, tryton, second_tryton)), upgrade=True)
    try:
        seed_firm(home, erps["erp_group"], firm)  # the group's ERP knows some accounts already
        run_phase(hub, "mobilize", CONSOLE, settle_s=1, timeout_s=300)
        log_and_approve_time(home, firm, harvest_projects(hub, firm))
        run_phase(hub, "bill", CONSOLE, settle_s=1, timeout_s=600)
        check(hub, firm, erps)
    finally:
        hub.close()
        for ops in erps.values():
            ops.rpc.close()


def check(hub: Hub, firm: Firm, erps: dict[str, TrytonOperations]) -> None:
    flows = hub.operations.flows("mobilize")
    mobilized = {f.data["deal_id"]: f.data for f in flows if f.state == "mobilized"}
    assert set(mobilized) == set(firm.valid_deals) - {firm.needs_approval}
    routed = {deal_id: data["systems"]["erp"] for deal_id, data in mobilized.items()}
    assert routed == {d: expected_erp(firm, d) for d in mobilized}
    assert set(routed.values()) == set(ERPS)  # both routes were taken
    harvest = hub.registry.connector("harvest").client  # type: ignore[attr-defined]
    entries = harvest.list_all("time_entries")[0]
    salesforce = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
    deals = {
        r["Id"]: r
        for page in salesforce.query("SELECT Id, Invoiced_Amount__c FROM Opportunity")
        for r in page["records"]
    }
    invoiced_somewhere = 0
    expected_lines: dict[str, set[str]] = {erp: set() for erp in ERPS}
    for deal_id, own in routed.items():
        other = next(e for e in ERPS if e != own)
        key, data = f"SF-{deal_id}", mobilized[deal_id]
        # the project and the customer: in its own ERP only
        assert key in erps[own].find_works([key]), (deal_id, own)
        assert erps[other].find_works([key]) == {}, (deal_id, other)
        code = data["erp_customer_code"]
        assert code in erps[own].find_customers([code])
        if data["customer_match_kind"] == "none":  # created by the hub: nowhere else
            assert erps[other].find_customers([code]) == {}
        # its approved time: recorded in its own ERP (checked for both ERPs below)
        approved = {
            str(e["id"])
            for e in entries
            if (e.get("project") or {}).get("code") == key and e["is_closed"]
        }
        expected_lines[own] |= approved
        # its invoices: posted in its own ERP only; the CRM shows their total
        invoices = erps[own].read_invoices([["reference", "like", f"{key}/%"]])
        assert erps[other].read_invoices([["reference", "like", f"{key}/%"]]) == []
        assert all(i.state in ("posted", "paid") for i in invoices)
        total = sum((i.total_amount for i in invoices), Decimal(0))
        assert Decimal(str(deals[deal_id]["Invoiced_Amount__c"] or 0)) == total
        if approved:
            assert invoices, deal_id
            invoiced_somewhere += 1
            billed = {str(e["id"]) for e in entries if e.get("is_billed")}
            unbilled = sorted(
                (e["spent_date"], e["id"]) for e in entries if str(e["id"]) in approved - billed
            )
            refs = sorted((i.reference, i.number) for i in invoices)
            assert not unbilled, (deal_id, own, unbilled[:5], len(unbilled), refs)
    assert invoiced_somewhere >= 2
    ours = {str(e["id"]) for e in entries}  # the session's Tryton also holds other tests' lines
    for erp, ops in erps.items():
        rows = ops.rpc.search_read(
            "timesheet.line", [["description", "like", "%[cl:harvest-%"]], ["description"]
        )
        lines = [r["description"].rsplit("[cl:harvest-", 1)[1].rstrip("]") for r in rows]
        mine = [line for line in lines if line in ours]
        assert len(mine) == len(set(mine))  # each entry once
        assert set(mine) == expected_lines[erp], erp  # every approved entry, in its ERP only
