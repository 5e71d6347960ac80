"""Measuring what users run: the floors of the demo's phases (:func:`floors`), ``closeloop
bench tryton``'s mix and invoices next to their floors, and ``closeloop bench demo``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from typer.testing import CliRunner

from closeloop.cli import app
from closeloop.devtools.bench.demo import medians
from closeloop.devtools.bench.tryton import _figures
from closeloop.devtools.bench.tryton_mix import Timed
from closeloop.devtools.demo.summary import PhaseWork, floors

SYSTEMS = ("salesforce", "harvest", "tryton")


def test_the_floor_counts_what_each_api_batches_and_what_it_does_not() -> None:
    mobilize = PhaseWork(
        accounts_matched=6,
        customers=5,
        erp_projects=6,
        psa_projects=6,
        psa_clients=6,
        psa_tasks=5,
        task_assignments=15,
        crm_records=11,
        polls={"salesforce": [11, 0, 0], "harvest": [0, 0], "tryton": [0]},
        clock_reads=1,
    )
    found = floors(mobilize)
    # Salesforce: 11 records in one Composite request; three polls; the demo's clock read
    assert found["salesforce"] == {"work": 1, "polls": 3, "harness": 1, "total": 5}
    # Harvest, one request a record: 6 projects, 15 assignments, 6 clients, 5 tasks, 2 lists
    assert found["harvest"] == {"work": 34, "polls": 2, "harness": 0, "total": 36}
    # Tryton: one read matches every account; countries + customers; status + projects
    assert found["tryton"] == {"work": 5, "polls": 1, "harness": 0, "total": 6}

    billing = PhaseWork(
        lines=2080,
        lines_refused=47,
        new_people=25,
        invoices=112,
        invoice_rounds=3,
        posted=112,
        crm_records=1001,
        psa_invoices=112,
        polls={"harvest": [2127, 0], "salesforce": [0], "tryton": [112, 0]},
    )
    found = floors(billing)
    # 2,127 entries screened: 3 reads; 2,080 recorded: 3 creates; 25 new people: 3 calls;
    # three invoicing rounds (up-to write + invoice each), one find, one reference write, post
    assert found["tryton"]["work"] == 3 + 3 + 3 + (2 * 3 + 2) + 1
    assert found["tryton"]["polls"] == 2  # Tryton's search_read is not paged
    assert found["harvest"] == {"work": 112, "polls": 3, "harness": 0, "total": 115}
    assert found["salesforce"]["work"] == 2  # 1,001 records: two Composite requests
    assert all(f["total"] == 0 for f in floors(PhaseWork()).values())


def _summary(seconds: float, calls: int) -> dict[str, Any]:
    """A demo summary's cost keys, as ``run_demo`` writes them."""
    phases = {"mobilizing": seconds / 2, "billing": seconds / 2}
    floor = {s: {"work": 1, "polls": 1, "harness": 0, "total": 2} for s in SYSTEMS}
    return {
        "seconds": seconds,
        "phases_s": phases,
        "cpu_s": {"hub": seconds / 10, "tryton": seconds / 5},
        "api_calls": dict.fromkeys(SYSTEMS, 2 * calls + 1),
        "floor": dict.fromkeys(SYSTEMS, 4),
        "phases": {
            p: {
                "api_calls": dict.fromkeys(SYSTEMS, calls),
                "floor": floor,
                "cpu_s": {"hub": seconds / 20, "tryton": seconds / 10},
            }
            for p in phases
        },
    }


def test_bench_demo_reports_the_median_of_each_figure() -> None:
    figures = medians([_summary(300, 10), _summary(200, 30), _summary(250, 20)])
    assert figures["runs"] == 3 and figures["seconds"] == 250
    assert figures["phases_s"] == {"mobilizing": 125, "billing": 125}
    assert figures["cpu_s"] == {"hub": 25, "tryton": 50}
    assert figures["cpu_s_by_phase"]["billing"] == {"hub": 12.5, "tryton": 25}
    assert figures["api_calls"]["billing"] == dict.fromkeys(SYSTEMS, 20)
    assert figures["floor"]["mobilizing"] == dict.fromkeys(SYSTEMS, 2)
    assert figures["api_calls_total"] == dict.fromkeys(SYSTEMS, 41)
    assert [r["seconds"] for r in figures["per_run"]] == [300, 200, 250]


