"""What the demo reports: read back from the systems and the hub after the last phase, and
the fewest API calls the vendors allow for what a phase did (:func:`floors`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from closeloop.bootstrap import Hub
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.devtools.demo.acquired import InvoiceRow, invoice_rows, xero_client
from closeloop.devtools.demo.billing_summary import billing_section, print_billing
from closeloop.devtools.demo.firm import Firm

#: Salesforce: sObject Collections of 200 records, five to a Composite request
SALESFORCE_RECORDS_PER_REQUEST = 1000
SALESFORCE_PAGE = 2000  #: records per query page
HARVEST_PAGE = 2000  #: records per list page (``per_page`` at most 2,000)
TRYTON_LINES_PER_CREATE = 1000  #: timesheet lines per bulk create (the engine's batch)


@dataclass(frozen=True)
class PhaseWork:
    """The business work of one demo phase, counted from the hub's commands done in it
    (``closeloop.devtools.demo.meter.phase_work``) and from its polls.

    ``accounts_matched``: CRM accounts matched against the ERP's customers; ``customers``:
    ERP customers created; ``erp_projects`` / ``psa_projects``: projects set up in Tryton /
    Harvest; ``psa_clients`` and ``psa_tasks``: distinct client and task names among the
    Harvest set-ups; ``task_assignments`` and ``user_assignments``: tasks and people
    assigned to those projects; ``lines`` and ``lines_refused``: time entries recorded in
    Tryton / refused there (closed project); ``new_people``: consultants whose time reached
    Tryton for the first time in the run; ``invoices``: Tryton invoices made;
    ``invoice_rounds``: the most invoices made for one project (periods invoiced one after
    the other); ``posted``: invoices posted; ``crm_records``: distinct Salesforce records
    written; ``psa_invoices``: Harvest invoices marking time billed; ``polls``: per system,
    the records each poll read (those its overlap window read again included);
    ``clock_reads``: Salesforce requests the demo itself made to
    learn the org's clock (one per phase)."""

    accounts_matched: int = 0
    customers: int = 0
    erp_projects: int = 0
    psa_projects: int = 0
    psa_clients: int = 0
    psa_tasks: int = 0
    task_assignments: int = 0
    user_assignments: int = 0
    lines: int = 0
    lines_refused: int = 0
    new_people: int = 0
    invoices: int = 0
    invoice_rounds: int = 0
    posted: int = 0
    crm_records: int = 0
    psa_invoices: int = 0
    polls: dict[str, list[int]] = field(default_factory=dict)
    clock_reads: int = 0


def _pages(records: list[int], page: int | None) -> int:
    """Requests for polls that read ``records`` each: one per page, at least one a poll."""
    return sum(max(1, math.ceil(n / page)) if page else 1 for n in records)


