"""Per-system circuit breaker: stop calling a system that keeps failing, probe it later."""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    """``closed``: calls flow. ``open``: no calls until the cool-down ends. ``half_open``: one
    probe call decides."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failed calls; after ``cooldown_s`` it reads
    half-open and the dispatcher sends one probe batch: a success closes it, a failure opens it
    again.

    Thread-safe. ``monotonic`` is a clock in seconds.
    """

    def __init__(
        self, failure_threshold: int, cooldown_s: float, monotonic: Callable[[], float]
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at = 0.0
        self._tripped_at: float | None = None
        self._state = BreakerState.CLOSED
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker past its cool-down reads as half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooled():
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def open_since(self) -> float | None:
        """When (``monotonic`` seconds) it last opened without closing since (half-open
        probes that fail keep it), or ``None`` while closed."""
        with self._lock:
            return self._tripped_at

    def _cooled(self) -> bool:
        return self._monotonic() - self._opened_at >= self.cooldown_s

    def record_success(self) -> None:
        """A call got an answer from the system: close."""
        with self._lock:
            self._failures = 0
            self._state = BreakerState.CLOSED
            self._tripped_at = None

    def record_failure(self) -> None:
        """A call failed for the system's sake (timeout, 5xx, no answer)."""
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = BreakerState.OPEN
                self._opened_at = self._monotonic()
                if self._tripped_at is None:
                    self._tripped_at = self._opened_at
