"""Commands for the local sandboxes, the Tryton ERP and the demo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from closeloop.cli import ConfigOption, HomeOption, app, console, err, sandbox_app, tryton_app


@sandbox_app.command("up")
def sandbox_up(
    home: HomeOption = Path(".closeloop"),
    system: Annotated[
        list[str] | None, typer.Option(help="start only these (tryton, salesforce, harvest, xero)")
    ] = None,
) -> None:
    """Start the sandboxes (a real Tryton, Salesforce, Harvest, Xero); write their details
    to HOME/sandbox.json and a hub configuration to HOME/closeloop.yaml, whose database it
    migrates (``closeloop db upgrade``), so that ``closeloop run -c`` it works at once."""
    from closeloop.bootstrap import SchemaMismatch, upgrade_database
    from closeloop.config import ConfigError, load_settings
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
    try:
        hub_db = upgrade_database(load_settings(home / "closeloop.yaml"))
    except (ConfigError, SchemaMismatch) as exc:  # a bad overlay; a database of a newer hub
        err.print(f"[red]the hub's database: {exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"the hub's database is at schema {hub_db.after}")
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


def _tryton_target(
    url: str | None,
    database: str | None,
    user: str,
    password: str | None,
    system: str | None,
    settings: Any,
    home: Path,
) -> tuple[str, str, str, str, bool]:
    """Where ``tryton init`` and ``tryton rates`` connect: the options, else the configured
    system ``system``, else the running sandbox's Tryton; ``(url, database, user, password,
    is the sandbox)``. Exits 2 when nothing says where."""
    from closeloop.devtools.sandboxctl import read_state

    if system:
        configured = settings.systems.get(system)
        if configured is None or configured.kind != "tryton":
            err.print(f"no Tryton system {system!r} in the configuration")
            raise typer.Exit(2)
        url, database = url or configured.url, database or configured.database
        user, password = configured.user, password or configured.password
    sandbox = read_state(home).get("tryton", {}) if not url else {}
    url, database = url or sandbox.get("url"), database or sandbox.get("database")
    password = password or sandbox.get("password")
    if not (url and database and password):
        err.print("give --url, --database and --password, --system, or start the sandbox first")
        raise typer.Exit(2)
    return url, database, user, password, bool(sandbox)


@contextmanager
def _tryton_session(url: str, database: str, user: str, password: str) -> Iterator[Any]:
    """A Tryton session for ``tryton init`` and ``tryton rates``, closed at the end; Tryton's
    refusals and bad input (a rate conflict, a missing chart) end the command with status 1
    and the reason."""
    from closeloop.connectors.tryton.rpc import TrytonError, TrytonRPC
    from closeloop.domain.errors import CloseloopError

    rpc = TrytonRPC(url, database, user, password, timeout_s=300)
    try:
        yield rpc
    except TrytonError as exc:
        err.print(f"[red]Tryton refused: {exc}[/red]")
        raise typer.Exit(1) from exc
    except (CloseloopError, LookupError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        rpc.close()


def _load_config(config: Path | None) -> Any:
    from closeloop.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


TrytonUrl = Annotated[str | None, typer.Option(help="Tryton URL (default: the sandbox's)")]
TrytonSystem = Annotated[
    str | None, typer.Option(help="take URL, database, user and password of this system")
]
TrytonPassword = Annotated[str | None, typer.Option(envvar="CLOSELOOP_TRYTON_PASSWORD")]


@tryton_app.command("init")
def tryton_init(
    url: TrytonUrl = None,
    database: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str, typer.Option()] = "admin",
    password: TrytonPassword = None,
    system: TrytonSystem = None,
    config: ConfigOption = None,
    home: HomeOption = Path(".closeloop"),
) -> None:
    """Prepare a Tryton database for closeloop, idempotently: a company per legal entity of
    the configuration (``legal_entities:``; on the sandbox without any, the sandbox's three;
    else one default company), each with its currency, chart, fiscal years and periods,
    taxes by treatment and tax rules, payment method; the service product; then the
    configured exchange rates (``exchange_rates:``)."""
    from closeloop.connectors.tryton.rates import load_rates
    from closeloop.connectors.tryton.sandbox import SANDBOX_ENTITIES
    from closeloop.connectors.tryton.setup import TrytonSetup, initialize_entities

    settings = _load_config(config)
    url, database, user, password, sandbox = _tryton_target(
        url, database, user, password, system, settings, home
    )
    entities = list(settings.legal_entities.values()) or (list(SANDBOX_ENTITIES) if sandbox else [])
    setups = [TrytonSetup.for_entity(e) for e in entities] or [TrytonSetup()]
    with _tryton_session(url, database, user, password) as rpc:
        rates = settings.exchange_rates.all_rates()
        done = initialize_entities(rpc, setups)
        loaded = load_rates(rpc, rates)
    for code, ids in done.items():
        taxes = ", ".join(t.value for t in ids.taxes) or "none (not VAT-registered)"
        console.print(
            f"{code}: company {ids.company} in {ids.currency_code}, taxes: {taxes}, "
            f"product {ids.product}"
        )
    console.print(f"Tryton ready; exchange rates loaded: {loaded} of {len(rates)}")


@tryton_app.command("rates")
def tryton_rates(
    file: Annotated[
        Path, typer.Option("--file", help="CSV with the header date,currency,rate,source")
    ],
    base: Annotated[
        str | None, typer.Option(help="the rates' base currency (default: the configuration's)")
    ] = None,
    url: TrytonUrl = None,
    database: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str, typer.Option()] = "admin",
    password: TrytonPassword = None,
    system: TrytonSystem = None,
    config: ConfigOption = None,
    home: HomeOption = Path(".closeloop"),
) -> None:
    """Load exchange rates into Tryton (``rate``: units of the currency per unit of the base
    currency, which gets rate 1 on each date): the rates Tryton lacks are created, those it
    has are left; a different rate for a currency on a date already in Tryton refuses the
    whole file."""
    from closeloop.connectors.tryton.rates import load_rates
    from closeloop.domain.entities import RatesConfig, read_rates_file
    from closeloop.domain.errors import CloseloopError

    settings = _load_config(config)
    url, database, user, password, _ = _tryton_target(
        url, database, user, password, system, settings, home
    )
    try:
        rates = RatesConfig(
            base=base or settings.exchange_rates.base, rates=tuple(read_rates_file(file))
        ).all_rates()
    except (CloseloopError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    with _tryton_session(url, database, user, password) as rpc:
        loaded = load_rates(rpc, rates)
    console.print(f"exchange rates loaded: {loaded} of {len(rates)} (the others were there)")


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
    """Start Salesforce, Harvest, Tryton and Xero, seed a firm (its acquired UK unit on
    Xero), run the hub through a quarter of project-to-cash until it is idle, and print what
    happened."""
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
    if summary["commands_runnable"]:  # what waits behind a parked command is an exception's
        raise typer.Exit(1)