def floors(work: PhaseWork) -> dict[str, dict[str, int]]:
    """The fewest API calls the vendors' APIs allow for ``work``, per system:
    ``{system: {"work", "polls", "harness", "total"}}``.

    Counted (``work``), with the batching each API offers:

    - **Salesforce**: the records written, 1,000 per request (Collections of 200, five to a
      Composite request), each record once.
    - **Harvest**, which has no bulk endpoints (one request per record created): per project
      set up, 1 project + 1 per task assignment + 1 per user assignment; 1 per client and 1
      per task new to the account (every distinct name of the phase's set-ups counts as new:
      the demo's Harvest starts with its users only); when any project is set up, one list
      of clients and one of tasks (the names the creates must reuse) and, when people are
      assigned, one of users; 1 invoice per ERP invoice marked billed (client and project
      ids are known from the set-up).
    - **Tryton**, whose ``create``, ``write`` and buttons take lists and whose ``search_read``
      follows dotted fields (also through one-to-many fields): 1 ``party.party`` read for
      all the accounts to match (tax ids and names ORed, identifiers and addresses dotted);
      for customers created, 1 country read + 1 create (addresses and identifiers nested);
      for projects, 1 status read + 1 create (tasks nested); per 1,000 time entries, 1 read
      of the tasks' timesheet works with their end dates (what refuses a closed project's
      late entry: refused entries cost nothing more) + 1 create of the accepted lines; for
      people new to the ERP, 1 employee read + 1 party create + 1 employee create; for
      invoices, per round 1 ``write`` of the up-to dates + 1 ``project.work.invoice``, then
      1 ``search_read`` of the new invoices + 1 ``write`` of every reference and date, and 1
      ``account.invoice.post`` of all posted.

    ``polls``: each poll the phase made, one request per page of the records it read
    (Salesforce and Harvest 2,000 a page, Tryton's ``search_read`` unpaged), at least one a
    poll: how often the hub polls, and how far back (the overlap window), are the engine's
    choices, not the work's. ``harness``: requests the
    demo itself made through the hub's clients (Salesforce clock reads).

    Not counted: logins and metadata (describe), the hub's start-up reads (before the
    first phase), lookups that only matter when resolving a lost answer (existing lines,
    invoices by reference, customers by code, projects by code), reading invoices back
    after posting (the change feed's poll does), and payments (the demo records them in
    Tryton itself)."""
    tryton = 0
    if work.accounts_matched:
        tryton += 1
    if work.customers:
        tryton += 2
    if work.erp_projects:
        tryton += 2
    screened = work.lines + work.lines_refused
    tryton += math.ceil(screened / TRYTON_LINES_PER_CREATE)
    tryton += math.ceil(work.lines / TRYTON_LINES_PER_CREATE)
    if work.new_people:
        tryton += 3
    if work.invoices:
        tryton += 2 * max(work.invoice_rounds, 1) + 2
    if work.posted:
        tryton += 1
    harvest = work.psa_projects + work.task_assignments + work.user_assignments
    harvest += work.psa_clients + work.psa_tasks + work.psa_invoices
    if work.psa_projects:
        harvest += 2 + (1 if work.user_assignments else 0)
    salesforce = math.ceil(work.crm_records / SALESFORCE_RECORDS_PER_REQUEST)
    pages = {"salesforce": SALESFORCE_PAGE, "harvest": HARVEST_PAGE, "tryton": None}
    out = {}
    for system, count, harness in (
        ("salesforce", salesforce, work.clock_reads),
        ("harvest", harvest, 0),
        ("tryton", tryton, 0),
    ):
        polls = _pages(work.polls.get(system, []), pages[system])
        out[system] = {
            "work": count,
            "polls": polls,
            "harness": harness,
            "total": count + polls + harness,
        }
    return out


def erp_systems(hub: Hub) -> list[str]:
    """The hub's Tryton systems (the demo's one Tryton, one system per legal entity)."""
    return [n for n, s in hub.settings.systems.items() if s.kind == "tryton"]


def api_calls(hub: Hub) -> dict[str, int]:
    """HTTP requests the hub's connectors made, per system (counted by their clients; the
    acquired unit's Xero's include what the demo's finance team did there)."""
    calls: dict[str, int] = {}
    for name in ("salesforce", "harvest"):
        client = hub.registry.connector(name).client  # type: ignore[attr-defined]
        calls[name] = sum(client.calls.values())
    tryton = 0
    for name in erp_systems(hub):
        tryton += int(hub.registry.connector(name).operations.rpc.calls)  # type: ignore[attr-defined]
    calls["tryton"] = tryton
    xero = xero_client(hub)
    if xero is not None:
        calls["xero"] = sum(xero.calls.values())
    return calls


def waited_for_limits(hub: Hub) -> dict[str, float]:
    """Seconds the hub's workers waited for a vendor's rate limits, per system that counts
    them (Xero: its minute, day and concurrent limits)."""
    xero = xero_client(hub)
    return {} if xero is None else {"xero": round(xero.waited_s, 1)}


