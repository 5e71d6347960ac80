"""Reconciliation on a schedule inside the hub (``closeloop run``): nightly by default.

Slots fall every ``every_h`` hours from ``at_utc`` (UTC) on a fixed calendar (so slots of
any length, a week's included, keep their place); a slot is due when no scheduled run
started at or after it. Runs are kept in the store, so a hub finds a slot another hub ran.
Two hubs that check within the same moment may both run it: their repairs carry the slot in
their idempotency keys, so each command is sent once, and at worst a drift gets two
business exceptions.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import structlog

from closeloop.ports.clock import Clock
from closeloop.ports.store import Store
from closeloop.reconcile.run import Reconciler, RunRequest

log = structlog.get_logger(__name__)
SCHEDULE = "schedule"
_CHECK_S = 60.0
_EPOCH = date(2000, 1, 3)  # a Monday: weekly slots (every_h 168) fall on Mondays


def due_slot(last: datetime | None, now: datetime, at_utc: time, every_h: float) -> datetime | None:
    """The latest slot at or before ``now`` when no scheduled run started at or after it
    (``last``: the latest scheduled run's start); ``None`` when nothing is due or the
    schedule is off (``every_h`` 0). All datetimes aware."""
    if every_h <= 0:
        return None
    step = timedelta(hours=every_h)
    anchor = datetime.combine(_EPOCH, at_utc, UTC)  # fixed: slots of any length stay put
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
            runs = tx.list_reconcile_runs(1, trigger=SCHEDULE)
        last = runs[0].started_at if runs else None
        slot = due_slot(last, self.clock.now(), self.at_utc, self.every_h)
        if slot is None:
            return False
        try:  # the slot names the repairs: two hubs running it send each once
            self.reconciler.run(replace(self.request, tag=f"schedule-{slot:%Y%m%dT%H%M}"))
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
