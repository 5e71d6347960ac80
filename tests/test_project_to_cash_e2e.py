"""Project to cash end to end, through real processes: the Salesforce and Harvest sandboxes,
a real Tryton, and the hub wired from the ``closeloop.yaml`` that ``sandbox up`` writes. A
firm (demo_firm) is seeded; the hub mobilizes its closed-won deals, records the approved time,
invoices each project per month, posts the invoices and reports them and their payments back.
In the first test finance approves the provisional deal late: its held time is then released,
recorded and invoiced.

The final state is read from each system and checked (tests/p2c_support.py): every valid deal
mobilized once, no duplicated customer, every approved billable hour recorded once and
invoiced at its rate, invoice totals equal to hours times rates plus tax, the write-back
fields, Harvest's billed flags, and business exceptions for exactly the bad records. The
second test gets the same final state while all three systems fail calls and the hub process
is killed with SIGKILL several times. The third runs ``closeloop demo --keep-running`` as a
person would, reads ``closeloop status`` and stops everything with ``sandbox down``."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from rich.console import Console

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import load_settings
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.connectors.tryton.rates import load_rates
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.billing import credit_an_invoice
from closeloop.devtools.demo.entities import ShiftedClock
from closeloop.devtools.demo.firm import Firm, make_firm
from closeloop.devtools.demo.run import (
    AGING_DAYS,
    amend_and_accept,
    clients_pay,
    configure_entities,
    entity_operations,
    finance_closes_projects,
    harvest_projects,
    log_and_approve_time,
    run_phase,
    seed_firm,
    tryton_operations,
)
from closeloop.domain.entities import ExchangeRate
from closeloop.reconcile.run import RunRequest
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.conftest import done_commands, firm_seed
from tests.faultproxy import FaultProxy, Rule
from tests.p2c_support import check, read_back
from tests.test_tryton import tryton  # noqa: F401 - the session's real Tryton

pytestmark = [pytest.mark.tryton, pytest.mark.timeout(900)]
CONSOLE = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - progress is not under test


@pytest.fixture
def home(tmp_path: Path, tryton: TrytonServer) -> Iterator[Path]:  # noqa: F811
    """Fresh Salesforce and Harvest sandboxes; the session's Tryton (each test's firm has its
    own records there)."""
    try:
        state = sandboxctl.up(tmp_path, ("salesforce", "harvest"))
        entry = {k: v for k, v in tryton.as_json().items() if k != "pid"}  # not ours to stop
        sandboxctl.write_state(tmp_path, {**state, "tryton": entry})
        yield tmp_path
    finally:
        sandboxctl.down(tmp_path)


def firm_for_test(home: Path, names_from: int) -> Firm:
    """A small firm of three legal entities, its configuration laid over ``home``'s and its
    exchange rates loaded; each test sharing the session's Tryton passes its own
    ``names_from`` (0, 12, ...) so that no client of one firm looks like a customer of
    another."""
    seed = firm_seed()  # records unique in the shared Tryton
    firm = make_firm(
        datetime.now(UTC).date(),
        clients=12,
        deals=18,
        consultants=10,
        seed=seed,
        names_from=names_from,
    )
    configure_entities(home, sandboxctl.read_state(home), firm)
    return firm


def load_pound_rate(home: Path, firm: Firm) -> None:
    """The GBP rate the firm's rates file lacks, loaded into the session's Tryton (the same
    figure whichever test loads it first)."""
    ops = tryton_operations(sandboxctl.read_state(home))
    try:
        rate = ExchangeRate(
            currency="GBP",
            valid_from=firm.start.replace(day=1),
            rate=Decimal("0.8600"),
            source="test: the rate finance loads when asked",
        )
        load_rates(ops.rpc, [rate])
    finally:
        ops.rpc.close()


def config(home: Path, tryton_url: str | None = None) -> Path:
    """``home/closeloop.yaml`` as ``sandbox up`` wrote it, made to react within a second."""
    data: dict[str, Any] = yaml.safe_load((home / "closeloop.yaml").read_text())
    data["worker"] = {
        "poll_interval_s": 0.5,
        "retry_base_delay_s": 0.05,
        "retry_max_delay_s": 1.0,
        "lease_s": 30,
        "breaker_cooldown_s": 0.5,
        "idle_wait_s": 0.05,
    }
    data["flows"]["invoice"] = {"settle_s": 1}
    for system in data["systems"].values():
        system["timeout_s"] = 10
    if tryton_url:  # every entity's system: one database, one way to it
        for system in data["systems"].values():
            if system["kind"] == "tryton":
                system["url"] = tryton_url
    path = home / "test-hub.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def final_check(home: Path, hub: Hub, firm: Firm, today: date | None = None) -> None:
    entities = entity_operations(sandboxctl.read_state(home))
    try:
        final = read_back(
            hub.registry.connector("salesforce").client,  # type: ignore[attr-defined]
            hub.registry.connector("harvest").client,  # type: ignore[attr-defined]
            entities,
            firm,
        )
        check(firm, final, hub.operations.list_exceptions("open", 10_000), today)
    finally:
        for each in entities.values():
            each.rpc.close()
    reconciled(hub, firm)


def reconciled(hub: Hub, firm: Firm) -> None:
    """The systems agree by reconciliation: the only drift is a project finance closed in
    the ERP and still open in Harvest (the ERP owns the status: the repair closes it in
    Harvest), and once the repairs are delivered a second run finds none."""
    first = hub.reconciler.run(RunRequest(repair=True, trigger="test", actor="test"))
    assert first.status == "ok" and all(first.records.get(d) for d in first.domains), first
    closed = {("projects", "mismatch", f"SF-{d}", "status") for d in firm.finance_closes}
    drift = {(d.domain, d.kind, d.key, d.field) for d in first.drifts}
    assert drift <= closed, [d for d in first.drifts if d.status != "repaired"]
    assert all(d.status == "repaired" for d in first.drifts), first.drifts
    run_phase(hub, "repairs", CONSOLE, settle_s=1, timeout_s=300)
    after = hub.reconciler.run(RunRequest(trigger="test", actor="test"))
    assert after.status == "ok" and after.records == first.records, after
    assert after.drifts == (), after.drifts


def test_a_quarter_of_project_to_cash_ends_in_agreement_across_the_systems(home: Path) -> None:
    firm = firm_for_test(home, names_from=0)
    entities = entity_operations(sandboxctl.read_state(home))
    ops = entities["DE-GMBH"]
    clock = ShiftedClock()
    hub = build_hub(load_settings(config(home)), clock=clock, upgrade=True)
    try:
        seed_firm(home, ops, firm)
        run_phase(hub, "mobilize", CONSOLE, settle_s=1, timeout_s=300)
        amend_and_accept(hub, firm)  # three deals amended, milestones accepted, one disputed
        run_phase(hub, "changes", CONSOLE, settle_s=1, timeout_s=300)
        finance_closes_projects(ops, firm)
        log_and_approve_time(home, firm, harvest_projects(hub, firm))
        run_phase(hub, "bill", CONSOLE, settle_s=1, timeout_s=600)
        held = [f for f in hub.operations.flows("bill_time") if f.state == "held"]
        assert held and {f.data["project_code"] for f in held} == {f"SF-{firm.needs_approval}"}
        # the GmbH's deal in GBP: Tryton has no GBP rate, its invoice waits as an exception
        (pound,) = firm.no_rate
        waiting = [
            e
            for e in hub.operations.list_exceptions("open", 1000)
            if e.entity.startswith(f"tryton:invoice:SF-{pound}/")
        ]
        assert waiting and all("no exchange rate for GBP" in e.message for e in waiting)
        assert not tryton_invoices(ops, pound)  # nothing half-made in the ERP
        load_pound_rate(home, firm)  # finance loads the rate and replays
        for exception in waiting:
            hub.operations.replay(exception.id, "finance@example.com", "GBP rate loaded")
        firm.no_rate = {}
        # finance approves the provisional deal: its held time is released and billed
        salesforce = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
        approval = {"Finance_Approval__c": "Approved"}
        salesforce.request("PATCH", f"sobjects/Opportunity/{firm.needs_approval}", body=approval)
        firm.needs_approval = ""  # no deal waits any more
        run_phase(hub, "approval", CONSOLE, settle_s=1, timeout_s=300)
        assert credit_an_invoice(hub, firm)  # finance credits one invoice, to bill it again
        run_phase(hub, "credit", CONSOLE, settle_s=1, timeout_s=300)
        paid = clients_pay(entities, firm)
        assert paid  # some invoices were paid in full, some in part
        run_phase(hub, "payments", CONSOLE, settle_s=1, timeout_s=300)
        final_check(home, hub, firm)
        # weeks later: a few pay late, the other unpaid invoices are overdue in the CRM
        clock.shift = timedelta(days=AGING_DAYS)
        clients_pay(entities, firm, clock.now().date() - timedelta(days=5), late=True)
        run_phase(hub, "aging", CONSOLE, settle_s=1, timeout_s=300)
        final_check(home, hub, firm, clock.now().date())
        overdue = [
            f
            for f in hub.operations.flows("status_back")
            if f.business_key.startswith("status:") and f.data.get("reported", ["0"])[0] != "0"
        ]
        assert overdue, "no invoice fell overdue"
    finally:
        hub.close()
        for each in entities.values():
            each.rpc.close()


def tryton_invoices(ops: TrytonOperations, deal_id: str) -> list[Any]:
    """The deal's customer invoices in Tryton, and any draft invoice without a reference (an
    invoice made and then not adopted would be one)."""
    return ops.rpc.search_read(
        "account.invoice",
        [
            "OR",
            [["reference", "like", f"SF-{deal_id}/%"]],
            [["state", "=", "draft"], ["reference", "=", None], ["type", "=", "out"]],
        ],
        ["state", "reference"],
    )


def kill_hub_during(home: Path, hub_config: Path, kills: int, rng: random.Random) -> None:
    """Run ``closeloop run`` and SIGKILL it ``kills`` times, each time once it got some more
    commands done (or after 20 s)."""
    db = home / "hub.db"
    for _ in range(kills):
        target = done_commands(db) + rng.randint(3, 40)
        process = subprocess.Popen(
            [sys.executable, "-m", "closeloop.cli", "run", "-c", str(hub_config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        try:
            while done_commands(db) < target and time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"the hub exited by itself with {process.returncode}")
                time.sleep(0.05)  # polling the database for progress, not waiting out a race
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_the_same_end_state_with_failing_systems_and_a_hub_killed_mid_run(
    home: Path,
    tryton: TrytonServer,  # noqa: F811
) -> None:
    firm = firm_for_test(home, names_from=12)
    load_pound_rate(home, firm)  # this test is about faults, not rates
    firm.no_rate = {}
    rng = random.Random(7)
    proxy = FaultProxy(tryton.url)
    proxy.rules += [
        Rule("timesheet.line.create", drop=True),  # applied, answer lost (one bulk create)
        Rule("project.work.invoice", drop=True, count=2),
        Rule("account.invoice.post", status=503, count=3),
        Rule("party.party.create", drop=True),
        Rule("project.work.create", status=503, count=2),
        Rule("account.invoice.credit.execute", drop=True),  # the credit note made, answer lost
    ]
    plan = {"server_error": 0.08, "lost_response": 0.08, "seed": 5}
    for system in ("salesforce", "harvest"):
        sandboxctl.set_faults(home, system, plan)
    hub_config = config(home, tryton_url=proxy.url)
    entities = entity_operations(sandboxctl.read_state(home))
    ops = entities["DE-GMBH"]
    hub = build_hub(load_settings(hub_config), upgrade=True)
    try:
        seed_firm(home, ops, firm)
        kill_hub_during(home, hub_config, 2, rng)
        run_phase(hub, "mobilize", CONSOLE, settle_s=1, timeout_s=300)
        sandboxctl.set_faults(home, "salesforce", {})  # the people's own edits in the CRM
        amend_and_accept(hub, firm)
        sandboxctl.set_faults(home, "salesforce", plan)
        kill_hub_during(home, hub_config, 1, rng)
        run_phase(hub, "changes", CONSOLE, settle_s=1, timeout_s=300)
        finance_closes_projects(ops, firm)
        sandboxctl.set_faults(home, "harvest", {})  # the test's own look at the projects
        projects = harvest_projects(hub, firm)
        sandboxctl.set_faults(home, "harvest", plan)
        log_and_approve_time(home, firm, projects)
        kill_hub_during(home, hub_config, 3, rng)
        run_phase(hub, "bill", CONSOLE, settle_s=1, timeout_s=600)
        assert credit_an_invoice(hub, firm)
        kill_hub_during(home, hub_config, 1, rng)
        run_phase(hub, "credit", CONSOLE, settle_s=1, timeout_s=300)
        clients_pay(entities, firm)
        kill_hub_during(home, hub_config, 1, rng)
        run_phase(hub, "payments", CONSOLE, settle_s=1, timeout_s=300)
        for system in ("salesforce", "harvest"):
            sandboxctl.set_faults(home, system, {})
        final_check(home, hub, firm)
    finally:
        hub.close()
        for each in entities.values():
            each.rpc.close()
        proxy.close()
    assert all(rule.count == 0 for rule in proxy.rules), proxy.rules  # each fault happened


def check_acquired_unit(home: Path, book: dict[str, str]) -> None:
    """The acquired unit's deals (``Legal_Entity__c`` GB-ACQ) read back from each system:
    their invoices are in Xero only, in GBP, every line at the UK standard rate's tax type
    (OUTPUT2, 20 % per line, rounded to the penny), the totals as the summary's ``book``
    counted them, and Salesforce shows Xero's invoiced and paid amounts."""
    hub = build_hub(load_settings(home / "closeloop.yaml"))
    try:
        sf = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
        xero = hub.registry.connector("xero").client  # type: ignore[attr-defined]
        tryton = hub.registry.connector("tryton").operations  # type: ignore[attr-defined]
        soql = (
            "SELECT Id, Invoiced_Amount__c, Paid_Amount__c FROM Opportunity "
            "WHERE Legal_Entity__c = 'GB-ACQ'"
        )
        deals = {r["Id"]: r for page in sf.query(soql) for r in page["records"]}
        assert deals
        invoices = [
            i
            for i in xero.list_all("Invoices", "Invoices", params={"where": 'Type=="ACCREC"'})
            if str(i.get("Reference") or "").startswith("SF-")
            and i["Status"] in ("AUTHORISED", "PAID")
        ]
        assert invoices and {i["Reference"].split("/")[0][3:] for i in invoices} <= set(deals)
        assert {i["CurrencyCode"] for i in invoices} == {"GBP"}
        for invoice in invoices:
            full = xero.request("GET", f"Invoices/{invoice['InvoiceID']}")["Invoices"][0]
            lines = full["LineItems"]
            assert lines and {line["TaxType"] for line in lines} == {"OUTPUT2"}
            for line in lines:
                expected = (Decimal(str(line["LineAmount"])) * Decimal("0.20")).quantize(
                    Decimal("0.01")
                )
                assert Decimal(str(line["TaxAmount"])) == expected, line
            subtotal = sum((Decimal(str(line["LineAmount"])) for line in lines), Decimal(0))
            assert Decimal(str(full["SubTotal"])) == subtotal
            assert Decimal(str(full["Total"])) == subtotal + Decimal(str(full["TotalTax"]))
        total = sum((Decimal(str(i["Total"])) for i in invoices), Decimal(0))
        paid = sum((Decimal(str(i["AmountPaid"])) for i in invoices), Decimal(0))
        assert (Decimal(book["total"]), Decimal(book["paid"])) == (total, paid)
        assert paid > 0  # the acquired unit's clients paid in Xero
        for deal_id, deal in deals.items():
            mine = [i for i in invoices if i["Reference"].startswith(f"SF-{deal_id}/")]
            invoiced = sum((Decimal(str(i["Total"])) for i in mine), Decimal(0))
            settled = sum((Decimal(str(i["AmountPaid"])) for i in mine), Decimal(0))
            assert Decimal(str(deal["Invoiced_Amount__c"] or 0)) == invoiced, deal
            assert Decimal(str(deal["Paid_Amount__c"] or 0)) == settled, deal
        in_tryton = tryton.rpc.search_read(  # every company of the group's Tryton
            "account.invoice",
            ["OR", *(["reference", "like", f"SF-{d}%"] for d in deals)],
            ["reference"],
        )
        assert in_tryton == []  # and nothing of theirs in the group's ERP
    finally:
        hub.close()


