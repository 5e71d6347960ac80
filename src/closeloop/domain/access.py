"""Who may do what through the HTTP API and the console: roles and the principal a request
acts as (an API key, or a console session signed in with one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class AccessRole(StrEnum):
    """The roles an API key carries, each allowing what the ones before it allow:

    - ``viewer``: read status, engagements, exceptions, reconciliation runs and the audit;
    - ``operator``: also replay, resolve, link records, credit invoices, run and repair
      reconciliation;
    - ``admin``: also manage API keys.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, required: AccessRole) -> bool:
        """Whether this role may do what ``required`` may."""
        order = list(AccessRole)
        return order.index(self) >= order.index(required)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: the API key's id and name (the audit actor is
    ``key:<name>``), its role, and when its credential stops working (aware UTC)."""

    key_id: int
    name: str
    role: AccessRole
    expires_at: datetime | None

    @property
    def actor(self) -> str:
        """The audit trail's actor for what this principal does."""
        return f"key:{self.name}"
