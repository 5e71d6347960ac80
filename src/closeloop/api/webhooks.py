"""``POST /webhooks/changes``: changes pushed in the hub's own shape, into the inbox.

Every request must be signed with the shared secret (``http.webhook_secret``), in the
manner of Stripe's and Slack's webhook signatures:

- ``X-Closeloop-Timestamp``: the sender's clock, in unix seconds;
- ``X-Closeloop-Signature``: ``v1=<hex>``, where ``<hex>`` is the lowercase hex HMAC-SHA256
  (RFC 2104, FIPS 180-4) keyed with the secret (its UTF-8 bytes) over
  ``"<timestamp>." + raw body`` (the bytes as sent). Several comma-separated ``v1=`` values
  are allowed (a secret being rotated); one matching value is enough.

The signature is compared in constant time (:func:`hmac.compare_digest`) and the timestamp
must lie within ``http.webhook_tolerance_s`` of the hub's clock, either way, so a captured
request cannot be replayed later. :func:`sign` builds both headers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from closeloop.api.limits import BadJson, parse_json
from closeloop.engine.intake import Intake, IntakeError

SIGNATURE_HEADER = "X-Closeloop-Signature"
TIMESTAMP_HEADER = "X-Closeloop-Timestamp"
SCHEME = "v1"


@dataclass(frozen=True, slots=True)
class WebhookSecurity:
    """What the hub demands of requests from outside: ``secret`` of the change webhook
    (``None`` or empty: the webhook answers 403 to everything), its replay window
    ``tolerance_s`` (seconds, either way of the hub's clock) and ``max_body_bytes``, the
    largest request body of any route (413 above it, :mod:`closeloop.api.limits`)."""

    secret: str | None = None
    tolerance_s: int = 300
    max_body_bytes: int = 1_048_576


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The lowercase hex HMAC-SHA256 of ``b"<timestamp>." + body`` keyed with ``secret``."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The two headers that sign ``body`` (the exact bytes to send) at ``timestamp`` (unix
    seconds): ``{"X-Closeloop-Timestamp": "1767225600", "X-Closeloop-Signature":
    "v1=5f0c..."}``."""
    return {
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: f"{SCHEME}={signature(secret, body, timestamp)}",
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: int
) -> str | None:
    """Why the request is not authentic (``None`` when it is): a missing or malformed header,
    a signature that does not match ``body``, or a timestamp more than ``tolerance_s``
    seconds away from ``now`` (unix seconds). ``headers`` are looked up case-insensitively
    by the caller's mapping (Starlette's are)."""
    stamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not stamp or not given:
        return f"the request is not signed: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
    stamp = stamp.strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return f"{TIMESTAMP_HEADER} must be unix seconds (digits only)"
    expected = signature(secret, body, int(stamp))
    offered = [
        value.strip()[len(SCHEME) + 1 :]
        for value in given.split(",")
        if value.strip().startswith(f"{SCHEME}=")
    ]
    if not offered:
        return f"{SIGNATURE_HEADER} must be {SCHEME}=<hex HMAC-SHA256>"
    if not any(hmac.compare_digest(expected.encode(), o.encode()) for o in offered):
        return "the signature does not match the body (check the secret and sign the raw body)"
    if abs(now - int(stamp)) > tolerance_s:
        return (
            f"the timestamp {stamp} is more than {tolerance_s}s away from the hub's clock "
            f"({int(now)}): a stale or replayed request, or a clock to fix"
        )
    return None


def _error(status: int, detail: str, problems: list[str] | None = None) -> JSONResponse:
    """An RFC 9457 problem answer with every change's problem in ``problems``."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "problems": problems or [detail],
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def changes_router(intake: Intake, security: WebhookSecurity | None = None) -> APIRouter:
    """The generic change webhook, taking signed changes into ``intake``."""
    router = APIRouter()
    guard = security or WebhookSecurity()

    @router.post("/webhooks/changes")
    async def receive_changes(request: Request) -> Response:
        """Changes pushed in the hub's own shape: ``[{system, object, external_id, version,
        payload, ...}]``, signed (module docstring). Answers 200 only after the inbox commit;
        403 when no secret is configured; 401 unsigned, badly signed or stale; 400 when the
        body is not JSON (or nested too deep, or a number too long); 422 with every problem
        and nothing stored when any change is bad (an unknown system or object included).
        An ``X-Correlation-Id`` header becomes the correlation id of changes that carry
        none."""
        if not guard.secret:
            return _error(
                403,
                "the change webhook is off: configure http.webhook_secret "
                "(CLOSELOOP_HTTP__WEBHOOK_SECRET) and sign each request",
            )
        body = await request.body()
        now = intake.clock.now().timestamp()
        problem = verify(guard.secret, request.headers, body, now, guard.tolerance_s)
        if problem:
            return _error(401, problem)
        try:
            parsed = parse_json(body)
        except BadJson as exc:
            return _error(400, f"body is not acceptable JSON: {exc}")
        items = parsed if isinstance(parsed, list) else [parsed]
        if not all(isinstance(i, dict) for i in items):
            return _error(422, "each change must be a JSON object")
        correlation_id = request.headers.get("X-Correlation-Id")
        if correlation_id:  # the caller's id follows the change to the last target write
            items = [{"correlation_id": correlation_id, **i} for i in items]
        try:
            result = intake.accept(items)
        except IntakeError as exc:
            return _error(422, f"{len(exc.problems)} problem(s); nothing stored", exc.problems)
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    return router
