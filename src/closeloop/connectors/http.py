"""Transport failures of HTTP connectors, mapped to the engine's error classes."""

from __future__ import annotations

import httpx

from closeloop.ports.connector import AmbiguousError, TransientError


def classify_http_error(exc: httpx.HTTPError) -> TransientError | AmbiguousError:
    """Map a transport failure to the engine's classes.

    Connecting failed (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``): nothing was sent,
    transient. Any failure after the request went out (read or write timeout, connection cut,
    malformed answer): ambiguous, the write may have happened.
    """
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return TransientError(f"{type(exc).__name__}: {exc}")
    return AmbiguousError(f"{type(exc).__name__}: {exc}")


def raise_for_status(response: httpx.Response) -> None:
    """Raise the engine's error for a failed whole call: 429 and 5xx transient (with
    ``Retry-After`` seconds, RFC 9110 section 10.2.3), other 4xx a ``ValueError`` (a bug)."""
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and _is_number(retry_after) else None
        raise TransientError(f"HTTP {response.status_code}", retry_after_s=seconds)
    if response.status_code >= 400:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:500]}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