def summarize(
    hub: Hub, ops: TrytonOperations, firm: Firm, logged: int, today: date
) -> dict[str, Any]:
    """The summary as JSON-ready data: deals, customers, hours, invoices (:func:`receivables`
    as of ``today``), calls, exceptions."""
    calls = api_calls(hub)
    with hub.store.transaction() as tx:
        flows = tx.list_flows(None, 1_000_000)
        stats = tx.stats()
        exceptions = tx.list_exceptions("open", 1000)
        runnable = tx.runnable_commands()
        audit = tx.list_audit(None, 100_000)
    deals = [f for f in flows if f.flow == "mobilize"]
    entries = [f for f in flows if f.flow == "bill_time"]
    blocked = {
        f.data["deal_id"]: "; ".join(f.data.get("problems") or [])
        for f in deals
        if f.state == "blocked"
    }
    kinds: dict[str, int] = {}
    for f in deals:
        if f.state in ("mobilized", "provisional", "closed"):
            kind = f.data.get("customer_match_kind", "none")
            label = {
                "tax_id": "matched by tax id",
                "similar": "matched by name and address",
                "xref": "known from the account's earlier deal",
                "linked": "linked by a person",
            }
            kinds[label.get(kind, "created")] = kinds.get(label.get(kind, "created"), 0) + 1

    def hours(state: str) -> str:
        return str(sum((Decimal(f.data["hours"]) for f in entries if f.state == state), Decimal(0)))

    treatments = {
        f.data["project_key"]: (f.data.get("tax") or {}).get("treatment") or "domestic"
        for f in deals
        if f.data.get("project_key")
    }
    books = receivables(tryton_rows(ops) + invoice_rows(hub), today, treatments)
    return {
        "deals": {
            "closed_won": len(firm.deals),
            "mobilized": sum(f.state == "mobilized" for f in deals),
            "provisional_awaiting_finance": sum(f.state == "provisional" for f in deals),
            "blocked": len(blocked),
            "blocked_why": blocked,
        },
        "customers": kinds,
        "time": {
            "entries_logged": logged,
            "hours_recorded_in_erp": hours("recorded"),
            "hours_held_for_finance_approval": hours("held"),
            "entries_refused": sum(f.state == "refused" for f in entries)
            + sum(e.entity.startswith("harvest:time_entry:") for e in exceptions),
            "entries_recorded": sum(f.state == "recorded" for f in entries),
        },
        "invoices": books,
        "billing": billing_section(flows, audit),
        "api_calls": calls,
        "waited_for_limits_s": waited_for_limits(hub),
        "commands": stats.commands_by_status,
        "commands_runnable": runnable,  # pending ones not waiting behind a parked one
        "exceptions_by_class": stats.open_exceptions_by_class,
        "exceptions": [
            {"class": e.error_class.value, "entity": e.entity, "message": e.message}
            for e in exceptions
        ],
    }


def tryton_rows(ops: TrytonOperations) -> list[InvoiceRow]:
    """The engagements' posted and paid invoices in Tryton, all its companies."""
    rows = ops.rpc.search_read(
        "account.invoice",
        [["type", "=", "out"], ["reference", "like", "SF-%"], ["state", "in", ["posted", "paid"]]],
        [
            "reference",
            "company.party.code",
            "currency.code",
            "untaxed_amount",
            "tax_amount",
            "total_amount",
            "amount_to_pay",
            "lines_to_pay.maturity_date",
        ],
    )
    return [
        InvoiceRow(
            erp="tryton",
            entity=(row.get("company.") or {}).get("party.", {}).get("code") or "?",
            reference=str(row["reference"]),
            currency=row["currency."]["code"],
            untaxed=row["untaxed_amount"],
            tax=row["tax_amount"],
            total=row["total_amount"],
            to_pay=row["amount_to_pay"] or Decimal(0),
            due=min(
                (line["maturity_date"] for line in row.get("lines_to_pay.") or []), default=None
            ),
        )
        for row in rows
    ]


