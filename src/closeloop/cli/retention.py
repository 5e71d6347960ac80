"""Retention commands: ``closeloop db prune`` and the soak benchmark ``closeloop bench soak``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from closeloop.cli import ConfigOption, _hub, bench_app, console, db_app


@db_app.command("prune")
def db_prune(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would go, delete nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Delete the rows the hub is done with and that are older than their retention
    (``retention:`` in the configuration; whatever ``retention.enabled`` says), in small
    batches, and print how many went per table. Flow state, the cross-reference, open
    exceptions and undelivered commands are never removed."""
    hub = _hub(config)
    try:
        result = hub.pruner.prune(dry_run=dry_run)
        days = hub.settings.retention.keep_days()
    finally:
        hub.close()
    if as_json:
        body: dict[str, Any] = {
            "dry_run": result.dry_run,
            "removed": result.removed,
            "older_than": {k: v.isoformat() if v else None for k, v in result.cutoffs.items()},
        }
        print(json.dumps(body, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    table = Table(title=f"retention ({'dry run' if dry_run else 'pruned'})")
    for column in ("table", "kept", "older than", f"rows {verb}"):
        table.add_column(column, justify="right" if column.startswith("rows") else "left")
    for name, count in result.removed.items():
        kept = days.get(name.replace("reconcile_drifts", "reconcile_runs"), 0)
        cutoff = result.cutoffs.get(name.replace("reconcile_drifts", "reconcile_runs"))
        table.add_row(
            name,
            f"{kept} days" if kept else "forever",
            f"{cutoff:%Y-%m-%d %H:%M} UTC" if cutoff else "-",
            f"{count:,}",
        )
    console.print(table)


@bench_app.command("soak")
def bench_soak(
    cycles: Annotated[int, typer.Option(help="engine cycles per run")] = 300,
    every: Annotated[int, typer.Option(help="print a sample every N cycles")] = 25,
    changes: Annotated[int, typer.Option(help="changes per cycle")] = 100,
    records: Annotated[int, typer.Option(help="records the changes are versions of")] = 500,
    hours_per_cycle: Annotated[float, typer.Option(help="hub clock moved per cycle")] = 48.0,
    runs: Annotated[int, typer.Option(help="runs per mode; medians are printed")] = 3,
    compare: Annotated[bool, typer.Option(help="also run with retention off")] = True,
    postgres_url: Annotated[
        str | None, typer.Option(help="run on this PostgreSQL (a throwaway schema), not SQLite")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Run the engine for many cycles with the hub's clock moved ahead each cycle and print
    the database size and the process's RSS every few cycles, with retention (the default
    ``retention:`` settings) on and, to compare, off (medians of ``--runs``)."""
    from closeloop.devtools.bench.soak import SoakShape, run_soak_bench
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    shape = SoakShape(cycles, every, changes, records, hours_per_cycle)
    with console.status("soaking ...") as status:
        figures = run_soak_bench(
            shape, runs, compare, postgres_url, on_step=lambda s: status.update(f"soaking: {s}")
        )
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    modes = list(figures["modes"])
    title = (
        f"soak on {figures['backend']}: {changes} changes per cycle over {records} records, "
        f"{hours_per_cycle:g} h per cycle (medians of {runs})"
    )
    table = Table(title=title)
    for column in ("cycle", "days"):
        table.add_column(column, justify="right")
    for mode in modes:
        for what in ("DB MB", "RSS MB", "inbox", "commands", "audit"):
            table.add_column(f"{what} ({mode})", justify="right")
    for row in zip(*(figures["modes"][m] for m in modes), strict=True):
        cells = [str(row[0]["cycle"]), f"{row[0]['days']:g}"]
        for sample in row:
            rows = sample["rows"]
            cells += [f"{sample['db_mb']:.2f}", f"{sample['rss_mb']:.1f}"]
            cells += [f"{rows['inbox']:,}", f"{rows['commands']:,}", f"{rows['audit']:,}"]
        table.add_row(*cells)
    console.print(table)
