"""``closeloop bench xero``: what invoicing time costs in Xero calls, next to the floor.

Each run starts a fresh Xero sandbox (Xero's limits by default: 60 calls a rolling minute,
5,000 a day, 5 at once; ``roomy`` lifts them, on both sides, for a quick run) and drives the
connector as the engine would, one ``execute`` per batch of the connector's batch size (50):

1. **set-up**: one customer, then ``projects`` projects (two tasks each, at 150.00 and 112.50
   an hour);
2. **time**: ``entries`` time entries in November, dealt round the projects and their tasks
   (entry ``i`` on project ``i mod projects``), so that a batch touches every project, as
   the engine's batches of entries polled by modification time do;
3. **invoicing**: one ``invoice_project`` per project (all its time up to the month's end);
4. **posting**: one ``post_invoice`` per invoice.

It counts the calls the connector's client made (:attr:`XeroClient.calls`, by ``METHOD
Resource``) per operation, and checks them against the sandbox's own count (``GET
/__sandbox/calls``: calls admitted by route, and the calls it refused with 429 by limit,
which must be none: the client's limiter keeps under Xero's). Beside the calls, per
operation and scaled per 1,000 time entries:

- the **floor**: the fewest calls Xero's API allows for the work at the connector's batch
  size, with every read the hub could remember from its own writes remembered: set-up, one
  ``POST Contacts``; per batch of projects one ``POST Items`` (every task's item), one ``POST
  Invoices`` (every anchor draft) and one ``PUT`` per tracking option (Xero creates one
  option a call), plus the tracking category once; time, one ``PUT Invoices`` per batch of
  50 entries; invoicing, per batch of invoices, one ``PUT Invoices`` (create) and one ``POST
  Invoices`` (take the billed lines off their drafts); posting, per batch, one ``GET
  Invoices`` (the invoices' ids by reference) and one ``POST Invoices`` (approve);
- the **reads** the connector makes by its design on top of the floor (:func:`floors`):
  set-up, the contact by code before writing it and again for each batch of projects, the
  tracking category (read again when a project of the batch is not among its options: another
  worker may have made it), the anchors per 25 projects before writing them; time, the items
  of task codes not seen before (one read per 25 codes; the connector keeps items and anchors
  it has read or written); invoicing, per batch, the drafts and documents of its projects
  (invoices and credit notes, one read each per 12 projects and per page of 1,000); posting,
  one read per 25 references where the floor has one per batch;
- **avoidable**: of those reads, the ones a cache in the connector would still save (none
  now: the anchors and items it reads are kept, and a read of the drafts returns what
  invoicing must move);
- the **minute-limit time**: calls / 60 a minute, the least time Xero's limit lets the work
  take; the day limit as entries a day.

Also per operation: wall seconds, seconds the client waited for the limits, CPU seconds of
the hub side (the thread that runs the connector, its client and HTTP: the connector starts
no thread of its own, and the command line's spinner is left out) and of the sandbox.
Figures are medians over the runs; ``per_run`` keeps each run's totals.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from closeloop.connectors.catalog import BuildContext, build_connector, plugin, systems_adapter
from closeloop.connectors.xero.client import CONCURRENT_LIMIT, DAY_LIMIT, MINUTE_LIMIT
from closeloop.connectors.xero.client import PAGE_SIZE as XERO_PAGE
from closeloop.connectors.xero.connector import XeroConnector
from closeloop.devtools.demo.meter import process_cpu_s
from closeloop.domain.commands import Applied, Command, Impact, Outcome
from closeloop.domain.keys import task_key
from closeloop.domain.operations import (
    AddTimesheetLine,
    InvoiceProject,
    Operation,
    PostInvoice,
    ProjectTask,
    UpsertCustomer,
    UpsertProject,
    role_command,
)
from closeloop.sandboxes.tryton.server import free_port, stop_pid
from closeloop.sandboxes.xero.server import start_xero

SYSTEM = "xero"
CUSTOMER = "XB-CUSTOMER"
TASKS = (("Consulting", Decimal("150.00")), ("Design", Decimal("112.50")))
HOURS = (Decimal("1"), Decimal("1.5"), Decimal("2"), Decimal("2.5"), Decimal("3"), Decimal("4"))
PEOPLE = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov")
MONTH_END = date(2026, 11, 30)
OPERATIONS = ("set-up", "time", "invoicing", "posting")
#: the connector's read chunks (connectors/xero: anchors, items, contacts and references per
#: 25 in a ``where``; a batch's documents per 12 projects)
PER_WHERE = 25
DOCUMENTS_PER_READ = 12
ROOMY = {"minute": 100_000, "day": 1_000_000, "concurrent": 50}
"""The sandbox's limits with ``roomy`` (the client's are lifted to match)."""

FLOOR_FROM = {
    "set-up": "1 POST Contacts; per batch of projects 1 POST Items + 1 POST Invoices (anchors) "
    "+ 1 PUT per tracking option (Xero takes one a call); the tracking category once",
    "time": "1 PUT Invoices per batch of 50 entries (a work-in-progress draft per project)",
    "invoicing": "per batch of invoices: 1 PUT Invoices (create) + 1 POST Invoices (clean-up)",
    "posting": "per batch: 1 GET Invoices (ids by reference) + 1 POST Invoices (approve)",
}
READS_FROM = {
    "set-up": "GET Contacts by code (customer, each batch of projects), GET "
    "TrackingCategories (again when a batch's project is not among its options), GET "
    "Invoices anchors per 25 projects",
    "time": "GET Items per 25 task codes not seen before (items and anchors are kept)",
    "invoicing": "per batch: GET Invoices and GET CreditNotes per 12 projects and 1,000 documents",
    "posting": "GET Invoices per 25 references beyond the floor's one per batch",
}
AVOIDABLE_FROM: dict[str, str] = {}
"""What a cache would still save, by operation (nothing: see the module docstring)."""


class BenchError(RuntimeError):
    """The benchmark's work did not go through (a command refused, an amount wrong)."""


