"""Starting the Xero sandbox: its state directory (``connection.json`` with the custom
connection's client id and secret, the tenant id and the rate limits, made once) and its
process. The organisation's records live in the process's memory: a restarted sandbox starts
empty (this slice keeps no database).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.process import spawn
from closeloop.sandboxes.xero.app import XeroSandbox, create_app, make_sandbox
from closeloop.sandboxes.xero.limits import Limits


def connection_settings(home: Path, **overrides: Any) -> dict[str, Any]:
    """``home/connection.json`` (client id and secret, tenant id, limits), made the first
    time; ``overrides`` (``minute``, ``day``, ``concurrent``, ``app_minute``) replace
    what it holds."""
    path = home / "connection.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not data:
        data = {
            "client_id": secrets.token_hex(16).upper(),
            "client_secret": secrets.token_urlsafe(36),
            "tenant_id": str(uuid.uuid4()),
            **asdict(Limits()),
        }
    data.update(overrides)
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    path.chmod(0o600)
    return data


def build_sandbox(
    home: Path, faults: FaultPlan | None = None, hang_s: float = 5.0
) -> tuple[XeroSandbox, FastAPI]:
    """The sandbox of ``home`` and its app, in this process."""
    settings = connection_settings(home)
    limits = Limits(**{k: int(settings[k]) for k in asdict(Limits())})
    sandbox = make_sandbox(
        str(settings["client_id"]),
        str(settings["client_secret"]),
        str(settings["tenant_id"]),
        limits,
        faults,
        hang_s,
    )
    return sandbox, create_app(sandbox)


@dataclass
class XeroServer:
    """A running sandbox process and what a client needs to reach it."""

    pid: int
    url: str
    client_id: str
    client_secret: str
    tenant_id: str
    log: Path

    @property
    def base_url(self) -> str:
        """The Accounting API's base URL (``.../api.xro/2.0``)."""
        return f"{self.url}/api.xro/2.0"

    @property
    def token_url(self) -> str:
        """The identity server's token endpoint."""
        return f"{self.url}/connect/token"

    def as_json(self) -> dict[str, Any]:
        """What a client needs, as JSON."""
        return {
            "url": self.url,
            "base_url": self.base_url,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "tenant_id": self.tenant_id,
            "pid": self.pid,
            "log": str(self.log),
        }


def start_xero(
    home: Path, port: int, faults: FaultPlan | None = None, hang_s: float = 5.0, **overrides: Any
) -> XeroServer:
    """Start the sandbox of ``home`` on 127.0.0.1:``port`` and wait until it answers.
    ``overrides`` set limits (see :func:`connection_settings`). Raises
    :class:`~closeloop.sandboxes.process.SandboxStartError`."""
    settings = connection_settings(home, **overrides)
    log = home / "xero.log"
    arguments = ["--home", str(home), "--port", str(port)]
    arguments += ["--faults", json.dumps(asdict(faults or FaultPlan())), "--hang-s", str(hang_s)]
    url = f"http://127.0.0.1:{port}"
    pid = spawn("closeloop.sandboxes.xero", arguments, f"{url}/healthz", log)
    return XeroServer(
        pid,
        url,
        str(settings["client_id"]),
        str(settings["client_secret"]),
        str(settings["tenant_id"]),
        log,
    )
