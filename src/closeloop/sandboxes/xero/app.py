"""The Xero sandbox over HTTP: the identity server (``/connect/token``, ``/connections``),
the Accounting API under ``/api.xro/2.0/`` (:mod:`.api`) with Xero's authentication, rate
limits (:mod:`.limits`) and ``Idempotency-Key``, the shared fault injection, and admin
routes under ``/__sandbox/``.

``Idempotency-Key`` (Xero's "Idempotent requests" page; at most 128 characters) on a
``PUT``/``POST``: the first answer (200 or 4xx) is kept per tenant and key, and a repeat
with the same key is answered that answer again without writing. Xero does not say what a
repeat with a different body gets: the sandbox replays the first answer all the same.
Answers cut by an injected fault are not kept (nothing was answered), but a
``lost_response`` fault's write is, as with Xero, where the write happened.

Admin (no authentication, 127.0.0.1 only): ``GET /__sandbox/calls`` (calls by route,
throttled calls by problem, peak calls in a minute and in flight, limits),
``PUT /__sandbox/limits`` (``{"minute", "day", "concurrent", "app_minute"}``),
``PUT /__sandbox/faults`` (a :class:`~closeloop.sandboxes.faults.FaultPlan`),
``POST /__sandbox/clock`` (``{"advance_s": seconds}``: moves the sandbox's clock, for
token expiry and the rate windows); ``PUT|GET|DELETE /__sandbox/webhook``: the webhook
subscription (:mod:`.webhooks`).
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response

from closeloop.sandboxes.faults import CutResponse, FaultPlan
from closeloop.sandboxes.xero import api
from closeloop.sandboxes.xero.auth import Identity
from closeloop.sandboxes.xero.limits import Clock, Limiter, Limits
from closeloop.sandboxes.xero.org import Organisation
from closeloop.sandboxes.xero.webhooks import Webhooks, install
from closeloop.sandboxes.xero.wire import XeroError, dumps, loads, parse_since

BASE = "/api.xro/2.0"


@dataclass
class XeroSandbox:
    """What the app serves: one organisation, its custom connection, limits and faults."""

    org: Organisation
    identity: Identity
    limiter: Limiter
    faults: FaultPlan = field(default_factory=FaultPlan)
    hang_s: float = 5.0
    faults_injected: dict[str, int] = field(default_factory=dict)
    replays: int = 0
    webhooks: Webhooks = field(default_factory=Webhooks)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed)
        self._gate = threading.Lock()
        self.answers: dict[str, tuple[int, str]] = {}

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (and reseed)."""
        with self._gate:
            self.faults, self._rng = plan, random.Random(plan.seed)

    def draw_fault(self) -> str | None:
        """The fault for one call (counted in :attr:`faults_injected`)."""
        with self._gate:
            fault = self.faults.draw(self._rng)
            if fault is not None:
                self.faults_injected[fault] = self.faults_injected.get(fault, 0) + 1
            return fault


def make_sandbox(
    client_id: str,
    client_secret: str,
    tenant_id: str,
    limits: Limits | None = None,
    faults: FaultPlan | None = None,
    hang_s: float = 5.0,
) -> XeroSandbox:
    """A sandbox whose organisation, tokens and limits share one clock."""
    clock = Clock()
    org = Organisation(tenant_id, clock=lambda: datetime.fromtimestamp(clock.now(), UTC))
    identity = Identity(client_id, client_secret, tenant_id, org.name, clock)
    return XeroSandbox(
        org, identity, Limiter(limits or Limits(), clock), faults or FaultPlan(), hang_s
    )


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status, headers, media_type="application/json")


