"""Xero's API rate limits for one tenant, and the sandbox's count of calls.

Xero's "OAuth 2.0 API limits" page: per tenant, at most 5 calls in progress at once
(concurrent), 60 calls in any rolling minute and 5,000 in any rolling day; per app, 10,000
calls a minute across tenants. Every answered call carries ``X-MinLimit-Remaining``,
``X-DayLimit-Remaining`` and ``X-AppMinLimit-Remaining``; a call over a limit is answered 429
with ``X-Rate-Limit-Problem`` (``minute``, ``day``, ``concurrent`` or ``appminute``) and
``Retry-After`` in whole seconds. Xero does not say whether refused calls count: the sandbox
does not count them against the windows (it counts them in ``throttled``). Xero does not
document a ``Retry-After`` for the concurrent limit: the sandbox answers 1 second.

The windows run on the sandbox's clock (seconds, :class:`Clock`), which tests may advance.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Clock:
    """Wall-clock seconds plus an offset that ``/__sandbox/clock`` advances."""

    offset_s: float = 0.0

    def now(self) -> float:
        """Seconds since the epoch, as the sandbox sees them."""
        return time.time() + self.offset_s


@dataclass
class Limits:
    """The limits the sandbox enforces (Xero's by default; smaller in tests)."""

    minute: int = 60
    day: int = 5000
    concurrent: int = 5
    app_minute: int = 10_000


@dataclass
class Refusal:
    """A call over a limit: which (``minute``...) and the seconds to wait."""

    problem: str
    retry_after_s: int


@dataclass
class Limiter:
    """Admits calls under :class:`Limits` and counts them."""

    limits: Limits = field(default_factory=Limits)
    clock: Clock = field(default_factory=Clock)
    calls: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    peak_minute: int = 0
    peak_concurrent: int = 0
    in_flight: int = 0

    def __post_init__(self) -> None:
        self._minute: deque[float] = deque()
        self._day: deque[float] = deque()
        self._gate = threading.Lock()

    def _trim(self, now: float) -> None:
        while self._minute and now - self._minute[0] >= 60:
            self._minute.popleft()
        while self._day and now - self._day[0] >= 86_400:
            self._day.popleft()

    def admit(self, route: str) -> Refusal | None:
        """Count one call to ``route`` (``"GET Invoices"``), or the refusal when a limit is
        reached. An admitted call must be :meth:`release`\\ d."""
        with self._gate:
            now = self.clock.now()
            self._trim(now)
            refusal = None
            if len(self._day) >= self.limits.day:
                refusal = Refusal("day", math.ceil(86_400 - (now - self._day[0])))
            elif len(self._minute) >= min(self.limits.minute, self.limits.app_minute):
                problem = "minute" if self.limits.minute <= self.limits.app_minute else "appminute"
                refusal = Refusal(problem, max(1, math.ceil(60 - (now - self._minute[0]))))
            elif self.in_flight >= self.limits.concurrent:
                refusal = Refusal("concurrent", 1)
            if refusal is not None:
                self.throttled[refusal.problem] = self.throttled.get(refusal.problem, 0) + 1
                return refusal
            self._minute.append(now)
            self._day.append(now)
            self.in_flight += 1
            self.calls[route] = self.calls.get(route, 0) + 1
            self.peak_minute = max(self.peak_minute, len(self._minute))
            self.peak_concurrent = max(self.peak_concurrent, self.in_flight)
            return None

    def release(self) -> None:
        """An admitted call has been answered."""
        with self._gate:
            self.in_flight -= 1

    def remaining(self) -> dict[str, str]:
        """The headers Xero sends on every answered call."""
        with self._gate:
            self._trim(self.clock.now())
            used_minute, used_day = len(self._minute), len(self._day)
        return {
            "X-MinLimit-Remaining": str(max(0, self.limits.minute - used_minute)),
            "X-DayLimit-Remaining": str(max(0, self.limits.day - used_day)),
            "X-AppMinLimit-Remaining": str(max(0, self.limits.app_minute - used_minute)),
        }

    def stats(self) -> dict[str, Any]:
        """``/__sandbox/calls``: calls by route, throttled by problem, peaks and limits."""
        with self._gate:
            return {
                "calls": dict(self.calls),
                "total": sum(self.calls.values()),
                "throttled": dict(self.throttled),
                "peak_minute": self.peak_minute,
                "peak_concurrent": self.peak_concurrent,
                "limits": vars(self.limits).copy(),
            }
