"""Commands that check configuration, try mappings, export schemas and run benchmarks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from closeloop.cli import ConfigOption, _settings, app, bench_app, console, err, schema_app


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate the configuration and every mapping file; print each problem with its file
    and line. Exit status 1 when there is any."""
    from closeloop.config import DEFAULT_CONFIG
    from closeloop.config.files import (
        Finding,
        check_mapping_file,
        check_settings_file,
        default_mapping_files,
        ownership_policy,
    )
    from closeloop.mapping.engine import Mapper

    findings: list[Finding] = []
    settings_ok = None
    files = list(default_mapping_files())
    path = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is not None:
        if not path.is_file():
            err.print(f"{path}: no such configuration file")
            raise typer.Exit(1)
        settings, problems = check_settings_file(path)
        findings.extend(problems)
        if settings is not None:
            files.extend(settings.mappings)
            settings_ok = settings
    objects = 0
    mappers: dict[str, Mapper] = {}
    for mapping_file in files:
        if not Path(mapping_file).is_file():
            findings.append(Finding(str(mapping_file), 0, "no such mapping file"))
            continue
        spec, problems = check_mapping_file(Path(mapping_file))
        findings.extend(problems)
        if spec is not None:
            objects += len(spec.objects)
            mappers[spec.connection] = Mapper(spec)
    try:
        ownership_policy(mappers)
    except ValueError as exc:
        findings.append(Finding("ownership", 0, str(exc)))
    for finding in findings:
        print(finding)
    if settings_ok is not None:
        _warn_ignored_notifications(settings_ok)
    if findings:
        err.print(f"{len(findings)} problem(s)")
        raise typer.Exit(1)
    checked = f"{path} and " if path else ""
    print(f"ok: {checked}{len(files)} mapping files ({objects} vendor objects)")


def _warn_ignored_notifications(settings: Any) -> None:
    """Print a warning per object a system sent webhook notifications for that no flow is
    bound to (they are acknowledged and dropped); a database that cannot be read is noted,
    not a problem."""
    from closeloop.bootstrap import ignored_notifications

    try:
        ignored = ignored_notifications(settings)
    except Exception as exc:  # the database is down or elsewhere: the rest still checks
        print(f"note: ignored notifications not checked (database: {type(exc).__name__})")
        return
    for system, objects in ignored.items():
        for name, hint in objects:
            print(
                f"warning: {system} sends notifications for {name}, which no flow is bound "
                f"to: they are acknowledged and dropped. {hint[:1].upper()}{hint[1:]}."
            )


@app.command("map")
def map_payload(
    payload_file: Annotated[Path, typer.Argument(help="vendor record as JSON")],
    connection: Annotated[str, typer.Option(help="connection, e.g. salesforce")],
    object_name: Annotated[str, typer.Option("--object", help="vendor object, e.g. Account")],
    config: ConfigOption = None,
) -> None:
    """Map one vendor payload and print the canonical record (JSON), or every problem with
    its field path (exit status 1)."""
    from closeloop.config.files import FileProblems, load_mappers

    extra: list[Path] = []
    if config is not None or Path("closeloop.yaml").is_file():
        extra = list(_settings(config).mappings)
    try:
        mappers = load_mappers(extra)
        payload = json.loads(payload_file.read_text(encoding="utf-8"))
    except FileProblems as exc:
        err.print(str(exc))
        raise typer.Exit(2) from exc
    except (OSError, ValueError) as exc:
        err.print(f"{payload_file}: {exc}")
        raise typer.Exit(2) from exc
    if connection not in mappers:
        err.print(f"no mapping for connection {connection!r} (known: {', '.join(sorted(mappers))})")
        raise typer.Exit(2)
    if not isinstance(payload, dict):
        err.print(f"{payload_file}: a vendor record must be a JSON object")
        raise typer.Exit(2)
    try:
        result = mappers[connection].map(object_name, payload)
    except KeyError as exc:
        err.print(str(exc.args[0]))
        raise typer.Exit(2) from exc
    if not result.ok:
        for problem in result.problems:
            print(problem)
        raise typer.Exit(1)
    print(json.dumps({"canonical_type": result.canonical_type, "record": result.data}, indent=2))