def create_app(sandbox: XeroSandbox) -> FastAPI:
    """The sandbox's HTTP app."""
    app = FastAPI(title="closeloop Xero sandbox")
    identity, limiter = sandbox.identity, sandbox.limiter

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/connect/token")
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(errors="replace")))
        status, body = identity.issue(request.headers.get("Authorization", ""), form)
        return _json(status, body, {"Cache-Control": "no-store"})

    @app.get("/connections")
    def connections(request: Request) -> Response:
        denied = identity.refused(request.headers.get("Authorization", ""), identity.tenant_id)
        if denied is not None:
            return _json(*denied)
        return _json(200, identity.connections())

    @app.api_route(BASE + "/{path:path}", methods=["GET", "PUT", "POST"])
    async def accounting(path: str, request: Request) -> Response:
        denied = identity.refused(
            request.headers.get("Authorization", ""), request.headers.get("xero-tenant-id")
        )
        if denied is not None:
            return _json(*denied, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        resource = path.split("/")[0] or "/"
        refusal = limiter.admit(f"{request.method} {resource}")
        if refusal is not None:
            headers = {
                "Retry-After": str(refusal.retry_after_s),
                "X-Rate-Limit-Problem": refusal.problem,
                **limiter.remaining(),
            }
            return _json(429, {"Title": "Too Many Requests", "Status": 429}, headers)
        try:
            return await _answer(sandbox, request, path)
        finally:
            limiter.release()

    _admin(app, sandbox)
    return app


async def _answer(sandbox: XeroSandbox, request: Request, path: str) -> Response:
    """An admitted Accounting call: faults, idempotent replay, the resource's answer."""
    fault = sandbox.draw_fault()
    if sandbox.faults.latency_s:
        await asyncio.sleep(sandbox.faults.latency_s)
    if fault == "timeout":
        await asyncio.sleep(sandbox.hang_s)
        return _json(504, {"Title": "Gateway Timeout", "Status": 504})
    if fault == "server_error":
        return _json(503, {"Title": "Service Unavailable", "Status": 503})
    if fault == "rate_limited":
        retry = str(max(1, round(sandbox.faults.retry_after_s)))
        headers = {"Retry-After": retry, "X-Rate-Limit-Problem": "minute"}
        return _json(429, {"Title": "Too Many Requests", "Status": 429}, headers)
    key = request.headers.get("Idempotency-Key") if request.method != "GET" else None
    if key is not None and len(key) > 128:
        status, text = (
            400,
            dumps(
                {
                    "ErrorNumber": 14,
                    "Type": "PostDataInvalidException",
                    "Message": "Idempotency-Key is longer than 128 characters",
                }
            ),
        )
        return Response(text, status, media_type="application/json")
    raw = await request.body()
    org = sandbox.org
    with org.lock:
        if key is not None and key in sandbox.answers:
            sandbox.replays += 1
            status, text = sandbox.answers[key]
        else:
            try:
                since_header = request.headers.get("If-Modified-Since")
                since = parse_since(since_header) if since_header else None
                body = loads(raw) if request.method != "GET" else None
                params = dict(request.query_params)
                mark = sandbox.webhooks.mark(org) if request.method != "GET" else None
                status, answer = api.route(org, request.method, path, params, body, since)
                sandbox.webhooks.changed(org, mark)
            except XeroError as exc:
                status, answer = exc.status, exc.body
            text = dumps(answer)
            if key is not None:
                sandbox.answers[key] = (status, text)
    if fault == "lost_response":
        return CutResponse()
    return Response(text, status, sandbox.limiter.remaining(), media_type="application/json")


def _admin(app: FastAPI, sandbox: XeroSandbox) -> None:
    """``/__sandbox/``: calls, limits, faults, clock, webhook."""

    @app.get("/__sandbox/calls")
    def calls() -> dict[str, Any]:
        return sandbox.limiter.stats() | {
            "faults_injected": dict(sandbox.faults_injected),
            "idempotent_replays": sandbox.replays,
        }

    @app.put("/__sandbox/limits")
    def set_limits(body: dict[str, int]) -> dict[str, Any]:
        sandbox.limiter.limits = Limits(**{**vars(sandbox.limiter.limits), **body})
        return vars(sandbox.limiter.limits).copy()

    @app.put("/__sandbox/faults")
    def set_faults(plan: dict[str, Any]) -> dict[str, Any]:
        sandbox.set_faults(FaultPlan(**plan))
        return plan

    @app.post("/__sandbox/clock")
    def advance(body: dict[str, float]) -> dict[str, float]:
        sandbox.limiter.clock.offset_s += float(body.get("advance_s", 0))
        return {"offset_s": sandbox.limiter.clock.offset_s}

    install(app, sandbox.webhooks)