def receivables(rows: list[InvoiceRow], today: date, treatments: dict[str, str]) -> dict[str, Any]:
    """The engagements' posted invoices of every ERP (``rows``), as of ``today``:
    ``posted`` (count); ``by_erp``: ERP -> count; ``by_entity``: entity -> currency ->
    ``{"invoices", "untaxed", "tax", "total", "paid", "outstanding", "overdue"}`` (strings;
    never summed across currencies); ``by_treatment``: tax treatment (``treatments`` by
    project key) -> currency -> ``{"invoices", "untaxed", "tax"}``; ``overdue``: currency ->
    ``{"invoices", "amount", "oldest_days"}`` (unpaid after the due date)."""
    by_entity: dict[str, dict[str, dict[str, Decimal]]] = {}
    by_treatment: dict[str, dict[str, dict[str, Decimal]]] = {}
    by_erp: dict[str, int] = {}
    overdue: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_erp[row.erp] = by_erp.get(row.erp, 0) + 1
        left, due = row.to_pay, row.due
        late = left if left > 0 and due is not None and due < today else Decimal(0)
        book = by_entity.setdefault(row.entity, {}).setdefault(row.currency, {})
        for name, value in (
            ("invoices", Decimal(1)),
            ("untaxed", row.untaxed),
            ("tax", row.tax),
            ("total", row.total),
            ("paid", row.total - left),
            ("outstanding", left),
            ("overdue", late),
        ):
            book[name] = book.get(name, Decimal(0)) + value
        treatment = treatments.get(row.reference.split("/")[0], "domestic")
        taxed = by_treatment.setdefault(treatment, {}).setdefault(row.currency, {})
        for name, value in (
            ("invoices", Decimal(1)),
            ("untaxed", row.untaxed),
            ("tax", row.tax),
        ):
            taxed[name] = taxed.get(name, Decimal(0)) + value
        if late and due is not None:
            mine = overdue.setdefault(
                row.currency, {"invoices": 0, "amount": Decimal(0), "oldest_days": 0}
            )
            mine["invoices"] += 1
            mine["amount"] += late
            mine["oldest_days"] = max(mine["oldest_days"], (today - due).days)

    def text(table: dict[str, dict[str, dict[str, Decimal]]]) -> dict[str, Any]:
        return {
            k: {
                c: {n: str(int(v)) if n == "invoices" else str(v) for n, v in sums.items()}
                for c, sums in sorted(per.items())
            }
            for k, per in sorted(table.items())
        }

    return {
        "posted": len(rows),
        "as_of": today.isoformat(),
        "by_erp": dict(sorted(by_erp.items())),
        "erp_of_entity": {r.entity: r.erp for r in rows},
        "by_entity": text(by_entity),
        "by_treatment": text(by_treatment),
        "overdue": {c: {**v, "amount": str(v["amount"])} for c, v in sorted(overdue.items())},
    }


