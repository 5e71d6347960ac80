"""The ``closeloop`` command line (typer): the app, its shared options and entry point.

Commands live by use: :mod:`.ops` (run the hub, status, exceptions, cross-reference, database),
:mod:`.sandbox` (local sandboxes, Tryton and the demo), :mod:`.tools` (checks, mapping,
schemas, benchmarks), :mod:`.alerts` (alert channels)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from closeloop.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from closeloop.store.migrate import SchemaMismatch

app = typer.Typer(help="closeloop: the project-to-cash integration hub.", no_args_is_help=True)
exceptions_app = typer.Typer(
    help="Business exceptions: list, show, replay, resolve.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
xref_app = typer.Typer(
    help="Cross-reference: which record is which in each system.", no_args_is_help=True
)
schema_app = typer.Typer(help="Canonical model JSON Schemas.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Local sandboxes of the vendor systems.", no_args_is_help=True)
tryton_app = typer.Typer(help="The Tryton ERP.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts: test the channels.", no_args_is_help=True)
app.add_typer(exceptions_app, name="exceptions")
app.add_typer(db_app, name="db")
app.add_typer(xref_app, name="xref")
app.add_typer(bench_app, name="bench")
app.add_typer(schema_app, name="schema")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(tryton_app, name="tryton")
app.add_typer(alerts_app, name="alerts")

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


SCHEMA_EXIT = 3
"""Exit status of a command refused because the database's schema is not this code's."""


def _hub(config: Path | None) -> Any:
    """The hub of ``config`` (see :func:`_settings`); exits with :data:`SCHEMA_EXIT` and the
    reason when the database's schema is empty, behind (``closeloop db upgrade`` migrates
    it: no other command does) or ahead of this closeloop."""
    from closeloop.bootstrap import SchemaMismatch, build_hub

    settings = _settings(config)
    try:
        return build_hub(settings)
    except SchemaMismatch as exc:
        _schema_refused(exc)


def _schema_refused(exc: SchemaMismatch) -> NoReturn:
    """Print why the schema refused (with the database, its password hidden) and exit with
    :data:`SCHEMA_EXIT`."""
    err.print(f"[red]{exc}[/red] (database {exc.database})")
    raise typer.Exit(SCHEMA_EXIT) from exc


def _print_version(value: bool) -> None:
    """``--version``: print ``closeloop <version>`` (the installed distribution's) and exit."""
    if value:
        from importlib.metadata import version

        print(f"closeloop {version('closeloop')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="print the installed version and exit",
        ),
    ] = False,
) -> None:
    """closeloop: the project-to-cash integration hub."""


def main() -> None:
    """Entry point of the ``closeloop`` script."""
    app()


from closeloop.cli import alerts, keys, ops, reconcile, retention, sandbox, tools  # noqa: E402 - they register commands

__all__ = ["alerts", "app", "keys", "main", "ops", "reconcile", "retention", "sandbox", "tools"]
