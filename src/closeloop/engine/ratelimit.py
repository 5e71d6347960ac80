"""Per-system rate limit: requests per window, concurrent requests, and Retry-After pauses."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from closeloop.ports.connector import ConnectorLimits


class RateLimiter:
    """A sliding-window limit of ``requests_per_window`` per ``window_s`` seconds, at most
    ``max_concurrent`` requests in flight, and a pause until a system's ``Retry-After`` ends.

    Thread-safe within one process. ``monotonic`` is a clock in seconds.
    """

    def __init__(self, limits: ConnectorLimits, monotonic: Callable[[], float]) -> None:
        self.limits = limits
        self._monotonic = monotonic
        self._sent: deque[float] = deque()
        self._in_flight = 0
        self._paused_until = 0.0
        self._cond = threading.Condition()

    def _wait_s(self, now: float) -> float:
        """Seconds until a request may start (0 when it may start now)."""
        window = self.limits.window_s
        while self._sent and self._sent[0] <= now - window:
            self._sent.popleft()
        waits = [self._paused_until - now]
        if len(self._sent) >= self.limits.requests_per_window:
            waits.append(self._sent[0] + window - now)
        if self._in_flight >= self.limits.max_concurrent:
            waits.append(0.05)  # woken by release()
        return max(0.0, *waits)

    def ready_in_s(self) -> float:
        """Seconds until a request could start, without taking a permit."""
        with self._cond:
            return self._wait_s(self._monotonic())

    def acquire(self, timeout_s: float) -> bool:
        """Take a permit, waiting up to ``timeout_s``; ``False`` if none came in time."""
        deadline = self._monotonic() + timeout_s
        with self._cond:
            while True:
                now = self._monotonic()
                wait = self._wait_s(now)
                if wait <= 0:
                    self._sent.append(now)
                    self._in_flight += 1
                    return True
                if now + wait > deadline:
                    return False
                self._cond.wait(wait)

    def release(self) -> None:
        """Give back the concurrency permit of a finished request."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Start no request for ``seconds`` (the system said ``Retry-After``)."""
        with self._cond:
            self._paused_until = max(self._paused_until, self._monotonic() + seconds)
