"""The Salesforce sandbox over HTTP: OAuth 2.0 token endpoint, the REST API with the org's
limits and fault injection, and admin endpoints under ``/__sandbox/`` for tests and the demo.

Every REST call needs ``Authorization: Bearer <access token>`` (``401 INVALID_SESSION_ID``
otherwise, also when the session idled past its timeout), counts against the daily
allocation (reported in ``Sforce-Limit-Info: api-usage=<used>/<max>``; ``403
REQUEST_LIMIT_EXCEEDED`` when used up) and against the concurrency limit. The token endpoint
does not count, as in Salesforce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from closeloop.sandboxes.faults import CutResponse, FaultPlan
from closeloop.sandboxes.salesforce.messaging import Messenger, OutboundRule
from closeloop.sandboxes.salesforce.org import Org
from closeloop.sandboxes.salesforce.records import SalesforceError
from closeloop.sandboxes.salesforce.rest import Rest

_INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


@dataclass
class Sandbox:
    """What the app serves: the org, its REST router, outbound messaging and faults.

    ``hang_s``: how long a ``timeout`` fault holds a request. ``calls`` counts REST calls by
    resource (``query``, ``composite/sobjects``, ...) for benchmarks.
    """

    org: Org
    rest: Rest
    messenger: Messenger
    faults: FaultPlan = field(default_factory=FaultPlan)
    hang_s: float = 5.0
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sessions: dict[str, float] = {}
        self._in_flight = 0
        self._gate = threading.Lock()
        self._rng = random.Random(self.faults.seed)

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (and reseed its generator)."""
        with self._gate:
            self.faults, self._rng = plan, random.Random(plan.seed)

    def draw_fault(self) -> str | None:
        """The fault for one call under the current plan."""
        with self._gate:
            return self.faults.draw(self._rng)

    def issue_token(self) -> str:
        """A new access token (``<org id>!<random>``)."""
        token = f"{self.org.settings.organization_id}!{secrets.token_urlsafe(40)}"
        with self._gate:
            self.sessions[token] = time.monotonic()
        return token

    def check_token(self, header: str | None) -> bool:
        """Whether ``Authorization`` carries a live session; touching it keeps it alive."""
        if not header or not header.startswith(("Bearer ", "OAuth ")):
            return False
        token = header.split(" ", 1)[1].strip()
        now = time.monotonic()
        with self._gate:
            seen = self.sessions.get(token)
            if seen is None or now - seen > self.org.settings.session_timeout_s:
                self.sessions.pop(token, None)
                return False
            self.sessions[token] = now
        return True

    def enter(self) -> bool:
        """Take a concurrency slot; ``False`` when the org's limit is reached."""
        with self._gate:
            if self._in_flight >= self.org.settings.max_concurrent:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        """Give a concurrency slot back."""
        with self._gate:
            self._in_flight -= 1


async def _body(request: Request) -> bytes:
    return await request.body()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if status == 204 or body is None:
        return Response(status_code=status, headers=headers)
    text = json.dumps(body, default=_encode)
    return Response(text, status_code=status, headers=headers, media_type="application/json")


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def create_app(sandbox: Sandbox) -> FastAPI:
    """The sandbox's HTTP app."""
    app = FastAPI(title="closeloop Salesforce sandbox")
    org, settings = sandbox.org, sandbox.org.settings

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/services/oauth2/token")
    def token(raw: bytes = Depends(_body)) -> Response:
        """OAuth 2.0 token endpoint: ``grant_type`` ``password`` (client id and secret,
        username and password) or ``client_credentials``; form encoded."""
        from urllib.parse import parse_qs

        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        grant = form.get("grant_type")
        if grant not in ("password", "client_credentials"):
            return _json(400, {"error": "unsupported_grant_type", "error_description": grant})
        if form.get("client_id") != settings.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), settings.client_secret
        ):
            return _json(
                400,
                {"error": "invalid_client_id", "error_description": "client identifier invalid"},
            )
        if grant == "password" and (
            form.get("username") != settings.username
            or not hmac.compare_digest(form.get("password", ""), settings.password)
        ):
            return _json(
                400, {"error": "invalid_grant", "error_description": "authentication failure"}
            )
        access_token = sandbox.issue_token()
        issued_at = str(int(time.time() * 1000))
        identity = f"{settings.instance_url}/id/{settings.organization_id}/{org.integration_user}"
        digest = hmac.new(
            settings.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
        return _json(
            200,
            {
                "access_token": access_token,
                "instance_url": settings.instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": base64.b64encode(digest).decode(),
            },
        )

    @app.get("/services/data")
    @app.get("/services/data/")
    def versions() -> list[dict[str, str]]:
        version = settings.api_version
        return [{"label": "Winter '25", "url": f"/services/data/v{version}", "version": version}]

    @app.api_route(
        "/services/data/v{version}/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"]
    )
    def rest(version: str, path: str, request: Request, raw: bytes = Depends(_body)) -> Response:
        if not sandbox.check_token(request.headers.get("Authorization")):
            return _json(401, _INVALID_SESSION)
        if not _supported(version, settings.api_version):
            return _json(404, [{"errorCode": "NOT_FOUND", "message": f"API version {version}"}])
        if not sandbox.enter():
            return _json(
                403,
                [
                    {
                        "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                        "errorCode": "REQUEST_LIMIT_EXCEEDED",
                    }
                ],
            )
        try:
            return _serve(sandbox, request.method, path, dict(request.query_params), raw)
        finally:
            sandbox.leave()

    _admin(app, sandbox)
    return app


