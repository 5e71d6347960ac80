"""``closeloop bench demo``: the demo run several times, each in a fresh home in a temporary
folder (fresh systems, fresh hub database), and the medians of what a user waits for and
what it costs: wall time per phase and in all (starting the systems included), CPU seconds
of the hub process and of the systems' processes, and API calls per system and phase next
to the floor for the same work (:func:`closeloop.devtools.demo.summary.floors`).
"""

from __future__ import annotations

import io
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from closeloop.devtools.demo.run import DemoOptions, run_demo

SYSTEMS = ("salesforce", "harvest", "tryton")


def run_demo_bench(
    runs: int = 3,
    *,
    clients: int = 40,
    deals: int = 60,
    consultants: int = 25,
    on_run: Callable[[int], None] = lambda run: None,
) -> dict[str, Any]:
    """Run the demo ``runs`` times with the firm's size given (``on_run(n)`` before run
    ``n``, from 1); the medians (:func:`medians`). Raises
    :class:`~closeloop.demo.DemoError` when a run does not finish."""
    summaries = []
    for run in range(1, runs + 1):
        on_run(run)
        with tempfile.TemporaryDirectory(prefix="closeloop-bench-demo-") as folder:
            options = DemoOptions(
                home=Path(folder) / ".closeloop",
                clients=clients,
                deals=deals,
                consultants=consultants,
            )
            quiet = Console(file=io.StringIO(), width=120)  # progress and summary unseen
            summaries.append(run_demo(options, console=quiet))
    figures = medians(summaries)
    figures["firm"] = {"clients": clients, "deals": deals, "consultants": consultants}
    return figures


def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 2)


def medians(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The medians over demo summaries (``demo-summary.json`` shapes): ``seconds`` (wall
    time of a run, starting the systems included), ``phases_s`` (per phase), ``cpu_s`` (the
    hub process over the run; each system's processes over their life, where read),
    ``cpu_s_by_phase`` (the hub's and Tryton's during each phase),
    ``api_calls`` and ``floor`` (per phase, per system: calls made and the floor for the same
    work) and ``api_calls_total`` / ``floor_total`` (per system; calls include the hub's
    start-up). ``per_run`` keeps each run's seconds, phases, CPU and calls. Every figure is
    the median of that figure alone (a median run may not exist)."""
    phases = list(summaries[0]["phases_s"])
    cpu_keys = sorted({k for s in summaries for k in s.get("cpu_s", {})})
    return {
        "runs": len(summaries),
        "seconds": _median([s["seconds"] for s in summaries]),
        "phases_s": {p: _median([s["phases_s"][p] for s in summaries]) for p in phases},
        "cpu_s": {
            k: _median([s["cpu_s"][k] for s in summaries if k in s.get("cpu_s", {})])
            for k in cpu_keys
        },
        "cpu_s_by_phase": {
            p: {
                k: _median([s["phases"][p]["cpu_s"].get(k, 0.0) for s in summaries])
                for k in ("hub", "tryton")
            }
            for p in phases
        },
        "api_calls": {
            p: {y: _median([s["phases"][p]["api_calls"][y] for s in summaries]) for y in SYSTEMS}
            for p in phases
        },
        "floor": {
            p: {
                y: _median([s["phases"][p]["floor"][y]["total"] for s in summaries])
                for y in SYSTEMS
            }
            for p in phases
        },
        "api_calls_total": {y: _median([s["api_calls"][y] for s in summaries]) for y in SYSTEMS},
        "floor_total": {y: _median([s["floor"][y] for s in summaries]) for y in SYSTEMS},
        "per_run": [
            {
                "seconds": s["seconds"],
                "phases_s": s["phases_s"],
                "cpu_s": s.get("cpu_s", {}),
                "api_calls": {p: s["phases"][p]["api_calls"] for p in phases},
            }
            for s in summaries
        ],
    }
