"""API keys: made, checked, listed and revoked; every change audited.

A key reads ``clk_<id>_<secret>``: the id finds the stored row, the secret (32 random bytes,
URL-safe base64) is checked against its SHA-256 in constant time. A fast hash is enough for
a secret of 256 random bits (no dictionary to guess from), as for GitHub's or Stripe's
tokens; the secret itself is shown once, when the key is made, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from closeloop.domain.access import AccessRole, Principal
from closeloop.domain.errors import InputError, NotFoundError
from closeloop.ports.clock import Clock
from closeloop.ports.store import ApiKeyRow, AuditEntry, Store

PREFIX = "clk_"
_TOKEN = re.compile(r"^clk_(\d{1,18})_([A-Za-z0-9_-]{20,128})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOUCH_EVERY = timedelta(minutes=1)
"""How stale a key's ``last_used_at`` may get before a request writes it again."""


class KeyInputError(InputError):
    """A key cannot be made as asked (bad name, role or expiry)."""


class KeyNotFound(NotFoundError):
    """No key has that id."""


class Unauthenticated(Exception):
    """The credential is missing, malformed, unknown, revoked or expired; the message says
    which, for the log (the client gets one answer for all)."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: its row and the one-time ``token`` to hand to the client."""

    row: ApiKeyRow
    token: str


def secret_hash(secret: str) -> str:
    """The hex SHA-256 of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_state(row: ApiKeyRow, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


class Access:
    """What the hub knows of API keys (``closeloop keys``, the API's admin routes, and every
    authenticated request)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def create(
        self, name: str, role: AccessRole | str, actor: str, expires_in: timedelta | None
    ) -> NewKey:
        """Make a key named ``name`` (letters, digits, ``._@-``; up to 64) with ``role``,
        expiring ``expires_in`` from now (``None``: never). Raises :class:`KeyInputError`
        for a bad name, role or a non-positive expiry, and ``ConflictError`` when a live key
        has the name."""
        if not _NAME.match(name):
            raise KeyInputError(
                f"key name {name!r}: use 1 to 64 letters, digits or . _ @ -, starting with a "
                "letter or digit"
            )
        try:
            role = AccessRole(role)
        except ValueError:
            roles = ", ".join(r.value for r in AccessRole)
            raise KeyInputError(f"role {role!r} is not one of {roles}") from None
        if expires_in is not None and expires_in <= timedelta(0):
            raise KeyInputError("a key's expiry must lie in the future")
        now = self.clock.now()
        expires_at = now + expires_in if expires_in is not None else None
        secret = secrets.token_urlsafe(32)
        with self.store.transaction() as tx:
            key_id = tx.add_api_key(name, role, secret_hash(secret), actor, now, expires_at)
            detail = {"role": role.value, "expires_at": expires_at and expires_at.isoformat()}
            tx.audit([AuditEntry(now, actor, "key_create", f"key:{name}", detail, None)])
            row = tx.get_api_key(key_id)
        assert row is not None
        return NewKey(row, f"{PREFIX}{key_id}_{secret}")

    def keys(self) -> list[ApiKeyRow]:
        """Every key, oldest first (hashes only)."""
        with self.store.transaction() as tx:
            return tx.list_api_keys()

    def revoke(self, key_id: int, actor: str) -> ApiKeyRow:
        """Revoke key ``key_id``: it stops working at once, console sessions included.
        Revoking a revoked key changes nothing. Raises :class:`KeyNotFound`."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            row = tx.get_api_key(key_id)
            if row is None:
                raise KeyNotFound(f"no API key {key_id}")
            if tx.revoke_api_key(key_id, now):
                entry = AuditEntry(now, actor, "key_revoke", f"key:{row.name}", {}, None)
                tx.audit([entry])
            revoked = tx.get_api_key(key_id)
        assert revoked is not None
        return revoked

    def end_sessions(self, key_id: int, actor: str) -> None:
        """Sign out: every console session of key ``key_id`` made until now ends (the key
        itself keeps working). Audited."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            row = tx.get_api_key(key_id)
            if row is None:
                raise KeyNotFound(f"no API key {key_id}")
            tx.end_sessions(key_id, now)
            tx.audit([AuditEntry(now, actor, "sign_out", f"key:{row.name}", {}, None)])

    def authenticate(self, token: str) -> Principal:
        """The principal a ``clk_...`` token stands for. Raises :class:`Unauthenticated`
        when it is malformed, unknown, wrong, revoked or expired."""
        match = _TOKEN.match(token.strip())
        if match is None:
            raise Unauthenticated("not a closeloop API key")
        return self.principal(int(match.group(1)), match.group(2))

    def principal(
        self, key_id: int, secret: str | None = None, signed_in_at: datetime | None = None
    ) -> Principal:
        """The principal of key ``key_id`` if it is live (and, given ``secret``, the secret
        matches); used per request, also for console sessions (which carry the key id and
        when they were ``signed_in_at``, not the secret: a session older than the key's last
        sign-out is over). Raises :class:`Unauthenticated`."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            row = tx.get_api_key(key_id)
            if row is None:
                raise Unauthenticated(f"no key {key_id}")
            if secret is not None and not hmac.compare_digest(row.secret_hash, secret_hash(secret)):
                raise Unauthenticated(f"wrong secret for key {key_id}")
            state = key_state(row, now)
            if state != "active":
                raise Unauthenticated(f"key {key_id} is {state}")
            ended = row.sessions_after
            if signed_in_at is not None and ended is not None and signed_in_at <= ended:
                raise Unauthenticated(f"session of key {key_id} was signed out")
            if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
                tx.touch_api_key(key_id, now)
        return Principal(row.id, row.name, row.role, row.expires_at)