def _serve(
    sandbox: Sandbox, method: str, path: str, params: dict[str, str], raw: bytes
) -> Response:
    org = sandbox.org
    fault = sandbox.draw_fault()
    if sandbox.faults.latency_s:
        time.sleep(sandbox.faults.latency_s)
    if fault == "timeout":
        time.sleep(sandbox.hang_s)
        return _json(504, [{"errorCode": "REQUEST_RUNNING_TOO_LONG", "message": "timed out"}])
    if fault in ("server_error", "rate_limited"):
        return _json(
            503,
            [{"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable."}],
            {"Retry-After": str(sandbox.faults.retry_after_s)} if fault == "rate_limited" else None,
        )
    try:
        body = json.loads(raw, parse_float=Decimal) if raw else None
    except ValueError as exc:
        return _json(400, [{"errorCode": "JSON_PARSER_ERROR", "message": str(exc)}])
    with org.lock:
        try:
            org.count_request()
        except SalesforceError as exc:
            return _json(exc.status, exc.body())
        resource = _resource(path)
        sandbox.calls[resource] = sandbox.calls.get(resource, 0) + 1
        status, answer = sandbox.rest.handle(method, path, params, body)
        used, allocation = org.api_usage()
    if fault == "lost_response":
        return CutResponse()
    return _json(status, answer, {"Sforce-Limit-Info": f"api-usage={used}/{allocation}"})


def _supported(version: str, newest: str) -> bool:
    """Versions 31.0 up to the org's newest answer (Salesforce keeps old versions alive)."""
    try:
        return 31.0 <= float(version) <= float(newest)
    except ValueError:
        return False


def _resource(path: str) -> str:
    """The resource a call went to, for statistics: ``query``, ``composite/sobjects``, ..."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["composite", "sobjects"]:
        return "composite/sobjects"
    return parts[0] if parts else "root"


def _admin(app: FastAPI, sandbox: Sandbox) -> None:
    """``/__sandbox/``: seed, faults, API usage, sessions, outbound rules, statistics."""
    org = sandbox.org

    @app.post("/__sandbox/seed")
    def seed(data: dict[str, list[dict[str, Any]]]) -> Response:
        with org.lock:
            try:
                return _json(200, {"loaded": org.seed(data)})
            except SalesforceError as exc:
                return _json(exc.status, exc.body())

    @app.put("/__sandbox/faults")
    def set_faults(plan: dict[str, Any]) -> dict[str, Any]:
        sandbox.set_faults(FaultPlan(**plan))
        return {"faults": plan}

    @app.put("/__sandbox/api-usage")
    def set_usage(body: dict[str, int]) -> dict[str, int]:
        with org.lock:
            org.set_api_usage(int(body["used"]))
            used, allocation = org.api_usage()
        return {"used": used, "max": allocation}

    @app.post("/__sandbox/revoke-sessions")
    def revoke() -> dict[str, int]:
        count = len(sandbox.sessions)
        sandbox.sessions.clear()
        return {"revoked": count}

    @app.put("/__sandbox/outbound-messages")
    def set_rules(rules: list[dict[str, Any]]) -> Response:
        try:
            parsed = [
                OutboundRule(**{**r, "fields": tuple(r.get("fields", ("Id",)))}) for r in rules
            ]
            for rule in parsed:
                org.sobject(rule.object)
            sandbox.messenger.set_rules(parsed)
        except (SalesforceError, TypeError) as exc:
            return _json(400, [{"errorCode": "INVALID_INPUT", "message": str(exc)}])
        return _json(200, sandbox.messenger.describe_rules())

    @app.get("/__sandbox/stats")
    def stats() -> dict[str, Any]:
        with org.lock:
            used, allocation = org.api_usage()
            records = {name: len(rows) for name, rows in org.live.items()}
        return {
            "api_usage": {"used": used, "max": allocation},
            "calls": dict(sandbox.calls),
            "records": records,
            "outbound": {
                "pending": sandbox.messenger.pending(),
                "delivered": sandbox.messenger.delivered,
            },
        }
