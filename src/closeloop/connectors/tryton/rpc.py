"""JSON-RPC client for Tryton 8 (``POST /<db>/rpc/``), as ../shared/tryton.md describes it.

Session login (``common.db.login``) with one re-login on 401; the user's preferences context
as the last parameter of every model call, with the company the session acts in
(``company``: its ``company`` key, kept across re-logins); typed values (:mod:`.codec`);
``Accept-Encoding: gzip`` on every request (trytond 8.2 gzips large replies even when not
asked); UserWarnings acknowledged through ``res.user.warning`` and the call retried; a
wizard driver. Errors are raised as :class:`TrytonError` subclasses that say which of the
engine's classes they belong to.
"""

from __future__ import annotations

import base64
import itertools
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from closeloop.connectors.http import classify_http_error, json_body
from closeloop.connectors.tryton.codec import decode, encode
from closeloop.domain.commands import ExceptionClass
from closeloop.domain.errors import VendorError
from closeloop.ports.connector import AmbiguousError, TransientError

MAX_WARNINGS = 10


_WRITERS: dict[tuple[str, str], threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


class TrytonError(VendorError):
    """A call Tryton refused; ``error_class`` is the business exception class it maps to."""

    error_class = ExceptionClass.VALIDATION

    def __init__(self, message: str, description: str = "") -> None:
        super().__init__(message + (f" ({description})" if description else ""))
        self.message = message
        self.description = description


class TrytonUserError(TrytonError):
    """``UserError``: validation, required fields, bad VAT, closed period, access denied.

    Tryton sends no subclass, so the class is read from the message text (English).
    """

    def __init__(self, message: str, description: str = "") -> None:
        super().__init__(message, description)
        text = f"{message} {description}".lower()
        if "not allowed to access" in text or ("access" in text and "denied" in text):
            self.error_class = ExceptionClass.AUTH
        elif "period" in text and any(w in text for w in ("closed", "close", "reopen")):
            self.error_class = ExceptionClass.CLOSED_PERIOD
        elif "unique" in text or "already exists" in text:
            self.error_class = ExceptionClass.DUPLICATE
        elif "does not exist" in text or "has been deleted" in text:
            self.error_class = ExceptionClass.NOT_FOUND


class TrytonWarning(TrytonError):
    """``UserWarning`` that stayed after acknowledging (more than :data:`MAX_WARNINGS`)."""


class TrytonLoginError(TrytonError):
    """Login refused (``LoginException`` or 401 after a fresh login): check the credentials."""

    error_class = ExceptionClass.AUTH


class TrytonServerError(TrytonError):
    """An unhandled server error (unknown model, field or value type): a connector bug."""

    error_class = ExceptionClass.INTERNAL


class TrytonRPC:
    """A logged-in JSON-RPC session to one Tryton database. Thread-safe.

    ``url`` is the server root (``http://127.0.0.1:8000``). ``timeout_s`` bounds each
    request. ``company``: the id of the company every call acts in (the ``company`` key of
    the context: defaults and company-dependent values such as a party's tax rule), kept
    after every (re)login; ``None``: the user's current company. Record rules filter by the
    *user's* companies, so a session acting in another company needs a user whose companies
    include it (``closeloop tryton init`` makes them so). Raises
    :class:`~closeloop.ports.connector.TransientError` (429, 503,
    ConcurrencyException, connection refused), :class:`~closeloop.ports.connector.AmbiguousError`
    (timeout or cut after sending, 504) and :class:`TrytonError` subclasses.
    """

    def __init__(
        self,
        url: str,
        database: str,
        user: str,
        password: str,
        *,
        timeout_s: float = 60.0,
        language: str = "en",
        company: int | None = None,
    ) -> None:
        self.database = database
        self.company = company
        self.user = user
        self._password = password
        self._language = language
        self._http = httpx.Client(
            base_url=url.rstrip("/"), timeout=timeout_s, headers={"Accept-Encoding": "gzip"}
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._session: str | None = None
        self.uid: int | None = None
        self.context: dict[str, Any] = {}
        self.calls = 0
        #: requests by (RPC method, the closeloop function outside this module that made it):
        #: how a benchmark or the demo tells where calls go (``model.timesheet.line.create``)
        self.calls_by_method: Counter[tuple[str, str]] = Counter()
        #: seconds waited for Tryton's answers, by RPC method (one writer: about its CPU time)
        self.seconds_by_method: defaultdict[str, float] = defaultdict(float)

    def database_writer(self) -> threading.Lock:
        """The lock every session of this process to the same server and database shares
        (hold it around a batch of writes: one writer at a time per database)."""
        key = (str(self._http.base_url), self.database)
        with _WRITERS_GUARD:
            return _WRITERS.setdefault(key, threading.Lock())

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # --- transport ----------------------------------------------------------------------
    def _post(self, method: str, params: list[Any], *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = self._authorization()
        body = {"id": next(self._ids), "method": method, "params": encode(params)}
        content = json_body(body)  # RefusedError before anything is sent
        self.calls += 1
        self.calls_by_method[(method, _caller())] += 1
        started = time.perf_counter()
        try:
            response = self._http.post(f"/{self.database}/rpc/", content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise classify_http_error(exc) from exc
        finally:
            self.seconds_by_method[method] += time.perf_counter() - started
        if response.status_code == 401:
            raise _Unauthorized
        if response.status_code in (429, 503):
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                f"Tryton answered HTTP {response.status_code}",
                retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if response.status_code >= 500:  # 500, 502, 504: the call may have completed
            raise AmbiguousError(f"Tryton answered HTTP {response.status_code} to {method}")
        if response.status_code == 403:
            raise TrytonLoginError(f"method {method} is not exposed to this user (HTTP 403)")
        if response.status_code >= 400:
            raise TrytonServerError(
                f"HTTP {response.status_code} for {method}: {response.text[:300]}"
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise AmbiguousError(f"unreadable answer to {method}: {exc}") from exc
        if "error" in payload and payload["error"] is not None:
            _raise(payload["error"])
        return decode(payload.get("result"))

    def _authorization(self) -> str:
        if self._session is None:
            self.login()
        assert self._session is not None
        return self._session

    def login(self) -> None:
        """Log in and load the user's preferences context. Raises :class:`TrytonLoginError`."""
        with self._lock:
            try:
                result = self._post(
                    "common.db.login",
                    [self.user, {"password": self._password}, self._language],
                    auth=False,
                )
            except _Unauthorized:
                raise TrytonLoginError(f"Tryton refused the login of {self.user!r}") from None
            uid, key = result[0], result[1]
            token = base64.b64encode(f"{self.user}:{uid}:{key}".encode()).decode()
            self._session = f"Session {token}"
            self.uid = uid
        self.reload_context()

    def reload_context(self) -> None:
        """Reload the preferences context (after the user's company changed); the session's
        ``company``, when set, replaces the user's current one."""
        context: dict[str, Any] = self.call_raw("model.res.user.get_preferences", [True, {}])
        if self.company is not None and context.get("company") != self.company:
            context["company"] = self.company
            context.pop("employee", None)  # the user's employee is in another company
        self.context = context

    def use_company(self, company: int | None) -> None:
        """Make every later call act in ``company`` (an id; ``None``: the user's current
        company), now and after every re-login."""
        if company == self.company:
            return
        self.company = company
        if self.context and company is not None:
            self.context = {k: v for k, v in self.context.items() if k != "employee"}
            self.context["company"] = company
        elif self.context:
            self.reload_context()

    def call_raw(self, method: str, params: list[Any]) -> Any:
        """Call ``method`` with ``params`` as they are; re-login once on 401."""
        try:
            return self._post(method, params)
        except _Unauthorized:
            self._session = None
            try:
                return self._post(method, params)
            except _Unauthorized:
                raise TrytonLoginError("Tryton refused the session after a fresh login") from None

    # --- model calls --------------------------------------------------------------------
    def call(
        self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None
    ) -> Any:
        """``model.<model>.<method>(*args, context)``, acknowledging UserWarnings.

        Each warning is recorded as ``res.user.warning`` (not ``always``) and the call is
        made again, up to :data:`MAX_WARNINGS` times.
        """
        if not self.context:
            self.login()
        ctx = {**self.context, **(context or {})}
        for _ in range(MAX_WARNINGS):
            try:
                return self.call_raw(f"model.{model}.{method}", [*args, ctx])
            except _Warning as warning:
                self.call_raw(
                    "model.res.user.warning.create",
                    [[{"user": self.uid, "name": warning.key, "always": False}], ctx],
                )
        raise TrytonWarning(f"{model}.{method} kept raising warnings")

    def search_read(
        self,
        model: str,
        domain: list[Any],
        fields: list[str],
        *,
        limit: int | None = None,
        order: list[list[str]] | None = None,
        offset: int = 0,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``search_read(domain, offset, limit, order, fields)``; ``context`` adds to the
        user's (``{"active_test": False}`` to include archived records)."""
        result: list[dict[str, Any]] = self.call(
            model, "search_read", domain, offset, limit, order, fields, context=context
        )
        return result

    def create(
        self,
        model: str,
        values: list[dict[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Create records; returns their ids in order. ``context`` adds to the session's
        (``{"company": id}`` for another company's defaults)."""
        ids: list[int] = self.call(model, "create", values, context=context)
        return ids

    def write(
        self,
        model: str,
        ids: list[int],
        values: dict[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``values`` on ``ids`` (``context`` as for :meth:`create`: a company-dependent
        value is written for the context's company)."""
        self.call(model, "write", ids, values, context=context)

    def run_wizard(
        self,
        name: str,
        steps: list[tuple[str, dict[str, Any]]],
        *,
        active_model: str | None = None,
        active_ids: list[int] | None = None,
        extra_context: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Run wizard ``name`` through ``steps`` of ``(state, {view_state: values})``; returns
        the answers of each step. ``extra_context`` adds to the session's context. The
        session is deleted at the end, whatever happens."""
        if not self.context:
            self.login()
        context: dict[str, Any] = dict(extra_context or {})
        if active_model:
            ids = active_ids or []
            context |= {
                "active_model": active_model,
                "active_id": ids[0] if ids else None,
                "active_ids": ids,
            }
        ctx = {**self.context, **context}
        session, _start, _end = self.call_raw(f"wizard.{name}.create", [ctx])
        answers = []
        try:
            for state, data in steps:
                for _ in range(MAX_WARNINGS):
                    try:
                        answers.append(
                            self.call_raw(f"wizard.{name}.execute", [session, data, state, ctx])
                        )
                        break
                    except _Warning as warning:
                        self.call_raw(
                            "model.res.user.warning.create",
                            [[{"user": self.uid, "name": warning.key, "always": False}], ctx],
                        )
        finally:
            self.call_raw(f"wizard.{name}.delete", [session, ctx])
        return answers


@contextmanager
def after_write(refusals: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Code run after a write of the same operation was applied: any failure there is
    ambiguous (the write happened, its result is unknown), never transient nor a refusal,
    so the engine looks the command up instead of sending it again or parking it; but
    ``refusals`` (Tryton refusing a second write that a resend would make again) pass as
    they are, so that the command is parked for a person instead of resent forever."""
    try:
        yield
    except AmbiguousError:
        raise
    except refusals:
        raise
    except Exception as exc:
        raise AmbiguousError(f"after the write was applied: {type(exc).__name__}: {exc}") from exc


def _caller() -> str:
    """``module.function`` of the nearest frame outside this module (for call counts)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    module = str(frame.f_globals.get("__name__", "?")).removeprefix("closeloop.")
    return f"{module}.{frame.f_code.co_name}"


class _Unauthorized(Exception):
    """HTTP 401: the session is missing or expired."""


class _Warning(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _raise(error: Any) -> None:
    """Raise the exception for a JSON-RPC ``error`` member ``[name, args]``."""
    name, args = (
        (error[0], error[1]) if isinstance(error, list) and len(error) == 2 else (str(error), [])
    )
    args = args if isinstance(args, list) else [args]
    if name == "UserError":
        raise TrytonUserError(str(args[0]) if args else "", str(args[1]) if len(args) > 1 else "")
    if name == "UserWarning":
        raise _Warning(str(args[0]), str(args[1]) if len(args) > 1 else "")
    if name == "LoginException":
        raise TrytonLoginError(" ".join(str(a) for a in args) or "login required")
    if name == "ConcurrencyException":
        raise TransientError(f"Tryton concurrency conflict: {args[0] if args else ''}")
    raise TrytonServerError(f"{name} {args}".strip())