# --- the work ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One time entry of the plan."""

    index: int
    project: int
    task: int
    day: date
    hours: Decimal


def project_key(n: int) -> str:
    """The key of project ``n``."""
    return f"XB-{n:03d}"


def plan_entries(projects: int, entries: int) -> list[Entry]:
    """The time entries, dealt round the projects, then their tasks (see the docstring)."""
    return [
        Entry(
            index=i,
            project=i % projects,
            task=(i // projects) % len(TASKS),
            day=date(2026, 11, 1 + i % 30),
            hours=HOURS[i % len(HOURS)],
        )
        for i in range(entries)
    ]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in chunks of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cmd(operation: Operation, key: str) -> Command:
    return role_command(
        SYSTEM,
        operation,
        business_key=f"bench:{operation.operation}:{key}",
        key=key,
        entity=f"{SYSTEM}:{operation.operation}:{key}",
        impact=Impact.REVENUE,
    )


def setup_commands(projects: int) -> tuple[list[Command], list[Command]]:
    """The customer's command and the projects' commands."""
    customer = UpsertCustomer(
        code=CUSTOMER, name="Xero Bench Ltd", country="GB", tax_ids=(("gb_vat", "GB999999973"),)
    )
    tasks = tuple(ProjectTask(name=name, hourly_rate=rate) for name, rate in TASKS)
    upserts = [
        _cmd(
            UpsertProject(
                key=project_key(n),
                name=f"Bench engagement {n}",
                customer_name="Xero Bench Ltd",
                customer_code=CUSTOMER,
                currency="GBP",
                tasks=tasks,
            ),
            project_key(n),
        )
        for n in range(projects)
    ]
    return [_cmd(customer, CUSTOMER)], upserts


def time_commands(plan: Sequence[Entry]) -> list[Command]:
    """One ``add_timesheet_line`` per entry."""
    return [
        _cmd(
            AddTimesheetLine(
                key=f"xb-{e.index}",
                employee_key=f"p{e.index % len(PEOPLE)}",
                employee_name=PEOPLE[e.index % len(PEOPLE)],
                task_key=task_key(project_key(e.project), TASKS[e.task][0]),
                date=e.day,
                hours=e.hours,
            ),
            f"xb-{e.index}",
        )
        for e in plan
    ]


def reference(n: int) -> str:
    """The invoice reference of project ``n``."""
    return f"{project_key(n)}/2026-11"


def invoice_commands(projects: int) -> list[Command]:
    """One ``invoice_project`` per project: its time up to the month's end."""
    return [
        _cmd(
            InvoiceProject(
                project_key=project_key(n),
                up_to=MONTH_END,
                reference=reference(n),
                invoice_date=MONTH_END,
                payment_terms_days=30,
            ),
            reference(n),
        )
        for n in range(projects)
    ]


def post_commands(projects: int) -> list[Command]:
    """One ``post_invoice`` per invoice."""
    return [_cmd(PostInvoice(reference=reference(n)), reference(n)) for n in range(projects)]


def expected_untaxed(plan: Sequence[Entry]) -> Decimal:
    """What the invoices bill before tax: every entry's hours at its task's rate."""
    return sum((e.hours * TASKS[e.task][1] for e in plan), Decimal(0))


# --- the floor -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Floor:
    """Of one operation: ``floor`` calls, the connector's ``reads`` beyond it and, of those,
    the ``avoidable`` ones (see the module docstring); ``drafts_read``: the drafts (with
    their lines) those reads return."""

    floor: int
    reads: int
    avoidable: int = 0
    drafts_read: int = 0


def _per_where(n: int) -> int:
    return math.ceil(n / PER_WHERE)


def _pages(rows: int) -> int:
    """Calls of a paged list of ``rows`` (a short page ends it, an empty one too)."""
    return rows // XERO_PAGE + 1


def floors(projects: int, plan: Sequence[Entry], batch: int) -> dict[str, Floor]:
    """The floor, the connector's reads and the avoidable ones, per operation, for
    ``projects`` projects and the entries of ``plan`` in batches of ``batch``. Invoicing's
    read of a project's documents returns its work-in-progress drafts too (the anchor and
    one per batch of time): their pages count."""
    project_batches = [len(c) for c in chunks(range(projects), batch)]
    setup = Floor(
        floor=1 + sum(2 + k for k in project_batches) + 1,
        reads=1 + sum(1 + _per_where(k) + 2 for k in project_batches),
    )
    reads, seen = 0, set[tuple[int, str]]()
    drafts: Counter[int] = Counter()  # work-in-progress drafts per project, anchor apart
    batches = 0
    for entries in chunks(plan, batch):
        codes = {(e.project, e.task) for e in entries} - seen
        reads += _per_where(len(codes)) if codes else 0
        seen |= codes
        drafts.update({e.project for e in entries})
        batches += 1
    time = Floor(batches, reads)
    invoicing, posting = Floor(0, 0), Floor(0, 0)
    for keys in chunks(range(projects), batch):
        documents, rows = 0, 0
        for group in chunks(keys, DOCUMENTS_PER_READ):
            held = sum(drafts[p] + 1 for p in group)  # drafts and anchors; no invoice yet
            documents += _pages(held) + 1  # invoices' pages, credit notes' one
            rows += held
        invoicing = Floor(
            invoicing.floor + 2,
            invoicing.reads + documents,
            invoicing.avoidable,
            invoicing.drafts_read + rows,
        )
        posting = Floor(posting.floor + 2, posting.reads + _per_where(len(keys)) - 1)
    return {"set-up": setup, "time": time, "invoicing": invoicing, "posting": posting}


# --- one run -------------------------------------------------------------------------------
@dataclass
class Phase:
    """What one operation cost in a run."""

    commands: int = 0
    batches: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    waited_s: float = 0.0
    hub_cpu_s: float = 0.0
    xero_cpu_s: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)


