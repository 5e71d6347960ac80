"""Running the Xero sandbox in tests, and calling it with the Accounting API as a person in
Xero would (never through the connector under test)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from closeloop.devtools.sandboxctl import alive
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.tryton.server import stop_pid
from closeloop.sandboxes.xero.server import XeroServer, start_xero
from tests.conftest import free_port

ROOMY = {"minute": 10_000, "day": 100_000, "concurrent": 50}
"""Limits for tests that are not about the limits."""


@contextmanager
def running_xero(
    home: Path, faults: FaultPlan | None = None, hang_s: float = 5.0, **limits: Any
) -> Iterator[XeroServer]:
    """A sandbox process for the test (``limits``: ``minute``, ``day``, ``concurrent``);
    stopped (by PID) afterwards."""
    server = start_xero(home, free_port(), faults, hang_s, **limits)
    try:
        yield server
    finally:
        stop_pid(server.pid)
        assert not alive(server.pid), f"sandbox process {server.pid} outlived its stop"


class Api:
    """The organisation's API with a token of its custom connection and its tenant header."""

    def __init__(self, server: XeroServer) -> None:
        self.server = server
        token = httpx.post(
            server.token_url,
            auth=(server.client_id, server.client_secret),
            data={"grant_type": "client_credentials"},
        )
        token.raise_for_status()
        self.http = httpx.Client(
            timeout=10,
            headers={
                "Authorization": f"Bearer {token.json()['access_token']}",
                "xero-tenant-id": server.tenant_id,
            },
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One Accounting API call (``path`` relative to ``.../api.xro/2.0``)."""
        return self.http.request(method, f"{self.server.base_url}/{path}", **kwargs)

    def listed(self, resource: str, **params: Any) -> list[dict[str, Any]]:
        """Every record of a list (one page of up to 1,000, with line items)."""
        answer = self.call("GET", resource, params={"page": 1, "pageSize": 1000, **params})
        answer.raise_for_status()
        return list(answer.json()[resource])

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the sandbox's ``/__sandbox/`` admin routes."""
        return httpx.request(method, f"{self.server.url}/__sandbox/{path}", **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
