"""A rate limit shared by every worker process that calls one vendor account."""

from __future__ import annotations

from typing import Protocol


class SharedRateLimit(Protocol):
    """Request slots of a sliding window, counted across processes (and machines).

    Vendors limit an account, not a process: Harvest allows 100 requests per 15 seconds per
    account, however many workers share it.
    """

    def take(self, key: str, requests_per_window: int, window_s: float) -> tuple[float, float]:
        """Take one slot of ``key``'s window: ``(0.0, stamp)`` when taken, else ``(seconds
        until the oldest request leaves the window, 0.0)`` (nothing taken; try again then)."""
        ...

    def settle(self, key: str, stamp: float) -> None:
        """The request of slot ``stamp`` is answered: from now on the slot counts from the
        answer's time. The vendor counts a request when it arrives, somewhere between the two;
        counting from the answer keeps every worker under the vendor's count."""
        ...

    def used(self, key: str, window_s: float) -> int:
        """Requests sent under ``key`` within the last ``window_s`` seconds (all workers)."""
        ...
