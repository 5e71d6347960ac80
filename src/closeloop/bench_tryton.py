"""``closeloop bench tryton``: timesheet lines per second into a real Tryton.

Three ways, on one sandbox database (restored from the pristine copy), alternating order
between runs so that each sees the same table sizes on average:

- connector: ``add_timesheet_line`` commands through :class:`TrytonConnector`, batches of
  1,000 (what the engine sends): key lookups, employee resolution, one bulk create;
- floor: the bare bulk RPC, ``timesheet.line.create`` with 1,000 prepared lines per call;
- one call per line: 200 lines, one ``create`` each.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import TaskSpec, TrytonOperations
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import TrytonSetup, initialize
from closeloop.domain.commands import Applied, Command
from closeloop.sandboxctl import start_tryton

BATCH = 1000
SINGLES = 200
PEOPLE = 25


def _commands(run: int, count: int, task: str) -> list[Command]:
    first = date(datetime_year(), 1, 5)
    out = []
    for i in range(count):
        key = f"bench-{run}-{i}"
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
    """This year (lines are dated in it)."""
    return datetime.now(UTC).year


def run_tryton_bench(entries: int = 5000, runs: int = 3) -> dict[str, Any]:
    """Median figures: lines per second and API calls per 1,000 time entries, per way."""
    with tempfile.TemporaryDirectory() as folder:
        server = start_tryton(Path(folder))
        rpc = TrytonRPC(server.url, server.database, server.user, server.password, timeout_s=600)
        try:
            ids = initialize(rpc, TrytonSetup())
            ops = TrytonOperations(rpc, ids)
            connector = TrytonConnector(ops, batch_size=BATCH)
            ops.upsert_customer("BENCH", "Bench GmbH", "DE", [("eu_vat", "DE136695976")])
            task = "bench/dev"
            ops.upsert_project(
                "bench", "Bench", "BENCH", [TaskSpec(task, "Dev", Decimal(100))], Decimal(100)
            )
            work = ops.find_works([task])[task]["timesheet_works"][0]
            employees = ops.ensure_employees((f"p{i}", f"Consultant {i}") for i in range(PEOPLE))
            figures: dict[str, list[float]] = {
                k: []
                for k in ("connector_s", "connector_calls", "floor_s", "floor_calls", "single_s")
            }

            def via_connector(run: int) -> None:
                commands = _commands(run, entries, task)
                calls, started = rpc.calls, time.perf_counter()
                for start in range(0, entries, BATCH):
                    outcomes = connector.execute(commands[start : start + BATCH])
                    assert all(isinstance(o, Applied) for o in outcomes), outcomes[:3]
                figures["connector_s"].append(time.perf_counter() - started)
                figures["connector_calls"].append(rpc.calls - calls)

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
                calls, started = rpc.calls, time.perf_counter()
                for start in range(0, entries, BATCH):
                    rpc.create("timesheet.line", values[start : start + BATCH])
                figures["floor_s"].append(time.perf_counter() - started)
                figures["floor_calls"].append(rpc.calls - calls)

            def singles(run: int) -> None:
                started = time.perf_counter()
                for i in range(SINGLES):
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
                figures["single_s"].append(time.perf_counter() - started)

            for run in range(runs):
                order = [via_connector, floor] if run % 2 == 0 else [floor, via_connector]
                for step in order:
                    step(run)
                singles(run)
        finally:
            rpc.close()
            server.stop()
    per_s = entries / statistics.median(figures["connector_s"])
    floor_per_s = entries / statistics.median(figures["floor_s"])
    return {
        "entries": entries,
        "runs": runs,
        "batch": BATCH,
        "backend": "sqlite",
        "connector_lines_per_s": round(per_s, 1),
        "floor_lines_per_s": round(floor_per_s, 1),
        "ratio_to_floor": round(per_s / floor_per_s, 3),
        "one_call_per_line_lines_per_s": round(SINGLES / statistics.median(figures["single_s"]), 1),
        "connector_calls_per_1000": round(
            statistics.median(figures["connector_calls"]) * 1000 / entries, 1
        ),
        "floor_calls_per_1000": round(
            statistics.median(figures["floor_calls"]) * 1000 / entries, 1
        ),
        "connector_runs_s": [round(s, 3) for s in figures["connector_s"]],
        "floor_runs_s": [round(s, 3) for s in figures["floor_s"]],
    }