def _connector(server_json: dict[str, Any], roomy: bool) -> XeroConnector:
    wiring = plugin("xero").sandbox
    if wiring is None:  # pragma: no cover - the plugin has one
        raise BenchError("the Xero plugin has no sandbox wiring")
    settings = dict(wiring.settings(server_json))
    if roomy:
        settings |= {"requests_per_window": ROOMY["minute"], "day_limit": ROOMY["day"]}
    validated = systems_adapter().validate_python({SYSTEM: settings})[SYSTEM]
    connector = build_connector(SYSTEM, validated, BuildContext())
    if not isinstance(connector, XeroConnector):  # pragma: no cover
        raise BenchError(f"not a Xero connector: {type(connector).__name__}")
    return connector


def _phase(
    connector: XeroConnector, commands: Sequence[Command], xero_pid: int, phase: Phase
) -> None:
    client = connector.client
    before, waited = Counter(client.calls), client.waited_s
    cpu, xero_cpu = time.thread_time(), process_cpu_s(xero_pid) or 0.0
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    for batch in chunks(commands, connector.limits.batch_size):
        outcomes += connector.execute(batch)
        phase.batches += 1
    phase.seconds += time.perf_counter() - started
    phase.hub_cpu_s += time.thread_time() - cpu
    phase.xero_cpu_s += (process_cpu_s(xero_pid) or 0.0) - xero_cpu
    phase.waited_s += client.waited_s - waited
    phase.commands += len(commands)
    phase.calls += Counter(client.calls) - before
    phase.outcomes += outcomes


