"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the HTTP API answers is an object with ``type`` (``about:blank``: the status
code says it all, RFC 9457 §4.2.1), ``title`` (the status phrase), ``status``, ``detail``
(what a person can act on) and, for invalid input, ``errors`` (each field's problem, as
pydantic reports it). Our own errors map by type (:mod:`closeloop.domain.errors`), never by
message text; anything unexpected is a 500 whose detail names no internals.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from closeloop.domain.errors import ConflictError, InputError, NotFoundError

log = structlog.get_logger(__name__)
MEDIA_TYPE = "application/problem+json"
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (InputError, 422),
    (NotFoundError, 404),
    (ConflictError, 409),
)
"""HTTP status by error type (the tree in :mod:`closeloop.domain.errors`)."""


class Problem(BaseModel):
    """An RFC 9457 problem details object, as the OpenAPI document describes errors."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "content": {MEDIA_TYPE: {"schema": Problem.model_json_schema()}},
        "description": HTTPStatus(code).phrase,
    }
    for code in (400, 401, 403, 404, 409, 413, 415, 422)
}
"""``responses=`` for routes: the error answers in the OpenAPI document."""


def problem(
    status: int,
    detail: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> Response:
    """A problem-details response for ``status`` with ``detail``."""
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        errors=errors,
    )
    return JSONResponse(
        jsonable_encoder(body, exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem details."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, detail, request, dict(exc.headers or {}))

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem(422, f"invalid request: {where}", request, errors=errors)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    for error_type, status_code in ERROR_STATUS:

        async def ours(
            request: Request, exc: Exception, status_code: int = status_code
        ) -> Response:
            return problem(status_code, str(exc), request)

        app.add_exception_handler(error_type, ours)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("http_unexpected_error", path=request.url.path, error=type(exc).__name__)
        return problem(500, "the hub failed on this request; its log has the details", request)

    app.add_exception_handler(Exception, unexpected)