@schema_app.command("export")
def schema_export(folder: Path) -> None:
    """Write every canonical type's JSON Schema as ``TYPE.vVERSION.json`` and an
    ``index.json`` of versions and fingerprints."""
    from closeloop.domain.canonical import CANONICAL_TYPES, json_schema, schema_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, model in sorted(CANONICAL_TYPES.items()):
        target = folder / f"{name}.v{model.SCHEMA_VERSION}.json"
        target.write_text(json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n")
        index[name] = {"version": model.SCHEMA_VERSION, "sha256": schema_fingerprint(name)}
    (folder / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(f"{len(index)} schemas written to {folder}")


@bench_app.command("engine")
def bench_engine(
    changes: Annotated[int, typer.Option(help="changes per run")] = 5000,
    runs: Annotated[int, typer.Option(help="runs; the median is reported")] = 3,
    postgres_url: Annotated[
        str | None,
        typer.Option(envvar="CLOSELOOP_BENCH_POSTGRES_URL", help="also measure on this PostgreSQL"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """End-to-end engine throughput vs. the bare durable writes it must make, per backend."""
    from closeloop.devtools.bench.engine import run_engine_bench
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    results = run_engine_bench(changes=changes, runs=runs, postgres_url=postgres_url)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title=f"engine benchmark ({changes} changes, median of {runs} runs)")
    for column in ("backend", "engine changes/s", "floor changes/s", "ratio"):
        table.add_column(column, justify="right")
    for backend, figures in results["backends"].items():
        table.add_row(
            backend,
            f"{figures['engine_changes_per_s']:.0f}",
            f"{figures['floor_changes_per_s']:.0f}",
            f"{figures['ratio']:.2f}",
        )
    console.print(table)


def _bench_figures(
    vendor: str, run: Callable[[], dict[str, Any]], as_json: bool
) -> dict[str, Any] | None:
    """Run a benchmark with logging quiet and a spinner; print its figures as JSON (and
    answer ``None``) or answer them for a table."""
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    with console.status(f"benchmarking {vendor} ..."):
        figures = run()
    if as_json:
        print(json.dumps(figures, indent=2))
        return None
    return figures


@bench_app.command("tryton")
def bench_tryton(
    entries: Annotated[int, typer.Option(help="time entries per run")] = 5000,
    runs: Annotated[int, typer.Option(help="runs; medians are reported")] = 3,
    refused: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="share of the mix's lines on closed projects")
    ] = 0.05,
    projects: Annotated[
        int, typer.Option(min=1, max=1000, help="projects invoiced and posted per run")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Timesheet lines and invoices into a real Tryton through the connector, next to the
    fewest RPC calls for the same work: lines/s and calls per 1,000 lines with all lines
    accepted and with a share refused (closed projects), calls and seconds per invoice and
    per post; the issue's targets for the mix."""
    from closeloop.devtools.bench.tryton import run_tryton_bench

    figures = _bench_figures(
        "Tryton",
        lambda: run_tryton_bench(
            entries=entries, runs=runs, refused_share=refused, projects=projects
        ),
        as_json,
    )
    if figures is None:
        return
    mix, inv = figures["mix"], figures["invoices"]
    table = Table(title=f"Tryton timesheet import ({entries} entries, median of {runs} runs)")
    for column in ("way", "lines/s", "API calls per 1,000 entries"):
        table.add_column(column, justify="right")
    rows = [
        ("connector", figures["connector_lines_per_s"], figures["connector_calls_per_1000"]),
        ("floor (bare bulk RPC)", figures["floor_lines_per_s"], figures["floor_calls_per_1000"]),
        (
            f"connector, {mix['refused_share']:.0%} refused",
            mix["connector_lines_per_s"],
            mix["connector_calls_per_1000"],
        ),
        ("floor, same mix", mix["floor_lines_per_s"], mix["floor_calls_per_1000"]),
    ]
    for way, per_s, calls in rows:
        table.add_row(way, f"{per_s:.0f}", f"{calls:.1f}")
    table.add_row("one call per line", f"{figures['one_call_per_line_lines_per_s']:.0f}", "1000")
    console.print(table)
    console.print(f"connector / floor = {figures['ratio_to_floor']:.2f} (all accepted)")
    targets = mix["targets"]
    console.print(
        f"mix ({mix['refused']} of {mix['entries']} refused): calls "
        f"{mix['calls_ratio']:.2f} x the floor (target <= {targets['calls_ratio_max']}: "
        f"{'met' if targets['calls_ok'] else 'NOT met'}), lines/s "
        f"{mix['lines_per_s_ratio']:.2f} x the floor (target >= "
        f"{targets['lines_per_s_ratio_min']}: {'met' if targets['lines_per_s_ok'] else 'NOT met'})"
    )
    console.print(f"mix floor: {mix['floor_counts']}")
    table = Table(
        title=f"Tryton invoicing ({projects} projects, one batch to invoice, one to post)"
    )
    for column in ("way", "calls/invoice", "calls/post", "s/invoice", "s/post"):
        table.add_column(column, justify="right")
    for way in ("connector", "floor"):
        table.add_row(
            way,
            f"{inv[f'{way}_calls_per_invoice']:.2f}",
            f"{inv[f'{way}_calls_per_post']:.2f}",
            f"{inv[f'{way}_s_per_invoice']:.3f}",
            f"{inv[f'{way}_s_per_post']:.3f}",
        )
    console.print(table)
    console.print(f"invoice floor: {inv['floor_counts']}; --json adds the calls by method")


@bench_app.command("demo")
def bench_demo(
    runs: Annotated[int, typer.Option(min=1, help="demo runs; medians are reported")] = 3,
    clients: Annotated[int, typer.Option(help="clients of the firm")] = 40,
    deals: Annotated[int, typer.Option(help="closed-won deals over the quarter")] = 60,
    consultants: Annotated[int, typer.Option(help="consultants logging time")] = 25,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the demo several times (fresh systems in a temporary folder each time; about
    five minutes a run at the default size) and print the medians: wall time per phase and
    in all, CPU seconds of the hub and of Tryton, API calls per system and phase next to
    the floor for the same work."""
    from closeloop.devtools.bench.demo import run_demo_bench
    from closeloop.devtools.demo.run import DemoError
    from closeloop.observability import configure_logging

    configure_logging("console", "error")
    with console.status("running the demo ...") as status:

        def on_run(run: int) -> None:
            status.update(f"running the demo: run {run} of {runs} ...")

        try:
            f = run_demo_bench(
                runs, clients=clients, deals=deals, consultants=consultants, on_run=on_run
            )
        except DemoError as exc:
            err.print(f"[red]demo failed:[/red] {exc}")
            raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(f, indent=2))
        return
    title = f"closeloop demo ({deals} deals, {consultants} consultants), median of {runs} runs"
    table = Table(title=title)
    columns = ("phase", "seconds", "CPU s hub/Tryton", *(f"{s} calls / floor" for s in _SYSTEMS))
    for column in columns:
        table.add_column(column, justify="right")
    for phase, seconds in f["phases_s"].items():
        calls, floor, cpu = f["api_calls"][phase], f["floor"][phase], f["cpu_s_by_phase"][phase]
        table.add_row(
            phase,
            f"{seconds:.0f}",
            f"{cpu['hub']:.0f}/{cpu['tryton']:.0f}",
            *(f"{calls[s]:,.0f} / {floor[s]:,.0f}" for s in _SYSTEMS),
        )
    total, floor_total = f["api_calls_total"], f["floor_total"]
    table.add_row(
        "run (with start-up)",
        f"{f['seconds']:.0f}",
        f"{f['cpu_s'].get('hub', 0):.0f}/{f['cpu_s'].get('tryton', 0):.0f}",
        *(f"{total[s]:,.0f} / {floor_total[s]:,.0f}" for s in _SYSTEMS),
    )
    console.print(table)
    cpu = ", ".join(f"{name} {seconds:.0f}" for name, seconds in f["cpu_s"].items())
    console.print(f"CPU seconds: {cpu} (hub: this process over a run; systems: their life)")
    console.print(
        "floor: the fewest calls the vendors' APIs allow (closeloop.devtools.demo.summary.floors)"
    )


_SYSTEMS = ("salesforce", "harvest", "tryton")


@bench_app.command("salesforce")
def bench_salesforce(
    opportunities: Annotated[int, typer.Option(help="opportunities per run")] = 2000,
    runs: Annotated[int, typer.Option(help="runs; medians are reported")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Opportunities per second and API requests per 1,000 opportunities, in and out of the
    Salesforce sandbox with a real org's limits, next to the bounds the limits allow."""
    from closeloop.devtools.bench.salesforce import run_salesforce_bench

    f = _bench_figures(
        "Salesforce", lambda: run_salesforce_bench(opportunities=opportunities, runs=runs), as_json
    )
    if f is None:
        return
    table = Table(title=f"Salesforce sync ({opportunities} opportunities, median of {runs} runs)")
    for column in ("direction", "opps/s", "requests/1,000", "fewest/1,000", "quota bound/s"):
        table.add_column(column, justify="right")
    for direction, label in (("inbound", "in (poll)"), ("outbound", "out (write-back)")):
        table.add_row(
            label,
            f"{f[f'{direction}_per_s']:.0f}",
            f"{f[f'{direction}_calls_per_1000']:.2f}",
            f"{f[f'{direction}_floor_calls_per_1000']:.2f}",
            f"{f[f'{direction}_quota_bound_per_s']:.0f}",
        )
    console.print(table)
    console.print(
        "fewest: 2,000 records per query page, 5 Collections of 200 per Composite request; "
        "quota bound: 100,000 requests a day at that rate, spread over 24 h"
    )


@bench_app.command("harvest")
def bench_harvest(
    entries: Annotated[int, typer.Option(help="time entries in the account")] = 10_000,
    runs: Annotated[int, typer.Option(help="runs; medians are reported")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Time entries per second from Harvest into the inbox with the rate limit on, next to
    the bound the limit and page size allow."""
    from closeloop.devtools.bench.harvest import run_harvest_bench

    f = _bench_figures("Harvest", lambda: run_harvest_bench(entries=entries, runs=runs), as_json)
    if f is None:
        return
    table = Table(title=f"Harvest time entry sync ({entries} entries, median of {runs} runs)")
    for column in ("entries/s", "requests", "fewest requests", "rate-limit bound entries/s"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{f['entries_per_s']:.0f}",
        f"{f['requests']:.0f}",
        f"{f['fewest_requests']}",
        f"{f['rate_limit_bound_per_s']:.0f}",
    )
    console.print(table)
    console.print("bound: 100 requests per 15 s, 2,000 entries per page")


@bench_app.command("xero")
def bench_xero(
    projects: Annotated[int, typer.Option(min=1, max=1000, help="projects set up")] = 20,
    entries: Annotated[int, typer.Option(min=1, help="time entries recorded and invoiced")] = 1000,
    runs: Annotated[int, typer.Option(min=1, help="runs; medians are reported")] = 3,
    roomy: Annotated[
        bool,
        typer.Option(
            "--roomy",
            help="lift the sandbox's limits (and the client's) for a quick run; by default "
            "Xero's own: 60 calls a minute, 5,000 a day, 5 at once",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Projects set up, time entries recorded, invoiced and posted in the Xero sandbox
    through the connector, in its batches: API calls per 1,000 time entries by operation
    and by "METHOD Resource" (the client's count checked against the sandbox's), next to
    the floor the batch sizes allow and the reads the connector makes beyond it; the time
    Xero's minute limit sets, 429s (none expected), seconds and CPU seconds."""
    from closeloop.devtools.bench.xero import run_xero_bench
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    with console.status("benchmarking Xero ...") as status:
        f = run_xero_bench(projects, entries, runs, roomy=roomy, on_step=status.update)
    if as_json:
        print(json.dumps(f, indent=2))
    else:
        _print_xero_bench(f)
    if f["failures"] or f["throttled_429"] or not f["cross_check"]["agree"]:
        err.print("[red]the benchmark's work did not go through cleanly[/red]")
        raise typer.Exit(1)


def _print_xero_bench(f: dict[str, Any]) -> None:
    limits = f["limits"]
    where = (
        "roomy limits (lifted)"
        if limits["roomy"]
        else f"Xero's limits ({limits['minute']}/minute, {limits['day']:,}/day, "
        f"{limits['concurrent']} at once)"
    )
    console.print(
        f"Xero: {f['projects']} projects, {f['entries']:,} time entries in batches of "
        f"{f['batch_size']}, {where}; median of {f['runs']} runs",
        highlight=False,
    )
    table = Table(title="API calls per 1,000 time entries, next to the floor")
    columns = ("operation", "calls", "per 1,000", "floor", "+ reads", "avoidable", "beyond")
    for column in columns:
        table.add_column(column, justify="left" if column == "operation" else "right")
    for name, o in f["operations"].items():
        table.add_row(
            name,
            f"{o['calls']:.0f}",
            f"{o['calls_per_1000']:.1f}",
            f"{o['floor_per_1000']:.1f}",
            f"{o['reads_per_1000']:.1f}",
            f"{o['avoidable_per_1000']:.1f}",
            f"{o['above_floor_and_reads']:.0f}",
        )
    console.print(table)
    table = Table(title="time: minutes per 1,000 entries at 60 calls/minute; seconds of a run")
    columns = ("operation", "min", "floor min", "wall s", "waited s", "hub CPU s", "Xero CPU s")
    for column in columns:
        table.add_column(column, justify="left" if column == "operation" else "right")
    for name, o in f["operations"].items():
        table.add_row(
            name,
            f"{o['minutes_at_limit_per_1000']:.2f}",
            f"{o['floor_minutes_per_1000']:.2f}",
            f"{o['seconds']:.2f}",
            f"{o['waited_s']:.2f}",
            f"{o['hub_cpu_s']:.2f}",
            f"{o['xero_cpu_s']:.2f}",
        )
    console.print(table)
    table = Table(title="calls by METHOD Resource (client / sandbox), per 1,000 entries")
    for column in ("call", "client", "sandbox", "per 1,000", *f["calls_by_operation"]):
        table.add_column(column, justify="left" if column == "call" else "right")
    for route, n in f["calls_by_resource"].items():
        table.add_row(
            route,
            f"{n['client']:.0f}",
            f"{n['sandbox']:.0f}",
            f"{n['per_1000']:.1f}",
            *(str(ops.get(route, 0)) for ops in f["calls_by_operation"].values()),
        )
    console.print(table)
    check = f["cross_check"]
    console.print(
        f"cross-check per run: client {check['client']}, sandbox {check['sandbox']} admitted "
        f"+ throttled {check['throttled']}: {'agree' if check['agree'] else 'DISAGREE'}; "
        f"429s: {f['throttled_429']} (must be 0); peak {f['peak_minute']} calls in a minute, "
        f"{f['peak_concurrent']} at once",
        highlight=False,
    )
    console.print(
        f"day limit (5,000 calls): {f['day_limit_entries']:,} entries a day with this "
        f"set-up, {f['day_limit_entries_without_setup']:,} without",
        highlight=False,
    )
    console.print(
        "floor: the fewest calls Xero's API allows at these batch sizes; + reads: what the "
        "connector reads beyond it by design; avoidable: of those, what a cache would save; "
        "beyond: calls above floor + reads (0 expected); min: calls / 60, the least time "
        "Xero's minute limit allows",
        highlight=False,
    )
    for name in f["floor_from"]:
        console.print(f"  {name}: floor {f['floor_from'][name]}", highlight=False)
        console.print(f"  {' ' * len(name)}  reads {f['reads_from'][name]}", highlight=False)
        if name in f["avoidable_from"]:
            avoid = f["avoidable_from"][name]
            console.print(f"  {' ' * len(name)}  avoidable {avoid}", highlight=False)
    drafts = {n: o["drafts_read"] for n, o in f["operations"].items() if n != "total"}
    console.print(
        "work-in-progress drafts (with their lines) returned by those reads: "
        + ", ".join(f"{n} {d:,}" for n, d in drafts.items() if d)
        + " (a read of anchors returns every draft of its projects)",
        highlight=False,
    )
    for failure in f["failures"]:
        err.print(f"[red]{failure}[/red]", highlight=False)


@bench_app.command("reconcile")
def bench_reconcile(
    home: Annotated[
        Path | None,
        typer.Option(
            help="a demo home left running (closeloop demo --keep-running --home PATH); "
            "without one, or when its systems do not run, the demo runs first in a "
            "temporary home"
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="reconciliation runs; medians are reported")] = 3,
    clients: Annotated[int, typer.Option(help="clients of the firm (own demo only)")] = 40,
    deals: Annotated[int, typer.Option(help="closed-won deals (own demo only)")] = 60,
    consultants: Annotated[int, typer.Option(help="consultants (own demo only)")] = 25,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A full reconciliation (every domain, no repair) over the demo firm, several times:
    records reconciled per domain, API calls per system next to the paging floor (per 1,000
    records read), seconds, CPU seconds of the hub and the systems, and the drift found."""
    from closeloop.devtools.bench.reconcile import Firm, run_reconcile_bench
    from closeloop.devtools.demo.run import DemoError
    from closeloop.observability import configure_logging

    configure_logging("console", "error")
    firm = Firm(clients=clients, deals=deals, consultants=consultants)
    with console.status("benchmarking reconciliation ...") as status:
        try:
            f = run_reconcile_bench(home, runs, firm=firm, on_step=status.update)
        except DemoError as exc:
            err.print(f"[red]demo failed:[/red] {exc}")
            raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(f, indent=2, default=str))
    else:
        _print_reconcile_bench(f)
    if f["status"] != "ok":
        err.print(f"[red]reconciliation failed:[/red] {'; '.join(f['errors'])}")
        raise typer.Exit(1)


def _print_reconcile_bench(f: dict[str, Any]) -> None:
    if f.get("note"):
        console.print(f["note"], highlight=False)
    where = f"the benchmark's own demo of {f['demo']['deals']} deals" if f["demo"] else f["home"]
    table = Table(title=f"reconciliation over {where}, median of {f['runs']} runs")
    for column in ("domain", "records reconciled", *(f"{s} calls" for s in _SYSTEMS), "drift"):
        table.add_column(column, justify="right")
    for domain, records in f["records"].items():
        kinds = f["drift"].get(domain, {})
        table.add_row(
            domain,
            f"{records:,.0f}",
            *(f"{f['systems'][s]['calls_by_domain'].get(domain, 0):,}" for s in _SYSTEMS),
            ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none",
        )
    console.print(table)
    table = Table(title="API calls per system next to the paging floor")
    columns = (
        "system",
        "records read",
        "calls",
        "per 1,000",
        "floor",
        "floor per 1,000",
        "x floor",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for system in _SYSTEMS:
        s = f["systems"][system]
        table.add_row(
            system,
            f"{s['records']:,.0f}",
            f"{s['calls']:,.0f}",
            "-" if s["calls_per_1000"] is None else f"{s['calls_per_1000']:.1f}",
            f"{s['floor']:,.0f}",
            "-" if s["floor_per_1000"] is None else f"{s['floor_per_1000']:.1f}",
            "-" if s["calls_to_floor"] is None else f"{s['calls_to_floor']:.2f}",
        )
    console.print(table)
    order = ("hub", *_SYSTEMS)
    shown = sorted(f["cpu_s"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9)
    cpu = ", ".join(f"{name} {seconds:.2f}" for name, seconds in shown)
    console.print(
        f"{f['seconds']:.2f} s a run (hub built in {f['build_s']:.2f} s more, with "
        f"{', '.join(f'{s} {n:.0f}' for s, n in f['startup_calls'].items())} calls not counted "
        f"above); CPU seconds: {cpu}; Harvest rate-limit wait {f['harvest_rate_limit_wait_s']} s"
    )
    console.print(f"drift found: {f['drift_total']:.0f}", highlight=False)
    own = f.get("demo_reconciliation")
    if own:
        console.print(
            f"the demo's own month-end reconciliation: found {own['found'] or 'none'}, repaired "
            f"{own['repaired']}, to people {own['to_people']}, drift after the repairs "
            f"{own['drift_after_repair']}",
            highlight=False,
        )
    for system in _SYSTEMS:
        console.print(f"floor, {system}: {f['systems'][system]['floor_from']}", highlight=False)
    table = Table(title="calls by caller (last run)")
    for column in ("system", "domain", "call", "caller", "calls"):
        table.add_column(column, justify="right" if column == "calls" else "left")
    for row in f["call_log"]:
        table.add_row(row["system"], row["domain"], row["call"], row["caller"], str(row["calls"]))
    console.print(table)