def _failures(name: str, phase: Phase) -> list[str]:
    return [
        f"{name}: {type(o).__name__} {getattr(o, 'message', '') or o}"
        for o in phase.outcomes
        if not isinstance(o, Applied)
    ]


def run_once(projects: int, entries: int, roomy: bool, home: Path) -> dict[str, Any]:
    """One run on a fresh sandbox under ``home``: calls, seconds and CPU per operation,
    the sandbox's count, and the failures (none when all went through)."""
    limits: dict[str, Any] = dict(ROOMY) if roomy else {}
    server = start_xero(home, free_port(), **limits)
    connector = _connector(server.as_json(), roomy)
    plan = plan_entries(projects, entries)
    phases = {name: Phase() for name in OPERATIONS}
    try:
        customer, upserts = setup_commands(projects)
        _phase(connector, customer, server.pid, phases["set-up"])
        _phase(connector, upserts, server.pid, phases["set-up"])
        _phase(connector, time_commands(plan), server.pid, phases["time"])
        _phase(connector, invoice_commands(projects), server.pid, phases["invoicing"])
        _phase(connector, post_commands(projects), server.pid, phases["posting"])
        sandbox = httpx.get(f"{server.url}/__sandbox/calls", timeout=10).json()
    finally:
        connector.close()
        stop_pid(server.pid)
    failures = [f for name, phase in phases.items() for f in _failures(name, phase)]
    posted = [o.result for o in phases["posting"].outcomes if isinstance(o, Applied)]
    billed = sum((Decimal(r["untaxed_amount"]) for r in posted), Decimal(0))
    if not failures and billed != expected_untaxed(plan):
        failures.append(f"invoices bill {billed} before tax, not {expected_untaxed(plan)}")
    if not failures and any(r["state"] != "posted" for r in posted):
        failures.append("an invoice is not posted")
    return {
        "phases": {
            name: {
                "commands": p.commands,
                "batches": p.batches,
                "calls": dict(p.calls),
                "seconds": p.seconds,
                "waited_s": p.waited_s,
                "hub_cpu_s": p.hub_cpu_s,
                "xero_cpu_s": p.xero_cpu_s,
            }
            for name, p in phases.items()
        },
        "sandbox": sandbox,
        "batch_size": connector.limits.batch_size,
        "billed_untaxed": str(billed),
        "failures": failures,
    }


# --- the figures ---------------------------------------------------------------------------
def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _per_1000(n: float, entries: int) -> float:
    return round(n * 1000 / entries, 1)


