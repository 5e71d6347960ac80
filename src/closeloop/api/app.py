"""The hub's HTTP app (FastAPI): health, readiness, ``/metrics``, webhooks, ``/api/v1``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from closeloop.api import problems
from closeloop.api.auth import Authenticator
from closeloop.api.limits import JSON, RequestLimits
from closeloop.api.v1 import api_v1
from closeloop.api.webhooks import WebhookSecurity, changes_router
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
    webhook: WebhookSecurity | None = None,
) -> FastAPI:
    """The HTTP app. ``ready`` answers whether the hub can take traffic (and why not);
    ``auth`` checks every caller but of health and the vendor webhooks; ``routers`` are
    connectors' webhook endpoints, mounted as they are; ``webhook``: the change webhook's
    secret and replay window and the body limit of every route (:mod:`closeloop.api.limits`;
    default: no secret, so the change webhook answers 403). Errors are RFC 9457 problem
    details (:mod:`closeloop.api.problems`)."""
    # no public /docs or /openapi.json: the document is served to a viewer key
    app = FastAPI(
        title="closeloop", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None
    )
    security = webhook or WebhookSecurity()
    app.add_middleware(
        RequestLimits,
        max_body_bytes=security.max_body_bytes,
        media_types=lambda path: _media_types(app, path),
    )
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

    @app.get("/api/v1/openapi.json", dependencies=[viewer], include_in_schema=False)
    def openapi_document() -> dict[str, Any]:
        """The OpenAPI document of the hub's HTTP API."""
        return app.openapi()

    @app.get("/metrics", dependencies=[viewer])
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(changes_router(intake, security))

    app.include_router(api_v1(operations, auth))

    for router in routers:
        app.include_router(router)
    return app


def _media_types(app: FastAPI, path: str) -> frozenset[str] | None:
    """The media types the POST/PUT/PATCH route at ``path`` takes, from the app's OpenAPI
    document: those of its request body (``openapi_extra`` of a route that reads its body
    itself), else JSON; ``None`` when no such route matches."""
    for pattern, types in _body_routes(app):
        if pattern.fullmatch(path):
            return types
    return None


def _body_routes(app: FastAPI) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """Each POST/PUT/PATCH path of the OpenAPI document (``{param}``: one path segment)
    with its request media types; computed once, at the first request."""
    cached: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "body_routes", None
    )
    if cached is not None:
        return cached
    found = []
    for template, operations in app.openapi().get("paths", {}).items():
        types: set[str] = set()
        for method in ("post", "put", "patch"):
            if method in operations:
                content = (operations[method].get("requestBody") or {}).get("content") or {}
                types.update([str(k).lower() for k in content] or [JSON])
        if types:
            parts = re.split(r"\{[^}]+\}", template)
            pattern = re.compile("[^/]+".join(re.escape(p) for p in parts))
            found.append((pattern, frozenset(types)))
    app.state.body_routes = found
    return found
