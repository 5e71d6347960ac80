"""A Salesforce REST API client: OAuth 2.0 tokens (renewed when the session expires), the
org's server clock, the daily request quota, queries with ``nextRecordsUrl`` paging, sObject
Collections and Composite calls.

Whole-call failures become the engine's errors: a transport failure before sending or a 5xx
is :class:`~closeloop.ports.connector.TransientError` (with ``Retry-After`` when given), a
lost answer :class:`~closeloop.ports.connector.AmbiguousError`, ``REQUEST_LIMIT_EXCEEDED``
transient with a pause, a refused login :class:`SalesforceAuthError` (transient: the engine
retries and its breaker opens; the message says what to fix). Other 4xx answers are
:class:`SalesforceApiError` (a bug or a refused record).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from closeloop.connectors.http import classify_http_error, json_body
from closeloop.connectors.salesforce.quota import QuotaBudget
from closeloop.domain.errors import VendorError
from closeloop.ports.connector import TransientError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SalesforceCredentials:
    """How to reach one org. Without ``username`` the client-credentials flow is used, else
    the username-password flow. ``ca_bundle``: a PEM file to trust (the sandbox's CA)."""

    instance_url: str
    client_id: str
    client_secret: str
    token_url: str | None = None
    username: str | None = None
    password: str | None = None
    api_version: str = "62.0"
    ca_bundle: str | None = None

    @property
    def token_endpoint(self) -> str:
        """``token_url``, else ``<instance_url>/services/oauth2/token``."""
        return self.token_url or f"{self.instance_url.rstrip('/')}/services/oauth2/token"


class SalesforceApiError(VendorError):
    """A 4xx answer: ``status`` and Salesforce's ``errors`` (``[{"errorCode", "message"}]``)."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        first = errors[0] if errors else {}
        super().__init__(
            f"HTTP {status}: {first.get('errorCode', '?')}: {first.get('message', '')}"
        )
        self.status = status
        self.errors = errors

    @property
    def code(self) -> str:
        """The first error's code."""
        return str(self.errors[0].get("errorCode", "")) if self.errors else ""


class SalesforceAuthError(TransientError):
    """The org refused the credentials (``invalid_grant``, ``invalid_client_id``)."""


def loads(text: str | bytes) -> Any:
    """JSON with numbers as :class:`~decimal.Decimal` (money stays exact)."""
    return json.loads(text, parse_float=Decimal)


class SalesforceClient:
    """One org's REST API, safe to share between threads.

    ``quota`` paces calls by the org's daily allocation; ``timeout_s`` bounds each request.
    Counts calls by resource in :attr:`calls`.
    """

    def __init__(
        self,
        credentials: SalesforceCredentials,
        *,
        quota: QuotaBudget | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.credentials = credentials
        self.quota = quota or QuotaBudget()
        self._http = httpx.Client(
            timeout=timeout_s,
            verify=_tls(credentials.ca_bundle),
            headers={"Accept-Encoding": "gzip"},
        )
        self._lock = threading.Lock()
        self._token: str | None = None
        self._clock_offset = timedelta(0)
        self.calls: dict[str, int] = {}

    @property
    def base(self) -> str:
        """``<instance>/services/data/vNN.N``."""
        c = self.credentials
        return f"{c.instance_url.rstrip('/')}/services/data/v{c.api_version}"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- session ----------------------------------------------------------------------------
    def _login(self) -> str:
        c = self.credentials
        form = {"client_id": c.client_id, "client_secret": c.client_secret}
        if c.username:
            form.update(grant_type="password", username=c.username, password=c.password or "")
        else:
            form["grant_type"] = "client_credentials"
        try:
            response = self._http.post(c.token_endpoint, data=form)
        except httpx.HTTPError as exc:
            raise TransientError(f"Salesforce login: {type(exc).__name__}: {exc}") from exc
        self._observe_clock(response)
        if response.status_code >= 500:
            raise TransientError(f"Salesforce login: HTTP {response.status_code}")
        body = loads(response.content) if response.content else {}
        if response.status_code != 200:
            raise SalesforceAuthError(
                f"Salesforce refused the login to {c.token_endpoint}: {body.get('error')}: "
                f"{body.get('error_description')} (check client id, secret, user and password)",
                retry_after_s=60,
            )
        token = str(body["access_token"])
        with self._lock:
            self._token = token
        log.info("salesforce_login", instance=c.instance_url)
        return token

    def _observe_clock(self, response: httpx.Response) -> None:
        date = response.headers.get("Date")
        if date:
            try:
                server = parsedate_to_datetime(date)
            except (TypeError, ValueError):
                return
            self._clock_offset = server - datetime.now(UTC)

    def server_now(self) -> datetime:
        """The org's clock as last seen in a ``Date`` header (second precision, so never
        ahead of the org's true time by more than the local clock drifts)."""
        return (datetime.now(UTC) + self._clock_offset).replace(microsecond=0)

    # --- calls ------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """One REST call to ``path`` (relative to :attr:`base`, or a full ``/services/...``
        path); returns the parsed JSON (``None`` for 204). Renews the token once on
        ``INVALID_SESSION_ID``. Raises the errors of the module docstring."""
        url = path if path.startswith("/services/") else f"{self.base}/{path.lstrip('/')}"
        if url.startswith("/"):
            url = self.credentials.instance_url.rstrip("/") + url
        resource = _resource(url)
        for attempt in (1, 2):
            token = self._token or self._login()
            self.quota.before_call()
            content = json_body(body) if body is not None else None
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    content=content,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
            except httpx.HTTPError as exc:
                raise classify_http_error(exc) from exc
            self.calls[resource] = self.calls.get(resource, 0) + 1
            self._observe_clock(response)
            self.quota.observe(response.headers.get("Sforce-Limit-Info"))
            if response.status_code == 401 and attempt == 1:
                with self._lock:
                    self._token = None  # expired or revoked: log in again, then resend
                continue
            return self._answer(response)
        raise SalesforceAuthError("Salesforce refused a fresh session token", retry_after_s=60)

    def _answer(self, response: httpx.Response) -> Any:
        status = response.status_code
        try:
            body = loads(response.content) if response.content else None
        except ValueError:
            body = None
        if status < 300:
            return body
        errors = body if isinstance(body, list) else [{"errorCode": "", "message": response.text}]
        code = str(errors[0].get("errorCode", "")) if errors else ""
        if status >= 500 or status == 429:
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                f"Salesforce HTTP {status}: {code}",
                retry_after_s=float(retry_after) if retry_after else None,
            )
        if code == "REQUEST_LIMIT_EXCEEDED":
            raise TransientError(f"Salesforce: {errors[0].get('message')}", retry_after_s=60)
        raise SalesforceApiError(status, errors)

    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """Pages of a query (``queryAll`` with ``include_deleted``), following
        ``nextRecordsUrl``; each page is Salesforce's answer (``records``, ``totalSize``)."""
        page = self.request("GET", "queryAll" if include_deleted else "query", params={"q": soql})
        while True:
            yield page
            following = page.get("nextRecordsUrl")
            if page.get("done", True) or not following:
                return
            page = self.request("GET", following)

    def describe(self, sobject: str) -> dict[str, Any]:
        """``sobjects/<sobject>/describe``."""
        answer: dict[str, Any] = self.request("GET", f"sobjects/{sobject}/describe")
        return answer


def _tls(ca_bundle: str | None) -> ssl.SSLContext:
    """Trust ``ca_bundle`` when given, else the system's certificate authorities."""
    return (
        ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    )


def _resource(url: str) -> str:
    path = url.split("/services/", 1)[-1].split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["data"]:
        parts = parts[2:]
    if parts[:2] == ["composite", "sobjects"]:
        return "composite/sobjects"
    return parts[0] if parts else "root"


def soql_literal(value: str) -> str:
    """``value`` as a quoted SOQL string (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def soql_datetime(moment: datetime) -> str:
    """An aware datetime as a SOQL datetime literal in UTC (``2024-05-01T09:30:00.000Z``)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