def test_bench_commands_print_their_figures_and_the_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tables of ``bench tryton`` and ``bench demo`` (figures made up, no system run)."""
    names = ("connector", "floor", "mix_connector", "mix_floor")
    names += ("invoice_connector", "post_connector", "invoice_floor", "post_floor")
    times = {f"{n}_s": [1.0] for n in names} | {f"{n}_calls": [10.0] for n in names}
    times |= {"single_s": [2.0], "mix_connector_calls": [11.0]}
    last = {n: Timed(1.0, 10, Counter({("model.x.create", "f"): 10})) for n in names}
    canned = _figures(times, last, 1000, 1, 0.05, 20, 200)
    assert canned["mix"]["calls_ratio"] == 1.1 and canned["mix"]["targets"]["calls_ok"]
    monkeypatch.setattr("closeloop.devtools.bench.tryton.run_tryton_bench", lambda **kw: canned)
    shown = CliRunner().invoke(app, ["bench", "tryton"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "calls 1.10 x the floor (target <= 1.2: met)" in shown.output
    assert "calls/invoice" in shown.output
    as_json = CliRunner().invoke(app, ["bench", "tryton", "--json"])
    assert json.loads(as_json.output)["calls_by_method"]["mix"][0]["calls"] == 10

    demo = medians([_summary(300, 10)]) | {"firm": {}}
    monkeypatch.setattr("closeloop.devtools.bench.demo.run_demo_bench", lambda *a, **kw: demo)
    shown = CliRunner().invoke(app, ["bench", "demo", "--runs", "1"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "10 / 2" in shown.output and "CPU seconds: hub 30, tryton 60" in shown.output


def _closeloop(*args: str, timeout_s: float) -> dict[str, Any]:
    """``closeloop ARGS --json`` as a user runs it; its figures."""
    result = subprocess.run(
        [sys.executable, "-m", "closeloop.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def _needs_trytond() -> None:
    from closeloop.sandboxes.tryton.server import SandboxError, find_trytond

    try:
        find_trytond()
    except SandboxError as exc:
        pytest.skip(f"no Tryton here: {exc}")


@pytest.mark.tryton
def test_bench_tryton_measures_the_mix_and_invoices_next_to_their_floors() -> None:
    """A tiny bench on its own sandbox Tryton (it posts invoices dated the last day of last
    year, which a shared database's strict invoice sequence would then refuse to precede)."""
    _needs_trytond()
    figures = _closeloop(
        *("bench", "tryton", "--entries", "60", "--runs", "1"),
        *("--refused", "0.05", "--projects", "3"),
        timeout_s=300,
    )
    mix = figures["mix"]
    assert (mix["refused"], mix["accepted"]) == (3, 57)
    assert mix["floor_calls_per_1000"] == round(2 * 1000 / 60, 1)  # one read, one create
    assert mix["connector_calls_per_1000"] >= mix["floor_calls_per_1000"]
    assert mix["targets"]["calls_ok"] == (mix["calls_ratio"] <= 1.2)
    assert mix["targets"]["lines_per_s_ok"] == (mix["lines_per_s_ratio"] >= 0.8)
    calls = sum(m["calls"] for m in figures["calls_by_method"]["mix"])
    assert calls == round(mix["connector_calls_per_1000"] * 60 / 1000)
    assert "model.timesheet.line.create" in {m["method"] for m in figures["calls_by_method"]["mix"]}
    invoices = figures["invoices"]
    assert invoices["floor_calls_per_invoice"] == round(4 / 3, 3)  # five calls in all
    assert invoices["floor_calls_per_post"] == round(1 / 3, 3)
    assert invoices["connector_calls_per_post"] >= invoices["floor_calls_per_post"]
    posts = {m["method"] for m in figures["calls_by_method"]["post"]}
    assert "model.account.invoice.post" in posts


@pytest.mark.tryton
def test_bench_demo_reports_calls_next_to_floors_per_phase() -> None:
    """One run of a tiny firm (seven phases, the last a month-end reconciliation)."""
    _needs_trytond()
    figures = _closeloop(
        *("bench", "demo", "--runs", "1", "--clients", "11", "--deals", "11"),
        *("--consultants", "5"),
        timeout_s=600,
    )
    assert len(figures["phases_s"]) == 7 and figures["seconds"] > sum(figures["phases_s"].values())
    for phase, calls in figures["api_calls"].items():
        for system, floor in figures["floor"][phase].items():
            assert 0 < floor <= calls[system], (phase, system)  # a floor, and it polled
    for system, total in figures["api_calls_total"].items():
        assert total >= sum(calls[system] for calls in figures["api_calls"].values())
    assert figures["cpu_s"]["hub"] > 0 and figures["cpu_s"]["tryton"] > 0


def test_bench_reconcile_floor_is_one_call_a_page_and_one_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The paging floor, the medians and the printed table (figures made up, no system)."""
    from closeloop.devtools.bench.reconcile import floor_calls, medians

    # 4,001 time entries in pages of 2,000: 3; an empty list still costs its one call
    assert floor_calls({"time_entries": 4001, "projects": 0}, 2000) == 4
    assert floor_calls({"project.work": 500, "timesheet.line": 501}, 500) == 1 + 2

    def run(calls: int) -> dict[str, Any]:
        system = {"records": 2000, "facts": 1900, "floor": 2, "calls_by_domain": {}, "lists": {}}
        return {
            "seconds": calls / 10,
            "build_s": 1.0,
            "cpu_s": {"hub": 0.5, "tryton": 1.0},
            "records": {"customers": 40, "time": 1800},
            "drift": {"customers": {}, "time": {}},
            "drift_total": 0,
            "status": "ok",
            "error": None,
            "run_id": calls,
            "pages_in_report": {},
            "harvest_rate_limit_wait_s": 0.0,
            "startup_calls": dict.fromkeys(SYSTEMS, 1),
            "systems": {s: {**system, "calls": calls} for s in SYSTEMS},
            "call_log": [],
        }

    figures = medians([run(3), run(5), run(4)])
    harvest = figures["systems"]["harvest"]
    assert (harvest["calls"], harvest["floor"], harvest["records"]) == (4, 2, 2000)
    assert harvest["calls_per_1000"] == 2.0 and harvest["floor_per_1000"] == 1.0
    assert harvest["calls_to_floor"] == 2.0 and figures["seconds"] == 0.4
    figures |= {"home": "/tmp/home", "demo": None, "demo_reconciliation": None}
    monkeypatch.setattr(
        "closeloop.devtools.bench.reconcile.run_reconcile_bench", lambda *a, **kw: figures
    )
    shown = CliRunner().invoke(app, ["bench", "reconcile"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in shown.output.splitlines()]
    assert ["harvest", "2,000", "4", "2.0", "2", "1.0", "2.00"] in rows, shown.output


@pytest.mark.tryton
def test_bench_reconcile_reports_calls_per_1000_records_next_to_the_floor() -> None:
    """One reconciliation over a tiny demo firm the benchmark runs itself (about forty
    seconds): every figure consistent with the counts it is made of."""
    _needs_trytond()
    figures = _closeloop(
        *("bench", "reconcile", "--runs", "1", "--clients", "11", "--deals", "11"),
        *("--consultants", "5"),
        timeout_s=600,
    )
    assert figures["status"] == "ok" and figures["demo"] == {
        "clients": 11,
        "deals": 11,
        "consultants": 5,
    }
    assert set(figures["records"]) == {"customers", "projects", "time", "invoices", "charges"}
    assert all(n > 0 for n in figures["records"].values()), figures["records"]
    for system, s in figures["systems"].items():
        assert s["records"] > 0 and s["facts"] > 0, system
        assert s["calls"] >= s["floor"] > 0, system  # never under the paging floor
        assert s["calls_per_1000"] == round(s["calls"] * 1000 / s["records"], 1), system
        assert s["floor_per_1000"] == round(s["floor"] * 1000 / s["records"], 1), system
        logged = sum(c["calls"] for c in figures["call_log"] if c["system"].startswith(system))
        assert logged == s["calls"] == sum(s["calls_by_domain"].values()), system
        assert "(not logged)" not in {c["call"] for c in figures["call_log"]}
    own = figures["demo_reconciliation"] or {}  # the demo's month end repaired its drift
    assert figures["drift_total"] == own.get("drift_after_repair", 0) == 0, figures["drift"]
    assert figures["seconds"] > 0 and figures["cpu_s"]["hub"] > 0
