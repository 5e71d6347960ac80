"""OAuth 2.0 client credentials ("custom connections") as Xero's identity server answers.

Follows ``xero-identity.yaml`` and Xero's "Custom connections" page: ``POST /connect/token``
with HTTP Basic ``client_id:client_secret`` and the form ``grant_type=client_credentials``
answers ``{"access_token", "expires_in": 1800, "token_type": "Bearer", "scope"}``; a wrong
client is 400 ``{"error": "invalid_client"}``, another grant 400
``{"error": "unsupported_grant_type"}``. ``GET /connections`` lists the one tenant the
connection is authorised for. An Accounting call without a valid bearer token is 401
(``Detail`` ``TokenExpired: ...`` once expired), without the tenant's ``xero-tenant-id``
403 (``AuthorizationUnsuccessful``; the exact words are the sandbox's choice).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from closeloop.sandboxes.xero.limits import Clock

SCOPES = "accounting.transactions accounting.contacts accounting.settings"


@dataclass
class Identity:
    """The custom connection: its client, the tenant it reaches and the tokens issued."""

    client_id: str
    client_secret: str
    tenant_id: str
    tenant_name: str
    clock: Clock = field(default_factory=Clock)
    ttl_s: int = 1800
    tokens: dict[str, float] = field(default_factory=dict)
    connection_id: str = "6a0b5e8e-0000-4000-8000-000000000001"

    def issue(self, authorization: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and body."""
        try:
            scheme, _, encoded = authorization.partition(" ")
            client, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            scheme, client, secret = "", "", ""
        if scheme.lower() != "basic":
            client, secret = form.get("client_id", ""), form.get("client_secret", "")
        if not (
            secrets.compare_digest(client, self.client_id)
            and secrets.compare_digest(secret, self.client_secret)
        ):
            return 400, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock.now() + self.ttl_s
        scope = form.get("scope") or SCOPES
        return 200, {
            "access_token": token,
            "expires_in": self.ttl_s,
            "token_type": "Bearer",
            "scope": scope,
        }

    def refused(self, authorization: str, tenant: str | None) -> tuple[int, dict[str, Any]] | None:
        """The 401/403 of a call that may not reach the tenant, or ``None``."""
        scheme, _, token = authorization.partition(" ")
        expires = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expires is None:
            return 401, _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        if self.clock.now() >= expires:
            moment = datetime.fromtimestamp(expires, UTC).strftime("%m/%d/%Y %H:%M:%S")
            return 401, _problem(401, "Unauthorized", f"TokenExpired: token expired at {moment}")
        if tenant != self.tenant_id:
            return 403, _problem(403, "Forbidden", "AuthorizationUnsuccessful")
        return None

    def connections(self) -> list[dict[str, Any]]:
        """``GET /connections``: the tenant this connection reaches."""
        created = datetime(2026, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "")
        return [
            {
                "id": self.connection_id,
                "authEventId": self.connection_id,
                "tenantId": self.tenant_id,
                "tenantType": "ORGANISATION",
                "tenantName": self.tenant_name,
                "createdDateUtc": created,
                "updatedDateUtc": created,
            }
        ]


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {
        "Type": None,
        "Title": title,
        "Status": status,
        "Detail": detail,
        "Instance": secrets.token_hex(16),
        "Extensions": {},
    }
