"""``closeloop demo``: the main job on the four systems, start to finish.

Starts fresh Salesforce, Harvest and Xero sandboxes and a real Tryton (``closeloop sandbox
up`` in ``home``), seeds the firm of :mod:`closeloop.devtools.demo.firm`, and runs the hub
(configured from the ``closeloop.yaml`` that ``sandbox up`` writes) through the quarter:

1. closed-won deals are mobilized (customers matched or created, projects in Harvest and
   Tryton, status back to Salesforce) or blocked with the reason; the deals are sold every
   way (time and materials, fixed fee with milestones, retainer, expenses re-billed:
   :mod:`closeloop.devtools.demo.billing`);
2. three signed deals are amended in Salesforce (a new role, a rate raised mid-quarter, a
   milestone moved) and clients accept milestones (one is disputed): the hub applies the
   change orders and invoices the accepted milestones;
3. finance closes two projects in Tryton; consultants log time and expenses in Harvest and
   managers approve them; the hub records the time in Tryton, invoices each project per
   month (time, expenses, retainer fees and overage), posts the invoices and reports them to
   Salesforce and Harvest;
4. finance credits one invoice (``closeloop credit``): the credit note is made in Tryton,
   Salesforce's figures become net of it and Harvest un-bills its time;
5. clients pay some invoices in Tryton; the hub reports the payments to Salesforce;
6. 45 days later (the hub's clock moved on): a few clients pay late, the other unpaid
   invoices are past their due dates, and the hub reports them overdue.

The firm sells through three legal entities in four currencies from one Tryton database
(:mod:`closeloop.devtools.demo.entities`): each deal goes to its entity's company, in its
currency, taxed by its treatment (domestic, reverse charge, outside the scope, no VAT), due
after its account's payment terms. The UK unit it acquired sells through its own Xero
(:mod:`closeloop.devtools.demo.acquired`): its deals are routed there by their legal entity,
invoiced in GBP at UK VAT, paid there, and reported to Salesforce like the others.

Each phase runs until the hub is idle (nothing to apply or send, no invoice timer about to
fire, and a last poll finds nothing new). Then it prints a summary and writes it to
``home/demo-summary.json``: what happened, and per phase the API calls per system next to
the floor for the same work (:func:`closeloop.devtools.demo.summary.floors`), where Tryton's calls
went and the CPU seconds spent (:mod:`closeloop.devtools.demo.meter`). With ``keep_running`` the
systems stay up and a hub process runs on (``closeloop sandbox down`` stops them all).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import load_settings
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.connectors.tryton.rates import load_rates
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import find_ids
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo import acquired
from closeloop.devtools.demo.billing import (
    accept_milestones,
    amend_deals,
    credit_an_invoice,
    expense_categories,
    expenses,
)
from closeloop.devtools.demo.entities import (
    ACQUIRED_ERP,
    ERP_OF_ENTITY,
    ShiftedClock,
    entity_overlay,
)
from closeloop.devtools.demo.firm import Firm, make_firm, time_entries
from closeloop.devtools.demo.meter import SYSTEMS, Meter, Reading, by_method, hub_cpu_s
from closeloop.devtools.demo.summary import print_summary, summarize
from closeloop.domain.access import AccessRole
from closeloop.domain.money import minor_unit
from closeloop.ports.connector import ConnectorError
from closeloop.ports.store import ReconcileRun
from closeloop.reconcile.run import RunRequest, drift_total

XERO_POLL_INTERVAL_S = 5.0
"""How often the demo's hub polls Xero (the others: every second): two objects every five
seconds take 24 of Xero's 60 calls a minute."""
AGING_DAYS = 45
"""How far the demo's last phase moves the hub's clock: receivables age, some fall overdue."""


@dataclass(frozen=True)
class DemoOptions:
    """What to run: the firm's size, where (``home``), how long a phase may take, whether the
    systems stay up afterwards and how fast the hub is made to react (``settle_s``: quiet
    seconds before a period is invoiced)."""

    home: Path = Path(".closeloop")
    clients: int = 40
    deals: int = 60
    consultants: int = 25
    keep_running: bool = False
    phase_timeout_s: float = 900.0
    settle_s: float = 2.0
    today: date | None = None


class DemoError(RuntimeError):
    """A phase did not finish, or a system did not come up."""


