"""``POST /webhooks/changes``: changes pushed in the hub's own shape, into the inbox."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from closeloop.engine.intake import Intake, IntakeError


def changes_router(intake: Intake) -> APIRouter:
    """The generic change webhook, taking changes into ``intake``."""
    router = APIRouter()

    @router.post("/webhooks/changes")
    async def receive_changes(request: Request) -> Response:
        """Changes pushed in the hub's own shape: ``[{system, object, external_id, version,
        payload, ...}]``. Answers 200 only after the inbox commit; 422 with every problem and
        nothing stored when any change is bad. An ``X-Correlation-Id`` header becomes the
        correlation id of changes that carry none."""
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"problems": ["body is not JSON"]}, status_code=400)
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(i, dict) for i in items):
            return JSONResponse(
                {"problems": ["each change must be a JSON object"]}, status_code=422
            )
        correlation_id = request.headers.get("X-Correlation-Id")
        if correlation_id:  # the caller's id follows the change to the last target write
            items = [{"correlation_id": correlation_id, **i} for i in items]
        try:
            result = intake.accept(items)
        except IntakeError as exc:
            return JSONResponse({"problems": exc.problems}, status_code=422)
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    return router
