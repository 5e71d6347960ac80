"""Reconciliation runs (with a repair run for operators) and the audit trail."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from closeloop.api.console.pages import PREFIX, ConsoleSources, Pages, Refused
from closeloop.domain.access import AccessRole
from closeloop.domain.errors import InputError
from closeloop.reconcile.run import RunRequest

RUNS = f"{PREFIX}/reconcile"
AUDIT_LIMIT = 300


def add_record_routes(router: APIRouter, sources: ConsoleSources, pages: Pages) -> None:
    """``GET /console/reconcile`` (the latest runs), ``GET /console/reconcile/{id}`` (one
    run's drifts), ``POST /console/reconcile`` (form: ``repair`` on or absent; operator role
    and CSRF token) and ``GET /console/audit`` (``entity``: exactly one entity's lines)."""
    reconciler = sources.reconciler

    @router.get(RUNS)
    def runs_page(request: Request) -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        return pages.render(request, "reconcile.html", caller, runs=reconciler.runs(50))

    @router.get(f"{RUNS}/{{run_id}}")
    def run_page(request: Request, run_id: str) -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        run = reconciler.report(int(run_id)) if run_id.isdigit() and len(run_id) < 12 else None
        if run is None:
            return pages.refused(request, Refused(404, f"no reconciliation run {run_id}"), caller)
        return pages.render(request, "run.html", caller, run=run)

    @router.post(RUNS)
    async def run_now(request: Request) -> Response:
        try:
            caller = await pages.acting(request, AccessRole.OPERATOR)
        except Refused as refusal:
            return pages.refused(request, refusal, pages.caller(request))
        form = await request.form()
        repair = form.get("repair") == "on"
        try:
            run = reconciler.run(
                RunRequest(repair=repair, trigger="console", actor=caller.principal.actor)
            )
        except InputError as exc:
            return pages.back(RUNS, problem=str(exc))
        return pages.back(f"{RUNS}/{run.id}", notice=f"run {run.id} finished: {run.status}")

    @router.get(f"{PREFIX}/audit")
    def audit_page(request: Request, entity: str = "") -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        entries = sources.operations.audit_trail(entity.strip()[:300] or None, AUDIT_LIMIT)
        return pages.render(request, "audit.html", caller, entries=entries, entity=entity)
