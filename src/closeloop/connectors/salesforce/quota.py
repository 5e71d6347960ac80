"""The org's daily API request allocation, as the org reports it, and a budget that paces
calls before the allocation runs out.

Every REST answer carries ``Sforce-Limit-Info: api-usage=<used>/<allocation>`` (*REST API
Developer Guide*, "Limit Info Header"); usage counts over a rolling 24 hours and is shared by
every integration and user of the org, so each worker reads the org-wide figure, not its own.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from closeloop.ports.connector import TransientError

_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
DAY_S = 86_400.0


class QuotaExhausted(TransientError):
    """Calling now would eat into the reserve kept for people and other integrations."""


class QuotaBudget:
    """Keeps ``reserve`` (a fraction of the allocation) untouched.

    Above twice the reserve, calls go at full speed. Between the reserve and twice the
    reserve, calls are paced at the allocation's sustainable rate (the allocation spread over
    24 hours), so a busy hub slows down instead of running into the limit. At the reserve,
    :meth:`before_call` raises :class:`QuotaExhausted` with a pause (``pause_s``): the engine
    holds the system's work and resumes when usage has fallen.
    """

    def __init__(
        self,
        reserve: float = 0.1,
        pause_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= reserve < 1:
            raise ValueError("reserve is a fraction of the allocation, from 0 to under 1")
        self.reserve = reserve
        self.pause_s = pause_s
        self.used: int | None = None
        self.allocation: int | None = None
        self.paced_calls = 0
        self._sleep, self._monotonic = sleep, monotonic
        self._lock = threading.Lock()
        self._next_at = 0.0

    def observe(self, header: str | None) -> None:
        """Read ``Sforce-Limit-Info`` from an answer (ignored when absent)."""
        match = _USAGE.search(header or "")
        if match:
            with self._lock:
                self.used, self.allocation = int(match.group(1)), int(match.group(2))

    @property
    def remaining(self) -> int | None:
        """Requests left in the allocation, when known."""
        if self.used is None or self.allocation is None:
            return None
        return max(0, self.allocation - self.used)

    def before_call(self) -> None:
        """Wait for pacing, or raise :class:`QuotaExhausted` at the reserve."""
        remaining, allocation = self.remaining, self.allocation
        if remaining is None or not allocation:
            return
        kept = self.reserve * allocation
        if remaining <= kept:
            raise QuotaExhausted(
                f"Salesforce API allocation nearly used ({self.used} of {allocation} today); "
                f"keeping {int(kept)} requests in reserve",
                retry_after_s=self.pause_s,
            )
        if remaining > 2 * kept:
            return
        interval = DAY_S / allocation
        with self._lock:
            now = self._monotonic()
            wait = max(0.0, self._next_at - now)
            self._next_at = max(now, self._next_at) + interval
            self.paced_calls += 1
        if wait:
            self._sleep(wait)
