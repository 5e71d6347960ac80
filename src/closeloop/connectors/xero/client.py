"""A Xero Accounting API client for one organisation (tenant) of a custom connection.

- **Tokens**: OAuth 2.0 client credentials (Xero's "Custom Connections": ``POST`` to the
  identity server's ``/connect/token`` with HTTP Basic ``client_id:client_secret`` and
  ``grant_type=client_credentials``); a token lives ``expires_in`` seconds (30 minutes) and
  is renewed a minute before it ends, or at once when Xero answers 401.
- **Tenant**: every call carries ``xero-tenant-id``.
- **Limits** (Xero's "OAuth 2.0 API limits"): 60 calls a rolling minute and 5,000 a rolling
  day per tenant, counted across all workers in the shared rate limit before each call, and
  at most 5 calls in flight per tenant (here per process; the engine's ``max_concurrent``
  keeps the workers' sum under it). ``X-MinLimit-Remaining`` on each answer counts the
  calls others made to the organisation too (:meth:`XeroClient._align`). A 429 is a
  :class:`~closeloop.ports.connector.TransientError` carrying ``Retry-After`` and naming
  ``X-Rate-Limit-Problem``.
- **Creating writes** (``PUT``) carry ``Idempotency-Key`` (Xero replays the first answer of
  a key it has seen), made from the request itself (method, resource and body:
  :func:`request_key`), so a request sent again after a lost answer creates once. Updates
  (``POST`` of records by id or code) carry none: they set a state, so repeating one is
  harmless, and a key would make a later update back to an earlier state (a project closed,
  reopened, closed) replay the first answer instead of applying.
- Invoices, credit notes and items are read and written with ``unitdp=4``: rates and prices
  keep four decimals (Xero rounds them to two otherwise).
- **Dates**: Xero's .NET JSON dates (``/Date(1539993600000+0000)/``) are read by
  :func:`parse_msdate`.

Whole-call failures become the engine's errors: a transport failure before sending and
429/5xx are transient, a lost answer ambiguous; a 400 ``ValidationException`` is
:class:`XeroValidationError` with its elements; other 4xx :class:`XeroApiError`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from closeloop.connectors.http import classify_http_error, json_body
from closeloop.connectors.ratelimit import LocalWindows
from closeloop.domain.errors import VendorError
from closeloop.ports.connector import TransientError
from closeloop.ports.ratelimit import SharedRateLimit

MINUTE_LIMIT = 60  #: Xero "OAuth 2.0 API limits": calls per tenant per rolling minute
DAY_LIMIT = 5000  #: calls per tenant per rolling day
CONCURRENT_LIMIT = 5  #: calls in flight per tenant
PAGE_SIZE = 1000  #: the largest ``pageSize`` Xero's paged lists take
_UNIT_DP = ("Invoices", "CreditNotes", "Items")
TOKEN_MARGIN_S = 60.0
_MSDATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


class XeroApiError(VendorError):
    """A 4xx answer other than a validation failure: ``status`` and Xero's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Xero HTTP {status}: {message}")
        self.status = status
        self.message = message


class XeroValidationError(XeroApiError):
    """400 ``ValidationException``: nothing of the request was written; ``elements`` are
    the refused elements with their ``ValidationErrors``."""

    def __init__(self, message: str, elements: list[dict[str, Any]]) -> None:
        found = sorted({m for element in elements for m in validation_messages(element)})
        super().__init__(400, "; ".join(found) or message)
        self.elements = elements


def parse_msdate(value: Any) -> datetime | None:
    """An aware UTC datetime from a .NET JSON date (``/Date(ms+hhmm)/``: milliseconds since
    the epoch in UTC, the offset only telling the zone it was shown in) or an ISO text;
    ``None`` for ``None`` or an empty text. Raises ``ValueError`` for anything else."""
    if value is None or value == "":
        return None
    text = str(value)
    found = _MSDATE.fullmatch(text)
    if found:
        return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def validation_messages(element: dict[str, Any]) -> list[str]:
    """The ``ValidationErrors`` messages of one answered element (empty when it was
    written)."""
    return [str(e.get("Message")) for e in element.get("ValidationErrors") or []]


