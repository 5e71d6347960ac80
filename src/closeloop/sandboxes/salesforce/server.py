"""Starting the Salesforce sandbox: its state directory, TLS certificate and process.

A home directory holds ``org.json`` (the org's settings and credentials, made once with random
secrets), ``ca.pem`` and ``server.pem`` (a local certificate authority and the server's
certificate for 127.0.0.1 and localhost, made with trustme), ``org.db`` (records) and
``outbound.db`` (queued outbound messages). A custom ``schema.yaml`` in the home replaces the
shipped schema file.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.process import spawn
from closeloop.sandboxes.salesforce.app import Sandbox, create_app
from closeloop.sandboxes.salesforce.messaging import Messenger
from closeloop.sandboxes.salesforce.org import Org, OrgSettings
from closeloop.sandboxes.salesforce.query import Queries
from closeloop.sandboxes.salesforce.rest import Rest
from closeloop.sandboxes.salesforce.schema import SHIPPED_SCHEMA, load_schema


def org_settings(home: Path, port: int | None = None, **overrides: Any) -> OrgSettings:
    """The org's settings from ``home/org.json``, made with random credentials the first
    time; ``port`` sets the instance URL, ``overrides`` any other field. Saved back."""
    path = home / "org.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not data:
        data = asdict(
            OrgSettings(
                client_id="3MVG9closeloop" + secrets.token_hex(8),
                client_secret=secrets.token_hex(24),
                password=secrets.token_urlsafe(18),
            )
        )
    if port is not None:
        data["instance_url"] = f"https://127.0.0.1:{port}"
    data.update(overrides)
    known = {f.name for f in fields(OrgSettings)}
    settings = OrgSettings(**{k: v for k, v in data.items() if k in known})
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**data, **asdict(settings)}, indent=2) + "\n")
    path.chmod(0o600)
    return settings


def certificates(home: Path) -> tuple[Path, Path]:
    """``(ca bundle, server certificate chain and key)`` under ``home``, made once."""
    ca_path, server_path = home / "ca.pem", home / "server.pem"
    if not (ca_path.exists() and server_path.exists()):
        import trustme

        ca = trustme.CA(organization_name="closeloop sandbox CA")
        server = ca.issue_cert("127.0.0.1", "localhost")
        home.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(ca_path))
        server.private_key_and_cert_chain_pem.write_to_path(str(server_path))
        server_path.chmod(0o600)
    return ca_path, server_path


def build_sandbox(
    home: Path, faults: FaultPlan | None = None, hang_s: float = 5.0
) -> tuple[Sandbox, FastAPI]:
    """The sandbox of ``home`` and its app (in this process; :func:`start_salesforce` runs
    it in its own)."""
    settings = org_settings(home)
    schema_file = home / "schema.yaml"
    schema = load_schema(schema_file if schema_file.exists() else SHIPPED_SCHEMA)
    extra = json.loads((home / "org.json").read_text())
    messenger = Messenger(
        home / "outbound.db",
        settings.organization_id,
        settings.instance_url,
        retry_base_s=float(extra.get("outbound_retry_base_s", 15.0)),
    )
    org = Org(home / "org.db", schema, settings, on_write=messenger.on_write)
    sandbox = Sandbox(org, Rest(org, Queries(org)), messenger, faults or FaultPlan(), hang_s)
    return sandbox, create_app(sandbox)


@dataclass
class SalesforceServer:
    """A running sandbox process and what a client needs to reach it."""

    pid: int
    settings: OrgSettings
    ca_bundle: Path
    log: Path

    def as_json(self) -> dict[str, Any]:
        """The ``salesforce`` entry of ``sandbox.json``."""
        s = self.settings
        return {
            "instance_url": s.instance_url,
            "token_url": f"{s.instance_url}/services/oauth2/token",
            "client_id": s.client_id,
            "client_secret": s.client_secret,
            "username": s.username,
            "password": s.password,
            "ca_bundle": str(self.ca_bundle),
            "organization_id": s.organization_id,
            "api_version": s.api_version,
            "url": s.instance_url,
            "pid": self.pid,
            "log": str(self.log),
        }


def start_salesforce(
    home: Path,
    port: int,
    faults: FaultPlan | None = None,
    timeout_s: float = 30.0,
    **overrides: Any,
) -> SalesforceServer:
    """Start the sandbox of ``home`` on ``port`` and wait until it answers over HTTPS.
    ``overrides`` set org settings (``daily_api_requests``, ``max_concurrent``, ...). Raises
    :class:`~closeloop.sandboxes.process.SandboxStartError` when it does not come up."""
    settings = org_settings(home, port, **overrides)
    ca_bundle, server_pem = certificates(home)
    log = home / "salesforce.log"
    arguments = [
        "--home",
        str(home),
        "--port",
        str(port),
        "--certfile",
        str(server_pem),
        "--keyfile",
        str(server_pem),
        "--faults",
        json.dumps(asdict(faults or FaultPlan())),
    ]
    pid = spawn(
        "closeloop.sandboxes.salesforce",
        arguments,
        f"{settings.instance_url}/healthz",
        log,
        ca_bundle=ca_bundle,
        timeout_s=timeout_s,
    )
    return SalesforceServer(pid, settings, ca_bundle, log)
