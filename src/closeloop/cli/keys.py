"""``closeloop keys``: API keys of the HTTP API and the console (made, listed, revoked on
the hub's database; whoever runs these commands administers the hub)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from closeloop.cli import ConfigOption, _hub, app, console, err
from closeloop.domain.access import AccessRole
from closeloop.domain.errors import ConflictError, InputError, NotFoundError
from closeloop.engine.access import key_state

keys_app = typer.Typer(
    help="API keys for the HTTP API and the console: create, list, revoke.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what uses the key, e.g. dana or grafana")],
    role: Annotated[AccessRole, typer.Option(help="viewer, operator or admin")] = (
        AccessRole.VIEWER
    ),
    expires_days: Annotated[
        float, typer.Option(help="days until the key stops working; 0: never", min=0)
    ] = 90,
    config: ConfigOption = None,
    actor: Annotated[str, typer.Option(envvar="USER", help="who makes it (audit)")] = "admin",
) -> None:
    """Make a key and print it once: it is stored hashed and cannot be shown again."""
    hub = _hub(config)
    try:
        expires_in = timedelta(days=expires_days) if expires_days else None
        made = hub.access.create(name, role, f"cli:{actor}", expires_in)
    except (InputError, ConflictError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        hub.close()
    expiry = made.row.expires_at.isoformat() if made.row.expires_at else "never"
    err.print(f"key {made.row.id} {made.row.name!r} ({made.row.role.value}), expires {expiry}")
    err.print("store it now: it is shown only once")
    print(made.token)


@keys_app.command("list")
def keys_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every key with its role, state, expiry and last use (never a secret)."""
    hub = _hub(config)
    try:
        rows, now = hub.access.keys(), hub.clock.now()
    finally:
        hub.close()
    listed = [
        {
            "id": r.id,
            "name": r.name,
            "role": r.role.value,
            "state": key_state(r, now),
            "created_at": r.created_at.isoformat(),
            "created_by": r.created_by,
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
        }
        for r in rows
    ]
    if as_json:
        print(json.dumps(listed, indent=2))
        return
    table = Table(title="API keys")
    for column in ("id", "name", "role", "state", "expires_at", "last_used_at"):
        table.add_column(column)
    for k in listed:
        table.add_row(
            *(str(k[c] or "-") for c in ("id", "name", "role", "state")),
            str(k["expires_at"] or "never"),
            str(k["last_used_at"] or "-"),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: int,
    config: ConfigOption = None,
    actor: Annotated[str, typer.Option(envvar="USER", help="who revokes it (audit)")] = "admin",
) -> None:
    """Revoke a key: it and its console sessions stop working at once."""
    hub = _hub(config)
    try:
        row = hub.access.revoke(key_id, f"cli:{actor}")
    except NotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        hub.close()
    err.print(f"key {row.id} {row.name!r} revoked")
