"""Prometheus metrics of the engine, on a registry of their own (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from closeloop.ports.store import StoreStats


class EngineMetrics:
    """Counters and gauges the engine updates; ``registry`` is what ``/metrics`` serves.

    Names follow Prometheus conventions (``_total`` counters, ``_seconds`` durations).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.changes_received = Counter(
            "closeloop_changes_received_total",
            "Changes offered to the inbox",
            ["system", "object", "result"],
            registry=r,
        )
        self.notifications_ignored = Counter(
            "closeloop_notifications_ignored_total",
            "Webhook notifications of objects no flow is bound to: acknowledged, not stored "
            "(object: a name the connector knows, else '(other)')",
            ["system", "object"],
            registry=r,
        )
        self.changes_applied = Counter(
            "closeloop_changes_applied_total",
            "Inbox rows processed",
            ["system", "object", "outcome"],
            registry=r,
        )
        self.commands = Counter(
            "closeloop_command_attempts_total",
            "Command attempts by outcome",
            ["system", "operation", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "closeloop_retries_total",
            "Commands scheduled for another attempt",
            ["system", "reason"],
            registry=r,
        )
        self.exceptions = Counter(
            "closeloop_exceptions_opened_total",
            "Business exceptions opened",
            ["error_class"],
            registry=r,
        )
        self.calls = Counter(
            "closeloop_calls_total",
            "API calls made to a system",
            ["system", "kind", "result"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "closeloop_call_duration_seconds",
            "API call duration",
            ["system", "kind"],
            registry=r,
        )
        self.ownership_refused = Counter(
            "closeloop_ownership_refused_total",
            "Changes to a field from a system that does not own it, not propagated (drift)",
            ["system", "canonical_type", "field"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "closeloop_breaker_open",
            "1 when the system's circuit breaker is open or half-open",
            ["system"],
            registry=r,
        )

    def watch_store(self, stats: Callable[[], StoreStats], now: Callable[[], datetime]) -> None:
        """Serve inbox lag, commands by state and open exceptions, read at scrape time."""
        self.registry.register(_StoreCollector(stats, now))


class _StoreCollector:
    def __init__(self, stats: Callable[[], StoreStats], now: Callable[[], datetime]) -> None:
        self._stats = stats
        self._now = now

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        lag = GaugeMetricFamily(
            "closeloop_inbox_lag_seconds", "Age of the oldest pending inbox row (0 when none)"
        )
        oldest = stats.oldest_pending_inbox
        lag.add_metric([], (self._now() - oldest).total_seconds() if oldest else 0.0)
        yield lag
        inbox = GaugeMetricFamily("closeloop_inbox_rows", "Inbox rows by status", labels=["status"])
        for status, count in stats.inbox_by_status.items():
            inbox.add_metric([status], count)
        yield inbox
        commands = GaugeMetricFamily(
            "closeloop_commands", "Outbox commands by system and state", labels=["system", "status"]
        )
        for system, counts in stats.commands_by_system.items():
            for status, count in counts.items():
                commands.add_metric([system, status], count)
        yield commands
        exceptions = GaugeMetricFamily(
            "closeloop_exceptions_open", "Open business exceptions by class", labels=["error_class"]
        )
        for error_class, count in stats.open_exceptions_by_class.items():
            exceptions.add_metric([error_class], count)
        yield exceptions
