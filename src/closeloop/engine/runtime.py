"""The flow runtime: the one place that offers events to flow instances (docs/architecture.md).

An event (a record from apply, a command's result from dispatch, a timer, a person's
cross-reference link) is offered, in the caller's transaction, to the instances it concerns.
Their steps and the steps of the instances their signals reach, breadth first (at most
``MAX_SIGNALS`` per event: more is a loop), make the event's *unit*. Signals to ``xref`` are
answered by :mod:`closeloop.engine.xref`; a signal to a flow the configuration does not run is
not delivered. Kept units gather in :attr:`FlowRuntime.buffer` for :meth:`StepBuffer.write`.

One failure policy. A flow that raises (on a record or in ``business_key``, on a result, a
signal, a timer) takes no step on that event and costs one INTERNAL business exception naming
the flow, the business key and the event, with the entity and correlation id of the event
that set it off; the transaction's other events go on. The event is not lost: what is dropped
is the smallest part that can be offered again.

- A record's unit is the record: nothing of it is written (nor its other flows' steps, nor
  what their signals did); it is rejected and comes again by replay or with its next version.
- A timer's unit is the instance's timer: nothing of it is written, it fires again after
  ``FAILED_TIMER_RETRY_S``.
- A result cannot come again (its command's effect happened and is recorded done): only the
  call that raised is dropped; the flow's step on the result and the steps of every other
  instance its signals reach stand. A signal loop drops the chain, keeping the flow's step on
  the result without its signals.
- A person's link (:meth:`FlowRuntime.offer_signals`) raises :class:`FlowFailure`: the caller
  rolls back and tells the person.

Apply and timers already dropped a record's or a timer's whole unit (a step and the signals
it sends are one decision, and both events come again); dispatch kept the flow's step on a
result but dropped all its signals when one receiver raised, and wrote that step's commands
without correlation id. Now only the receiver that raised loses its step and the correlation
id is kept. Also more careful than before: a flow raising in ``business_key`` rejects its
record alone (it failed the apply batch, retried row by row), and a timer that a signal
earlier in the same transaction reset no longer fires. As before, a cross-reference link made
in a dropped unit stays written (the store port has no savepoints).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from closeloop.domain.commands import Applied, ExceptionClass, Impact
from closeloop.domain.errors import FlowError
from closeloop.domain.records import AuditNote, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.engine.registry import Registry
from closeloop.engine.xref import answer_xref
from closeloop.ports.flows import XREF, Flow
from closeloop.ports.store import AuditEntry, CommandRow, NewCommand, NewException, UnitOfWork

log = structlog.get_logger(__name__)
MAX_SIGNALS = 10_000  # per event: more means flows signal each other in a loop
FAILED_TIMER_RETRY_S = 300.0
Key = tuple[str, str]  # (flow, business key)


class SignalLoopError(FlowError):
    """An event set off more than ``MAX_SIGNALS`` signals: flows signal in a loop."""


class FlowFailure(FlowError):
    """A flow raised on an event (or the event's signals looped): which instance, on what.

    ``flow`` and ``business_key`` name the instance, ``event`` what it was offered (``"the
    record"``, ``"signal 'add' from mobilize D-1"``), ``cause`` what it raised. Its text is
    ``"<type>: <cause> (flow <flow>, instance <key>, on <event>)"``."""

    def __init__(self, flow: str, business_key: str, event: str, cause: BaseException) -> None:
        super().__init__(
            f"{type(cause).__name__}: {cause} (flow {flow}, instance {business_key}, on {event})"
        )
        self.flow = flow
        self.business_key = business_key
        self.event = event
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Origin:
    """The event a unit starts from, as the business exceptions about it name it.

    ``what`` starts their message (``"crm Record r1 (version 3)"``, ``"erp upsert of P-1"``);
    ``entity``, ``impact``, ``inbox_id``, ``command_id`` and ``correlation_id`` go on them."""

    what: str
    entity: str
    impact: Impact = Impact.REPORTING
    inbox_id: int | None = None
    command_id: int | None = None
    correlation_id: str | None = None

    @classmethod
    def of_command(cls, row: CommandRow) -> Origin:
        """A command's: ``"<system> <operation> of <entity>"``, with its id and impact."""
        cmd = row.command
        entity = cmd.entity or cmd.business_key
        what = f"{cmd.system} {cmd.operation} of {entity}"
        return cls(what, entity, cmd.impact, command_id=row.id, correlation_id=row.correlation_id)

    def exception(self, error_class: ExceptionClass, message: str) -> NewException:
        """The business exception ``"<what> <message>"`` about this event."""
        return NewException(
            error_class,
            self.impact,
            self.entity,
            f"{self.what} {message}",
            command_id=self.command_id,
            inbox_id=self.inbox_id,
            correlation_id=self.correlation_id,
        )


@dataclass(frozen=True, slots=True)
class Sent:
    """A signal on its way: who sent it (``None``: a person) and the correlation id."""

    signal: Signal
    sender: Key | None
    correlation_id: str | None


@dataclass
class StepBuffer:
    """Flow steps decided in one transaction, written together at its end (:meth:`write`).
    ``signals`` are the ones not delivered yet."""

    states: dict[Key, FlowState] = field(default_factory=dict)
    commands: list[NewCommand] = field(default_factory=list)
    exceptions: list[NewException] = field(default_factory=list)
    resolves: list[str] = field(default_factory=list)
    signals: deque[Sent] = field(default_factory=deque)
    audit: list[tuple[str, AuditNote, str | None]] = field(default_factory=list)

    def add(self, flow: str, key: str, step: FlowStep, correlation_id: str | None) -> None:
        """Record ``step`` of flow instance ``(flow, key)``; its signals wait for delivery."""
        self.states[(flow, key)] = FlowState(flow, key, step.state, step.data, step.wake_at)
        self.signals.extend(Sent(s, (flow, key), correlation_id) for s in step.signals)
        self.commands.extend(NewCommand(c, flow, correlation_id) for c in step.commands)
        self.exceptions.extend(
            NewException(
                i.error_class, i.impact, i.entity, i.message, correlation_id=correlation_id
            )
            for i in step.issues
        )
        self.resolves.extend(step.resolves)
        self.audit.extend((flow, note, correlation_id) for note in step.audit)

    def merge(self, other: StepBuffer) -> None:
        """Take over everything ``other`` decided."""
        self.states.update(other.states)
        self.commands.extend(other.commands)
        self.exceptions.extend(other.exceptions)
        self.resolves.extend(other.resolves)
        self.signals.extend(other.signals)
        self.audit.extend(other.audit)

    def write(self, tx: UnitOfWork, now: datetime) -> None:
        """Persist states, supersede parked commands the new ones replace, write commands,
        open and close exceptions."""
        tx.put_flows(list(self.states.values()), now)
        entities = [
            (n.command.system, n.command.operation, n.command.entity) for n in self.commands
        ]
        superseded = tx.supersede_parked(entities, now)
        if superseded or self.resolves:
            tx.close_exceptions_for(
                self.resolves,
                superseded,
                "closeloop",
                "fixed at source: a newer version replaced it",
                now,
            )
        tx.add_commands(self.commands, now)
        tx.open_exceptions(self.exceptions, now)
        if self.audit:
            tx.audit(
                [
                    AuditEntry(now, f"flow:{flow}", n.action, n.entity, n.detail, correlation)
                    for flow, n, correlation in self.audit
                ]
            )


@contextmanager
def _blame(flow: str, business_key: str, event: str) -> Iterator[None]:
    """Turn what the block raises into a :class:`FlowFailure` of this instance and event."""
    try:
        yield
    except FlowFailure:
        raise
    except Exception as exc:
        raise FlowFailure(flow, business_key, event, exc) from exc


class FlowRuntime:
    """Offers events to flow instances in one transaction ``tx`` at ``now`` (module
    docstring). ``buffer`` holds the steps kept; the business exceptions for flows that
    raised are returned by the ``offer_*`` methods for the caller to open (or to reject a
    record with). Flow states are read from ``tx`` once each, and then seen as changed."""

    def __init__(self, tx: UnitOfWork, registry: Registry, now: datetime) -> None:
        self.tx = tx
        self.registry = registry
        self.now = now
        self.buffer = StepBuffer()
        self._read: dict[Key, FlowState | None] = {}

    def load(self, keys: Iterable[Key]) -> None:
        """Read the states of the instances ``keys`` not read yet, in one query."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._read]
        if wanted:
            found = self.tx.get_flows(wanted)
            self._read.update((k, found.get(k)) for k in wanted)

    def state(self, key: Key, unit: StepBuffer | None = None) -> FlowState | None:
        """The current state of instance ``key`` (``None``: it does not exist): as ``unit``
        or the units kept left it, else as stored."""
        if unit is not None and key in unit.states:
            return unit.states[key]
        if key in self.buffer.states:
            return self.buffer.states[key]
        self.load([key])
        return self._read[key]

    def offer_records(
        self, offers: Sequence[tuple[CanonicalRecord, Sequence[Flow], Origin]]
    ) -> list[NewException | None]:
        """Offer each record to its flows (those whose ``business_key`` names an instance),
        in order; one unit per record. Returns, per offer, ``None`` (kept) or the INTERNAL
        exception the record is rejected with (nothing of it kept)."""
        instances = [self._instances(record, flows) for record, flows, _ in offers]
        self.load((f.name, k) for pairs in instances if isinstance(pairs, list) for f, k in pairs)
        results: list[NewException | None] = []
        for (record, _, origin), pairs in zip(offers, instances, strict=True):
            unit = StepBuffer()
            try:
                if isinstance(pairs, FlowFailure):
                    raise pairs
                for flow, key in pairs:
                    current = self.state((flow.name, key), unit)
                    with _blame(flow.name, key, "the record"):
                        step = flow.on_record(current, record)
                    if step is not None:
                        unit.add(flow.name, key, step, origin.correlation_id)
                self._deliver(unit, None)
            except FlowFailure as failure:
                results.append(self._failed(origin, failure, "could not be processed"))
                continue
            self.buffer.merge(unit)
            results.append(None)
        return results

    def offer_results(self, offers: Sequence[tuple[CommandRow, Applied]]) -> list[NewException]:
        """Offer each applied command's result to its flow instance (none: nothing to do),
        in order; each call and each signal delivery is its own unit (module docstring).
        Returns the INTERNAL exceptions, about the commands, for the flows that raised."""
        keys = [(row.flow, row.command.business_key) for row, _ in offers]
        self.load(keys)
        failures: list[NewException] = []
        verdict = "was applied, but a flow failed on it"
        for (row, outcome), key in zip(offers, keys, strict=True):
            state = self.state(key)
            if state is None:
                continue
            origin = Origin.of_command(row)
            cmd = row.command
            try:
                with _blame(row.flow, key[1], f"the result of {cmd.operation} {cmd.entity}"):
                    step = self.registry.flow(row.flow).on_result(
                        state, cmd.operation, cmd.entity, outcome
                    )
            except FlowFailure as failure:
                failures.append(self._failed(origin, failure, verdict))
                continue
            if step is None:
                continue
            unit = StepBuffer()
            unit.add(row.flow, key[1], step, origin.correlation_id)
            isolated: list[FlowFailure] = []
            try:
                self._deliver(unit, isolated)
            except FlowFailure as loop:  # only a loop: the failing receivers are isolated
                failures.append(self._failed(origin, loop, verdict))
                unit = StepBuffer()
                unit.add(row.flow, key[1], replace(step, signals=()), origin.correlation_id)
            failures.extend(
                origin.exception(ExceptionClass.INTERNAL, f"{verdict}: {f}") for f in isolated
            )
            self.buffer.merge(unit)
        return failures

    def offer_timers(self, due: Sequence[FlowState]) -> list[NewException]:
        """Offer ``on_timer`` to each instance of ``due`` (read due, with their states) whose
        timer is still due, in order; one unit per timer. A step of ``None`` clears the timer.
        Returns the INTERNAL exceptions (entity ``flow:<flow>:<key>``) for the timers that
        failed; those fire again after ``FAILED_TIMER_RETRY_S``."""
        for s in due:
            self._read.setdefault((s.flow, s.business_key), s)
        failures: list[NewException] = []
        for s in due:
            key = (s.flow, s.business_key)
            current = self.state(key)
            if current is None or current.wake_at is None or current.wake_at > self.now:
                continue  # a signal earlier in this transaction reset its timer
            origin = Origin(f"the timer of {s.flow} {s.business_key}", f"flow:{s.flow}:{key[1]}")
            unit = StepBuffer()
            try:
                with _blame(s.flow, s.business_key, "its timer"):
                    step = self.registry.flow(s.flow).on_timer(current, self.now)
                if step is None:
                    unit.states[key] = replace(current, wake_at=None)
                else:
                    unit.add(s.flow, s.business_key, step, None)
                    self._deliver(unit, None)
            except FlowFailure as failure:
                retry = self.now + timedelta(seconds=FAILED_TIMER_RETRY_S)
                verdict = f"failed and fires again at {retry.isoformat(timespec='seconds')}"
                failures.append(self._failed(origin, failure, verdict))
                unit = StepBuffer()
                unit.states[key] = replace(current, wake_at=retry)
            self.buffer.merge(unit)
        return failures

    def offer_signals(self, signals: Sequence[Signal], correlation_id: str | None = None) -> None:
        """Deliver ``signals`` that no flow sent (a person's decision) as one unit. Raises
        :class:`FlowFailure` when a flow raises or they loop (nothing of the unit is kept;
        a cross-reference link already made in ``tx`` is undone only by rolling back)."""
        unit = StepBuffer()
        unit.signals.extend(Sent(s, None, correlation_id) for s in signals)
        self._deliver(unit, None)
        self.buffer.merge(unit)

    def _instances(
        self, record: CanonicalRecord, flows: Sequence[Flow]
    ) -> list[tuple[Flow, str]] | FlowFailure:
        """The instances ``(flow, business key)`` that ``record`` concerns, or the failure
        of the first flow whose ``business_key`` raised."""
        pairs: list[tuple[Flow, str]] = []
        for flow in flows:
            try:
                with _blame(flow.name, "(none)", "the record, in business_key"):
                    key = flow.business_key(record)
            except FlowFailure as failure:
                return failure
            if key:
                pairs.append((flow, key))
        return pairs

    def _deliver(self, unit: StepBuffer, isolated: list[FlowFailure] | None) -> None:
        """Deliver ``unit``'s signals and those their steps send, breadth first, until none
        is left. A receiver that raises is put in ``isolated`` and skipped or, when that is
        ``None``, raises :class:`FlowFailure`; past ``MAX_SIGNALS`` it always raises."""
        delivered = 0
        while unit.signals:
            sent = unit.signals.popleft()
            signal = sent.signal
            sender = "a person" if sent.sender is None else " ".join(sent.sender)
            event = f"signal {signal.name!r} from {sender}"
            delivered += 1
            if delivered > MAX_SIGNALS:
                loop = SignalLoopError(f"more than {MAX_SIGNALS} signals: flows signal in a loop")
                raise FlowFailure(signal.flow, signal.business_key, event, loop)
            key = (signal.flow, signal.business_key)
            if signal.flow != XREF and not self.registry.has_flow(signal.flow):
                continue
            state = self.state(key, unit)
            step: FlowStep | None = None
            replies: list[Signal] = []
            watching: FlowState | None = None
            try:
                with _blame(signal.flow, signal.business_key, event):
                    if signal.flow == XREF:  # the hub's cross-reference answers itself
                        replies, watching = answer_xref(self.tx, signal, state)
                    else:
                        step = self.registry.flow(signal.flow).on_signal(state, signal, self.now)
            except FlowFailure as failure:
                if isolated is None:
                    raise
                log.exception("flow failed on a signal", failure=str(failure))  # goes on
                isolated.append(failure)
                continue
            if watching is not None:
                unit.states[key] = watching
            unit.signals.extend(Sent(r, key, sent.correlation_id) for r in replies)
            if step is not None:
                unit.add(signal.flow, signal.business_key, step, sent.correlation_id)

    def _failed(self, origin: Origin, failure: FlowFailure, verdict: str) -> NewException:
        """Log ``failure`` (call it while handling it) and make its business exception."""
        log.exception("flow failed", failure=str(failure), correlation_id=origin.correlation_id)
        return origin.exception(ExceptionClass.INTERNAL, f"{verdict}: {failure}")