def fresh_start(home: Path, firm: Firm) -> dict[str, Any]:
    """Stop what an earlier run left, wipe its state, start the three systems and make the
    hub's configuration the firm's (:func:`configure_entities`)."""
    sandboxctl.down(home)
    for name in sandboxctl.SYSTEMS:
        shutil.rmtree(home / name, ignore_errors=True)
    for stale in home.glob("hub.db*"):
        stale.unlink()
    (home / "demo-summary.json").unlink(missing_ok=True)
    state = sandboxctl.up(home)
    return configure_entities(home, state, firm)


def configure_entities(home: Path, state: dict[str, Any], firm: Firm) -> dict[str, Any]:
    """The firm's legal entities, exchange rates and routing laid over the sandboxes'
    ``closeloop.yaml`` (:mod:`closeloop.devtools.demo.entities`), and the rates loaded into
    Tryton as ``closeloop tryton init`` loads them; returns the new state."""
    entry = state["tryton"]
    tryton = {k: entry[k] for k in ("url", "database", "user", "password")}
    until = datetime.now(UTC).date() + timedelta(days=AGING_DAYS + 31)
    overlay = entity_overlay(
        {"kind": "tryton", **tryton}, home, firm.start, until, acquired=ACQUIRED_ERP in state
    )
    state = {**state, "config": overlay}
    sandboxctl.write_state(home, state)
    settings = load_settings(home / "closeloop.yaml")
    ops = tryton_operations(state)
    try:
        load_rates(ops.rpc, settings.exchange_rates.all_rates())
    finally:
        ops.rpc.close()
    return state


def tryton_operations(state: dict[str, Any], entity: str | None = None) -> TrytonOperations:
    """Operations on the sandbox's Tryton (the demo's own session, as a finance user's), in
    the company of legal entity ``entity`` (``None``: the user's current company)."""
    entry = state["tryton"]
    rpc = TrytonRPC(entry["url"], entry["database"], entry["user"], entry["password"])
    return TrytonOperations(rpc, find_ids(rpc, entity))


def entity_operations(state: dict[str, Any]) -> dict[str, TrytonOperations]:
    """Operations in each legal entity's company (payments go through its own bank)."""
    return {code: tryton_operations(state, code) for code in ERP_OF_ENTITY}


def demo_hub(home: Path, settle_s: float, clock: ShiftedClock | None = None) -> Hub:
    """The hub of ``home/closeloop.yaml``, tuned to react within seconds (Xero within
    :data:`XERO_POLL_INTERVAL_S`), on ``clock``; its database migrated to the newest schema
    first (the demo sets up what it runs)."""
    settings = load_settings(home / "closeloop.yaml")
    worker = settings.worker
    worker.poll_interval_s = 1.0
    worker.retry_base_delay_s = 0.2
    worker.retry_max_delay_s = 5.0
    worker.idle_wait_s = 0.05
    if settings.flows.invoice is not None:
        settings.flows.invoice.settle_s = settle_s
    if ACQUIRED_ERP in settings.systems:  # Xero's 60 calls a minute: polls leave room for work
        settings.systems[ACQUIRED_ERP].poll_interval_s = XERO_POLL_INTERVAL_S
    return build_hub(settings, clock=clock, upgrade=True)


def run_phase(
    hub: Hub, title: str, console: Console, *, settle_s: float, timeout_s: float
) -> float:
    """Run the hub until idle and a fresh poll of every object succeeds and brings nothing
    new; returns seconds taken. Raises :class:`DemoError` after ``timeout_s``."""
    started = time.monotonic()
    wait_for_vendor_clocks(hub, datetime.now(UTC))
    hub.worker.poll_all()
    last_view = 0.0
    with Live(progress(hub, title, 0.0), console=console, refresh_per_second=4) as live:
        while True:
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                raise DemoError(f"{title}: not idle after {timeout_s:.0f} s")
            work = hub.worker.run_once()
            if time.monotonic() - last_view > 0.5:
                live.update(progress(hub, title, elapsed))
                last_view = time.monotonic()
            if work or not hub.worker.is_idle(timers_within_s=settle_s + 1):
                if not work:
                    time.sleep(hub.worker.settings.idle_wait_s)
                continue
            if hub.worker.poll_all() == 0 and not hub.worker.failed_polls:
                live.update(progress(hub, title, time.monotonic() - started))
                return time.monotonic() - started
            time.sleep(hub.worker.settings.idle_wait_s)  # a failed poll is tried again


