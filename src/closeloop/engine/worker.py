"""A worker: polls, applies the inbox and dispatches the outbox, in a loop or one pass."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from closeloop.engine.apply import Applier
from closeloop.engine.dispatch import Dispatcher
from closeloop.engine.intake import Intake
from closeloop.engine.registry import Registry
from closeloop.engine.timers import Timers
from closeloop.ports.connector import ConnectorError
from closeloop.ports.store import Store

log = structlog.get_logger(__name__)
APPLY_BATCHES_PER_ROUND = 10


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """``poll_interval_s``: seconds between polls of each object (0: no polling).
    ``overlap_s``: how far before its watermark a poll starts again. ``apply_batch``: inbox
    rows per apply transaction. ``idle_wait_s``: pause when a round found nothing to do.
    ``shutdown_grace_s``: how long a stopping worker waits for its calls in flight before it
    gives their commands back. ``poll_intervals_s``: the systems polled at another interval
    than ``poll_interval_s``, by name."""

    poll_interval_s: float = 30.0
    overlap_s: float = 60.0
    apply_batch: int = 200
    idle_wait_s: float = 0.2
    shutdown_grace_s: float = 30.0
    poll_intervals_s: Mapping[str, float] = field(default_factory=dict)


class Worker:
    """One loop of intake polling, apply, flow timers and dispatch. Several may run, in several
    processes."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        intake: Intake,
        applier: Applier,
        dispatcher: Dispatcher,
        timers: Timers,
        settings: WorkerSettings,
    ) -> None:
        self.store = store
        self.registry = registry
        self.intake = intake
        self.applier = applier
        self.dispatcher = dispatcher
        self.timers = timers
        self.settings = settings
        self.failed_polls: list[tuple[str, str]] = []
        self._next_poll: dict[str, float] = {}
        self.last_beat: float | None = None
        """``time.monotonic()`` when the loop last started a round; ``None`` when no loop runs."""

    def poll_all(self, systems: set[str] | None = None) -> int:
        """Poll every bound object (of ``systems``; default: all) once; a system that fails
        is logged and skipped (the objects that failed are in :attr:`failed_polls` until the
        next round)."""
        accepted = 0
        self.failed_polls = []
        for system, object_name in self.registry.polled_objects():
            if systems is not None and system not in systems:
                continue
            try:
                accepted += self.intake.poll(system, object_name, self.settings.overlap_s).accepted
            except ConnectorError as exc:
                self.failed_polls.append((system, object_name))
                log.warning("poll failed", system=system, object=object_name, error=str(exc))
        return accepted

    def run_once(self) -> int:
        """One round: poll if due, apply what is pending, fire due flow timers, dispatch once.
        Returns work done."""
        work = 0
        if self.settings.poll_interval_s > 0 and (due := self._due_polls()):
            work += self.poll_all(due)
        return work + self._process()

    def _process(self) -> int:
        """Apply what is pending, fire due flow timers, dispatch once; returns work done."""
        work = 0
        for _ in range(APPLY_BATCHES_PER_ROUND):  # then dispatch, even under steady intake
            applied = self.applier.apply_batch(self.settings.apply_batch)
            work += applied
            if applied < self.settings.apply_batch:
                break
        work += self.timers.fire_due()
        work += self.dispatcher.dispatch_once()
        return work

    def _due_polls(self) -> set[str]:
        """The systems whose poll is due now (each then waits its own interval)."""
        now, due = time.monotonic(), set()
        for system, _object in self.registry.polled_objects():
            if system not in due and now >= self._next_poll.get(system, 0.0):
                due.add(system)
                every = self.settings.poll_intervals_s.get(system, self.settings.poll_interval_s)
                self._next_poll[system] = now + every
        return due

    def is_idle(self, timers_within_s: float = 0.0) -> bool:
        """No pending inbox row, no pending or in-flight command that can run (parked ones,
        and those queued behind them, wait for people) and no flow timer due within
        ``timers_within_s`` seconds."""
        with self.store.transaction() as tx:
            busy = tx.stats().inbox_by_status.get("pending") or tx.runnable_commands()
        return not busy and not self.timers.next_due(timers_within_s)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; errors of one round are logged and the loop goes on.

        Once ``stop`` is set nothing more is claimed, and the round in progress ends within
        ``shutdown_grace_s`` (its calls finish, or their commands are given back: see
        :meth:`~closeloop.engine.dispatch.Dispatcher.dispatch_once`)."""
        with self._draining_on(stop):
            while not stop.is_set():
                self.last_beat = time.monotonic()
                try:
                    work = self.run_once()
                except Exception:
                    log.exception("worker round failed")
                    work = 0
                if not work:
                    stop.wait(self.settings.idle_wait_s)

    def run_due(self, stop: threading.Event) -> int:
        """One pass for an external scheduler: poll every object once (unless polling is
        off), then apply, fire due flow timers and dispatch until a round finds nothing due
        now. Retries scheduled for later are left for the next pass; parked commands wait
        for people. ``stop`` ends the pass early, as in :meth:`run`. Returns work done;
        raises what a round raises (the database unreachable, a bug), after the calls in
        flight ended."""
        with self._draining_on(stop):
            self.last_beat = time.monotonic()
            work = self.poll_all() if self.settings.poll_interval_s > 0 else 0
            while not stop.is_set():
                self.last_beat = time.monotonic()
                done = self._process()
                if not done:
                    break
                work += done
            return work

    @contextlib.contextmanager
    def _draining_on(self, stop: threading.Event) -> Iterator[None]:
        """While inside, a ``stop`` set (e.g. by a signal handler, which must not take locks)
        drains the dispatcher from a thread of its own; on leaving, the dispatcher claims again
        and :attr:`last_beat` is cleared. The thread ends by itself (within half a second)."""
        left = threading.Event()
        lock = threading.Lock()

        def drain_when_stopped() -> None:
            while not (stop.wait(0.5) or left.is_set()):
                pass
            with lock:
                if not left.is_set():
                    self.dispatcher.drain(self.settings.shutdown_grace_s)

        threading.Thread(target=drain_when_stopped, name="drain", daemon=True).start()
        try:
            yield
        finally:
            with lock:  # a drain after this would outlive the loop
                left.set()
            self.dispatcher.resume()
            self.last_beat = None

    def health(self, stale_after_s: float) -> tuple[bool, dict[str, Any]]:
        """Whether this process's loop is alive (a round started within ``stale_after_s``
        seconds) and the database answers; with the details as JSON-ready data:
        ``{"status": "ok" | "failing", "worker": {"running", "last_round_s_ago"},
        "database": "ok" | "unreachable: <error type>"}``."""
        beat = self.last_beat
        age = None if beat is None else round(time.monotonic() - beat, 3)
        alive = age is not None and age <= stale_after_s
        try:
            self.store.ping()
            database = "ok"
        except Exception as exc:
            database = f"unreachable: {type(exc).__name__}"
        ok = alive and database == "ok"
        return ok, {
            "status": "ok" if ok else "failing",
            "worker": {"running": beat is not None, "last_round_s_ago": age},
            "database": database,
        }

    def run_until_idle(
        self, timeout_s: float, stop: threading.Event | None = None, timers_within_s: float = 0.0
    ) -> bool:
        """Loop until :meth:`is_idle` (``timers_within_s`` as there); ``False`` if ``timeout_s``
        passed first."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not stop.is_set():
            if self.run_once():
                continue
            if self.is_idle(timers_within_s):
                return True
            stop.wait(self.settings.idle_wait_s)
        return False
