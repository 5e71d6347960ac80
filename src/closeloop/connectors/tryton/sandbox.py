"""The Tryton connector's sandbox wiring: a real Tryton (``sandboxes/tryton``) with a database
prepared as ``closeloop tryton init`` prepares one for the sandbox firm's three legal
entities (:data:`SANDBOX_ENTITIES`), restored from a pristine copy."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import SETUP_VERSION, TrytonSetup, initialize_entities
from closeloop.domain.entities import LegalEntity
from closeloop.sandboxes.tryton.server import TrytonSandbox, TrytonServer, find_trytond

SANDBOX_ENTITIES: tuple[LegalEntity, ...] = (
    LegalEntity(
        code="DE-GMBH",
        name="Northwind Advisory GmbH",
        country="DE",
        currency="EUR",
        vat_registered=True,
        standard_rate=Decimal("0.19"),
        invoice_currencies=("EUR", "CHF", "USD"),
    ),
    LegalEntity(
        code="GB-LTD",
        name="Northwind Advisory Ltd",
        country="GB",
        currency="GBP",
        vat_registered=True,
        standard_rate=Decimal("0.20"),
        invoice_currencies=("GBP", "EUR", "USD"),
    ),
    LegalEntity(
        code="US-INC",
        name="Northwind Advisory Inc.",
        country="US",
        currency="USD",
        vat_registered=False,
        standard_rate=Decimal(0),
        invoice_currencies=("USD",),
    ),
)
"""The sandbox firm's legal entities, one company each in the sandbox's Tryton database;
the first (DE-GMBH) is the hub user's current company (a system without ``company``)."""


def cache_dir() -> Path:
    """Where pristine databases are kept (``CLOSELOOP_SANDBOX_CACHE``, default
    ``~/.cache/closeloop``)."""
    return Path(os.environ.get("CLOSELOOP_SANDBOX_CACHE", Path.home() / ".cache" / "closeloop"))


def init_tryton(server: TrytonServer) -> None:
    """Prepare a fresh sandbox database as ``closeloop tryton init`` does, with a company
    per entity of :data:`SANDBOX_ENTITIES`."""
    rpc = TrytonRPC(server.url, server.database, server.user, server.password, timeout_s=300)
    try:
        initialize_entities(rpc, [TrytonSetup.for_entity(e) for e in SANDBOX_ENTITIES])
    finally:
        rpc.close()


def start_tryton(home: Path, uri: str = "sqlite://", database: str = "closeloop") -> TrytonServer:
    """A running, initialised Tryton sandbox under ``home/tryton``. Raises
    :class:`~closeloop.sandboxes.tryton.server.SandboxError` when it does not come up."""
    sandbox = TrytonSandbox(
        home / "tryton", cache_dir(), database, uri, flavour=f"setup-{SETUP_VERSION}"
    )
    bin_dir = find_trytond()
    sandbox.prepare(bin_dir, init_tryton)
    return sandbox.start(bin_dir)


def start(home: Path) -> dict[str, Any]:
    """``sandbox.json``'s ``tryton`` entry of a Tryton started under ``home``."""
    return start_tryton(home).as_json()


def check(entry: Mapping[str, Any]) -> None:
    """One cheap JSON-RPC call; raises ``httpx.HTTPError`` when Tryton does not answer."""
    body = {"id": 0, "method": "common.server.version", "params": []}
    httpx.post(f"{entry['url']}/rpc/", json=body, timeout=2).raise_for_status()
