"""``/api/v1/reconcile``: run reconciliation and read its reports over HTTP."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from closeloop.api.auth import Authenticator, Caller
from closeloop.api.problems import PROBLEM_RESPONSES
from closeloop.api.v1 import PREFIX
from closeloop.api.v1.models import MAX_ID, ReconcileRequest, ReconcileRun
from closeloop.domain.access import AccessRole
from closeloop.domain.errors import NotFoundError
from closeloop.ports.store import ReconcileRun as Run
from closeloop.reconcile.run import Reconciler, RunRequest


class RunNotFound(NotFoundError):
    """No reconciliation run has that id."""


def run_model(run: Run) -> ReconcileRun:
    """``run`` (as kept, with its id) as the API answers it."""
    return ReconcileRun.model_validate(asdict(run))


def reconcile_router(reconciler: Reconciler, auth: Authenticator) -> APIRouter:
    """``POST /api/v1/reconcile`` (operator: a run; its report), ``GET
    /api/v1/reconcile/runs`` (newest first, without drifts) and ``GET
    /api/v1/reconcile/runs/{id}`` (one, with its drifts)."""
    router = APIRouter(
        prefix=f"{PREFIX}/reconcile",
        tags=["reconcile"],
        dependencies=[Depends(auth.require(AccessRole.VIEWER))],
        responses=PROBLEM_RESPONSES,
    )
    operator = Depends(auth.require(AccessRole.OPERATOR))

    @router.post("", response_model=ReconcileRun)
    def reconcile(request: ReconcileRequest, caller: Caller = operator) -> ReconcileRun:
        """Run reconciliation now and answer its report (with ``repair``: repairs sent
        through the outbox; ``dry_run``: planned only)."""
        run = reconciler.run(
            RunRequest(
                request.domains,
                request.repair or request.dry_run,
                request.dry_run,
                trigger="api",
                actor=caller.principal.actor,
            )
        )
        return run_model(run)

    @router.get("/runs", response_model=list[ReconcileRun])
    def runs(limit: Annotated[int, Query(ge=1, le=500)] = 20) -> list[ReconcileRun]:
        """The latest runs, newest first, without their drifts."""
        return [run_model(r) for r in reconciler.runs(limit)]

    @router.get("/runs/{run_id}", response_model=ReconcileRun)
    def show(run_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ReconcileRun:
        """One run with every drift and its explanation (404 when there is none)."""
        run = reconciler.report(run_id)
        if run is None:
            raise RunNotFound(f"no reconciliation run {run_id}")
        return run_model(run)

    return router
