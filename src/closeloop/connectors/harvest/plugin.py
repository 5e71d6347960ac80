"""Harvest's row of the connector table: the PSA, over its v2 REST API."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from closeloop.connectors.catalog import (
    BuildContext,
    ConnectorPlugin,
    SandboxWiring,
    package_mappings,
)
from closeloop.connectors.http import sandbox_healthz
from closeloop.connectors.settings import SystemSettings
from closeloop.domain.operations import Role
from closeloop.ports.connector import Connector


class HarvestSettings(SystemSettings):
    """A Harvest account: ``url`` is the API base (``https://api.harvestapp.com/v2``),
    ``token`` a personal access token (better ``CLOSELOOP_SYSTEMS__<NAME>__TOKEN``) and
    ``account_id``; ``requests_per_window`` per ``window_s`` is the account's limit (default
    Harvest's 100 per 15 s), shared by all workers."""

    kind: Literal["harvest"]
    token: str
    account_id: str


def build(name: str, settings: HarvestSettings, context: BuildContext) -> Connector:
    """A connector to a Harvest account; its rate limit taken from ``context.shared_limit``."""
    from closeloop.connectors.harvest.client import REQUESTS_PER_WINDOW, WINDOW_S, HarvestClient
    from closeloop.connectors.harvest.connector import OBJECTS, HarvestConnector

    client = HarvestClient(
        settings.url,
        settings.token,
        settings.account_id,
        shared_limit=context.shared_limit,
        requests_per_window=settings.requests_per_window or REQUESTS_PER_WINDOW,
        window_s=settings.window_s or WINDOW_S,
        timeout_s=settings.timeout_s,
    )
    return HarvestConnector(
        client,
        system=name,
        objects=tuple(settings.objects or OBJECTS),
        batch_size=settings.batch_size or 50,
        call_timeout_s=settings.timeout_s,
    )


def sandbox_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a running Harvest sandbox (``sandbox.json``'s ``harvest`` entry)."""
    return {
        "kind": "harvest",
        "url": entry["base_url"],
        "token": entry["token"],
        "account_id": entry["account_id"],
    }


def quota(connector: Connector, requests_used: Callable[[str, float], int]) -> str:
    """The account's requests in its current window, counted by all workers."""
    client = connector.client  # type: ignore[attr-defined]
    limit, window_s = client.window
    used = requests_used(client.rate_limit_key, window_s)
    return f"{used} of {limit} requests used in the last {window_s:.0f} s (all workers)"


def quota_left(connector: Connector, requests_used: Callable[[str, float], int]) -> float:
    """The fraction of the account's current window left (all workers)."""
    client = connector.client  # type: ignore[attr-defined]
    limit, window_s = client.window
    return max(0.0, 1 - requests_used(client.rate_limit_key, window_s) / float(limit))


def start_sandbox(home: Path) -> dict[str, Any]:
    """The Harvest sandbox under ``home/harvest`` on a free port of 127.0.0.1."""
    from closeloop.sandboxes.harvest.server import start_harvest
    from closeloop.sandboxes.tryton.server import free_port

    return start_harvest(home / "harvest", free_port()).as_json()


PLUGIN = ConnectorPlugin(
    kind="harvest",
    settings=HarvestSettings,
    factory=build,
    role=Role.PSA,
    key_prefix="HV",
    mappings=package_mappings(__package__ or __name__),
    sandbox=SandboxWiring("harvest", sandbox_settings, start_sandbox, sandbox_healthz),
    quota=quota,
    quota_left=quota_left,
)