def print_summary(console: Console, summary: dict[str, Any], home: Path) -> None:
    """The summary as tables a person reads in the terminal."""
    erps = " + ".join(e.capitalize() for e in summary["invoices"].get("by_erp", {})) or "Tryton"
    title = f"closeloop demo: Salesforce -> Harvest + {erps} -> back"
    table = Table(title=title, show_header=False)
    deals, time, invoices = summary["deals"], summary["time"], summary["invoices"]
    table.add_row("closed-won deals", str(deals["closed_won"]))
    table.add_row("  mobilized", str(deals["mobilized"]))
    table.add_row(
        "  provisional (finance approval pending)", str(deals["provisional_awaiting_finance"])
    )
    table.add_row("  blocked", str(deals["blocked"]))
    for how, count in sorted(summary["customers"].items()):
        table.add_row(f"customers {how}", str(count))
    table.add_row("time entries logged in Harvest", str(time["entries_logged"]))
    table.add_row("hours recorded in the ERPs", time["hours_recorded_in_erp"])
    table.add_row("hours held for finance approval", time["hours_held_for_finance_approval"])
    table.add_row("time entries refused", str(time["entries_refused"]))
    per_erp = ", ".join(f"{n} in {e.capitalize()}" for e, n in invoices.get("by_erp", {}).items())
    table.add_row("invoices posted", f"{invoices['posted']} ({per_erp})" if per_erp else "0")
    erp_of = invoices.get("erp_of_entity", {})
    for entity, currencies in invoices["by_entity"].items():
        for currency, sums in currencies.items():
            table.add_row(
                f"  {entity} ({erp_of.get(entity, '?').capitalize()}) in {currency} "
                f"({sums['invoices']})",
                f"total {Decimal(sums['total']):,.2f}, tax {Decimal(sums['tax']):,.2f}, "
                f"paid {Decimal(sums['paid']):,.2f}, overdue {Decimal(sums['overdue']):,.2f}",
            )
    for treatment, currencies in invoices["by_treatment"].items():
        taxes = ", ".join(
            f"{c} {Decimal(v['tax']):,.2f} on {Decimal(v['untaxed']):,.2f}"
            for c, v in currencies.items()
        )
        table.add_row(f"  tax: {treatment}", taxes)
    for currency, late in invoices["overdue"].items():
        table.add_row(
            f"  overdue on {invoices['as_of']} in {currency}",
            f"{Decimal(late['amount']):,.2f} ({late['invoices']} invoices, oldest "
            f"{late['oldest_days']} days past due)",
        )
    for system, count in sorted(summary["api_calls"].items()):
        table.add_row(f"API calls to {system}", f"{count:,}")
    for system, seconds in sorted(summary.get("waited_for_limits_s", {}).items()):
        table.add_row(f"waited for {system}'s rate limits", f"{seconds:,.1f} s")
    for error_class, count in sorted(summary["exceptions_by_class"].items()):
        table.add_row(f"open exceptions: {error_class}", str(count))
    table.add_row("seconds", str(summary.get("seconds")))
    console.print(table)
    if summary.get("billing"):
        print_billing(console, summary["billing"])
    if summary.get("reconciliation"):
        print_reconciliation(console, summary["reconciliation"])
    if summary.get("phases"):
        console.print(phase_table(summary))
    for deal_id, why in sorted(summary["deals"]["blocked_why"].items()):
        console.print(f"[yellow]blocked[/yellow] {deal_id}: {why}")
    shown = summary["exceptions"][:8]
    for e in shown:
        console.print(f"[red]{e['class']}[/red] {e['message'][:200]}")
    if len(summary["exceptions"]) > len(shown):
        console.print(
            f"... and {len(summary['exceptions']) - len(shown)} more: closeloop exceptions list"
        )
    console.print(f"summary written to {home / 'demo-summary.json'}")


def print_reconciliation(console: Console, found: dict[str, Any]) -> None:
    """The month-end reconciliation: each drift with its owner, cause and what was done,
    then what a second run found."""
    records = ", ".join(f"{d} {n}" for d, n in found["records"].items())
    console.print(f"month-end reconciliation over {records} records:")
    for d in found["drifts"]:
        values = "; ".join(f"{s}: {v}" for s, v in d["values"].items())
        field = f" {d['field']}" if d["field"] else ""
        console.print(
            f"  {d['domain']} {d['kind']} {d['key']}{field} ({values}; owner "
            f"{d['owner'] or 'none'}): {d['cause']} -> {d['status']}: {d['repair'] or '-'}"
        )
    console.print(
        f"  repaired {found['repaired']}, to people {found['to_people']}; drift after the "
        f"repairs: {found['drift_after_repair']} (closeloop reconcile show <run>)"
    )


def phase_table(summary: dict[str, Any]) -> Table:
    """API calls per phase and system next to the floor for the same work (:func:`floors`),
    with each phase's seconds and CPU seconds (hub, Tryton)."""
    table = Table(title="API calls per phase: made, and the floor for the same work")
    for column in ("phase", "s", "CPU s hub/Tryton", "system", "calls", "floor", "calls/floor"):
        table.add_column(column, justify="right" if column not in ("phase", "system") else "left")
    for title, cost in summary["phases"].items():
        cpu = cost.get("cpu_s", {})
        for n, system in enumerate(cost["api_calls"]):
            calls = cost["api_calls"][system]
            floor = cost["floor"].get(system, {}).get("total", 0)
            table.add_row(
                title if n == 0 else "",
                f"{cost['seconds']:.0f}" if n == 0 else "",
                f"{cpu.get('hub', 0):.0f}/{cpu.get('tryton', 0):.0f}" if n == 0 else "",
                system,
                f"{calls:,}",
                f"{floor:,}" if system in cost["floor"] else "-",
                f"{calls / floor:.1f}" if floor else "-",
            )
    return table
