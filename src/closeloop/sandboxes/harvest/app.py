"""The Harvest sandbox over HTTP: the v2 endpoints the hub needs, Harvest's authentication
headers, paging, ``updated_since``, its error answers and its rate limit, plus admin endpoints
under ``/__sandbox/``.

Every ``/v2`` call needs ``Authorization: Bearer <token>`` and ``Harvest-Account-Id`` (401
``invalid_token`` / 403 otherwise) and counts against the account's rate limit: 100 requests
per 15 seconds (Harvest API v2, "Rate Limiting"), answered 429 with ``Retry-After`` beyond it.
Lists are pages of up to ``per_page`` (1-2,000, default 2,000) with ``links``; time entries
and expenses come newest ``spent_date`` first, other resources newest first. Expenses take a
receipt as ``multipart/form-data`` (:mod:`.receipts`), served at its ``url``
(``/expenses/{id}/receipt``, with the API's headers); ``DELETE /v2/invoices/{id}`` un-bills
what the invoice billed (:mod:`.billing`).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from closeloop.sandboxes.faults import CutResponse, FaultPlan
from closeloop.sandboxes.harvest import billing, receipts
from closeloop.sandboxes.harvest.account import RESOURCES, Account, HarvestError
from closeloop.sandboxes.harvest.render import page, render

_TOP = {
    "users",
    "clients",
    "contacts",
    "tasks",
    "projects",
    "time_entries",
    "expenses",
    "invoices",
    "task_assignments",
    "user_assignments",
    "expense_categories",
}
_BY_SPENT_DATE = {"time_entries", "expenses"}
_FILTERS = ("client_id", "project_id", "user_id", "task_id")


@dataclass
class HarvestSandbox:
    """What the app serves: the account, its token, rate limit and faults."""

    account: Account
    token: str
    requests_per_window: int = 100
    window_s: float = 15.0
    faults: FaultPlan = field(default_factory=FaultPlan)
    hang_s: float = 5.0
    calls: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._recent: deque[float] = deque()
        self._gate = threading.Lock()
        self._rng = random.Random(self.faults.seed)

    def admit(self) -> float | None:
        """Count a request in the window; the seconds to wait when the limit is reached."""
        with self._gate:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= self.window_s:
                self._recent.popleft()
            if len(self._recent) >= self.requests_per_window:
                self.throttled += 1
                return self.window_s - (now - self._recent[0])
            self._recent.append(now)
            return None

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


async def _body(request: Request) -> bytes:
    return await request.body()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if status == 204 or body is None:
        return Response(status_code=status, headers=headers)
    return Response(json.dumps(body), status, headers, media_type="application/json")


def create_app(sandbox: HarvestSandbox) -> FastAPI:
    """The sandbox's HTTP app."""
    app = FastAPI(title="closeloop Harvest sandbox")
    account = sandbox.account

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def refused(request: Request) -> Response | None:
        """The 401 or 403 of a request without the account's token and id."""
        authorization = request.headers.get("Authorization", "")
        if authorization != f"Bearer {sandbox.token}":
            return _json(
                401,
                {
                    "error": "invalid_token",
                    "error_description": "The access token provided is expired, revoked, "
                    "malformed or invalid for other reasons.",
                },
            )
        if request.headers.get("Harvest-Account-Id") != str(account.account_id):
            return _json(403, {"code": 403, "message": "Harvest-Account-Id is not your account"})
        return None

    @app.get("/expenses/{expense_id}/receipt")
    def receipt(expense_id: str, request: Request) -> Response:
        """An expense's receipt file (its ``receipt.url``)."""
        denied = refused(request)
        if denied is not None:
            return denied
        with account.lock:
            try:
                data, content_type, file_name = receipts.content(account, _id(expense_id))
            except HarvestError as exc:
                return _json(exc.status, exc.body())
        disposition = f'inline; filename="{file_name}"'
        return Response(data, 200, {"Content-Disposition": disposition}, media_type=content_type)

    @app.api_route("/v2/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
    def v2(path: str, request: Request, raw: bytes = Depends(_body)) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        wait = sandbox.admit()
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            return _json(
                429, {"code": 429, "message": "Too Many Requests"}, {"Retry-After": retry_after}
            )
        fault = sandbox.draw_fault()
        if sandbox.faults.latency_s:
            time.sleep(sandbox.faults.latency_s)
        if fault == "timeout":
            time.sleep(sandbox.hang_s)
            return _json(504, {"code": 504, "message": "Gateway Timeout"})
        if fault in ("server_error", "rate_limited"):
            status = 429 if fault == "rate_limited" else 503
            headers = {"Retry-After": str(sandbox.faults.retry_after_s)}
            return _json(status, {"code": status, "message": "Service Unavailable"}, headers)
        parts = [p for p in path.split("/") if p]
        resource = parts[0] if parts else ""
        sandbox.calls[resource] = sandbox.calls.get(resource, 0) + 1
        files: dict[str, receipts.Upload] = {}
        content_type = request.headers.get("Content-Type", "")
        try:
            if content_type.lower().startswith("multipart/form-data"):
                fields, files = receipts.parse_multipart(raw, content_type)
                body: Any = receipts.form_values(resource, fields)
            else:
                body = json.loads(raw) if raw else {}
        except HarvestError as exc:
            return _json(exc.status, exc.body())
        except ValueError:
            return _json(400, {"code": 400, "message": "The body is not JSON"})
        base = str(request.base_url).rstrip("/") + "/v2"
        with account.lock:
            try:
                status, answer = _route(
                    account, request.method, parts, dict(request.query_params), body, base, files
                )
            except HarvestError as exc:
                status, answer = exc.status, exc.body()
        if fault == "lost_response":
            return CutResponse()
        return _json(status, answer)

    _admin(app, sandbox)
    return app


def _route(
    account: Account,
    method: str,
    parts: list[str],
    params: dict[str, str],
    body: Any,
    base: str,
    files: dict[str, receipts.Upload] | None = None,
) -> tuple[int, Any]:
    if parts == ["company"] and method == "GET":
        return 200, _company(account)
    if parts == ["users", "me"] and method == "GET":
        return 200, render(
            account, "users", account.records["users"][min(account.records["users"])]
        )
    if not parts or parts[0] not in _TOP:
        raise HarvestError(404, "Not Found")
    resource = parts[0]
    if (
        len(parts) >= 3
        and resource == "projects"
        and parts[2]
        in (
            "task_assignments",
            "user_assignments",
        )
    ):
        return _nested(account, method, int(parts[1]), parts[2], parts[3:], params, body, base)
    if len(parts) == 1:
        if method == "GET":
            return 200, _list(account, resource, params, f"{base}/{resource}")
        if method == "POST":
            with account.transaction():
                if resource == "invoices":
                    return 201, render(account, resource, billing.invoice(account, _object(body)))
                if resource in ("task_assignments", "user_assignments"):
                    raise HarvestError(404, "Not Found")
                if resource == "expenses":
                    return 201, _write_expense(account, None, _object(body), files or {}, base)
                record = account.create(resource, _object(body))
                if resource == "projects":
                    account.add_to_new_project(record)
                return 201, render(account, resource, record)
    rid = _id(parts[1]) if len(parts) >= 2 else 0
    if len(parts) == 2:
        if method == "GET":
            return 200, render(account, resource, account.get(resource, rid))
        if method == "PATCH" and resource == "expenses":
            with account.transaction():
                return 200, _write_expense(account, rid, _object(body), files or {}, base)
        if method == "PATCH" and resource != "invoices":
            with account.transaction():
                return 200, render(account, resource, account.update(resource, rid, _object(body)))
        if method == "DELETE":
            with account.transaction():
                if resource == "invoices":
                    billing.delete_invoice(account, rid)
                else:
                    account.delete(resource, rid)
            return 200, None
    if parts[2:] == ["external_reference"] and resource == "time_entries" and method == "DELETE":
        with account.transaction():
            account.update(resource, rid, {"external_reference": None})
        return 200, None
    raise HarvestError(404, "Not Found")


def _write_expense(
    account: Account,
    rid: int | None,
    body: dict[str, Any],
    files: dict[str, receipts.Upload],
    base: str,
) -> dict[str, Any]:
    """Create (``rid`` ``None``) or update an expense, with its receipt file or
    ``delete_receipt`` (inside the caller's transaction)."""
    receipts.check_json_receipt(body)
    delete_receipt = body.pop("delete_receipt", False) if rid is not None else False
    if not isinstance(delete_receipt, bool):
        raise HarvestError(422, "delete_receipt is invalid")
    upload = files.get("receipt")
    if rid is None:
        record = account.create("expenses", body)
    else:
        record = account.update("expenses", rid, body) if body else account.get("expenses", rid)
    if delete_receipt:
        receipts.remove(account, record["id"])
    if upload is not None:
        receipts.attach(account, record["id"], upload, base.removesuffix("/v2"))
    return render(account, "expenses", account.get("expenses", record["id"]))


def _nested(
    account: Account,
    method: str,
    project_id: int,
    resource: str,
    rest: list[str],
    params: dict[str, str],
    body: Any,
    base: str,
) -> tuple[int, Any]:
    account.get("projects", project_id)
    if not rest and method == "GET":
        url = f"{base}/projects/{project_id}/{resource}"
        return 200, _list(account, resource, {**params, "project_id": str(project_id)}, url)
    with account.transaction():
        if not rest and method == "POST":
            values = {**_object(body), "project_id": project_id}
            return 201, render(account, resource, account.create(resource, values))
        rid = _id(rest[0]) if rest else 0
        if account.get(resource, rid)["project_id"] != project_id:
            raise HarvestError(404, "Not Found")
        if method == "PATCH":
            return 200, render(account, resource, account.update(resource, rid, _object(body)))
        if method == "DELETE":
            account.delete(resource, rid)
            return 200, None
    raise HarvestError(404, "Not Found")


def _list(account: Account, resource: str, params: dict[str, str], url: str) -> dict[str, Any]:
    try:
        number = int(params.get("page", "1"))
        per_page = int(params.get("per_page", "2000"))
    except ValueError:
        raise HarvestError(422, "page and per_page must be whole numbers") from None
    if number < 1 or not 1 <= per_page <= 2000:
        raise HarvestError(422, "per_page must be between 1 and 2000")
    rows = [r for r in account.records[resource].values() if _matches(account, resource, r, params)]
    if resource in _BY_SPENT_DATE:
        rows.sort(key=lambda r: (r["spent_date"], r["id"]), reverse=True)
    else:
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    kept = {k: v for k, v in params.items() if k not in ("page", "per_page")}
    return page(account, resource, rows, number, per_page, url, kept)


def _matches(
    account: Account, resource: str, record: dict[str, Any], params: dict[str, str]
) -> bool:
    since = params.get("updated_since")
    if since and record["updated_at"] < since.replace("+00:00", "Z"):
        return False
    for key in _FILTERS:
        if key in params and key in record and str(record[key]) != params[key]:
            return False
    if resource in ("time_entries", "expenses") and "client_id" in params:
        project = account.records["projects"][record["project_id"]]
        if str(project["client_id"]) != params["client_id"]:
            return False
    if "is_active" in params and str(record.get("is_active")).lower() != params["is_active"]:
        return False
    if "is_billed" in params and str(bool(record.get("invoice_id"))).lower() != params["is_billed"]:
        return False
    if "from" in params and record.get("spent_date", record.get("issue_date", "")) < params["from"]:
        return False
    return not (
        "to" in params and record.get("spent_date", record.get("issue_date", "")) > params["to"]
    )


def _company(account: Account) -> dict[str, Any]:
    return {
        "base_uri": "https://closeloop-sandbox.harvestapp.com",
        "full_domain": "closeloop-sandbox.harvestapp.com",
        "name": "closeloop sandbox",
        "is_active": True,
        "week_start_day": "Monday",
        "wants_timestamp_timers": False,
        "time_format": "decimal",
        "date_format": "%Y-%m-%d",
        "plan_type": "business",
        "expense_feature": True,
        "invoice_feature": True,
        "estimate_feature": False,
        "approval_feature": True,
        "clock": "24h",
        "currency_code_display": "iso_code_before",
        "currency_symbol_display": "symbol_before",
        "decimal_symbol": ".",
        "thousands_separator": ",",
        "color_scheme": "orange",
        "weekly_capacity": 144000,
    }


def _id(text: str) -> int:
    if not text.isdigit():
        raise HarvestError(404, "Not Found")
    return int(text)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HarvestError(422, "The request body must be a JSON object")
    return body


def _admin(app: FastAPI, sandbox: HarvestSandbox) -> None:
    """``/__sandbox/``: seed, approve, faults, rate limit, statistics."""
    account = sandbox.account

    @app.post("/__sandbox/seed")
    def seed(data: dict[str, list[dict[str, Any]]], request: Request) -> Response:
        root = str(request.base_url).rstrip("/")
        for expense in data.get("expenses", []):
            if isinstance(expense, dict) and expense.get("receipt") is not None:
                expense["receipt"] = receipts.seeded(expense, root)
        with account.lock:
            try:
                return _json(200, {"loaded": account.seed(data)})
            except HarvestError as exc:
                return _json(exc.status, exc.body())

    @app.get("/__sandbox/invoices/{invoice_id}/attachments")
    def attachments(invoice_id: int) -> Response:
        """What Harvest attached to the invoice: with ``attach_receipt``, the PDF expense
        report of its expenses and their receipts (the API's invoice has no field for it)."""
        with account.lock:
            invoice = account.records["invoices"].get(invoice_id)
            if invoice is None:
                return _json(404, {"code": 404, "message": "Not Found"})
            report = invoice.get("expense_report")
        return _json(200, {"attachments": [report] if report else []})

    @app.post("/__sandbox/approve")
    def approve(body: dict[str, Any]) -> dict[str, int]:
        """Approve time and expenses: ``{"ids": [...]}`` or ``{"user_id", "from", "to"}``."""
        with account.lock, account.transaction():
            changed = billing.approve(
                account,
                body.get("ids"),
                body.get("user_id"),
                str(body.get("from", "0000-01-01")),
                str(body.get("to", "9999-12-31")),
            )
        return {"approved": changed}

    @app.post("/__sandbox/withdraw-approval")
    def withdraw(body: dict[str, Any]) -> dict[str, int]:
        """Withdraw approval of time entries ``{"ids": [...]}`` (not of invoiced ones)."""
        with account.lock, account.transaction():
            changed = billing.withdraw_approval(account, [int(i) for i in body.get("ids", [])])
        return {"withdrawn": changed}

    @app.put("/__sandbox/faults")
    def set_faults(plan: dict[str, Any]) -> dict[str, Any]:
        sandbox.set_faults(FaultPlan(**plan))
        return {"faults": plan}

    @app.put("/__sandbox/rate-limit")
    def set_rate_limit(body: dict[str, float]) -> dict[str, float]:
        sandbox.requests_per_window = int(body.get("requests_per_window", 100))
        sandbox.window_s = float(body.get("window_s", 15.0))
        return {"requests_per_window": sandbox.requests_per_window, "window_s": sandbox.window_s}

    @app.get("/__sandbox/stats")
    def stats() -> dict[str, Any]:
        with account.lock:
            records = {name: len(account.records[name]) for name in RESOURCES}
        return {
            "calls": dict(sandbox.calls),
            "throttled": sandbox.throttled,
            "faults_injected": dict(sandbox.faults_injected),
            "records": records,
        }