def wait_for_vendor_clocks(hub: Hub, moment: datetime) -> None:
    """Wait until each Salesforce org's clock, as the hub sees it, is a second past
    ``moment``: a poll reads changes up to that clock, which the hub knows from ``Date``
    headers (whole seconds, refreshed about once a second), so what was seeded just before is
    read by a poll that starts after it. One request calibrates the clock; then a condition
    wait of at most about two seconds."""
    for name, system in hub.settings.systems.items():
        if system.kind == "salesforce":
            client = hub.registry.connector(name).client  # type: ignore[attr-defined]
            for _ in range(50):  # the org may be failing calls (fault injection): try again
                try:
                    client.request("GET", "limits")
                    break
                except ConnectorError:
                    time.sleep(0.1)
            while client.server_now() <= moment + timedelta(seconds=1):
                time.sleep(0.05)


def progress(hub: Hub, title: str, elapsed_s: float) -> Table:
    """What the hub has done so far: engagements by state, commands, exceptions."""
    with hub.store.transaction() as tx:
        stats = tx.stats()
        flows = tx.list_flows(None, 100_000)
    table = Table(title=f"{title} ({elapsed_s:.0f} s)", show_header=False)
    by_flow: dict[str, dict[str, int]] = {}
    for state in flows:
        counts = by_flow.setdefault(state.flow, {})
        counts[state.state] = counts.get(state.state, 0) + 1
    labels = {"mobilize": "deals", "bill_time": "time entries", "invoice": "projects"}
    for flow, label in labels.items():
        counts = by_flow.get(flow, {})
        table.add_row(label, ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "-")
    commands = stats.commands_by_status
    table.add_row("commands", ", ".join(f"{s} {n}" for s, n in sorted(commands.items())) or "-")
    opened = stats.open_exceptions_by_class
    table.add_row(
        "open exceptions", ", ".join(f"{c} {n}" for c, n in sorted(opened.items())) or "-"
    )
    return table


def seed_firm(home: Path, ops: TrytonOperations, firm: Firm) -> None:
    """The CRM's accounts and deals, the ERP's existing customers, Harvest's consultants."""
    sandboxctl.seed(home, "salesforce", firm.salesforce)
    for customer in firm.erp_customers:
        ops.upsert_customer(
            customer["code"],
            customer["name"],
            customer["country"],
            [tuple(t) for t in customer["tax_ids"]],
            customer["address"],
        )
    sandboxctl.seed(
        home, "harvest", {"users": firm.consultants, "expense_categories": expense_categories(firm)}
    )


def amend_and_accept(hub: Hub, firm: Firm) -> None:
    """Salespeople amend three signed deals; clients accept milestones (one disputed)."""
    if not firm.amended:
        return
    salesforce = hub.registry.connector("salesforce").client  # type: ignore[attr-defined]
    amend_deals(salesforce, firm)
    accept_milestones(salesforce, firm)


def harvest_projects(hub: Hub, firm: Firm) -> dict[str, dict[str, Any]]:
    """The engagements' Harvest projects by deal id: ``{"id", "tasks": {role: task id}}``."""
    client = hub.registry.connector("harvest").client  # type: ignore[attr-defined]
    projects, _ = client.list_all("projects")
    assignments, _ = client.list_all("task_assignments")
    found: dict[str, dict[str, Any]] = {}
    for project in projects:
        deal_id = str(project.get("code") or "").removeprefix("SF-")
        if deal_id in firm.deals:
            found[deal_id] = {"id": project["id"], "tasks": {}}
    by_id = {p["id"]: d for d, p in found.items()}
    for assignment in assignments:
        owner = by_id.get(assignment["project"]["id"])
        if owner is not None:
            found[owner]["tasks"][assignment["task"]["name"]] = assignment["task"]["id"]
    return found


def log_and_approve_time(home: Path, firm: Firm, projects: dict[str, dict[str, Any]]) -> int:
    """Consultants log the quarter's time (and the expenses of the deals that re-bill them);
    managers approve it, except two consultants' last fortnight. Returns how many entries
    were logged."""
    entries = time_entries(firm, projects)
    for start in range(0, len(entries), 2000):
        sandboxctl.seed(home, "harvest", {"time_entries": entries[start : start + 2000]})
    spent = expenses(firm, projects)
    if spent:
        sandboxctl.seed(home, "harvest", {"expenses": spent})
    late = {firm.consultants[0]["id"], firm.consultants[1]["id"]}
    for person in firm.consultants:
        until = firm.end - timedelta(days=14) if person["id"] in late else firm.end
        body = {"user_id": person["id"], "from": firm.start.isoformat(), "to": until.isoformat()}
        sandboxctl.harvest_approve(home, body)
    return len(entries)


