"""Commands for the local sandboxes, the Tryton ERP and the demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import httpx
import typer

from closeloop.cli import HomeOption, app, console, err, sandbox_app, tryton_app


@sandbox_app.command("up")
def sandbox_up(
    home: HomeOption = Path(".closeloop"),
    system: Annotated[
        list[str] | None, typer.Option(help="start only these (tryton, salesforce, harvest)")
    ] = None,
) -> None:
    """Start the sandboxes (a real Tryton, Salesforce, Harvest); write their details to
    HOME/sandbox.json."""
    from closeloop.devtools.sandboxctl import SYSTEMS, up
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
    from closeloop.devtools.sandboxctl import set_faults

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
    from closeloop.devtools.sandboxctl import seed

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
    from closeloop.devtools.sandboxctl import down

    stopped = down(home)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@sandbox_app.command("status")
def sandbox_status(home: HomeOption = Path(".closeloop")) -> None:
    """Say what runs."""
    from closeloop.devtools.sandboxctl import status as sandbox_state

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
    from closeloop.devtools.sandboxctl import read_state

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
    from closeloop.devtools.demo.run import DemoError, DemoOptions, run_demo
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
