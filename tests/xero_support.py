"""Running the Xero sandbox in tests, and calling it with the Accounting API as a person in
Xero would (never through the connector under test); for the sandbox's own tests, small
builders of contacts, invoices and lines, and validation of answers against Xero's
Accounting OpenAPI description in ../shared/realdata (skipped, with the reason, when
absent)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from closeloop.devtools.sandboxctl import alive
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.tryton.server import stop_pid
from closeloop.sandboxes.xero.server import XeroServer, start_xero
from tests.conftest import free_port

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
OPENAPI = REALDATA / "xero-openapi" / "xero_accounting.yaml"
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


def token(server: XeroServer) -> str:
    """A client-credentials token of the sandbox's custom connection (checked as Xero
    issues them: Bearer, 1,800 s)."""
    answer = httpx.post(
        server.token_url,
        auth=(server.client_id, server.client_secret),
        data={"grant_type": "client_credentials"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] == 1800 and answer.json()["token_type"] == "Bearer"
    return str(answer.json()["access_token"])


def body(response: httpx.Response) -> Any:
    """The answer with money as Decimal, as a client that keeps pennies reads it."""
    return json.loads(response.content, parse_float=Decimal)


def contact(api: Api, name: str, **fields: Any) -> str:
    answer = api.call("PUT", "Contacts", json={"Contacts": [{"Name": name, **fields}]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["Contacts"][0]["ContactID"])


def invoice(api: Api, contact_id: str, lines: list[dict[str, Any]], **fields: Any) -> Any:
    element = {"Type": "ACCREC", "Contact": {"ContactID": contact_id}, "LineItems": lines}
    answer = api.call("PUT", "Invoices", json={"Invoices": [element | fields]})
    assert answer.status_code == 200, answer.text
    return body(answer)["Invoices"][0]


def line(amount: str, tax_type: str = "OUTPUT2", quantity: str = "1") -> dict[str, Any]:
    return {
        "Description": "Consulting",
        "Quantity": quantity,
        "UnitAmount": amount,
        "AccountCode": "200",
        "TaxType": tax_type,
    }


def load_openapi() -> Any:
    """Xero's Accounting OpenAPI description (the test is skipped when it is absent)."""
    if not OPENAPI.is_file():
        pytest.skip(f"{OPENAPI} is absent: Xero conformance tests skipped")
    from openapi_core import Config, OpenAPI

    return OpenAPI.from_file_path(str(OPENAPI), config=Config(spec_validator_cls=None))


def validate(openapi: Any, method: str, path: str, response: httpx.Response) -> None:
    """Validate one answer against Xero's OpenAPI description (raises when it does not fit)."""
    from openapi_core.testing import MockRequest, MockResponse

    request = MockRequest("https://api.xero.com", method.lower(), f"/api.xro/2.0/{path}")
    answer = MockResponse(
        response.content, status_code=response.status_code, content_type="application/json"
    )
    openapi.validate_response(request, answer)