def finance_closes_projects(ops: TrytonOperations, firm: Firm) -> None:
    """Finance closes two engagements' projects in the ERP part way through the quarter."""
    for deal_id, on in firm.finance_closes.items():
        ops.close_project(f"SF-{deal_id}", on=on)


def clients_pay(
    ops: dict[str, TrytonOperations], firm: Firm, on: date | None = None, *, late: bool = False
) -> dict[str, Decimal]:
    """Clients pay their invoices in each entity's company, on ``on`` (default today): at
    first (``late=False``) about 60 % of the posted invoices in full and 15 % in part; later
    (``late=True``, past most due dates) another 10 % in full, the rest staying overdue.
    Returns the amounts paid by invoice reference."""
    paid: dict[str, Decimal] = {}
    on = on or datetime.now(UTC).date()
    for entity in ops.values():
        invoices = entity.read_invoices(
            [
                ["state", "=", "posted"],
                ["reference", "like", "SF-%"],
                ["company", "=", entity.ids.company],
            ]
        )
        credited = {i.credited_reference for i in invoices if i.is_credit_note}
        for invoice in invoices:
            if invoice.is_credit_note or invoice.reference in credited:
                continue  # a credit note is settled against its invoice, not paid
            share = _share(str(invoice.reference))
            if late and share in (15, 16):
                amount = invoice.amount_to_pay
            elif late or share >= 15:
                continue
            else:
                unit = Decimal(1).scaleb(-minor_unit(invoice.currency))
                half = (invoice.total_amount / 2).quantize(unit)
                amount = invoice.total_amount if share < 12 else half
            key = f"PAY-{invoice.reference}" + ("-late" if late else "")
            entity.record_payment(str(invoice.reference), key, amount, on)
            paid[str(invoice.reference)] = amount
    return paid


def _share(reference: str) -> int:
    """A stable number 0-19 for an invoice (which clients pay, and how)."""
    return int(hashlib.sha256(reference.encode()).hexdigest(), 16) % 20


def run_demo(options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``home/demo-summary.json``).
    Raises :class:`DemoError` when a phase does not finish."""
    console = console or Console()
    home = options.home
    started = time.monotonic()
    firm = make_firm(
        options.today or datetime.now(UTC).date(),
        clients=options.clients,
        deals=options.deals,
        consultants=options.consultants,
        acquired=True,
    )
    cpu_at_start = hub_cpu_s()
    phases: dict[str, float] = {}
    costs: dict[str, dict[str, Any]] = {}
    keep, status_key, console_url = False, "", ""
    try:
        with console.status("starting Tryton and the Salesforce, Harvest and Xero sandboxes"):
            state = fresh_start(home, firm)
        entities = entity_operations(state)
        ops = entities["DE-GMBH"]
        clock = ShiftedClock()
        hub = demo_hub(home, options.settle_s, clock)
        pids = {
            s: int(state[s]["pid"]) for s in (*SYSTEMS, ACQUIRED_ERP) if "pid" in state.get(s, {})
        }
        meter = Meter(hub, pids)
        try:
            with console.status("seeding the firm: accounts, deals, ERP customers, consultants"):
                seed_firm(home, ops, firm)
                acquired.seed_contacts(hub, firm)
            first = meter.reading()

            def phase(title: str, before: Callable[[], Any] = lambda: None) -> None:
                """Run one phase (after ``before``); its time, calls, floors and CPU."""
                before()  # the demo's own work (time logged, finance, payments) is not timed
                start = meter.reading()
                seconds = run_phase(
                    hub,
                    title,
                    console,
                    settle_s=options.settle_s,
                    timeout_s=options.phase_timeout_s,
                )
                phases[title] = round(seconds, 1)
                costs[title] = meter.phase(start, meter.reading(), seconds)

            phase("mobilizing closed-won deals")
            phase("change orders, milestones accepted", lambda: amend_and_accept(hub, firm))
            projects = harvest_projects(hub, firm)
            logged = 0

            def log_time() -> None:
                nonlocal logged
                finance_closes_projects(ops, firm)
                logged = log_and_approve_time(home, firm, projects)

            phase("billing time, invoicing, reporting back", log_time)
            phase("finance credits an invoice", lambda: credit_an_invoice(hub, firm))

            def pay() -> None:
                clients_pay(entities, firm)
                acquired.clients_pay(hub, datetime.now(UTC).date())

            phase("payments back to Salesforce", pay)

            def weeks_later() -> None:
                clock.shift = timedelta(days=AGING_DAYS)
                on = clock.now().date() - timedelta(days=5)
                clients_pay(entities, firm, on, late=True)
                acquired.clients_pay(hub, on, late=True)

            phase(f"{AGING_DAYS} days later: late payments, overdue invoices", weeks_later)
            found: list[ReconcileRun] = []
            phase(
                "month-end reconciliation, drift repaired",
                lambda: found.append(hub.reconciler.run(MONTH_END)),
            )
            after = hub.reconciler.run(replace(MONTH_END, repair=False))
            last = meter.reading()
            summary = summarize(hub, ops, firm, logged, clock.now().date())
            summary["reconciliation"] = reconciliation_summary(found[0], after)
            summary["phases_s"] = phases
            summary["seconds"] = round(time.monotonic() - started, 1)
            summary.update(run_costs(costs, first, last, cpu_at_start))
            keep = options.keep_running
            if keep:  # the console and the running hub's /metrics need a key
                status_key = hub.access.create(
                    f"demo-{secrets.token_hex(3)}", AccessRole.OPERATOR, "demo", timedelta(days=30)
                ).token
                http = hub.settings.http
                console_url = f"http://{http.host}:{http.port}/console"
        finally:
            hub.close()
            for each in entities.values():
                each.rpc.close()
    finally:
        if not keep:
            sandboxctl.down(home)
    (home / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(console, summary, home)
    if keep:
        pid = start_hub_process(home, console_url.removesuffix("/console"))
        console.print(
            f"the systems and a hub (pid {pid}) keep running: see {home / 'sandbox.json'}; "
            f"open the console at {console_url} and sign in with the key {status_key} "
            "(an operator's, for 30 days); or "
            f"`CLOSELOOP_API_KEY={status_key} closeloop status -c {home / 'closeloop.yaml'}`; "
            "stop all with "
            f"`closeloop sandbox down --home {home}`"
        )
    return summary


MONTH_END = RunRequest(repair=True, trigger="demo", actor="finance@demo.example")
"""The demo's month-end reconciliation: every domain, repairing what has an owner."""


