"""``closeloop demo``: the hub on a built-in example, until idle, with a summary.

Until the vendor sandboxes exist, the example is two fault-injecting memory systems: a
"crm" whose records are mirrored into an "erp" that rate-limits, fails and loses responses.
A few records are bad on purpose (unmappable, or refused by the target); one refused record
is then fixed at the source, and the hub resumes it by itself.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from closeloop.bootstrap import build_hub
from closeloop.config import Settings
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.flows import Binding
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.memory.system import MemorySystem


def run_demo(
    home: Path, records: int = 400, keep_db: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run the example in ``home`` (a fresh SQLite database there); returns the summary,
    also written to ``home/demo-summary.json``."""
    console = console or Console()
    home.mkdir(parents=True, exist_ok=True)
    db = home / "demo.db"
    for stale in home.glob("demo.db*"):
        stale.unlink()
    crm = MemorySystem(name="crm")
    erp = MemorySystem(
        name="erp",
        faults=FaultPlan(
            rate_limited=0.05, server_error=0.05, timeout=0.03, lost_response=0.05, seed=7
        ),
    )
    for i in range(records):
        data: dict[str, Any] = {"name": f"Client {i:04d}", "country": "DE"}
        if i % 97 == 13:
            data = {"country": "FR"}  # no name: the mapping refuses it
        if i % 101 == 7:
            data["reject_reason"] = "VAT number missing for an EU customer"
        crm.put("Record", f"C{i:04d}", data)
    settings = Settings(database_url=f"sqlite:///{db}")
    settings.worker.retry_base_delay_s = 0.05
    settings.worker.retry_max_delay_s = 0.5
    hub = build_hub(
        settings,
        connectors={"crm": crm, "erp": erp},
        bindings=[Binding("crm", "Record", "record", record_mapper, (MirrorFlow("erp"),))],
    )
    started = time.perf_counter()
    try:
        with console.status("polling the crm and syncing into the erp ..."):
            hub.worker.poll_all()
            hub.worker.run_until_idle(300)
            fixed = next(
                (eid for eid, r in crm.records["Record"].items() if r.data.get("reject_reason")),
                None,
            )
            if fixed:
                crm.put(
                    "Record",
                    fixed,
                    {"name": f"Client {fixed} (fixed)", "country": "DE", "vat": "DE136695976"},
                )
                hub.worker.poll_all()
                hub.worker.run_until_idle(120)
        stats = hub.operations.stats()
        exceptions = hub.operations.list_exceptions("open", 1000)
    finally:
        hub.close()
    keys = [e.idempotency_key for e in erp.effects]
    summary = {
        "records_in_crm": records,
        "written_to_erp": len(erp.targets),
        "duplicate_effects": len(keys) - len(set(keys)),
        "fixed_at_source_and_resumed": fixed,
        "inbox": stats.inbox_by_status,
        "commands": stats.commands_by_status,
        "open_exceptions_by_class": stats.open_exceptions_by_class,
        "open_exceptions": [
            {"class": e.error_class.value, "entity": e.entity, "message": e.message}
            for e in exceptions
        ],
        "api_calls": {"crm": dict(crm.calls), "erp": dict(erp.calls)},
        "seconds": round(time.perf_counter() - started, 2),
    }
    (home / "demo-summary.json").write_text(json.dumps(summary, indent=2))
    _print(console, summary, home)
    if not keep_db:
        for path in home.glob("demo.db*"):
            path.unlink() if path.is_file() else shutil.rmtree(path)
    return summary


def _print(console: Console, summary: dict[str, Any], home: Path) -> None:
    table = Table(title="closeloop demo: crm -> erp")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("records in the crm", str(summary["records_in_crm"]))
    table.add_row("records written to the erp", str(summary["written_to_erp"]))
    table.add_row("duplicate effects in the erp", str(summary["duplicate_effects"]))
    for state, count in sorted(summary["commands"].items()):
        table.add_row(f"commands {state}", str(count))
    for error_class, count in sorted(summary["open_exceptions_by_class"].items()):
        table.add_row(f"open exceptions: {error_class}", str(count))
    for system, calls in summary["api_calls"].items():
        table.add_row(
            f"api calls {system}", ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        )
    table.add_row("seconds", str(summary["seconds"]))
    console.print(table)
    for e in summary["open_exceptions"][:10]:
        console.print(f"[yellow]{e['class']}[/yellow] {e['message']}")
    console.print(f"summary written to {home / 'demo-summary.json'}")
