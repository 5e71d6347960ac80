"""What the demo reports: read back from the systems and the hub after the last phase."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from closeloop.bootstrap import Hub
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.demo_firm import Firm


def api_calls(hub: Hub) -> dict[str, int]:
    """HTTP requests the hub's connectors made, per system (counted by their clients)."""
    calls: dict[str, int] = {}
    for name in ("salesforce", "harvest"):
        client = hub.registry.connector(name).client  # type: ignore[attr-defined]
        calls[name] = sum(client.calls.values())
    tryton = hub.registry.connector("tryton")
    calls["tryton"] = int(tryton.operations.rpc.calls)  # type: ignore[attr-defined]
    return calls


def summarize(hub: Hub, ops: TrytonOperations, firm: Firm, logged: int) -> dict[str, Any]:
    """The summary as JSON-ready data: deals, customers, hours, invoices, calls, exceptions."""
    calls = api_calls(hub)
    with hub.store.transaction() as tx:
        flows = tx.list_flows(None, 1_000_000)
        stats = tx.stats()
        exceptions = tx.list_exceptions("open", 1000)
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

    invoices = ops.read_invoices([["reference", "like", "SF-%"]])
    posted = [i for i in invoices if i.state in ("posted", "paid")]
    total = sum((i.total_amount for i in posted), Decimal(0))
    due = sum((i.amount_to_pay for i in posted), Decimal(0))
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
        "invoices": {
            "posted": len(posted),
            "untaxed": str(sum((i.untaxed_amount for i in posted), Decimal(0))),
            "tax": str(sum((i.tax_amount for i in posted), Decimal(0))),
            "total": str(total),
            "paid": str(total - due),
            "outstanding": str(due),
            "currency": posted[0].currency if posted else None,
        },
        "api_calls": calls,
        "commands": stats.commands_by_status,
        "exceptions_by_class": stats.open_exceptions_by_class,
        "exceptions": [
            {"class": e.error_class.value, "entity": e.entity, "message": e.message}
            for e in exceptions
        ],
    }


def print_summary(console: Console, summary: dict[str, Any], home: Path) -> None:
    """The summary as tables a person reads in the terminal."""
    table = Table(title="closeloop demo: Salesforce -> Harvest + Tryton -> back", show_header=False)
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
    table.add_row("hours recorded in Tryton", time["hours_recorded_in_erp"])
    table.add_row("hours held for finance approval", time["hours_held_for_finance_approval"])
    table.add_row("time entries refused", str(time["entries_refused"]))
    currency = invoices["currency"] or ""
    table.add_row("invoices posted", str(invoices["posted"]))
    for name in ("untaxed", "tax", "total", "paid", "outstanding"):
        table.add_row(f"  {name}", f"{Decimal(invoices[name]):,.2f} {currency}")
    for system, count in sorted(summary["api_calls"].items()):
        table.add_row(f"API calls to {system}", f"{count:,}")
    for error_class, count in sorted(summary["exceptions_by_class"].items()):
        table.add_row(f"open exceptions: {error_class}", str(count))
    table.add_row("seconds", str(summary.get("seconds")))
    console.print(table)
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
