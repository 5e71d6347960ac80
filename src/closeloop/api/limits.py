"""Request hygiene for the whole HTTP app: a pure ASGI middleware, and a strict JSON parser.

:class:`RequestLimits` stands in front of every route:

- a body above ``max_body_bytes`` is refused with 413 before it is read whole: at once when
  its ``Content-Length`` says so, else (``Transfer-Encoding: chunked``) as soon as the bytes
  received pass the limit (RFC 9110 section 15.5.14);
- a ``POST``, ``PUT`` or ``PATCH`` to ``/webhooks/...`` must carry a media type its route
  takes (415 otherwise, RFC 9110 section 15.5.16): the types a route declares in its OpenAPI
  request body (``openapi_extra={"requestBody": {"content": {"text/xml": {}}}}``), else
  ``application/json``;
- a JSON body (``application/json`` or ``+json``) nested deeper than ``max_depth`` levels is
  refused with 400 before any route parses it: Python's :mod:`json` would raise
  ``RecursionError`` on very deep input, and the hub's code walks payloads.

Every refusal is an RFC 9457 problem details answer (``detail``: the reason); nothing
reaches a route. The body is held in memory only up to the limit and handed to the route
as it came.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_DEPTH = 64
"""Arrays and objects nested deeper than this are refused (a change payload needs a few)."""
MAX_NUMBER_CHARS = 64
"""The longest number a JSON body may hold, in characters (money and ids need far fewer)."""
JSON = "application/json"
_CHECKED = frozenset({"POST", "PUT", "PATCH"})
_TOKENS = re.compile(rb'[\[\]{}"\\]')


class BadJson(ValueError):
    """A body that is not JSON the hub takes; the message says why (position included)."""


def nesting_too_deep(body: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``max_depth``.

    One pass over the brackets and quotes, never recursing; brackets inside strings do not
    count. Not a validator: malformed JSON is left to the parser."""
    depth = 0
    in_string = False
    skip = -1  # the position of an escaped character inside a string
    for match in _TOKENS.finditer(body):
        position = match.start()
        if position == skip:
            continue
        char = body[position]
        if in_string:
            if char == 0x5C:  # backslash
                skip = position + 1
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return True
        elif char in (0x5D, 0x7D):
            depth -= 1
    return False


def _number(text: str, kind: type[int] | type[float]) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJson(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadJson(f"the number {text} is out of range")
    return value


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def parse_json(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``body`` (UTF-8 JSON, RFC 8259) as Python values, refusing what the hub would choke
    on later. Raises :class:`BadJson` for text that is not JSON, nesting deeper than
    ``max_depth``, a number longer than :data:`MAX_NUMBER_CHARS` characters or out of the
    float range, and ``NaN``/``Infinity``."""
    if nesting_too_deep(body, max_depth):
        raise BadJson(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(
            body,
            parse_int=lambda t: _number(t, int),
            parse_float=lambda t: _number(t, float),
            parse_constant=_constant,
        )
    except BadJson:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadJson(str(exc)) from None


def media_type(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's media type (``Content-Type`` without parameters, lowercase)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower() or None
    return None


class RequestLimits:
    """The middleware of the module docstring. ``media_types(path)``: the media types the
    ``POST``/``PUT``/``PATCH`` route at ``path`` takes (``None``: no such route, left to the
    router's 404 or 405)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        media_types: Callable[[str], frozenset[str] | None],
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.media_types = media_types
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then run the app with its body (or answer the refusal)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        kind = media_type(headers)
        method = scope.get("method", "GET")
        if method in _CHECKED and scope.get("path", "").startswith("/webhooks/"):
            allowed = self.media_types(scope["path"])
            if allowed is not None and kind not in allowed:
                await _refuse(
                    send,
                    415,
                    f"Content-Type {kind or '(none)'} is not taken here; send "
                    + " or ".join(sorted(allowed)),
                )
                return
        declared = _content_length(headers)
        if declared == -1:
            await _refuse(send, 400, "Content-Length is not a number")
            return
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, 413, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        is_json = kind is not None and (kind == JSON or kind.endswith("+json"))
        if is_json and nesting_too_deep(body, self.max_depth):
            await _refuse(send, 400, f"JSON nested deeper than {self.max_depth} levels")
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"request body over {self.max_body_bytes} bytes (http.max_body_bytes)"


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The declared length, ``None`` when absent, ``-1`` when not a number."""
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else -1
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then waits on the client (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
