"""A Harvest API v2 client: personal access token and account id headers, the account's rate
limit taken from a :class:`~closeloop.ports.ratelimit.SharedRateLimit` before every request
(so all workers together stay under it), and ``page``/``per_page`` paging along ``links``.

Whole-call failures become the engine's errors: transport failures before sending and 429/5xx
are :class:`~closeloop.ports.connector.TransientError` (with ``Retry-After``), a lost answer
:class:`~closeloop.ports.connector.AmbiguousError`; other 4xx are :class:`HarvestApiError`
with Harvest's message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from closeloop.connectors.http import classify_http_error, json_body
from closeloop.connectors.ratelimit import LocalWindows
from closeloop.domain.errors import VendorError
from closeloop.ports.connector import TransientError
from closeloop.ports.ratelimit import SharedRateLimit

REQUESTS_PER_WINDOW = 100  #: Harvest API v2, "Rate Limiting"
WINDOW_S = 15.0
PER_PAGE = 2000  #: the largest page Harvest gives


class HarvestApiError(VendorError):
    """A 4xx answer: ``status`` and Harvest's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class HarvestClient:
    """One Harvest account. ``base_url`` ends in ``/v2``. Counts requests by resource in
    :attr:`calls` and the seconds spent waiting for the rate limit in :attr:`waited_s`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        account_id: str,
        *,
        shared_limit: SharedRateLimit | None = None,
        requests_per_window: int = REQUESTS_PER_WINDOW,
        window_s: float = WINDOW_S,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_id = str(account_id)
        self._limit: SharedRateLimit = shared_limit or LocalWindows()
        self._window = (requests_per_window, window_s)
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=timeout_s,
            headers={
                "Authorization": f"Bearer {token}",
                "Harvest-Account-Id": self.account_id,
                "User-Agent": "closeloop integration hub",
                "Accept-Encoding": "gzip",
            },
        )
        self.calls: dict[str, int] = {}
        self.waited_s = 0.0

    @property
    def window(self) -> tuple[int, float]:
        """``(requests, seconds)`` of the account's rate limit."""
        return self._window

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @property
    def rate_limit_key(self) -> str:
        """The key of the account's window in the shared rate limit (``harvest:<account>``)."""
        return f"harvest:{self.account_id}"

    def _take_slot(self) -> float:
        while True:
            wait, stamp = self._limit.take(self.rate_limit_key, *self._window)
            if wait <= 0:
                return stamp
            self.waited_s += wait
            self._sleep(wait)

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """One call to ``path`` (relative to the base URL, or a full URL from ``links``);
        returns the parsed JSON (``None`` when empty). Raises the module docstring's errors."""
        url = path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"
        if body is not None:
            json_body(body)  # RefusedError before a rate-limit slot is spent on it
        stamp = self._take_slot()
        resource = url.removeprefix(self.base_url).split("?")[0].strip("/").split("/")[0]
        self.calls[resource] = self.calls.get(resource, 0) + 1
        try:
            response = self._http.request(
                method,
                url,
                params=params,
                content=json_body(body) if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
        except httpx.HTTPError as exc:
            raise classify_http_error(exc) from exc
        finally:
            self._limit.settle(self.rate_limit_key, stamp)
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                f"Harvest HTTP {status}", retry_after_s=float(retry_after) if retry_after else None
            )
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = None
        if status >= 400:
            message = (answer or {}).get("message") or (answer or {}).get("error_description")
            raise HarvestApiError(status, str(message or response.text[:300]))
        return answer

    def list_all(
        self, resource: str, params: dict[str, Any] | None = None
    ) -> tuple[list[Any], int]:
        """Every record of a list (following ``links.next``) and the ``total_entries`` the
        last page reported."""
        answer = self.request("GET", resource, params={**(params or {}), "per_page": PER_PAGE})
        key = resource.rsplit("/", 1)[-1]
        rows = list(answer[key])
        while answer["links"].get("next"):
            answer = self.request("GET", answer["links"]["next"])
            rows.extend(answer[key])
        return rows, int(answer["total_entries"])
