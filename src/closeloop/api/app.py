"""The hub's HTTP app (FastAPI): ``/healthz``, ``/readyz``, ``/metrics``, webhooks, ``/api``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from closeloop.api import problems
from closeloop.api.auth import Authenticator, Caller
from closeloop.api.limits import JSON, RequestLimits
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
    app = FastAPI(title="closeloop", version="0.1.0")
    security = webhook or WebhookSecurity()
    app.add_middleware(
        RequestLimits,
        max_body_bytes=security.max_body_bytes,
        media_types=lambda path: _media_types(app, path),
    )
    problems.install(app)
    viewer = Depends(auth.require(AccessRole.VIEWER))
    operator = Depends(auth.require(AccessRole.OPERATOR))

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

    app.include_router(changes_router(intake, security))

    @app.get("/api/status", dependencies=[viewer])
    def status() -> dict[str, Any]:
        """Counts by state: inbox, commands (per system), open exceptions by class."""
        return _jsonable(asdict(operations.stats()))

    @app.get("/api/exceptions", dependencies=[viewer])
    def list_exceptions(status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        """Business exceptions, newest first."""
        return [_jsonable(asdict(e)) for e in operations.list_exceptions(status or None, limit)]

    @app.get("/api/exceptions/{exception_id}", dependencies=[viewer])
    def show_exception(exception_id: int) -> dict[str, Any]:
        """One business exception."""
        return _jsonable(asdict(operations.show(exception_id)))

    @app.post("/api/exceptions/{exception_id}/replay")
    def replay(
        exception_id: int,
        caller: Caller = operator,
        reason: str = Body(default="", embed=True),
    ) -> dict[str, Any]:
        """Replay the exception's command or change."""
        return _jsonable(asdict(operations.replay(exception_id, caller.principal.actor, reason)))

    @app.post("/api/exceptions/{exception_id}/resolve")
    def resolve(
        exception_id: int,
        caller: Caller = operator,
        reason: str = Body(embed=True),
    ) -> dict[str, Any]:
        """Close the exception by hand with a reason."""
        return _jsonable(asdict(operations.resolve(exception_id, caller.principal.actor, reason)))

    @app.post("/api/xref/{canonical_type}/{system}/{external_id}")
    def link(
        canonical_type: str,
        system: str,
        external_id: str,
        caller: Caller = operator,
        target_system: str = Body(embed=True),
        target_id: str = Body(embed=True),
        reason: str = Body(embed=True),
    ) -> dict[str, Any]:
        """Link a record to its partner in another system (``closeloop xref link``); answers
        the flow instances that moved."""
        moved = operations.link(
            canonical_type,
            (system, external_id),
            (target_system, target_id),
            caller.principal.actor,
            reason,
        )
        return {"moved": [list(m) for m in moved]}

    @app.post("/api/invoices/{reference:path}/credit")
    def credit(reference: str, request: CreditRequest, caller: Caller = operator) -> dict[str, Any]:
        """Credit a posted invoice in full or by lines (``closeloop credit``)."""
        return operations.credit(
            reference, request.reason, caller.principal.actor, request.line_keys, request.rebill
        )

    for router in routers:
        app.include_router(router)
    return app


class CreditRequest(BaseModel):
    """A person's request for a credit note: ``reason``, the ``line_keys`` to credit (none:
    the whole invoice) and whether the PSA should un-mark what it billed (``rebill``)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
    line_keys: tuple[str, ...] = Field(default=(), max_length=200)
    rebill: bool = False


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


def _jsonable(value: Any) -> dict[str, Any]:
    encoded: dict[str, Any] = jsonable_encoder(value)
    return encoded
