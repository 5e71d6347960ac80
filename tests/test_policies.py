"""Retry policy, rate limiter and circuit breaker, on a hand-driven clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from closeloop.engine.breaker import BreakerState, CircuitBreaker
from closeloop.engine.ratelimit import RateLimiter
from closeloop.engine.retry import RetryPolicy
from closeloop.ports.connector import ConnectorLimits


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(attempts=st.integers(1, 60), retry_after=st.none() | st.floats(0, 1000), seed=st.integers())
def test_backoff_stays_within_its_bounds(
    attempts: int, retry_after: float | None, seed: int
) -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=60.0)
    delay = policy.delay_s(attempts, retry_after, random.Random(seed))
    ceiling = min(60.0, 0.5 * 2 ** (attempts - 1))
    assert 0.0 <= delay <= max(ceiling, min(retry_after or 0.0, 60.0))
    if retry_after is not None:
        assert delay >= min(retry_after, 60.0)


def test_backoff_grows_with_attempts_on_average() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=1000.0)
    rng = random.Random(1)
    means = [sum(policy.delay_s(n, None, rng) for _ in range(400)) / 400 for n in (1, 4, 8)]
    assert means[0] < means[1] < means[2]


def test_retry_deadline() -> None:
    policy = RetryPolicy(deadline_s=60)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not policy.exhausted(None, start)
    assert not policy.exhausted(start, start + timedelta(seconds=59))
    assert policy.exhausted(start, start + timedelta(seconds=61))


def test_rate_limiter_window_concurrency_and_retry_after() -> None:
    ticks = Ticks()
    limiter = RateLimiter(
        ConnectorLimits(requests_per_window=3, window_s=10.0, max_concurrent=2), ticks
    )
    assert limiter.acquire(0) and limiter.acquire(0)
    assert not limiter.acquire(0)  # two in flight
    limiter.release()
    assert limiter.acquire(0)  # third request of the window
    limiter.release()
    limiter.release()
    assert not limiter.acquire(0)  # window full
    assert limiter.ready_in_s() == 10.0
    ticks.now += 10.0
    assert limiter.ready_in_s() == 0.0
    limiter.pause(5.0)
    assert limiter.ready_in_s() == 5.0 and not limiter.acquire(0)
    ticks.now += 5.0
    assert limiter.acquire(0)


def test_breaker_opens_half_opens_and_closes() -> None:
    ticks = Ticks()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30.0, monotonic=ticks)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_success()
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    ticks.now += 30.0
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure()  # the probe failed
    assert breaker.state is BreakerState.OPEN
    ticks.now += 30.0
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
