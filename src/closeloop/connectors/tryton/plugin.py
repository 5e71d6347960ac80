"""Tryton's row of the connector table: the ERP, over its JSON-RPC."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from closeloop.connectors.catalog import (
    BuildContext,
    ConnectorPlugin,
    SandboxWiring,
    package_mappings,
)
from closeloop.connectors.settings import SystemSettings
from closeloop.domain.operations import Role
from closeloop.ports.connector import Connector


class TrytonSettings(SystemSettings):
    """A Tryton server at ``url`` (its JSON-RPC root) and a ``database`` prepared with
    ``closeloop tryton init``; ``user`` and ``password`` of the hub's Tryton user (better
    given as ``CLOSELOOP_SYSTEMS__<NAME>__PASSWORD``); ``company``: the code of the legal
    entity this system acts for (its company in the database: every call is made in that
    company; several systems may share one database with different companies), ``None``
    for the user's current company."""

    kind: Literal["tryton"]
    database: str
    user: str
    password: str
    company: str | None = None


def build(name: str, settings: TrytonSettings, context: BuildContext) -> Connector:
    """A connector to a prepared Tryton database, acting in the company of the settings'
    ``company`` (its ids looked up now).

    Raises ``LookupError`` when the database was not prepared with ``closeloop tryton init``
    (or not for that entity).
    """
    from closeloop.connectors.tryton.connector import TrytonConnector
    from closeloop.connectors.tryton.operations import TrytonOperations
    from closeloop.connectors.tryton.rpc import TrytonRPC
    from closeloop.connectors.tryton.setup import find_ids

    rpc = TrytonRPC(
        settings.url,
        settings.database,
        settings.user,
        settings.password,
        timeout_s=settings.timeout_s,
    )
    return TrytonConnector(
        TrytonOperations(rpc, find_ids(rpc, settings.company)),
        system=name,
        batch_size=settings.batch_size or 1000,
    )


def sandbox_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a running Tryton sandbox (``sandbox.json``'s ``tryton`` entry)."""
    return {
        "kind": "tryton",
        "url": entry["url"],
        "database": entry["database"],
        "user": entry["user"],
        "password": entry["password"],
    }


def start_sandbox(home: Path) -> dict[str, Any]:
    """A real Tryton under ``home`` (:mod:`.sandbox`)."""
    from closeloop.connectors.tryton.sandbox import start

    return start(home)


def check_sandbox(entry: Mapping[str, Any]) -> None:
    """One JSON-RPC call to the running Tryton (:mod:`.sandbox`)."""
    from closeloop.connectors.tryton.sandbox import check

    check(entry)


PLUGIN = ConnectorPlugin(
    kind="tryton",
    settings=TrytonSettings,
    factory=build,
    role=Role.ERP,
    key_prefix="TR",
    mappings=package_mappings(__package__ or __name__),
    sandbox=SandboxWiring("tryton", sandbox_settings, start_sandbox, check_sandbox, admin=False),
    quota=lambda connector, requests_used: "no vendor quota; one writer at a time",
)