def figures(
    runs: Sequence[dict[str, Any]],
    *,
    projects: int,
    entries: int,
    batch: int,
    roomy: bool,
) -> dict[str, Any]:
    """The medians over ``runs`` of :func:`run_once`, next to :func:`floors`."""
    plan = plan_entries(projects, entries)
    floor = floors(projects, plan, batch)
    rows: dict[str, dict[str, Any]] = {}
    for name in (*OPERATIONS, "total"):
        names = OPERATIONS if name == "total" else (name,)

        def summed(key: str, r: dict[str, Any], names: Sequence[str] = names) -> float:
            return float(sum(r["phases"][n][key] for n in names))

        def count(r: dict[str, Any], names: Sequence[str] = names) -> float:
            return float(sum(sum(r["phases"][n]["calls"].values()) for n in names))

        calls = _median([count(r) for r in runs])
        f = Floor(
            sum(floor[n].floor for n in names),
            sum(floor[n].reads for n in names),
            sum(floor[n].avoidable for n in names),
        )
        rows[name] = {
            "commands": _median([summed("commands", r) for r in runs]),
            "batches": _median([summed("batches", r) for r in runs]),
            "calls": calls,
            "floor": f.floor,
            "reads": f.reads,
            "avoidable_reads": f.avoidable,
            "drafts_read": sum(floor[n].drafts_read for n in names),
            "above_floor": calls - f.floor,
            "above_floor_and_reads": calls - f.floor - f.reads,
            "calls_per_1000": _per_1000(calls, entries),
            "floor_per_1000": _per_1000(f.floor, entries),
            "reads_per_1000": _per_1000(f.reads, entries),
            "avoidable_per_1000": _per_1000(f.avoidable, entries),
            "minutes_at_limit_per_1000": round(calls * 1000 / entries / MINUTE_LIMIT, 2),
            "floor_minutes_per_1000": round(f.floor * 1000 / entries / MINUTE_LIMIT, 2),
            "seconds": round(_median([summed("seconds", r) for r in runs]), 2),
            "waited_s": round(_median([summed("waited_s", r) for r in runs]), 2),
            "hub_cpu_s": round(_median([summed("hub_cpu_s", r) for r in runs]), 2),
            "xero_cpu_s": round(_median([summed("xero_cpu_s", r) for r in runs]), 2),
        }
    last = runs[-1]
    by_operation = {n: dict(sorted(last["phases"][n]["calls"].items())) for n in OPERATIONS}
    routes = sorted(
        {c for r in runs for n in OPERATIONS for c in r["phases"][n]["calls"]}
        | {c for r in runs for c in r["sandbox"]["calls"]}
    )
    by_resource = {}
    for route in routes:
        client = _median(
            [sum(r["phases"][n]["calls"].get(route, 0) for n in OPERATIONS) for r in runs]
        )
        sandbox = _median([r["sandbox"]["calls"].get(route, 0) for r in runs])
        by_resource[route] = {
            "client": client,
            "sandbox": sandbox,
            "per_1000": _per_1000(client, entries),
        }
    throttled = [sum(r["sandbox"]["throttled"].values()) for r in runs]
    client_totals = [sum(sum(r["phases"][n]["calls"].values()) for n in OPERATIONS) for r in runs]
    sandbox_totals = [r["sandbox"]["total"] for r in runs]
    total_per_entry = rows["total"]["calls"] / entries
    work = rows["total"]["calls"] - rows["set-up"]["calls"]
    return {
        "projects": projects,
        "entries": entries,
        "batch_size": batch,
        "tasks_per_project": len(TASKS),
        "runs": len(runs),
        "limits": {
            "roomy": roomy,
            "minute": ROOMY["minute"] if roomy else MINUTE_LIMIT,
            "day": ROOMY["day"] if roomy else DAY_LIMIT,
            "concurrent": ROOMY["concurrent"] if roomy else CONCURRENT_LIMIT,
        },
        "operations": rows,
        "calls_by_operation": by_operation,
        "calls_by_resource": by_resource,
        "cross_check": {
            "client": client_totals,
            "sandbox": sandbox_totals,
            "throttled": [r["sandbox"]["throttled"] for r in runs],
            "agree": all(
                c == s + t for c, s, t in zip(client_totals, sandbox_totals, throttled, strict=True)
            ),
        },
        "throttled_429": max(throttled),
        "peak_minute": max(r["sandbox"]["peak_minute"] for r in runs),
        "peak_concurrent": max(r["sandbox"]["peak_concurrent"] for r in runs),
        "day_limit_entries": math.floor(DAY_LIMIT / total_per_entry) if total_per_entry else None,
        "day_limit_entries_without_setup": math.floor(DAY_LIMIT * entries / work) if work else None,
        "floor_from": FLOOR_FROM,
        "reads_from": READS_FROM,
        "avoidable_from": AVOIDABLE_FROM,
        "billed_untaxed": last["billed_untaxed"],
        "failures": [f for r in runs for f in r["failures"]][:20],
        "per_run": [
            {
                "calls": client_totals[i],
                "sandbox_calls": sandbox_totals[i],
                "seconds": round(sum(r["phases"][n]["seconds"] for n in OPERATIONS), 2),
                "hub_cpu_s": round(sum(r["phases"][n]["hub_cpu_s"] for n in OPERATIONS), 2),
            }
            for i, r in enumerate(runs)
        ],
    }


def run_xero_bench(
    projects: int = 20,
    entries: int = 1000,
    runs: int = 3,
    *,
    roomy: bool = False,
    on_step: Callable[[str], None] = lambda step: None,
) -> dict[str, Any]:
    """Run the benchmark ``runs`` times (a fresh sandbox each); :func:`figures`.
    ``on_step(text)`` says what starts."""
    done = []
    with tempfile.TemporaryDirectory(prefix="closeloop-bench-xero-") as tmp:
        for n in range(runs):
            on_step(f"benchmarking Xero: run {n + 1} of {runs} ...")
            done.append(run_once(projects, entries, roomy, Path(tmp) / f"xero-{n}"))
    batch = int(done[-1]["batch_size"])
    return figures(done, projects=projects, entries=entries, batch=batch, roomy=roomy)
