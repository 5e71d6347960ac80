"""Timers: flow instances whose ``wake_at`` has come are offered ``on_timer``."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import structlog

from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.engine.apply import StepBuffer
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.registry import Registry
from closeloop.ports.clock import Clock
from closeloop.ports.store import NewException, Store

log = structlog.get_logger(__name__)
FAILED_TIMER_RETRY_S = 300.0


class Timers:
    """Fires due flow timers, each in one transaction with what it decides.

    A flow that raises on its timer gets a business exception (class internal) and is woken
    again after ``FAILED_TIMER_RETRY_S``; the others go on.
    """

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, metrics: EngineMetrics
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.metrics = metrics

    def fire_due(self, limit: int = 50) -> int:
        """Fire up to ``limit`` due timers; returns how many fired."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            due = tx.due_flows(now, limit)
            buffer = StepBuffer()
            known = {(s.flow, s.business_key): s for s in due}
            failures: list[NewException] = []
            for state in due:
                current = buffer.states.get((state.flow, state.business_key), state)
                local = StepBuffer()
                try:
                    step = self.registry.flow(state.flow).on_timer(current, now)
                    if step is None:
                        local.states[(state.flow, state.business_key)] = replace(
                            current, wake_at=None
                        )
                    else:
                        local.add(state.flow, state.business_key, step, None)
                        local.deliver(tx, self.registry, {**known, **buffer.states}, now)
                except Exception as exc:
                    log.exception("flow failed on its timer", flow=state.flow)
                    retry = now + timedelta(seconds=FAILED_TIMER_RETRY_S)
                    local = StepBuffer()
                    local.states[(state.flow, state.business_key)] = replace(current, wake_at=retry)
                    failures.append(
                        NewException(
                            ExceptionClass.INTERNAL,
                            Impact.REPORTING,
                            f"flow:{state.flow}:{state.business_key}",
                            f"flow {state.flow} failed on the timer of {state.business_key}: "
                            f"{type(exc).__name__}: {exc}",
                        )
                    )
                buffer.merge(local)
            buffer.write(tx, now)
            tx.open_exceptions(failures, now)
        for e in [*failures, *buffer.exceptions]:
            self.metrics.exceptions.labels(e.error_class.value).inc()
        return len(due)

    def next_due(self, within_s: float) -> bool:
        """Whether some timer is due within ``within_s`` seconds from now."""
        until = self.clock.now() + timedelta(seconds=within_s)
        with self.store.transaction() as tx:
            return bool(tx.due_flows(until, 1))
