"""``GET /api/v1/audit``: the audit trail, newest first, paged."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from closeloop.api.v1.models import MAX_ID, NO_NUL, AuditItem, AuditPage
from closeloop.engine.operations import Operations


def router(operations: Operations) -> APIRouter:
    """The audit route (viewer)."""
    routes = APIRouter(tags=["audit"])

    @routes.get("/audit", response_model=AuditPage)
    def audit(
        entity: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=500,
                pattern=NO_NUL,
                description="only entries about this entity, e.g. invoice:SF-1/2026-08",
            ),
        ] = None,
        before_id: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="the previous page's next")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> AuditPage:
        """Who did what, newest first: every replay, resolution, link, credit, key made or
        revoked, and the hub's own decisions."""
        rows = operations.audit_trail(entity, limit + 1, before_id)
        items = [AuditItem.model_validate(asdict(r)) for r in rows[:limit]]
        return AuditPage(items=items, next=items[-1].id if len(rows) > limit else None)

    return routes
