"""Xero's row of the connector table: an ERP, over its Accounting API (custom connection)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr

from closeloop.connectors.catalog import (
    BuildContext,
    ConnectorPlugin,
    SandboxWiring,
    package_mappings,
)
from closeloop.connectors.http import sandbox_healthz
from closeloop.connectors.settings import SystemSettings
from closeloop.connectors.xero.marks import DEFAULT_TAX_TYPES
from closeloop.domain.operations import Role
from closeloop.ports.connector import Connector

if TYPE_CHECKING:
    from fastapi import APIRouter

    from closeloop.engine.intake import Intake


class XeroSettings(SystemSettings):
    """One Xero organisation through a custom connection: ``url`` is the Accounting API's
    base (``https://api.xero.com/api.xro/2.0``), ``token_url`` the identity server's
    (``https://identity.xero.com/connect/token``), ``client_id`` and ``client_secret`` the
    connection's (better ``CLOSELOOP_SYSTEMS__<NAME>__CLIENT_SECRET``), ``tenant_id`` the
    organisation's. ``sales_account`` and ``expense_account`` are the account codes invoice
    lines post to (Xero's default UK chart: 200 Sales, 260 Other Revenue);
    ``tax_types`` maps tax treatments to Xero tax types (default: UK VAT, see
    :data:`~closeloop.connectors.xero.marks.DEFAULT_TAX_TYPES`); ``tracking_category``
    names the tracking category of projects. ``requests_per_window`` is the minute limit
    (default Xero's 60), ``day_limit`` the daily one (5,000), both shared by all workers.
    ``webhook_key``: the signing key of the app's webhook subscription (Xero's developer
    portal), without which ``POST /webhooks/xero/<name>`` refuses every delivery."""

    kind: Literal["xero"]
    token_url: str
    client_id: str
    client_secret: str
    tenant_id: str
    sales_account: str = "200"
    expense_account: str = "260"
    tax_types: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TAX_TYPES))
    tracking_category: str = "Project"
    day_limit: int = Field(default=5000, ge=1)
    webhook_key: SecretStr | None = None


def build(name: str, settings: XeroSettings, context: BuildContext) -> Connector:
    """A connector to one Xero organisation; its limits shared through
    ``context.shared_limit``."""
    from closeloop.connectors.xero.client import CONCURRENT_LIMIT, MINUTE_LIMIT, XeroClient
    from closeloop.connectors.xero.connector import XeroConnector
    from closeloop.connectors.xero.projects import Accounts

    missing = sorted(set(DEFAULT_TAX_TYPES) - set(settings.tax_types))
    if missing:
        raise ValueError(f"systems.{name}.tax_types: no Xero tax type for {missing}")
    client = XeroClient(
        settings.url,
        settings.token_url,
        settings.client_id,
        settings.client_secret,
        settings.tenant_id,
        shared_limit=context.shared_limit,
        minute_limit=settings.requests_per_window or MINUTE_LIMIT,
        day_limit=settings.day_limit,
        concurrent=min(settings.max_concurrent, CONCURRENT_LIMIT),
        timeout_s=settings.timeout_s,
    )
    accounts = Accounts(
        sales=settings.sales_account,
        expenses=settings.expense_account,
        tax_types=dict(settings.tax_types),
        tracking_category=settings.tracking_category,
    )
    return XeroConnector(
        client,
        accounts,
        system=name,
        batch_size=settings.batch_size or 50,
        max_concurrent=min(settings.max_concurrent, 5),
        call_timeout_s=settings.timeout_s,
    )


def sandbox_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a running Xero sandbox (``sandbox.json``'s ``xero`` entry)."""
    return {
        "kind": "xero",
        "url": entry["base_url"],
        "token_url": entry["token_url"],
        "client_id": entry["client_id"],
        "client_secret": entry["client_secret"],
        "tenant_id": entry["tenant_id"],
    }


def start_sandbox(home: Path) -> dict[str, Any]:
    """The Xero sandbox under ``home/xero`` on a free port of 127.0.0.1."""
    from closeloop.sandboxes.tryton.server import free_port
    from closeloop.sandboxes.xero.server import start_xero

    return start_xero(home / "xero", free_port()).as_json()


def quota(connector: Connector, requests_used: Callable[[str, float], int]) -> str:
    """The tenant's calls in its minute and day, counted by all workers."""
    client = connector.client  # type: ignore[attr-defined]
    parts = []
    for limit, window_s in client.windows:
        used = requests_used(client.rate_limit_key(window_s), window_s)
        parts.append(f"{used} of {limit} calls in the last {'minute' if window_s == 60 else 'day'}")
    return "; ".join(parts) + " (all workers)"


def quota_left(connector: Connector, requests_used: Callable[[str, float], int]) -> float:
    """The fraction left of the tighter of the tenant's minute and day (all workers)."""
    client = connector.client  # type: ignore[attr-defined]
    return min(
        max(0.0, 1 - requests_used(client.rate_limit_key(window_s), window_s) / float(limit))
        for limit, window_s in client.windows
    )


def webhooks(intake: Intake, systems: Mapping[str, XeroSettings]) -> APIRouter:
    """``POST /webhooks/xero/{system}`` for the configured organisations
    (:mod:`.webhook`)."""
    from closeloop.connectors.xero.webhook import webhook_router

    return webhook_router(intake, systems)


PLUGIN = ConnectorPlugin(
    kind="xero",
    settings=XeroSettings,
    factory=build,
    role=Role.ERP,
    key_prefix="XE",
    mappings=package_mappings(__package__ or __name__),
    webhooks=webhooks,
    sandbox=SandboxWiring("xero", sandbox_settings, start_sandbox, sandbox_healthz),
    quota=quota,
    quota_left=quota_left,
)
