"""``closeloop reconcile``: prove the systems agree, explain drift, repair from the owner."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from closeloop.cli import ConfigOption, _hub, app, console, err
from closeloop.ports.reconcile import DOMAINS
from closeloop.ports.store import ReconcileRun

reconcile_app = typer.Typer(
    help="Reconciliation: compare the systems, explain drift, repair from the owner.",
    invoke_without_command=True,
)
app.add_typer(reconcile_app, name="reconcile")


@reconcile_app.callback()
def reconcile(
    ctx: typer.Context,
    domain: Annotated[
        list[str] | None,
        typer.Option(
            "--domain", "-d", help=f"one of {', '.join(DOMAINS)} (repeat; all by default)"
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="report only records changed since (ISO, UTC unless an offset is given)"),
    ] = None,
    repair: Annotated[bool, typer.Option(help="repair what has a clear owner")] = False,
    dry_run: Annotated[bool, typer.Option(help="show the repair plan, change nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
    actor: Annotated[str, typer.Option(help="who runs it, for the audit trail")] = "cli",
    config: ConfigOption = None,
) -> None:
    """Run reconciliation over every connected system and print its report. Exit status 1
    when drift was found (changes in flight and drift a person already has do not count)."""
    if ctx.invoked_subcommand is not None:
        return
    from closeloop.reconcile.run import ReconcileInputError, RunRequest, drift_total

    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    hub = _hub(config)
    try:
        request = RunRequest(
            tuple(domain or DOMAINS), repair or dry_run, dry_run, "cli", actor, since
        )
        run = hub.reconciler.run(request)
    except ReconcileInputError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        hub.close()
    show_run(run, as_json)
    if run.status != "ok":
        raise typer.Exit(2)
    if drift_total(run):
        raise typer.Exit(1)


@reconcile_app.command("runs")
def runs(
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    config: ConfigOption = None,
) -> None:
    """The latest runs, newest first."""
    hub = _hub(config)
    try:
        listed = hub.reconciler.runs(limit)
    finally:
        hub.close()
    table = Table("run", "started", "by", "domains", "records", "drift", "status")
    for run in listed:
        drift = ", ".join(
            f"{d} {k} {n}" for d, kinds in run.counts.items() for k, n in kinds.items()
        )
        table.add_row(
            str(run.id),
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{run.trigger} ({run.actor})",
            ", ".join(run.domains),
            str(sum(run.records.values())),
            drift or "none",
            run.status,
        )
    console.print(table)


@reconcile_app.command("show")
def show(
    run_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """One run's report with every drift and its explanation."""
    hub = _hub(config)
    try:
        run = hub.reconciler.report(run_id)
    finally:
        hub.close()
    if run is None:
        err.print(f"[red]no reconciliation run {run_id}[/red]")
        raise typer.Exit(1)
    show_run(run, as_json)


def show_run(run: ReconcileRun, as_json: bool) -> None:
    """Print ``run``'s report: a summary per domain, then each drift."""
    if as_json:
        typer.echo(json.dumps(asdict(run), indent=2, default=str))
        return
    summary = Table("domain", "records", "drift", title=f"reconciliation run {run.id}")
    for domain in run.domains:
        kinds = run.counts.get(domain, {})
        shown = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
        summary.add_row(domain, str(run.records.get(domain, 0)), shown)
    console.print(summary)
    pages = ", ".join(f"{s} {n}" for s, n in sorted(run.pages.items()))
    console.print(f"pages read: {pages or 'none'}; status {run.status}")
    if run.error:
        err.print(f"[red]{run.error}[/red]")
    for d in run.drifts:  # one block each: a table would cut the causes short
        status = d.status + (f" (exception #{d.exception_id})" if d.exception_id else "")
        field = f" {d.field}" if d.field else ""
        console.print(f"[bold]{d.domain} {d.kind}[/bold] {d.key}{field}: {status}")
        values = "; ".join(f"{s}: {v}" for s, v in d.values.items())
        console.print(f"  values: {values} (owner: {d.owner or 'none'})", highlight=False)
        console.print(f"  cause: {d.cause}", highlight=False)
        if d.repair:
            console.print(f"  repair: {d.repair}", highlight=False)