def reconciliation_summary(first: ReconcileRun, after: ReconcileRun) -> dict[str, Any]:
    """What the month-end reconciliation found (drift by domain and kind, each drift's
    field, values and cause), repaired or handed to a person, and the drift a second run
    found once the repairs were delivered."""
    return {
        "records": first.records,
        "found": {d: k for d, k in first.counts.items() if k},
        "drifts": [
            {
                "domain": d.domain,
                "kind": d.kind,
                "key": d.key,
                "field": d.field,
                "values": d.values,
                "owner": d.owner,
                "cause": d.cause,
                "status": d.status,
                "repair": d.repair,
            }
            for d in first.drifts
        ],
        "repaired": sum(1 for d in first.drifts if d.status == "repaired"),
        "to_people": sum(1 for d in first.drifts if d.exception_id and d.repair),
        "drift_after_repair": drift_total(after),
        "runs": [first.id, after.id],
    }


def run_costs(
    costs: dict[str, dict[str, Any]], first: Reading, last: Reading, cpu_at_start: float
) -> dict[str, Any]:
    """The summary's cost keys: ``phases`` (per phase: seconds, ``api_calls`` and ``floor``
    per system, work, calls by resource and by Tryton method, CPU seconds), ``floor``
    (per system, summed over the phases), ``tryton_calls_by_method`` (the top ten of the
    phases together) and ``cpu_s``: the hub process's CPU seconds over the run and each
    system's process group's over its life (read after the last phase, before it stops)."""
    totals = {s: sum(c["floor"][s]["total"] for c in costs.values()) for s in SYSTEMS}
    cpu = {k: round(v, 2) for k, v in last.cpu_s.items() if k != "hub"}
    return {
        "phases": costs,
        "floor": totals,
        "tryton_calls_by_method": by_method(first, last),
        "cpu_s": {"hub": round(last.cpu_s["hub"] - cpu_at_start, 2), **cpu},
    }


def start_hub_process(home: Path, base_url: str) -> int:
    """``closeloop run -c home/closeloop.yaml`` in the background, recorded in sandbox.json
    (so ``sandbox down`` stops it), once it answers at ``base_url`` (or exited, or 60 s
    passed: its log says why); returns its pid."""
    log = (home / "hub.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "closeloop.cli", "run", "-c", str(home / "closeloop.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sandboxctl.record_process(home, "hub", process.pid, log_file=str(home / "hub.log"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:  # until it answers
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                break
        time.sleep(0.2)  # polling a starting server, not waiting out a race
    return process.pid
