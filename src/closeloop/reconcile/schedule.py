"""Reconciliation on a schedule inside the hub (``closeloop run``): nightly by default.

Slots fall every ``every_h`` hours from ``at_utc`` (UTC); a slot is due when no scheduled
run started at or after it. Runs are kept in the store, so several hubs on one database run
a slot once (two that start within the same moment may both run it: harmless, a repair is
an idempotent command).
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, time, timedelta

import structlog

from closeloop.ports.clock import Clock
from closeloop.ports.store import Store
from closeloop.reconcile.run import Reconciler, RunRequest

log = structlog.get_logger(__name__)
SCHEDULE = "schedule"
_CHECK_S = 60.0


def due_slot(last: datetime | None, now: datetime, at_utc: time, every_h: float) -> datetime | None:
    """The latest slot at or before ``now`` when no scheduled run started at or after it
    (``last``: the latest scheduled run's start); ``None`` when nothing is due or the
    schedule is off (``every_h`` 0). All datetimes aware."""
    if every_h <= 0:
        return None
    step = timedelta(hours=every_h)
    anchor = datetime.combine(now.astimezone(UTC).date(), at_utc, UTC)
    slot = anchor + step * math.floor((now - anchor) / step)
    return slot if last is None or last < slot else None


class Schedule:
    """Runs ``reconciler`` in the slots of ``every_h`` hours from ``at_utc`` until stopped."""

    def __init__(
        self,
        reconciler: Reconciler,
        store: Store,
        clock: Clock,
        request: RunRequest,
        at_utc: time,
        every_h: float,
    ) -> None:
        self.reconciler = reconciler
        self.store = store
        self.clock = clock
        self.request = request
        self.at_utc = at_utc
        self.every_h = every_h

    def run_due(self) -> bool:
        """Run once if a slot is due; returns whether it ran. A failing run is logged (its
        report, when it got that far, is kept with status ``failed``)."""
        with self.store.transaction() as tx:
            runs = [r for r in tx.list_reconcile_runs(200) if r.trigger == SCHEDULE]
        last = runs[0].started_at if runs else None
        if due_slot(last, self.clock.now(), self.at_utc, self.every_h) is None:
            return False
        try:
            self.reconciler.run(self.request)
        except Exception:
            log.exception("scheduled reconciliation failed")
        return True

    def run(self, stop: threading.Event) -> None:
        """Check every minute until ``stop`` is set."""
        if self.every_h <= 0:
            return
        while not stop.is_set():
            self.run_due()
            stop.wait(_CHECK_S)
