"""``closeloop bench tryton``: timesheet lines and invoices into a real Tryton, through the
connector next to the fewest calls Tryton's RPC allows for the same work.

On one fresh sandbox database (restored from the pristine copy), each run measures,
alternating the order of connector and floor between runs so that each sees the same table
sizes on average:

- **all accepted**: ``add_timesheet_line`` commands through :class:`TrytonConnector`, batches
  of 1,000 (what the engine sends), next to the floor, ``timesheet.line.create`` with 1,000
  prepared lines per call; and one call per line (``singles`` lines, one ``create`` each);
- **the mix** and **invoices** of :mod:`closeloop.devtools.bench.tryton_mix`: a share of the lines
  refused because their project was closed, and invoicing then posting many projects in one
  batch each, with their floors.

Figures are medians over the runs; ``calls_by_method`` shows, for the last run of each
connector way, the RPC calls by ``(method, calling function)``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import TaskSpec, TrytonOperations
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import find_ids
from closeloop.devtools.bench.tryton_mix import (
    CLOSED_ON,
    BenchError,
    Timed,
    invoices_floor,
    invoices_via_connector,
    make_projects,
    mark,
    mix_floor,
    mix_via_connector,
    plan_lines,
    since,
)
from closeloop.devtools.sandboxctl import start_tryton
from closeloop.domain.commands import Applied, Command
from closeloop.sandboxes.tryton.server import TrytonServer

BATCH = 1000
SINGLES = 200
PEOPLE = 25
CLOSED_PROJECTS = 2
#: the issue's targets for the mix: calls at most 1.2 x the floor's, lines/s at least 0.8 x
CALLS_RATIO_MAX = 1.2
SPEED_RATIO_MIN = 0.8
CUSTOMER = "BENCH"


def _commands(prefix: str, count: int, task: str) -> list[Command]:
    first = date(datetime_year(), 1, 5)
    out = []
    for i in range(count):
        key = f"{prefix}-{i}"
        out.append(
            Command(
                "tryton",
                "add_timesheet_line",
                key,
                idempotency_key("add_timesheet_line", key),
                {
                    "key": key,
                    "employee_key": f"p{i % PEOPLE}",
                    "employee_name": f"Consultant {i % PEOPLE}",
                    "task_key": task,
                    "date": (first + timedelta(days=i % 300)).isoformat(),
                    "hours": "1.5",
                    "description": "bench",
                },
            )
        )
    return out


def datetime_year() -> int:
    """This year (the all-accepted lines are dated in it)."""
    return datetime.now(UTC).year


@contextmanager
def _server() -> Iterator[TrytonServer]:
    """A fresh sandbox Tryton in a temporary folder, stopped afterwards. Never a shared
    one: the bench posts invoices dated :data:`~.bench_tryton_mix.UP_TO` (the last day of
    last year), and a strict invoice sequence refuses to number an earlier-dated invoice
    after them."""
    with tempfile.TemporaryDirectory() as folder:
        started = start_tryton(Path(folder))
        try:
            yield started
        finally:
            started.stop()


def run_tryton_bench(
    entries: int = 5000,
    runs: int = 3,
    *,
    refused_share: float = 0.05,
    projects: int = 20,
    singles: int = SINGLES,
) -> dict[str, Any]:
    """Median figures of ``runs`` runs on a fresh sandbox Tryton (see the module docstring):
    lines per second and API calls per 1,000 lines for ``entries`` lines, all accepted and
    in the mix with ``refused_share`` (0-1) refused; calls and seconds per invoice and per
    post for ``projects`` projects; ``singles`` lines one call each. Raises
    :class:`~.bench_tryton_mix.BenchError` when the connector does not do the work asked,
    :class:`~closeloop.sandboxes.tryton.server.SandboxError` without a Tryton."""
    with _server() as running:
        rpc = TrytonRPC(
            running.url, running.database, running.user, running.password, timeout_s=600
        )
        try:
            return _bench(rpc, entries, runs, refused_share, projects, singles)
        finally:
            rpc.close()


def _bench(
    rpc: TrytonRPC, entries: int, runs: int, refused_share: float, projects: int, singles: int
) -> dict[str, Any]:
    ids = find_ids(rpc)  # the sandbox is prepared: its current company
    ops = TrytonOperations(rpc, ids)
    connector = TrytonConnector(ops, batch_size=BATCH)
    ops.upsert_customer(CUSTOMER, "Bench GmbH", "DE", [("eu_vat", "DE136695976")])
    task = "bench/dev"
    ops.upsert_project(
        "bench", "Bench", CUSTOMER, [TaskSpec(task, "Dev", Decimal(100))], Decimal(100)
    )
    work = ops.find_works([task])[task]["timesheet_works"][0]
    employees = ops.ensure_employees((f"p{i}", f"Consultant {i}") for i in range(PEOPLE))
    closed = make_projects(ops, "closed", CLOSED_PROJECTS, CUSTOMER)
    for project in closed:
        ops.close_project(project.key, on=CLOSED_ON)
    times: dict[str, list[float]] = {}
    last: dict[str, Timed] = {}

    def keep(name: str, timed: Timed) -> None:
        times.setdefault(f"{name}_s", []).append(timed.seconds)
        times.setdefault(f"{name}_calls", []).append(timed.calls)
        last[name] = timed

    def via_connector(run: int) -> None:
        commands = _commands(f"bench-{run}", entries, task)
        begun = mark(rpc)
        for start in range(0, entries, BATCH):
            outcomes = connector.execute(commands[start : start + BATCH])
            refused = [o for o in outcomes if not isinstance(o, Applied)]
            if refused:
                raise BenchError(f"{len(refused)} lines not recorded, e.g. {refused[:2]}")
        keep("connector", since(rpc, begun))

    def floor(run: int) -> None:
        first = date(datetime_year(), 1, 5)
        values = [
            {
                "company": ids.company,
                "employee": employees[f"p{i % PEOPLE}"],
                "work": work,
                "date": first + timedelta(days=i % 300),
                "duration": timedelta(hours=1.5),
                "description": f"bench [cl:floor-{run}-{i}]",
            }
            for i in range(entries)
        ]
        begun = mark(rpc)
        for start in range(0, entries, BATCH):
            rpc.create("timesheet.line", values[start : start + BATCH])
        keep("floor", since(rpc, begun))

    def one_per_line(run: int) -> None:
        started = time.perf_counter()
        for i in range(singles):
            rpc.create(
                "timesheet.line",
                [
                    {
                        "company": ids.company,
                        "employee": employees["p0"],
                        "work": work,
                        "date": date(datetime_year(), 1, 5),
                        "duration": timedelta(hours=1),
                        "description": f"single [cl:single-{run}-{i}]",
                    }
                ],
            )
        times.setdefault("single_s", []).append(time.perf_counter() - started)

    def mix_and_invoices(run: int) -> None:
        """The mix then the invoices, each way on its own projects."""
        ways = ("mix_connector", "mix_floor")
        made = {w: make_projects(ops, f"{w}-{run}", projects, CUSTOMER) for w in ways}
        order = ways if run % 2 == 0 else ways[::-1]
        for way in order:
            lines = plan_lines(f"{way}-{run}", entries, refused_share, made[way], closed)
            if way == "mix_connector":
                keep(way, mix_via_connector(connector, lines))
            else:
                work_of = {t: w for p in made[way] + closed for t, w in p.tasks.items()}
                keep(way, mix_floor(ops, lines, employees, work_of))
        for way in order:
            if way == "mix_connector":
                invoiced, posted = invoices_via_connector(connector, made[way])
                keep("invoice_connector", invoiced)
                keep("post_connector", posted)
            else:
                invoiced, posted = invoices_floor(rpc, made[way])
                keep("invoice_floor", invoiced)
                keep("post_floor", posted)

    for run in range(runs):
        order = [via_connector, floor] if run % 2 == 0 else [floor, via_connector]
        for step in order:
            step(run)
        one_per_line(run)
        mix_and_invoices(run)
    return _figures(times, last, entries, runs, refused_share, projects, singles)


def _median(times: dict[str, list[float]], name: str) -> float:
    return statistics.median(times[name])


def _figures(
    times: dict[str, list[float]],
    last: dict[str, Timed],
    entries: int,
    runs: int,
    refused_share: float,
    projects: int,
    singles: int,
) -> dict[str, Any]:
    """The report: the all-accepted figures (flat, as before), ``mix``, ``invoices`` and
    ``calls_by_method``."""
    per_s = entries / _median(times, "connector_s")
    floor_per_s = entries / _median(times, "floor_s")
    refused = int(entries * Decimal(str(refused_share)))
    mix_per_s = entries / _median(times, "mix_connector_s")
    mix_floor_per_s = entries / _median(times, "mix_floor_s")
    mix_calls = _median(times, "mix_connector_calls") * 1000 / entries
    mix_floor_calls = _median(times, "mix_floor_calls") * 1000 / entries
    speed_ratio = mix_per_s / mix_floor_per_s
    calls_ratio = mix_calls / mix_floor_calls

    def per_invoice(name: str) -> float:
        return round(_median(times, name) / projects, 3)

    invoice_s = _median(times, "invoice_connector_s") + _median(times, "post_connector_s")
    floor_invoice_s = _median(times, "invoice_floor_s") + _median(times, "post_floor_s")
    return {
        "entries": entries,
        "runs": runs,
        "batch": BATCH,
        "backend": "sqlite",
        "connector_lines_per_s": round(per_s, 1),
        "floor_lines_per_s": round(floor_per_s, 1),
        "ratio_to_floor": round(per_s / floor_per_s, 3),
        "one_call_per_line_lines_per_s": round(singles / _median(times, "single_s"), 1),
        "connector_calls_per_1000": round(_median(times, "connector_calls") * 1000 / entries, 1),
        "floor_calls_per_1000": round(_median(times, "floor_calls") * 1000 / entries, 1),
        "connector_runs_s": [round(s, 3) for s in times["connector_s"]],
        "floor_runs_s": [round(s, 3) for s in times["floor_s"]],
        "mix": {
            "entries": entries,
            "refused_share": refused_share,
            "refused": refused,
            "accepted": entries - refused,
            "closed_projects": CLOSED_PROJECTS,
            "connector_lines_per_s": round(mix_per_s, 1),
            "floor_lines_per_s": round(mix_floor_per_s, 1),
            "lines_per_s_ratio": round(speed_ratio, 3),
            "connector_calls_per_1000": round(mix_calls, 1),
            "floor_calls_per_1000": round(mix_floor_calls, 1),
            "calls_ratio": round(calls_ratio, 3),
            "floor_counts": (
                "per batch of up to 1,000 lines: 1 timesheet.work search_read (the batch's "
                "works' timesheet end dates: which projects are closed) + 1 timesheet.line "
                "create of the accepted lines; employee and work ids prepared"
            ),
            "targets": {
                "calls_ratio_max": CALLS_RATIO_MAX,
                "calls_ok": calls_ratio <= CALLS_RATIO_MAX,
                "lines_per_s_ratio_min": SPEED_RATIO_MIN,
                "lines_per_s_ok": speed_ratio >= SPEED_RATIO_MIN,
            },
            "connector_runs_s": [round(s, 3) for s in times["mix_connector_s"]],
            "floor_runs_s": [round(s, 3) for s in times["mix_floor_s"]],
        },
        "invoices": {
            "projects": projects,
            "connector_calls_per_invoice": per_invoice("invoice_connector_calls"),
            "connector_calls_per_post": per_invoice("post_connector_calls"),
            "connector_s_per_invoice": per_invoice("invoice_connector_s"),
            "connector_s_per_post": per_invoice("post_connector_s"),
            "floor_calls_per_invoice": per_invoice("invoice_floor_calls"),
            "floor_calls_per_post": per_invoice("post_floor_calls"),
            "floor_s_per_invoice": per_invoice("invoice_floor_s"),
            "floor_s_per_post": per_invoice("post_floor_s"),
            "seconds_ratio": round(invoice_s / floor_invoice_s, 3),
            "floor_counts": (
                "5 calls for all the projects: project.work write (up-to date), "
                "project.work.invoice, account.invoice search_read (the new invoices), "
                "account.invoice write (every reference and date in one call; these four "
                "are the invoicing), account.invoice.post"
            ),
        },
        "calls_by_method": {
            way: by_method(last[name])
            for way, name in (
                ("all_accepted", "connector"),
                ("mix", "mix_connector"),
                ("invoice", "invoice_connector"),
                ("post", "post_connector"),
            )
        },
    }


def by_method(timed: Timed) -> list[dict[str, Any]]:
    """A way's RPC calls by ``(method, caller)``, most first, as ``[{"method", "caller",
    "calls", "method_waited_s"}]``; ``method_waited_s``: seconds waited for Tryton's answers
    to that method, all its callers together."""
    return [
        {
            "method": method,
            "caller": caller,
            "calls": calls,
            "method_waited_s": round(timed.waited_s.get(method, 0.0), 3),
        }
        for (method, caller), calls in timed.by_method.most_common()
    ]
