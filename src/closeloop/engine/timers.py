"""Timers: flow instances whose ``wake_at`` has come are offered ``on_timer``."""

from __future__ import annotations

from datetime import timedelta

from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.registry import Registry
from closeloop.engine.runtime import FAILED_TIMER_RETRY_S, FlowRuntime
from closeloop.ports.clock import Clock
from closeloop.ports.store import Store

__all__ = ["FAILED_TIMER_RETRY_S", "Timers"]


class Timers:
    """Fires due flow timers, each in one transaction with what it decides.

    A flow that raises on its timer gets a business exception (class internal) and is woken
    again after ``FAILED_TIMER_RETRY_S``; the others go on (:mod:`closeloop.engine.runtime`).
    """

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, metrics: EngineMetrics
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.metrics = metrics

    def fire_due(self, limit: int = 50) -> int:
        """Fire up to ``limit`` due timers; returns how many were due."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            due = tx.due_flows(now, limit)
            runtime = FlowRuntime(tx, self.registry, now)
            failures = runtime.offer_timers(due)
            runtime.buffer.write(tx, now)
            tx.open_exceptions(failures, now)
        for e in [*failures, *runtime.buffer.exceptions]:
            self.metrics.exceptions.labels(e.error_class.value).inc()
        return len(due)

    def next_due(self, within_s: float) -> bool:
        """Whether some timer is due within ``within_s`` seconds from now."""
        until = self.clock.now() + timedelta(seconds=within_s)
        with self.store.transaction() as tx:
            return bool(tx.due_flows(until, 1))
