"""Helpers for tests against the Salesforce sandbox: start one in its own process (real
HTTPS), log in, call the REST API."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from closeloop.connectors.salesforce.client import SalesforceClient, SalesforceCredentials
from closeloop.devtools.sandboxctl import alive
from closeloop.domain.changes import parse_instant
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.salesforce.server import SalesforceServer, start_salesforce
from closeloop.sandboxes.tryton.server import stop_pid
from tests.conftest import free_port

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
CASSETTES = REALDATA / "cumulusci-salesforce-cassettes"


@contextmanager
def running_salesforce(
    home: Path, faults: FaultPlan | None = None, **overrides: Any
) -> Iterator[SalesforceServer]:
    """A sandbox process for the test; stopped (by PID) afterwards."""
    server = start_salesforce(home, free_port(), faults, **overrides)
    try:
        yield server
    finally:
        stop_pid(server.pid)
        assert not alive(server.pid), f"sandbox process {server.pid} outlived its stop"


class Api:
    """A minimal REST caller for tests (the connector's client is what is under test
    elsewhere): logs in with the password flow, answers ``httpx.Response``."""

    def __init__(self, server: SalesforceServer) -> None:
        entry = server.as_json()
        self.entry = entry
        self.http = httpx.Client(
            verify=ssl.create_default_context(cafile=entry["ca_bundle"]), timeout=30
        )
        self.base = f"{entry['instance_url']}/services/data/v{entry['api_version']}"
        self.token = self.login()

    def login(self, **changes: str) -> str:
        form = {
            "grant_type": "password",
            "client_id": self.entry["client_id"],
            "client_secret": self.entry["client_secret"],
            "username": self.entry["username"],
            "password": self.entry["password"],
            **changes,
        }
        response = self.http.post(self.entry["token_url"], data=form)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.http.request(method, url, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"{self.entry['instance_url']}/__sandbox/{path}", **kwargs)

    def close(self) -> None:
        self.http.close()


def client_for(server: SalesforceServer, **kwargs: Any) -> SalesforceClient:
    """The connector's client for ``server``."""
    entry = server.as_json()
    credentials = SalesforceCredentials(
        instance_url=entry["instance_url"],
        client_id=entry["client_id"],
        client_secret=entry["client_secret"],
        token_url=entry["token_url"],
        username=entry["username"],
        password=entry["password"],
        api_version=entry["api_version"],
        ca_bundle=entry["ca_bundle"],
    )
    return SalesforceClient(credentials, **kwargs)


def opportunity(name: str, account_id: str, **fields: Any) -> dict[str, Any]:
    """An opportunity body with the required fields."""
    return {
        "Name": name,
        "AccountId": account_id,
        "StageName": "Prospecting",
        "CloseDate": "2026-06-30",
        **fields,
    }


def wait_past(client: SalesforceClient, stamp: str) -> None:
    """Wait until the org's clock, as ``client`` sees it, is past ``stamp`` (a
    ``SystemModstamp``): a poll reads up to that clock in whole seconds, so a change made in
    the current second is read by the next poll (a condition, not a race to win)."""
    moment = parse_instant(stamp)
    while client.server_now() <= moment:
        time.sleep(0.05)
