"""Dispatch: claimed commands run as batch calls under each system's limits
(docs/architecture.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from closeloop.domain.changes import listed_problems, payload_problems
from closeloop.domain.commands import (
    Ambiguous,
    Applied,
    CommandStatus,
    ExceptionClass,
    Outcome,
    Permanent,
    Transient,
)
from closeloop.engine.breaker import BreakerState, CircuitBreaker
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.ratelimit import RateLimiter
from closeloop.engine.registry import Registry
from closeloop.engine.retry import RetryPolicy
from closeloop.engine.runtime import FlowRuntime, Origin
from closeloop.ports.clock import Clock
from closeloop.ports.connector import AmbiguousError, Connector, RefusedError, TransientError
from closeloop.ports.store import (
    CommandRow,
    CommandUpdate,
    NewException,
    Store,
    UnitOfWork,
    iter_chunks,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """Knobs of the dispatcher.

    ``lease_s``: how long a claim lasts before another worker may take the command over
    (longer than any call plus its wait for a rate-limit permit). ``breaker_failures`` and
    ``breaker_cooldown_s``: circuit breaker threshold and cool-down. ``threads``: batch calls
    in flight at once across systems.
    """

    lease_s: float = 120.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    threads: int = 4
    permit_wait_s: float = 30.0


@dataclass(slots=True)
class _Round:
    """One claim's batches: the commands whose call started (``sent``), and whether the
    round was given up (``cut_off``: its batches start no call any more)."""

    sent: set[int] = field(default_factory=set)
    cut_off: bool = False


@dataclass(frozen=True, slots=True)
class _Refused:
    """A batch call that failed for its content (``unexpected``: by a connector's own
    exception, after which the request may have gone out)."""

    error_class: ExceptionClass
    message: str
    unexpected: bool


class _Gate:
    """A system's rate limiter and breaker."""

    def __init__(self, connector: Connector, settings: DispatchSettings, clock: Clock) -> None:
        self.limiter = RateLimiter(connector.limits, clock.monotonic)
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_cooldown_s, clock.monotonic
        )


