"""``/api/v1/keys``: API keys listed, made and revoked (admin)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Depends, Path

from closeloop.api.auth import Authenticator, Caller
from closeloop.api.v1.models import MAX_ID, ApiKey, KeyRequest, NewApiKey
from closeloop.domain.access import AccessRole
from closeloop.engine.access import key_state
from closeloop.ports.store import ApiKeyRow

State = Literal["active", "expired", "revoked"]


def key_item(row: ApiKeyRow, now: datetime) -> ApiKey:
    """``row`` as the API lists it (no hash, no secret), its state as of ``now``."""
    return ApiKey(
        id=row.id,
        name=row.name,
        role=row.role,
        state=cast(State, key_state(row, now)),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def router(auth: Authenticator) -> APIRouter:
    """The key routes, each for an admin key only."""
    access = auth.access
    admin = Depends(auth.require(AccessRole.ADMIN))
    routes = APIRouter(prefix="/keys", tags=["keys"], dependencies=[admin])

    @routes.get("", response_model=list[ApiKey])
    def listed() -> list[ApiKey]:
        """Every key, oldest first, with its role, state and last use (never a secret)."""
        now = access.clock.now()
        return [key_item(r, now) for r in access.keys()]  # noqa: SIM118 (not a dict)

    @routes.post("", response_model=NewApiKey, status_code=201)
    def create(body: KeyRequest, caller: Caller = admin) -> NewApiKey:
        """Make a key; its ``token`` is in this answer only (it is stored hashed). 409 when
        a key has the name."""
        days = body.expires_days
        expires_in = timedelta(days=days) if days is not None else None
        made = access.create(body.name, body.role, caller.principal.actor, expires_in)
        return NewApiKey(key=key_item(made.row, access.clock.now()), token=made.token)

    @routes.delete("/{key_id}", response_model=ApiKey)
    def revoke(key_id: Annotated[int, Path(ge=1, le=MAX_ID)], caller: Caller = admin) -> ApiKey:
        """Revoke a key: it and its console sessions stop working at once (revoking a
        revoked key changes nothing). 404 for an unknown key."""
        row = access.revoke(key_id, caller.principal.actor)
        return key_item(row, access.clock.now())

    return routes
