"""``GET /api/v1/status``: counts by state."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from closeloop.api.v1.models import Status
from closeloop.engine.operations import Operations


def router(operations: Operations) -> APIRouter:
    """The status route (viewer)."""
    routes = APIRouter(tags=["status"])

    @routes.get("/status", response_model=Status)
    def status() -> Status:
        """Counts by state: inbox changes, commands (in all and per target system), open
        exceptions by class, and the arrival of the oldest pending change."""
        return Status.model_validate(asdict(operations.stats()))

    return routes
