"""Fault injection shared by the sandboxes: a seeded plan of failures per call, and the
response that is cut after the write was made.

A plan is set per run (at start or through a sandbox's admin endpoint) so tests and the demo
can make a sandbox fail like a real system does: 429 with ``Retry-After``, 5xx, a request that
hangs past the client's patience, and a response lost after the write was applied.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fastapi.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass
class FaultPlan:
    """Probabilities (0 to 1) of each fault per call, drawn from a seeded generator.

    ``rate_limited``: answer 429 with ``Retry-After: retry_after_s``. ``server_error``: 503,
    nothing applied. ``timeout``: no answer, nothing applied. ``lost_response``: the call is
    applied, then no answer comes. ``latency_s``: added to every call.
    """

    rate_limited: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    lost_response: float = 0.0
    retry_after_s: float = 0.05
    latency_s: float = 0.0
    seed: int = 0

    def draw(self, rng: random.Random) -> str | None:
        """The fault for one call, or ``None``."""
        roll = rng.random()
        for name in ("rate_limited", "server_error", "timeout", "lost_response"):
            roll -= float(getattr(self, name))
            if roll < 0:
                return name
        return None


class Fault(Exception):
    """A fault the plan drew for a call; ``kind`` is the fault's name."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class CutResponse(Response):
    """Declares a body it never finishes sending: the server closes the connection, and the
    client sees the response lost after the write was made."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"outcomes": [', "more_body": False})