class Dispatcher:
    """Claims due commands, runs them in batches and records outcomes and flow reactions.

    Exactly-once effects rest on three rules: a command's idempotency key is unique in the
    outbox; a command whose earlier attempt may have reached the target (no answer, or its
    worker died) is looked up by key in the target before it is sent again; and the outcome
    is committed together with the flow's reaction to it.

    A worker that stops calls :meth:`drain`: no more claims, and the calls in flight get a
    grace period to end; the claims of those that did not are given back (see
    :meth:`dispatch_once`).
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock,
        metrics: EngineMetrics,
        retry: RetryPolicy,
        settings: DispatchSettings,
        worker_id: str,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.metrics = metrics
        self.retry = retry
        self.settings = settings
        self.worker_id = worker_id
        self.gates = {name: _Gate(c, settings, clock) for name, c in registry.connectors.items()}
        self._pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="dispatch")
        self._lock = threading.Lock()
        self._deadline: float | None = None  # monotonic end of the grace period, once draining
        self._wake: Future[None] = Future()  # done when draining starts
        self._round = threading.local()  # the _Round of the batch a pool thread runs

    def close(self) -> None:
        """Stop the thread pool (waits for running calls; batches not started are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def drain(self, grace_s: float) -> None:
        """Stop claiming; the round in progress may wait ``grace_s`` seconds more for its
        calls, then gives back what is unfinished. Thread-safe; the first call counts (not
        for a signal handler: it takes locks)."""
        with self._lock:
            if self._deadline is not None:
                return
            self._deadline = time.monotonic() + grace_s
        self._wake.set_result(None)
        log.info("stopping: claiming nothing more", grace_s=grace_s)

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called (and not undone by :meth:`resume`)."""
        return self._deadline is not None

    def resume(self) -> None:
        """Claim again after a :meth:`drain` (a worker loop started anew in the process)."""
        with self._lock:
            self._deadline = None
            self._wake = Future()

    def _claim_budget(self) -> dict[str, int]:
        budget: dict[str, int] = {}
        for name, gate in self.gates.items():
            state = gate.breaker.state
            self.metrics.breaker_open.labels(name).set(0 if state is BreakerState.CLOSED else 1)
            if (
                state is BreakerState.OPEN
                or gate.limiter.ready_in_s() > self.settings.permit_wait_s
            ):
                continue
            limits = self.registry.connector(name).limits
            batches = 1 if state is BreakerState.HALF_OPEN else limits.max_concurrent
            budget[name] = limits.batch_size * batches
        return budget

    def dispatch_once(self) -> int:
        """Claim due commands once, run them, record outcomes. Returns how many were claimed.

        While draining (:meth:`drain`) nothing is claimed. When the grace period ends before every
        batch of the round did, the finished ones are recorded and the claims of the others
        are released (:meth:`~closeloop.ports.store.UnitOfWork.release_commands`): due again,
        their attempt not counted, ambiguous when a call of theirs had started (the next
        claimer looks them up first); their late answers are dropped.
        """
        if self.draining:
            return 0
        budget = self._claim_budget()
        if not budget:
            return 0
        now = self.clock.now()
        lease_until = now + timedelta(seconds=self.settings.lease_s)
        with self.store.transaction() as tx:
            by_system = {
                system: tx.claim_commands([system], now, limit, lease_until, self.worker_id)
                for system, limit in budget.items()
            }
        claimed = sum(len(rows) for rows in by_system.values())
        if not claimed:
            return 0
        round_ = _Round()
        batches: dict[Future[list[tuple[CommandRow, Outcome]]], list[CommandRow]] = {}
        for system, rows in by_system.items():
            size = self.registry.connector(system).limits.batch_size
            for chunk in iter_chunks(rows, size):
                future = self._pool.submit(self._run_in, round_, system, list(chunk))
                batches[future] = list(chunk)
        unfinished = self._await(list(batches))
        if unfinished:
            self._release(round_, unfinished, [row for f in unfinished for row in batches[f]])
        self._record([r for f in batches if f not in unfinished for r in f.result()])
        return claimed

    def _await(self, futures: list[Future[Any]]) -> set[Future[Any]]:
        """Wait for ``futures``: all of them until :meth:`drain` is called, then until the
        grace period ends. Returns those not done."""
        pending: set[Future[Any]] = set(futures)
        while pending and self._deadline is None:
            _, pending = wait([*pending, self._wake], return_when=FIRST_COMPLETED)
            pending.discard(self._wake)
        if pending and self._deadline is not None:
            _, pending = wait(pending, timeout=max(0.0, self._deadline - time.monotonic()))
        return pending

    def _release(
        self, round_: _Round, unfinished: set[Future[Any]], rows: list[CommandRow]
    ) -> None:
        """Past the grace period: the round's batches start no call any more (those not
        started are dropped); give back ``rows``' claims."""
        with self._lock:
            round_.cut_off = True
            sent = [r.id for r in rows if r.id in round_.sent]
        for future in unfinished:
            future.cancel()
        with self.store.transaction() as tx:
            released = tx.release_commands(
                [r.id for r in rows], sent, self.worker_id, self.clock.now()
            )
        log.warning(
            "stopping: claims released after the grace period",
            released=released,
            sent_unanswered=len(sent),
        )

    def _may_send(self, ids: Sequence[int]) -> bool:
        """Whether a call about ``ids`` may start (its round was not given up); notes them as
        sent when it may."""
        round_: _Round | None = getattr(self._round, "current", None)
        if round_ is None:  # not in a dispatch round (a direct call)
            return True
        with self._lock:
            if round_.cut_off:
                return False
            round_.sent.update(ids)
            return True

    def _run_in(
        self, round_: _Round, system: str, rows: list[CommandRow]
    ) -> list[tuple[CommandRow, Outcome]]:
        """:meth:`_run_batch` as a batch of ``round_`` (in a pool thread)."""
        self._round.current = round_
        try:
            return self._run_batch(system, rows)
        finally:
            self._round.current = None

    def _run_batch(self, system: str, rows: list[CommandRow]) -> list[tuple[CommandRow, Outcome]]:
        """Run one batch call (after settling ambiguous commands); never raises."""
        connector = self.registry.connector(system)
        gate = self.gates[system]
        settled: dict[int, Outcome] = {}
        unsure = [r for r in rows if r.ambiguous]
        if unsure:
            settled.update(self._look_up(system, gate, connector, unsure))
        for row in rows:
            problems = payload_problems(row.command.payload) if row.id not in settled else []
            if problems:  # no system can take it, and it would spoil the batch it joins
                settled[row.id] = Permanent(
                    ExceptionClass.VALIDATION,
                    "its data holds text that cannot be sent to any system ("
                    + "; ".join(listed_problems(problems))
                    + "): fix the source record, whose next version is sent instead",
                )
        to_send = [r for r in rows if r.id not in settled]
        if to_send:
            lone: set[int] = set()
            sent = self._send(system, gate, connector, to_send, lone)
            if lone and not any(
                isinstance(o, (Applied, Permanent)) and i not in lone for i, o in sent.items()
            ):  # nothing went through: the connector fails on everything, not on these
                gate.breaker.record_failure()
                sent.update(
                    [(i, Ambiguous(o.message)) for i, o in sent.items() if isinstance(o, Permanent)]
                )
            settled.update(sent)
        return [(r, settled[r.id]) for r in rows]

    def _look_up(
        self, system: str, gate: _Gate, connector: Connector, rows: list[CommandRow]
    ) -> dict[int, Outcome]:
        """Outcomes of the ``rows`` found applied in the target; when the lookup itself
        fails, every row stays ambiguous (none may be sent before we know)."""
        found = self._call(
            system,
            gate,
            "find",
            lambda: connector.find([r.command.idempotency_key for r in rows]),
            [r.id for r in rows],
        )
        if isinstance(found, dict):
            return {
                r.id: found[r.command.idempotency_key]
                for r in rows
                if r.command.idempotency_key in found
            }
        reason = found.message if isinstance(found, _Refused) else found.reason
        return {r.id: Ambiguous(f"lookup before retry failed: {reason}") for r in rows}

    def _send(
        self,
        system: str,
        gate: _Gate,
        connector: Connector,
        rows: list[CommandRow],
        lone: set[int],
    ) -> dict[int, Outcome]:
        """Execute ``rows`` in one call; a batch refused as a whole is split (:meth:`_split`;
        ``lone`` collects the commands that failed unexpectedly when sent alone)."""
        answer = self._call(
            system,
            gate,
            "execute",
            lambda: connector.execute([r.command for r in rows]),
            [r.id for r in rows],
        )
        if isinstance(answer, _Refused):
            return self._split(system, gate, connector, rows, answer, lone)
        if isinstance(answer, (Transient, Ambiguous)):
            return {r.id: answer for r in rows}
        if len(answer) != len(rows):
            bad = Ambiguous(f"{system} answered {len(answer)} outcomes for {len(rows)} commands")
            return {r.id: bad for r in rows}
        return {r.id: o for r, o in zip(rows, answer, strict=True)}

    def _split(
        self,
        system: str,
        gate: _Gate,
        connector: Connector,
        rows: list[CommandRow],
        refusal: _Refused,
        lone: set[int],
    ) -> dict[int, Outcome]:
        """Find the command that spoils a batch refused as a whole, so it fails alone.

        After an unexpected failure (a connector bug: the request may have gone out) the
        batch's keys are looked up first and what was applied is settled. Then a command that
        was sent alone takes the refusal as its permanent outcome (a business exception), and
        the rest is sent again, halved: one refused command among ``n`` costs about
        ``2 log2 n`` more calls, and every other command goes through. A command that failed
        unexpectedly alone is put in ``lone``: when nothing else of the batch went through,
        :meth:`_run_batch` treats the failure as the system's, not the command's.
        """
        settled: dict[int, Outcome] = {}
        if refusal.unexpected:
            looked = self._look_up(system, gate, connector, rows)
            if any(isinstance(o, Ambiguous) for o in looked.values()):
                return {r.id: Ambiguous(refusal.message) for r in rows}  # cannot tell yet
            settled.update(looked)
        rest = [r for r in rows if r.id not in settled]
        if len(rows) == 1 and rest:  # sent alone and refused
            settled[rest[0].id] = Permanent(refusal.error_class, refusal.message)
            if refusal.unexpected:
                lone.add(rest[0].id)
        elif len(rest) == 1:
            settled.update(self._send(system, gate, connector, rest, lone))
        elif rest:
            half = len(rest) // 2
            settled.update(self._send(system, gate, connector, rest[:half], lone))
            settled.update(self._send(system, gate, connector, rest[half:], lone))
        return settled

    def _call(
        self, system: str, gate: _Gate, kind: str, call: Callable[[], T], ids: Sequence[int]
    ) -> T | Transient | Ambiguous | _Refused:
        """Run ``call`` (about the commands ``ids``) under the system's rate limit; classify
        whole-call failures. Past a drain's grace period the call is not made (transient).

        Transport failures count against the system's breaker; a refused batch
        (:class:`RefusedError`) and a connector's unexpected exception do not: they are
        about the batch's content or a bug, and are split and isolated instead."""
        if not gate.limiter.acquire(self.settings.permit_wait_s):
            return Transient(
                f"{system} rate limit: no permit within {self.settings.permit_wait_s}s"
            )
        if not self._may_send(ids):
            gate.limiter.release()
            return Transient("the worker is stopping: not sent")
        started = time.monotonic()
        try:
            result = call()
        except TransientError as exc:
            if exc.retry_after_s:
                gate.limiter.pause(exc.retry_after_s)
            gate.breaker.record_failure()
            self.metrics.calls.labels(system, kind, "transient").inc()
            return Transient(str(exc), exc.retry_after_s)
        except AmbiguousError as exc:
            gate.breaker.record_failure()
            self.metrics.calls.labels(system, kind, "ambiguous").inc()
            return Ambiguous(str(exc))
        except RefusedError as exc:
            self.metrics.calls.labels(system, kind, "refused").inc()
            return _Refused(ExceptionClass.VALIDATION, f"{system} refused it: {exc}", False)
        except Exception as exc:  # a connector bug: the request may have gone out
            log.exception("connector call failed", system=system, kind=kind)
            self.metrics.calls.labels(system, kind, "error").inc()
            message = (
                f"the {system} connector failed on it ({type(exc).__name__}: {exc}); "
                "nothing was found applied"
            )
            return _Refused(ExceptionClass.INTERNAL, message, True)
        finally:
            gate.limiter.release()
            self.metrics.call_seconds.labels(system, kind).observe(time.monotonic() - started)
        gate.breaker.record_success()
        self.metrics.calls.labels(system, kind, "ok").inc()
        return result

    def _record(self, results: Sequence[tuple[CommandRow, Outcome]]) -> None:
        """Commit outcomes and the flows' reactions in one transaction.

        Only commands this worker still holds are recorded: one whose lease ran out was taken
        over by another worker, which settles it by lookup (it is ambiguous there).
        """
        with self.store.transaction() as tx:
            held = tx.still_claimed([row.id for row, _ in results], self.worker_id)
            lost = [row for row, _ in results if row.id not in held]
            if lost:
                log.warning(
                    "lease lost: another worker took these commands over",
                    commands=[row.id for row in lost],
                )
            self._record_in(tx, [(row, o) for row, o in results if row.id in held])

    def _record_in(self, tx: UnitOfWork, results: Sequence[tuple[CommandRow, Outcome]]) -> None:
        now = self.clock.now()
        updates: list[CommandUpdate] = []
        exceptions: list[NewException] = []
        applied: list[tuple[CommandRow, Applied]] = []
        # one jittered retry time per system and attempt: a batch that failed together is
        # retried together, as one batch call again
        due: dict[tuple[str, int, float | None], datetime] = {}
        for row, outcome in results:
            cmd = row.command
            label = type(outcome).__name__.lower()
            self.metrics.commands.labels(cmd.system, cmd.operation, label).inc()
            (log.debug if isinstance(outcome, Applied) else log.info)(
                "command",
                system=cmd.system,
                operation=cmd.operation,
                outcome=label,
                idempotency_key=cmd.idempotency_key,
                attempt=row.attempts,
                correlation_id=row.correlation_id,
            )
            if isinstance(outcome, Applied):
                updates.append(CommandUpdate(row.id, CommandStatus.DONE, result=outcome.result))
                applied.append((row, outcome))
            elif isinstance(outcome, Permanent):
                updates.append(
                    CommandUpdate(row.id, CommandStatus.PARKED, last_error=outcome.message)
                )
                exceptions.append(
                    self._exception(row, outcome.error_class, f"refused: {outcome.message}")
                )
            elif self.retry.exhausted(row.first_attempt_at, now):
                message = f"gave up after {row.attempts} attempts: {outcome.reason}"
                text = f"failed {row.attempts} times until the retry deadline: {outcome.reason}"
                updates.append(
                    CommandUpdate(
                        row.id,
                        CommandStatus.PARKED,
                        ambiguous=isinstance(outcome, Ambiguous),
                        last_error=message,
                    )
                )
                exceptions.append(self._exception(row, ExceptionClass.RETRIES_EXHAUSTED, text))
            else:
                retry_after = outcome.retry_after_s if isinstance(outcome, Transient) else None
                self.metrics.retries.labels(cmd.system, label).inc()
                updates.append(
                    CommandUpdate(
                        row.id,
                        CommandStatus.PENDING,
                        next_attempt_at=due.setdefault(
                            (cmd.system, row.attempts, retry_after),
                            self.retry.next_attempt_at(now, row.attempts, retry_after),
                        ),
                        ambiguous=isinstance(outcome, Ambiguous)
                        or (row.ambiguous and label != "applied"),
                        last_error=outcome.reason,
                    )
                )
        tx.finish_commands(updates, now)
        runtime = FlowRuntime(tx, self.registry, now)  # the flows' reactions, in command order
        exceptions.extend(runtime.offer_results(applied))
        tx.open_exceptions(exceptions, now)
        runtime.buffer.write(tx, now)
        for e in [*exceptions, *runtime.buffer.exceptions]:
            self.metrics.exceptions.labels(e.error_class.value).inc()

    def _exception(
        self, row: CommandRow, error_class: ExceptionClass, message: str
    ) -> NewException:
        """An exception about ``row``: ``"<system> <operation> of <entity> <message>"``."""
        return Origin.of_command(row).exception(error_class, message)
