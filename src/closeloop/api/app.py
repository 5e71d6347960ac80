"""The hub's HTTP app (FastAPI): health, readiness, ``/metrics``, webhooks, ``/api/v1``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from closeloop.api import problems
from closeloop.api.auth import Authenticator
from closeloop.api.v1 import api_v1
from closeloop.api.webhooks import changes_router
from closeloop.domain.access import AccessRole
from closeloop.engine.intake import Intake
from closeloop.engine.operations import Operations


def create_app(
    intake: Intake,
    operations: Operations,
    metrics_registry: CollectorRegistry,
    ready: Callable[[], tuple[bool, str]],
    auth: Authenticator,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The HTTP app. ``ready`` answers whether the hub can take traffic (and why not);
    ``auth`` checks every caller but of health and the vendor webhooks; ``routers`` are
    connectors' webhook endpoints, mounted as they are. Errors are RFC 9457 problem
    details (:mod:`closeloop.api.problems`)."""
    app = FastAPI(title="closeloop", version="0.1.0")
    problems.install(app)
    viewer = Depends(auth.require(AccessRole.VIEWER))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        """The database answers and its schema is current: 200, else 503 with the reason."""
        ok, reason = ready()
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @app.get("/metrics", dependencies=[viewer])
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(changes_router(intake))

    app.include_router(api_v1(operations, auth))

    for router in routers:
        app.include_router(router)
    return app
