"""Salesforce's row of the connector table: the CRM, over its REST API and Outbound
Messages."""

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
from closeloop.domain.operations import Role
from closeloop.ports.connector import Connector

if TYPE_CHECKING:
    from fastapi import APIRouter

    from closeloop.engine.intake import Intake


class SalesforceSettings(SystemSettings):
    """A Salesforce org: ``url`` is its instance URL; ``client_id`` and ``client_secret`` of
    the connected app, and ``user``/``password`` for the username-password flow (without a
    user, the client-credentials flow); ``organization_id`` is checked on outbound messages;
    ``quota_reserve`` is the fraction of the daily API allocation left untouched;
    ``max_clock_skew_s``: how far (seconds) a record's ``SystemModstamp`` may lie ahead of
    the hub's clock before the record is refused with a business exception instead of
    applied (a later stamp would make every genuine edit look older); ``outbound_token``:
    a secret the outbound-message endpoint URL must carry (``?token=``), so that only the
    org's rule, not whoever knows the org id, makes the hub read records."""

    kind: Literal["salesforce"]
    client_id: str
    client_secret: str
    organization_id: str
    token_url: str | None = None
    user: str | None = None
    password: str | None = None
    api_version: str = "62.0"
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust")
    quota_reserve: float = Field(default=0.1, ge=0, lt=1)
    max_clock_skew_s: int = Field(default=300, ge=0, le=86_400)
    outbound_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="when set, outbound messages must come to the endpoint URL with "
        "?token=<this> (a secret only the org's outbound-message rule knows)",
    )


def build(name: str, settings: SalesforceSettings, context: BuildContext) -> Connector:
    """A connector to a Salesforce org (nothing is called until it is used)."""
    from closeloop.connectors.salesforce.client import SalesforceClient, SalesforceCredentials
    from closeloop.connectors.salesforce.connector import DEFAULT_OBJECTS, SalesforceConnector
    from closeloop.connectors.salesforce.quota import QuotaBudget

    credentials = SalesforceCredentials(
        instance_url=settings.url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        token_url=settings.token_url,
        username=settings.user,
        password=settings.password,
        api_version=settings.api_version,
        ca_bundle=settings.ca_bundle,
    )
    client = SalesforceClient(
        credentials, quota=QuotaBudget(settings.quota_reserve), timeout_s=settings.timeout_s
    )
    return SalesforceConnector(
        client,
        system=name,
        objects=tuple(settings.objects or DEFAULT_OBJECTS),
        batch_size=settings.batch_size or 1000,
        max_concurrent=settings.max_concurrent,
        call_timeout_s=settings.timeout_s,
        key_prefix=settings.key_prefix or PLUGIN.key_prefix,
    )


def webhooks(intake: Intake, systems: Mapping[str, SalesforceSettings]) -> APIRouter:
    """``POST /webhooks/salesforce/outbound-message`` for the configured orgs."""
    from closeloop.connectors.salesforce.webhook import OrgEndpoint, outbound_message_router

    orgs = {
        settings.organization_id: OrgEndpoint(
            name,
            settings.max_clock_skew_s,
            settings.outbound_token.get_secret_value() if settings.outbound_token else None,
        )
        for name, settings in systems.items()
    }
    return outbound_message_router(intake, orgs)


def sandbox_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a running Salesforce sandbox (``sandbox.json``'s entry)."""
    return {
        "kind": "salesforce",
        "url": entry["instance_url"],
        "client_id": entry["client_id"],
        "client_secret": entry["client_secret"],
        "user": entry["username"],
        "password": entry["password"],
        "organization_id": entry["organization_id"],
        "api_version": entry["api_version"],
        "ca_bundle": entry["ca_bundle"],
    }


def quota(connector: Connector, requests_used: Callable[[str, float], int]) -> str:
    """The org's daily API requests left (one ``limits`` call)."""
    client = connector.client  # type: ignore[attr-defined]
    daily = client.request("GET", "limits")["DailyApiRequests"]
    return f"{daily['Remaining']:,} of {daily['Max']:,} daily API requests left"


def quota_left(connector: Connector, requests_used: Callable[[str, float], int]) -> float | None:
    """The fraction of the org's daily allocation left, as its last answer reported it
    (``Sforce-Limit-Info``; ``None`` before any answer)."""
    budget = connector.client.quota  # type: ignore[attr-defined]
    remaining, allocation = budget.remaining, budget.allocation
    return None if remaining is None or not allocation else remaining / allocation


def start_sandbox(home: Path) -> dict[str, Any]:
    """The Salesforce sandbox under ``home/salesforce`` on a free port of 127.0.0.1."""
    from closeloop.sandboxes.salesforce.server import start_salesforce
    from closeloop.sandboxes.tryton.server import free_port

    return start_salesforce(home / "salesforce", free_port()).as_json()


PLUGIN = ConnectorPlugin(
    kind="salesforce",
    settings=SalesforceSettings,
    factory=build,
    role=Role.CRM,
    key_prefix="SF",
    mappings=package_mappings(__package__ or __name__),
    webhooks=webhooks,
    sandbox=SandboxWiring("salesforce", sandbox_settings, start_sandbox, sandbox_healthz),
    quota=quota,
    quota_left=quota_left,
)