def test_the_demo_command_runs_a_quarter_keeps_running_and_stops(tmp_path: Path) -> None:
    home = tmp_path / ".closeloop"  # the default, relative to where a person runs it
    run = subprocess.run(
        [
            *(sys.executable, "-m", "closeloop.cli", "demo"),
            *("--keep-running", "--clients", "14", "--deals", "20", "--consultants", "10"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
    )
    try:
        assert run.returncode == 0, run.stdout + run.stderr
        summary = json.loads((home / "demo-summary.json").read_text())
        assert summary["deals"]["closed_won"] == 20 and summary["deals"]["blocked"] == 7
        assert summary["deals"]["provisional_awaiting_finance"] == 1
        books = summary["invoices"]
        assert set(books["by_entity"]) == {"DE-GMBH", "GB-LTD", "US-INC", "GB-ACQ"}
        assert set(books["by_entity"]["GB-ACQ"]) == {"GBP"}  # the acquired unit, in Xero
        assert books["erp_of_entity"] == {
            "DE-GMBH": "tryton",
            "GB-LTD": "tryton",
            "US-INC": "tryton",
            "GB-ACQ": "xero",
        }
        assert {c for e in books["by_entity"].values() for c in e} == {"EUR", "CHF", "GBP", "USD"}
        assert {"domestic", "reverse_charge", "outside_scope", "no_vat"} <= set(
            books["by_treatment"]
        )
        assert books["overdue"] and all(Decimal(v["amount"]) > 0 for v in books["overdue"].values())
        assert summary["time"]["entries_refused"] == summary["exceptions_by_class"].get(
            "closed_period"
        )
        assert set(summary["api_calls"]) == {"salesforce", "harvest", "tryton", "xero"}
        assert "invoices posted" in run.stdout and "demo-summary.json" in run.stdout
        assert "GB-ACQ (Xero) in GBP" in run.stdout
        state = sandboxctl.read_state(home)
        assert {"hub", "tryton", "salesforce", "harvest", "xero"} <= set(state)
        check_acquired_unit(home, books["by_entity"]["GB-ACQ"]["GBP"])
        # the key the demo printed opens the running hub's console and its metrics
        key = re.search(r"sign in with the key\s+(clk_[A-Za-z0-9_-]+)", run.stdout)
        console_url = re.search(r"open the console at\s+(http://\S+/console)", run.stdout)
        assert key and console_url, run.stdout[-2000:]
        bearer = {"Authorization": f"Bearer {key.group(1)}"}
        base = console_url.group(1).removesuffix("/console")
        overview = httpx.get(f"{base}/api/v1/overview", headers=bearer, timeout=30)
        assert overview.status_code == 200 and overview.json()["systems"], overview.text
        status = subprocess.run(
            [
                *(sys.executable, "-m", "closeloop.cli", "status", "--json"),
                *("-c", str(home / "closeloop.yaml")),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CLOSELOOP_API_KEY": key.group(1)},
        )
        assert status.returncode == 0, status.stderr
        view = json.loads(status.stdout)
        assert view["hub_running"] and isinstance(view["systems"]["salesforce"]["calls"], int)
        stages = {e["stage"] for e in view["engagements"]}
        assert stages == {"mobilized", "provisional", "blocked"}
        held = [e for e in view["engagements"] if e["stage"] == "provisional"]
        assert held[0]["blockers"][0] == "finance approval pending"
        assert "daily API requests left" in view["systems"]["salesforce"]["quota"]
    finally:
        sandboxctl.down(home)
    pids = [int(entry["pid"]) for entry in state.values() if "pid" in entry]
    assert pids and not any(sandboxctl.alive(pid) for pid in pids)
