"""A process-local rate limit, for a connector built without the hub's shared one (a tool, a
test, a single worker): the same sliding windows as :class:`~closeloop.ports.ratelimit.
SharedRateLimit`, counted in this process only."""

from __future__ import annotations

import threading
import time


class LocalWindows:
    """Sliding windows by key, in this process (monotonic seconds)."""

    def __init__(self) -> None:
        self._sent: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, window_s: float, now: float) -> list[float]:
        sent = [t for t in self._sent.get(key, []) if t > now - window_s]
        self._sent[key] = sent
        return sent

    def take(self, key: str, requests_per_window: int, window_s: float) -> tuple[float, float]:
        """See :meth:`~closeloop.ports.ratelimit.SharedRateLimit.take`."""
        with self._lock:
            now = time.monotonic()
            sent = self._recent(key, window_s, now)
            if len(sent) >= requests_per_window:
                return min(sent) + window_s - now, 0.0
            sent.append(now)
            return 0.0, now

    def settle(self, key: str, stamp: float) -> None:
        """See :meth:`~closeloop.ports.ratelimit.SharedRateLimit.settle`."""
        with self._lock:
            sent = self._sent.get(key, [])
            if stamp in sent:
                sent[sent.index(stamp)] = max(stamp, time.monotonic())

    def used(self, key: str, window_s: float) -> int:
        """See :meth:`~closeloop.ports.ratelimit.SharedRateLimit.used`."""
        with self._lock:
            return len(self._recent(key, window_s, time.monotonic()))
