"""API keys of the HTTP API and the console (hashes only, never a secret)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from closeloop.domain.access import AccessRole
from closeloop.domain.errors import ConflictError
from closeloop.ports.store import ApiKeyRow
from closeloop.store import tables as t


class KeyNameTaken(ConflictError):
    """A key that is not revoked already has this name."""


def _row_to_key(r: Any) -> ApiKeyRow:
    return ApiKeyRow(
        id=r.id,
        name=r.name,
        role=AccessRole(r.role),
        secret_hash=r.secret_hash,
        created_at=r.created_at,
        created_by=r.created_by,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        last_used_at=r.last_used_at,
        sessions_after=r.sessions_after,
    )


class AccessRepository:
    """API key operations of :class:`~closeloop.ports.store.UnitOfWork`."""

    conn: Connection

    def add_api_key(
        self,
        name: str,
        role: AccessRole,
        secret_hash: str,
        created_by: str,
        now: datetime,
        expires_at: datetime | None,
    ) -> int:
        k = t.api_keys
        taken = self.conn.execute(select(k.c.id).where(k.c.name == name)).first()
        if taken is not None:
            raise KeyNameTaken(
                f"a key named {name!r} exists or existed: pick another name (names stay "
                "unique, so the audit trail's key:<name> names one key)"
            )
        result = self.conn.execute(
            insert(k).values(
                name=name,
                role=role.value,
                secret_hash=secret_hash,
                created_at=now,
                created_by=created_by,
                expires_at=expires_at,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def get_api_key(self, key_id: int) -> ApiKeyRow | None:
        row = self.conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        return _row_to_key(row) if row is not None else None

    def list_api_keys(self) -> list[ApiKeyRow]:
        rows = self.conn.execute(select(t.api_keys).order_by(t.api_keys.c.id))
        return [_row_to_key(r) for r in rows]

    def revoke_api_key(self, key_id: int, now: datetime) -> bool:
        k = t.api_keys
        result = self.conn.execute(
            update(k).where(k.c.id == key_id, k.c.revoked_at.is_(None)).values(revoked_at=now)
        )
        return bool(result.rowcount)

    def touch_api_key(self, key_id: int, now: datetime) -> None:
        k = t.api_keys
        self.conn.execute(update(k).where(k.c.id == key_id).values(last_used_at=now))

    def end_sessions(self, key_id: int, now: datetime) -> None:
        k = t.api_keys
        self.conn.execute(update(k).where(k.c.id == key_id).values(sessions_after=now))