def request_key(*parts: str) -> str:
    """An ``Idempotency-Key`` (at most 128 characters, as Xero allows) for a request made of
    ``parts`` (its method, resource, parameters and body)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"closeloop-{digest[:64]}"


class XeroClient:
    """One tenant of a custom connection. ``base_url`` ends in ``/api.xro/2.0``;
    ``token_url`` is the identity server's token endpoint. Counts calls by resource in
    :attr:`calls` and the seconds waited for the limits in :attr:`waited_s`."""

    def __init__(
        self,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        tenant_id: str,
        *,
        shared_limit: SharedRateLimit | None = None,
        minute_limit: int = MINUTE_LIMIT,
        day_limit: int = DAY_LIMIT,
        concurrent: int = CONCURRENT_LIMIT,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url
        self.tenant_id = tenant_id
        self._credentials = (client_id, client_secret)
        self._limit: SharedRateLimit = shared_limit or LocalWindows()
        self.windows = ((minute_limit, 60.0), (day_limit, 86_400.0))
        self._in_flight = threading.BoundedSemaphore(concurrent)
        self._sleep = sleep
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()
        self._http = httpx.Client(
            timeout=timeout_s,
            headers={"Accept": "application/json", "User-Agent": "closeloop integration hub"},
        )
        self.calls: dict[str, int] = {}
        self.waited_s = 0.0
        self.last_remaining: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def rate_limit_key(self, window_s: float) -> str:
        """The key of one of the tenant's windows in the shared rate limit
        (``xero:<tenant>:60`` and ``xero:<tenant>:86400``)."""
        return f"xero:{self.tenant_id}:{window_s:.0f}"

    # --- tokens ------------------------------------------------------------------------------
    def _bearer(self, renew: bool = False) -> str:
        with self._token_lock:
            if renew or self._token is None or self._token[1] - TOKEN_MARGIN_S <= time.time():
                self._token = self._fetch_token()
            return self._token[0]

    def _fetch_token(self) -> tuple[str, float]:
        try:
            response = self._http.post(
                self.token_url,
                data={"grant_type": "client_credentials"},
                auth=self._credentials,
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Xero token request failed: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"Xero token request: HTTP {response.status_code}")
        if response.status_code != 200:
            raise XeroApiError(response.status_code, f"token refused: {response.text[:200]}")
        answer = response.json()
        return str(answer["access_token"]), time.time() + float(answer.get("expires_in", 1800))

    # --- calls -------------------------------------------------------------------------------
    def _take_slots(self) -> list[tuple[str, float]]:
        taken = []
        for limit, window_s in self.windows:
            key = self.rate_limit_key(window_s)
            while True:
                wait, stamp = self._limit.take(key, limit, window_s)
                if wait <= 0:
                    taken.append((key, stamp))
                    break
                self.waited_s += wait
                self._sleep(wait)
        return taken

    def request(
        self,
        method: str,
        resource: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
        modified_since: datetime | None = None,
    ) -> dict[str, Any]:
        """One call to ``resource`` (relative to the base URL, e.g. ``Invoices``); the parsed
        answer. ``modified_since`` becomes ``If-Modified-Since`` (ISO 8601, UTC, ms); a
        write's ``Idempotency-Key`` is ``idempotency_key`` or made from the request.
        Raises the module docstring's errors."""
        content = json_body(body) if body is not None else None  # RefusedError before a slot
        headers = {"xero-tenant-id": self.tenant_id}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key or (content is not None and method == "PUT"):
            headers["Idempotency-Key"] = idempotency_key or request_key(
                method, resource, str(sorted((params or {}).items())), str(content)
            )
        if resource.split("/")[0] in _UNIT_DP:  # rates and prices to 4 decimals, not 2
            params = {"unitdp": 4, **(params or {})}
        if modified_since is not None:
            # ISO 8601 with milliseconds, as the OpenAPI's example (an RFC 9110 date has
            # whole seconds only, and would read back a second of older changes)
            headers["If-Modified-Since"] = modified_since.astimezone(UTC).isoformat(
                timespec="milliseconds"
            )
        name = resource.split("/")[0]
        self.calls[f"{method} {name}"] = self.calls.get(f"{method} {name}", 0) + 1
        for attempt in (1, 2):
            response = self._send(method, resource, params, content, headers)
            if response.status_code == 401 and attempt == 1:
                self._bearer(renew=True)  # an expired or revoked token: once more, renewed
                continue
            return self._answer(response)
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        resource: str,
        params: dict[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        token = self._bearer()
        slots = self._take_slots()
        try:
            with self._in_flight:
                return self._http.request(
                    method,
                    f"{self.base_url}/{resource}",
                    params=params,
                    content=content,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                )
        except httpx.HTTPError as exc:
            raise classify_http_error(exc) from exc
        finally:
            for key, stamp in slots:
                self._limit.settle(key, stamp)

    def _align(self, remaining: int) -> None:
        """Count the calls Xero says the tenant's minute holds beyond the hub's.

        ``X-MinLimit-Remaining`` counts every call of the app to the organisation in the
        rolling minute: the hub's (all workers', which the shared window holds) and others'
        (a person's script on the same connection, a tool). When Xero counts more than the
        window holds, a slot is taken for each call of the difference, as if made now, so
        the window never lets a call go over Xero's count.
        """
        limit, window_s = self.windows[0]
        key = self.rate_limit_key(window_s)
        with self._count_lock:
            unknown = (limit - remaining) - self._limit.used(key, window_s)
            for _ in range(max(unknown, 0)):
                wait, _stamp = self._limit.take(key, limit, window_s)
                if wait > 0:
                    break

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        for header in ("X-MinLimit-Remaining", "X-DayLimit-Remaining"):
            if response.headers.get(header, "").isdigit():
                self.last_remaining[header] = int(response.headers[header])
        if "X-MinLimit-Remaining" in self.last_remaining and response.status_code != 429:
            self._align(self.last_remaining["X-MinLimit-Remaining"])
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After", "")
            problem = response.headers.get("X-Rate-Limit-Problem")
            reason = f"Xero HTTP {status}" + (f" ({problem} limit)" if problem else "")
            raise TransientError(
                reason, retry_after_s=float(retry_after) if retry_after.isdigit() else None
            )
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        if status == 400 and answer.get("Type") == "ValidationException":
            raise XeroValidationError(
                str(answer.get("Message")), list(answer.get("Elements") or [])
            )
        if status >= 400:
            message = answer.get("Detail") or answer.get("Message") or response.text[:300]
            raise XeroApiError(status, str(message))
        return dict(answer)

    def pages(
        self,
        resource: str,
        key: str,
        *,
        params: dict[str, Any] | None = None,
        modified_since: datetime | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of a list (``page`` 1, 2, ... of :data:`PAGE_SIZE` records, with their
        line items), until a short page; ``key`` is the list's name in the answer."""
        number = 1
        while True:
            answer = self.request(
                "GET",
                resource,
                params={**(params or {}), "page": number, "pageSize": PAGE_SIZE},
                modified_since=modified_since,
            )
            rows = list(answer.get(key) or [])
            if rows:
                yield rows
            if len(rows) < PAGE_SIZE:
                return
            number += 1

    def list_all(
        self, resource: str, key: str, *, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every record of a paged list (:meth:`pages`)."""
        return [row for page in self.pages(resource, key, params=params) for row in page]

    def where_in(
        self,
        resource: str,
        clauses: Sequence[str],
        *,
        params: Callable[[str], dict[str, Any]] = lambda clause: {"where": clause},
        per_call: int = 25,
        paged: bool = True,
    ) -> list[dict[str, Any]]:
        """Every record of ``resource`` matching any of ``clauses``: ``per_call`` of them
        joined by ``OR`` (:func:`where_any`) a call, ``params(clause)`` the call's
        parameters; paged (:meth:`list_all`), or one call each for a list Xero does not page
        (``Items``)."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(clauses), per_call):
            asked = params(where_any(clauses[start : start + per_call]))
            if paged:
                rows += self.list_all(resource, resource, params=asked)
            else:
                rows += self.request("GET", resource, params=asked).get(resource) or []
        return rows


def where_any(clauses: Sequence[str]) -> str:
    """Xero ``where`` clauses joined by ``OR``, each in parentheses."""
    return " OR ".join(f"({c})" for c in clauses)


def quoted(value: str) -> str:
    """``value`` as a ``where`` string literal (double quotes; inner quotes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def recent(days: int) -> datetime:
    """The moment ``days`` ago, for ``If-Modified-Since``."""
    return datetime.now(UTC) - timedelta(days=days)
