"""``/api/reconcile``: run reconciliation and read its reports over HTTP."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from closeloop.api.auth import Authenticator, Caller
from closeloop.domain.access import AccessRole
from closeloop.domain.errors import NotFoundError
from closeloop.reconcile.run import Reconciler, RunRequest

Domain = Literal["customers", "projects", "time", "invoices", "charges"]


class ReconcileRequest(BaseModel):
    """A run asked over HTTP: its ``domains`` (all by default), whether to ``repair`` what
    has a clear owner, and ``dry_run`` (the repair plan only)."""

    model_config = ConfigDict(extra="forbid")

    domains: tuple[Domain, ...] = Field(
        default=("customers", "projects", "time", "invoices", "charges"), min_length=1
    )
    repair: bool = False
    dry_run: bool = False


class RunNotFound(NotFoundError):
    """No reconciliation run has that id."""


def reconcile_router(reconciler: Reconciler, auth: Authenticator) -> APIRouter:
    """``POST /api/reconcile`` (a run; its report), ``GET /api/reconcile/runs`` (newest
    first, without drifts) and ``GET /api/reconcile/runs/{id}`` (one, with its drifts)."""
    router = APIRouter(dependencies=[Depends(auth.require(AccessRole.VIEWER))])
    operator = Depends(auth.require(AccessRole.OPERATOR))

    @router.post("/api/reconcile")
    def reconcile(request: ReconcileRequest, caller: Caller = operator) -> dict[str, Any]:
        """Run reconciliation now and answer its report."""
        run = reconciler.run(
            RunRequest(
                request.domains,
                request.repair or request.dry_run,
                request.dry_run,
                trigger="api",
                actor=caller.principal.actor,
            )
        )
        return _json(asdict(run))

    @router.get("/api/reconcile/runs")
    def runs(limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first, without their drifts."""
        return [_json(asdict(r)) for r in reconciler.runs(min(max(limit, 1), 500))]

    @router.get("/api/reconcile/runs/{run_id}")
    def show(run_id: int) -> dict[str, Any]:
        """One run with every drift and its explanation."""
        run = reconciler.report(run_id)
        if run is None:
            raise RunNotFound(f"no reconciliation run {run_id}")
        return _json(asdict(run))

    return router


def _json(value: Any) -> dict[str, Any]:
    encoded: dict[str, Any] = jsonable_encoder(value)
    return encoded
