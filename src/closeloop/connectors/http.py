"""Transport failures of HTTP connectors, mapped to the engine's error classes."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from closeloop.domain.changes import listed_problems, payload_problems
from closeloop.ports.connector import AmbiguousError, RefusedError, TransientError


def json_body(body: Any) -> bytes:
    """``body`` as a UTF-8 JSON request body (RFC 8259 section 8.1: JSON text exchanged
    between systems is UTF-8). Raises :class:`RefusedError` naming the problem when it
    holds text that is not valid Unicode (a lone surrogate, which no vendor can take) or a
    value JSON cannot carry: the request is never sent, and the engine isolates the record.
    """
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        found = "; ".join(listed_problems(payload_problems(body))) or str(exc)
        raise RefusedError(
            f"the request holds text that is not valid Unicode ({found}): fix it at the source"
        ) from exc
    except ValueError as exc:
        raise RefusedError(f"the request cannot be written as JSON: {exc}") from exc


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


def sandbox_verify(entry: Mapping[str, Any]) -> ssl.SSLContext | bool:
    """How to verify a running sandbox's TLS from its ``sandbox.json`` entry: its own CA
    (``ca_bundle``) when it serves HTTPS with a locally made certificate, else the default."""
    ca_bundle = entry.get("ca_bundle")
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True


def sandbox_healthz(entry: Mapping[str, Any]) -> None:
    """``GET <url>/healthz`` of a running sandbox described by its ``sandbox.json`` entry.
    Raises ``httpx.HTTPError`` when it does not answer 2xx within 2 s."""
    httpx.get(f"{entry['url']}/healthz", verify=sandbox_verify(entry), timeout=2).raise_for_status()
