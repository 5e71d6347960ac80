"""When to try a failed command again, and when to stop."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, honouring ``Retry-After``, up to a deadline.

    Attempt ``n`` (1-based) waits a random time in
    ``[0, min(max_delay_s, base_delay_s * 2**(n-1))]``
    ("full jitter", AWS Architecture Blog, *Exponential Backoff And Jitter*, 2015), but never
    less than the system's ``Retry-After`` (RFC 9110, section 10.2.3). A command whose first
    attempt is older than ``deadline_s`` stops retrying and becomes a business exception.
    """

    base_delay_s: float = 0.5
    max_delay_s: float = 300.0
    deadline_s: float = 24 * 3600.0

    def delay_s(
        self, attempts: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1))
        delay = (rng or random).uniform(0.0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay

    def next_attempt_at(
        self, now: datetime, attempts: int, retry_after_s: float | None = None
    ) -> datetime:
        """``now`` plus :meth:`delay_s`."""
        return now + timedelta(seconds=self.delay_s(attempts, retry_after_s))

    def exhausted(self, first_attempt_at: datetime | None, now: datetime) -> bool:
        """Whether the deadline has passed since the first attempt."""
        return (
            first_attempt_at is not None
            and (now - first_attempt_at).total_seconds() > self.deadline_s
        )
