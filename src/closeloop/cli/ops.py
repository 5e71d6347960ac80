"""Commands that run and operate the hub: run, worker, status, exceptions, xref, db."""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.table import Table

from closeloop.cli import (
    ConfigOption,
    _hub,
    _schema_refused,
    _settings,
    app,
    console,
    db_app,
    err,
    exceptions_app,
    xref_app,
)
from closeloop.domain.errors import ConflictError, InputError, NotFoundError

log = structlog.get_logger(__name__)


@app.command()
def run(
    config: ConfigOption = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="process what is due now (poll once, apply, dispatch, timers, a due "
            "reconciliation, the alerts) and exit, without the HTTP server: for cron or a "
            "scheduler",
        ),
    ] = False,
) -> None:
    """Intake, workers, scheduled reconciliation and the HTTP server in one process, until
    Ctrl-C or SIGTERM (both stop it gracefully, as for ``closeloop worker``).

    With ``--once``: exit status 0 when the pass ended (vendor failures are retried or
    become exceptions in the hub, as in a running hub), 1 when the hub itself failed (its
    database unreachable or behind the code, a bug: the log says what), 2 for bad
    configuration."""
    if once:
        _run_once(config)
        return
    import uvicorn

    from closeloop.bootstrap import build_http_app

    hub = _hub(config)
    stop = _stop_on_signals()
    alerter = hub.alerter()
    threads = [
        threading.Thread(target=hub.worker.run, args=(stop,), name="worker", daemon=True),
        threading.Thread(
            target=hub.reconcile_schedule().run, args=(stop,), name="reconcile", daemon=True
        ),
        threading.Thread(target=alerter.run, args=(stop,), name="alerts", daemon=True),
        threading.Thread(
            target=hub.retention_schedule().run, args=(stop,), name="retention", daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    server = uvicorn.Server(
        uvicorn.Config(
            build_http_app(hub),
            host=hub.settings.http.host,
            port=hub.settings.http.port,
            log_level="warning",
            log_config=None,  # uvicorn's records go through our handler (JSON when asked)
        )
    )
    log.info("closeloop listening", url=f"http://{hub.settings.http.host}:{hub.settings.http.port}")
    try:
        # uvicorn handles SIGINT/SIGTERM while serving and re-raises them afterwards: our own
        # handlers receive that re-raise, so the workers stop and the hub closes cleanly
        server.run()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        with contextlib.suppress(Exception):  # the next hub takes over evaluating at once
            alerter.release()
        alerter.close()
        hub.close()


def _run_once(config: Path | None) -> None:
    """``closeloop run --once``: one worker pass, a due reconciliation (and a pass for its
    repairs), an evaluation of the alerts, a retention pass; exit 1 when a pass raised."""
    stop = _stop_on_signals()
    try:
        hub = _hub(config)
    except typer.Exit:
        raise  # bad configuration: 2, said already
    except Exception as exc:
        log.exception("closeloop run --once failed")
        raise typer.Exit(1) from exc
    alerter = hub.alerter()
    try:
        work = hub.worker.run_due(stop)
        if not stop.is_set() and hub.reconcile_schedule().run_due():
            work += hub.worker.run_due(stop)
        if not stop.is_set() and alerter.enabled:
            alerter.run_due()
            alerter.release()
        if not stop.is_set():
            hub.retention_schedule().run_due(stop)  # a pass (retention.enabled): bounded work
    except Exception as exc:
        log.exception("closeloop run --once failed")
        raise typer.Exit(1) from exc
    finally:
        alerter.close()
        hub.close()
    log.info("pass done", work=work, stopped=stop.is_set())


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Workers only (no HTTP server), for scale-out on PostgreSQL, serving ``/metrics`` and
    ``/healthz`` on ``worker.metrics_host:metrics_port``. On SIGTERM or Ctrl-C it claims
    nothing more, lets its calls in flight finish for ``worker.shutdown_grace_s``, gives back
    the commands of those that did not, and exits 0."""
    from closeloop.observability import ProbeServer

    hub = _hub(config)
    stop = _stop_on_signals()
    w = hub.settings.worker
    probes = None
    try:
        if w.metrics_port is not None:
            try:
                probes = ProbeServer(
                    w.metrics_host,
                    w.metrics_port,
                    hub.metrics.registry,
                    lambda: hub.worker.health(stale_after_s=w.lease_s),
                )
            except OSError as exc:  # the port is taken, the address not this machine's
                log.error(
                    "worker probes cannot listen",
                    address=f"{w.metrics_host}:{w.metrics_port}",
                    error=str(exc),
                )
                raise typer.Exit(1) from exc
            log.info("worker probes listening", metrics=f"{probes.url}/metrics")
        hub.worker.run(stop)
    finally:
        if probes is not None:
            probes.close()
        hub.close()
    log.info("worker stopped")


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set (the handlers only set it: they take no other lock)."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each engagement's lifecycle and blockers, commands by state, open exceptions by class,
    and each system's calls (from the running hub) and quota."""
    from closeloop.cli.statusview import gather

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
        calls = view["hub_calls_unavailable"] if info["calls"] is None else f"{info['calls']:,}"
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
    hub = _hub(config)
    try:
        row = getattr(hub.operations, action)(*args)
    except (InputError, NotFoundError, ConflictError) as exc:
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


def _system_and_id(text: str) -> tuple[str, str]:
    system, _, external_id = text.partition(":")
    if not system or not external_id:
        raise typer.BadParameter(f"{text!r} is not <system>:<id> (e.g. salesforce:001...)")
    return system, external_id


@xref_app.command("link")
def xref_link(
    canonical_type: Annotated[str, typer.Argument(help="what the records are, e.g. account")],
    record: Annotated[str, typer.Argument(help="<system>:<id>, e.g. salesforce:0015g...")],
    target: Annotated[str, typer.Argument(help="<system>:<id>, e.g. tryton:C-0042")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")],
    config: ConfigOption = None,
    actor: Annotated[str, typer.Option(envvar="USER", help="who")] = "operator",
) -> None:
    """Decide that RECORD is TARGET (e.g. the ERP customer an ambiguous match could not pick);
    flows waiting on it go on at once, a blocked deal resumes. Prints the flows that moved."""
    pair, partner = _system_and_id(record), _system_and_id(target)
    hub = _hub(config)
    try:
        moved = hub.operations.link(canonical_type, pair, partner, actor, reason)
    except (InputError, NotFoundError, ConflictError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        hub.close()
    print(json.dumps({"linked": [record, target], "moved": [list(m) for m in moved]}, indent=2))


@app.command()
def credit(
    reference: Annotated[
        str, typer.Argument(help="the invoice's reference, e.g. SF-006.../2026-08")
    ],
    reason: Annotated[str, typer.Option(help="why (on the credit note and in the audit trail)")],
    line: Annotated[
        list[str] | None,
        typer.Option(help="credit only this line (a charge key, or 'time'); repeatable"),
    ] = None,
    rebill: Annotated[
        bool, typer.Option(help="un-mark its time and expenses in the PSA, to bill them again")
    ] = False,
    config: ConfigOption = None,
    actor: Annotated[str, typer.Option(envvar="USER", help="who")] = "operator",
) -> None:
    """Credit a posted invoice the hub made, in full or by lines: the engagement's ERP makes
    the credit note (REFERENCE/credit-N), the CRM's totals become net of it."""
    hub = _hub(config)
    try:
        asked = hub.operations.credit(reference, reason, actor, tuple(line or ()), rebill)
    except (InputError, NotFoundError, ConflictError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        hub.close()
    print(json.dumps({"credit_requested": asked}, indent=2))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Migrate the database to the newest schema: the one command that changes it (every other
    command refuses a database that is behind). Concurrent upgraders take turns (an advisory
    lock on PostgreSQL, the write lock on SQLite): one migrates, the others wait and find
    nothing to do. Exit status 3 when the database is ahead of this closeloop."""
    from closeloop.bootstrap import SchemaMismatch, upgrade_database

    def waiting() -> None:
        err.print("another closeloop db upgrade is migrating this database: waiting for it")

    try:
        done = upgrade_database(_settings(config), on_wait=waiting)
    except SchemaMismatch as exc:
        _schema_refused(exc)
    if done.migrated:
        console.print(f"migrated the database from {done.before or 'empty'} to {done.after}")
    else:
        console.print(f"the database is at {done.after} already: nothing to do")


@db_app.command("check")
def db_check(config: ConfigOption = None) -> None:
    """Whether the database's schema is the one this closeloop needs, changing nothing: exit
    status 0, or 3 with what to do (empty or behind: ``closeloop db upgrade``; ahead: upgrade
    closeloop). For deployment scripts, before starting hubs and workers."""
    from closeloop.bootstrap import SchemaMismatch, check_database

    try:
        revision = check_database(_settings(config))
    except SchemaMismatch as exc:
        _schema_refused(exc)
    console.print(f"the database is at schema {revision}, as this closeloop needs")
