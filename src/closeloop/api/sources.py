"""What the console's pages and the ``/api/v1`` views read: one :class:`ViewSources`, built
by the composition root, so both surfaces show the same figures from the same read models
(:mod:`closeloop.engine.views`, :mod:`closeloop.flows.timeline`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from closeloop.alerts.alerter import AlertsOverview
from closeloop.engine.operations import Operations
from closeloop.engine.views import Overview, ReadModel, read_overview
from closeloop.reconcile.run import Reconciler


@dataclass(frozen=True)
class ViewSources:
    """What the console and the API views read and act through: the hub's ``operations``,
    ``reconciler`` and ``read_model``; its configured ``systems`` (names); ``breakers()``
    (each system's circuit breaker state in this process, by name) and ``quotas()`` (each
    system's quota left, in words, by name: may call the vendors); ``now()`` (aware UTC);
    ``alerts()``: the configured alerts and what fires (``None``: not shown)."""

    operations: Operations
    reconciler: Reconciler
    read_model: ReadModel
    systems: Sequence[str]
    breakers: Callable[[], dict[str, str]]
    quotas: Callable[[], dict[str, str]]
    now: Callable[[], datetime]
    alerts: Callable[[], AlertsOverview] | None = None

    def overview(self) -> Overview:
        """The overview now (:func:`closeloop.engine.views.read_overview`) with the latest
        reconciliation run."""
        runs = self.reconciler.runs(1)
        return read_overview(
            self.operations,
            self.systems,
            self.breakers(),
            self.quotas(),
            runs[0] if runs else None,
            self.now(),
        )
