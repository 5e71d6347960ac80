"""The ``closeloop`` command line (typer)."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from closeloop.config import ConfigError, Settings, load_settings

app = typer.Typer(help="closeloop: the project-to-cash integration hub.", no_args_is_help=True)
exceptions_app = typer.Typer(
    help="Business exceptions: list, show, replay, resolve.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
schema_app = typer.Typer(help="Canonical model JSON Schemas.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Local sandboxes of the vendor systems.", no_args_is_help=True)
tryton_app = typer.Typer(help="The Tryton ERP.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(exceptions_app, name="exceptions")
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")
app.add_typer(schema_app, name="schema")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(tryton_app, name="tryton")

HomeOption = Annotated[Path, typer.Option("--home", help="sandbox state folder")]

console = Console()
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration (default ./closeloop.yaml)"),
]


def _settings(config: Path | None) -> Settings:
    from closeloop.observability import configure_logging

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _hub(config: Path | None) -> Any:
    from closeloop.bootstrap import build_hub

    return build_hub(_settings(config))


@app.command()
def run(config: ConfigOption = None) -> None:
    """Intake, workers and the HTTP server in one process, until Ctrl-C or SIGTERM."""
    import signal

    import uvicorn

    from closeloop.bootstrap import build_http_app

    hub = _hub(config)
    stop = threading.Event()
    threads = [threading.Thread(target=hub.worker.run, args=(stop,), name="worker", daemon=True)]
    for thread in threads:
        thread.start()
    server = uvicorn.Server(
        uvicorn.Config(
            build_http_app(hub),
            host=hub.settings.http.host,
            port=hub.settings.http.port,
            log_level="warning",
        )
    )
    # uvicorn handles SIGINT/SIGTERM while serving and re-raises them afterwards: our own
    # handlers receive that re-raise, so the workers stop and the hub closes cleanly
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    err.print(f"closeloop listening on http://{hub.settings.http.host}:{hub.settings.http.port}")
    try:
        server.run()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        hub.close()


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Workers only (no HTTP server), for scale-out on PostgreSQL; stops on Ctrl-C or SIGTERM."""
    import signal

    hub = _hub(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        hub.worker.run(stop)
    finally:
        hub.close()


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each engagement's lifecycle and blockers, commands by state, open exceptions by class,
    and each system's calls (from the running hub) and quota."""
    from closeloop.statusview import gather

    hub = _hub(config)
    try:
        view = gather(hub)
    finally:
        hub.close()
    if as_json:
        print(json.dumps(view, default=str, indent=2))
        return
    if view["engagements"]:
        table = Table(title="engagements")
        for column in ("deal", "stage", "customer", "hours", "held", "invoices", "invoiced"):
            numeric = column in ("hours", "held", "invoices", "invoiced")
            table.add_column(column, justify="right" if numeric else "left")
        table.add_column("paid / outstanding")
        table.add_column("blocked by")
        for e in view["engagements"]:
            table.add_row(
                e["deal_id"],
                e["stage"],
                e["customer"],
                e["hours_recorded"],
                e["hours_held"],
                str(e["invoices_posted"]),
                e["invoiced"],
                f"{e['paid']} / {e['outstanding']} ({e['payment_status']})",
                "; ".join(e["blockers"]),
            )
        console.print(table)
    table = Table(title="closeloop status")
    table.add_column("what")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, count in sorted(view["inbox_by_status"].items()):
        table.add_row("inbox", state, str(count))
    for system, counts in sorted(view["commands_by_system"].items()):
        for state, count in sorted(counts.items()):
            table.add_row(f"commands {system}", state, str(count))
    for error_class, count in sorted(view["open_exceptions_by_class"].items()):
        table.add_row("open exceptions", error_class, str(count))
    console.print(table)
    systems = Table(title="systems")
    for column in ("system", "API calls (running hub)", "quota"):
        systems.add_column(column)
    for name, info in view["systems"].items():
        calls = "hub not running" if info["calls"] is None else f"{info['calls']:,}"
        systems.add_row(name, calls, info["quota"])
    console.print(systems)


@exceptions_app.command("list")
def exceptions_list(
    config: ConfigOption = None,
    all_: Annotated[bool, typer.Option("--all", help="include closed ones")] = False,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Open business exceptions, newest first."""
    hub = _hub(config)
    try:
        rows = hub.operations.list_exceptions(None if all_ else "open", limit)
    finally:
        hub.close()
    if as_json:
        print(json.dumps([asdict(r) for r in rows], default=str, indent=2))
        return
    table = Table(title="business exceptions")
    for column in ("id", "class", "impact", "status", "entity", "message"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r.id), r.error_class.value, r.impact.value, r.status, r.entity, r.message)
    console.print(table)


def _exception_action(config: Path | None, action: str, *args: Any) -> None:
    from closeloop.engine.operations import OperationError

    hub = _hub(config)
    try:
        row = getattr(hub.operations, action)(*args)
    except OperationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        hub.close()
    print(json.dumps(asdict(row), default=str, indent=2))


@exceptions_app.command("show")
def exceptions_show(exception_id: int, config: ConfigOption = None) -> None:
    """One exception, as JSON."""
    _exception_action(config, "show", exception_id)


@exceptions_app.command("replay")
def exceptions_replay(
    exception_id: int,
    config: ConfigOption = None,
    reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")] = "",
    actor: Annotated[str, typer.Option(envvar="USER", help="who")] = "operator",
) -> None:
    """Run the exception's command (or change) again; its idempotency key is kept."""
    _exception_action(config, "replay", exception_id, actor, reason)


@exceptions_app.command("resolve")
def exceptions_resolve(
    exception_id: int,
    reason: Annotated[str, typer.Option(help="why it needs no replay (audit trail)")],
    config: ConfigOption = None,
    actor: Annotated[str, typer.Option(envvar="USER", help="who")] = "operator",
) -> None:
    """Close the exception by hand; a parked command is skipped."""
    _exception_action(config, "resolve", exception_id, actor, reason)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Migrate the database to the newest schema."""
    from closeloop.store import migrate
    from closeloop.store.db import create_db_engine

    settings = _settings(config)
    engine = create_db_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        console.print(f"database at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()


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
    from closeloop.bench import run_engine_bench
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


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate the configuration and every mapping file; print each problem with its file
    and line. Exit status 1 when there is any."""
    from closeloop.config import DEFAULT_CONFIG
    from closeloop.configfiles import (
        Finding,
        check_mapping_file,
        check_settings_file,
        default_mapping_files,
        ownership_policy,
    )
    from closeloop.mapping.engine import Mapper

    findings: list[Finding] = []
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
    if findings:
        err.print(f"{len(findings)} problem(s)")
        raise typer.Exit(1)
    checked = f"{path} and " if path else ""
    print(f"ok: {checked}{len(files)} mapping files ({objects} vendor objects)")


@app.command("map")
def map_payload(
    payload_file: Annotated[Path, typer.Argument(help="vendor record as JSON")],
    connection: Annotated[str, typer.Option(help="connection, e.g. salesforce")],
    object_name: Annotated[str, typer.Option("--object", help="vendor object, e.g. Account")],
    config: ConfigOption = None,
) -> None:
    """Map one vendor payload and print the canonical record (JSON), or every problem with
    its field path (exit status 1)."""
    from closeloop.configfiles import FileProblems, load_mappers

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


@sandbox_app.command("up")
def sandbox_up(
    home: HomeOption = Path(".closeloop"),
    system: Annotated[
        list[str] | None, typer.Option(help="start only these (tryton, salesforce, harvest)")
    ] = None,
) -> None:
    """Start the sandboxes (a real Tryton, Salesforce, Harvest); write their details to
    HOME/sandbox.json."""
    from closeloop.sandboxctl import SYSTEMS, up
    from closeloop.sandboxes.process import SandboxStartError
    from closeloop.sandboxes.tryton.server import SandboxError

    try:
        with console.status("starting sandboxes (Tryton's first start initialises it, ~1 min)"):
            state = up(home, tuple(system or SYSTEMS))
    except (SandboxError, SandboxStartError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for name, entry in state.items():
        if "url" in entry:
            console.print(f"{name}: {entry['url']} (pid {entry['pid']})")
    console.print(f"details in {home / 'sandbox.json'}; stop with: closeloop sandbox down")
    console.print(f"run the hub on them with: closeloop run -c {home / 'closeloop.yaml'}")


@sandbox_app.command("faults")
def sandbox_faults(
    system: Annotated[str, typer.Argument(help="salesforce or harvest")],
    server_error: Annotated[float, typer.Option(help="share of calls answered 503")] = 0.0,
    timeout: Annotated[float, typer.Option(help="share of calls that hang, not applied")] = 0.0,
    lost_response: Annotated[
        float, typer.Option(help="share of calls applied, then the answer is cut")
    ] = 0.0,
    latency_s: Annotated[float, typer.Option(help="added to every call")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    home: HomeOption = Path(".closeloop"),
) -> None:
    """Make a running sandbox fail like a real system (all zero: no faults)."""
    from closeloop.sandboxctl import set_faults

    plan = {
        "server_error": server_error,
        "timeout": timeout,
        "lost_response": lost_response,
        "latency_s": latency_s,
        "seed": seed,
    }
    try:
        set_faults(home, system, plan)
    except (LookupError, httpx.HTTPError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{system} faults: {plan}")


@sandbox_app.command("seed")
def sandbox_seed(
    system: Annotated[str, typer.Argument(help="salesforce or harvest")],
    file: Annotated[
        Path,
        typer.Argument(
            help='Salesforce: {"Account": [...], ...}; Harvest: {"clients": [...], ...}'
        ),
    ],
    home: HomeOption = Path(".closeloop"),
) -> None:
    """Load records into a running sandbox (all or nothing)."""
    from closeloop.sandboxctl import seed

    try:
        data = json.loads(file.read_text())
        loaded = seed(home, system, data)
    except (OSError, ValueError, LookupError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(", ".join(f"{n} {name}" for name, n in loaded.items()) or "nothing loaded")


@sandbox_app.command("down")
def sandbox_down(home: HomeOption = Path(".closeloop")) -> None:
    """Stop what `sandbox up` started, by PID."""
    from closeloop.sandboxctl import down

    stopped = down(home)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@sandbox_app.command("status")
def sandbox_status(home: HomeOption = Path(".closeloop")) -> None:
    """Say what runs."""
    from closeloop.sandboxctl import status as sandbox_state

    report = sandbox_state(home)
    for name, text in report.items():
        console.print(f"{name}: {text}")
    if not report:
        console.print("no sandbox is running")


@tryton_app.command("init")
def tryton_init(
    url: Annotated[str | None, typer.Option(help="Tryton URL (default: the sandbox's)")] = None,
    database: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str, typer.Option()] = "admin",
    password: Annotated[str | None, typer.Option(envvar="CLOSELOOP_TRYTON_PASSWORD")] = None,
    home: HomeOption = Path(".closeloop"),
) -> None:
    """Prepare a Tryton database for closeloop, idempotently: company, currency, chart,
    fiscal years and periods, sales tax, service product, payment method."""
    from closeloop.connectors.tryton.rpc import TrytonError, TrytonRPC
    from closeloop.connectors.tryton.setup import TrytonSetup, initialize
    from closeloop.sandboxctl import read_state

    sandbox = read_state(home).get("tryton", {})
    url, database = url or sandbox.get("url"), database or sandbox.get("database")
    password = password or sandbox.get("password")
    if not (url and database and password):
        err.print("give --url, --database and --password, or start the sandbox first")
        raise typer.Exit(2)
    rpc = TrytonRPC(url, database, user, password, timeout_s=300)
    try:
        ids = initialize(rpc, TrytonSetup())
    except TrytonError as exc:
        err.print(f"[red]Tryton refused: {exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        rpc.close()
    console.print(f"Tryton ready: company {ids.company}, product {ids.product}, tax {ids.tax}")


@bench_app.command("tryton")
def bench_tryton(
    entries: Annotated[int, typer.Option(help="time entries per run")] = 5000,
    runs: Annotated[int, typer.Option(help="runs; medians are reported")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Timesheet lines per second into a real Tryton: through the connector, next to the bare
    bulk RPC floor and to one call per line; API calls per 1,000 time entries."""
    from closeloop.bench_tryton import run_tryton_bench
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    with console.status("benchmarking Tryton ..."):
        figures = run_tryton_bench(entries=entries, runs=runs)
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    table = Table(title=f"Tryton timesheet import ({entries} entries, median of {runs} runs)")
    for column in ("way", "lines/s", "API calls per 1,000 entries"):
        table.add_column(column, justify="right")
    table.add_row(
        "connector",
        f"{figures['connector_lines_per_s']:.0f}",
        f"{figures['connector_calls_per_1000']:.1f}",
    )
    table.add_row(
        "floor (bare bulk RPC)",
        f"{figures['floor_lines_per_s']:.0f}",
        f"{figures['floor_calls_per_1000']:.1f}",
    )
    table.add_row("one call per line", f"{figures['one_call_per_line_lines_per_s']:.0f}", "1000")
    console.print(table)
    console.print(f"connector / floor = {figures['ratio_to_floor']:.2f}")


@bench_app.command("salesforce")
def bench_salesforce(
    opportunities: Annotated[int, typer.Option(help="opportunities per run")] = 2000,
    runs: Annotated[int, typer.Option(help="runs; medians are reported")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Opportunities per second and API requests per 1,000 opportunities, in and out of the
    Salesforce sandbox with a real org's limits, next to the bounds the limits allow."""
    from closeloop.bench_salesforce import run_salesforce_bench
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    with console.status("benchmarking Salesforce ..."):
        f = run_salesforce_bench(opportunities=opportunities, runs=runs)
    if as_json:
        print(json.dumps(f, indent=2))
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
    from closeloop.bench_harvest import run_harvest_bench
    from closeloop.observability import configure_logging

    configure_logging("console", "warning")
    with console.status("benchmarking Harvest ..."):
        f = run_harvest_bench(entries=entries, runs=runs)
    if as_json:
        print(json.dumps(f, indent=2))
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


@app.command()
def demo(
    keep_running: Annotated[
        bool, typer.Option(help="leave the systems and a hub running (sandbox down stops them)")
    ] = False,
    home: Annotated[Path, typer.Option(help="where the systems and the summary go")] = Path(
        ".closeloop"
    ),
    clients: Annotated[int, typer.Option(help="clients of the firm")] = 40,
    deals: Annotated[int, typer.Option(help="closed-won deals over the quarter")] = 60,
    consultants: Annotated[int, typer.Option(help="consultants logging time")] = 25,
) -> None:
    """Start Salesforce, Harvest and Tryton, seed a firm, run the hub through a quarter of
    project-to-cash until it is idle, and print what happened."""
    from closeloop.demo import DemoError, DemoOptions, run_demo
    from closeloop.observability import configure_logging

    configure_logging("console", "error")
    options = DemoOptions(
        home=home,
        clients=clients,
        deals=deals,
        consultants=consultants,
        keep_running=keep_running,
    )
    try:
        summary = run_demo(options, console=console)
    except DemoError as exc:
        err.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if summary["commands"].get("pending") or summary["commands"].get("in_flight"):
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``closeloop`` script."""
    app()


if __name__ == "__main__":
    main()
