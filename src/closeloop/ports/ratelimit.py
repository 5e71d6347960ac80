"""A rate limit shared by every worker process that calls one vendor account."""

from __future__ import annotations

from typing import Protocol


class SharedRateLimit(Protocol):
    """Request slots of a sliding window, counted across processes (and machines).

    Vendors limit an account, not a process: Harvest allows 100 requests per 15 seconds per
    account, however many workers share it.
    """

    def take(self, key: str, requests_per_window: int, window_s: float) -> float:
        """Take one slot of ``key``'s window: ``0.0`` when taken, else the seconds until the
        oldest request leaves the window (nothing taken; try again then)."""
        ...
