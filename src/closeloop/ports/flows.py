"""How the engine talks to flows and mappers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal

XREF = "xref"
"""The receiver name of signals to the hub's cross-reference (:mod:`closeloop.engine.xref`)."""


def xref_key(canonical_type: str, system: str, external_id: str) -> str:
    """The business key of a record's cross-reference, e.g. ``account:salesforce:001...``."""
    return f"{canonical_type}:{system}:{external_id}"


def xref_lookup(
    record: tuple[str, str, str], target: str, reply_to: tuple[str, str], *, watch: bool = False
) -> Signal:
    """Ask what ``record`` (``(canonical type, system, external id)``) is in ``target``; the
    answer comes back to the instance ``reply_to`` (``(flow, business key)``) as a signal
    named ``xref`` with ``external_id`` (``None`` when unknown). With ``watch``, an unknown
    record answers again once it is linked."""
    data = {"system": target, "reply_to": list(reply_to), "watch": watch}
    return Signal(XREF, xref_key(*record), "lookup", data)


def xref_link(record: tuple[str, str, str], target: str, target_id: str) -> Signal:
    """Record that ``record`` (``(canonical type, system, external id)``) is ``target_id``
    in ``target``."""
    return Signal(XREF, xref_key(*record), "link", {"system": target, "external_id": target_id})


class Mapper(Protocol):
    """Maps a vendor change onto canonical data.

    Raises :class:`~closeloop.domain.records.MappingError` listing every problem.
    """

    def __call__(self, change: Change) -> dict[str, Any]:
        """The canonical data for ``change`` (a JSON object)."""
        ...


class Flow(Protocol):
    """An explicit, persisted state machine, one instance per business key.

    Flows are pure decisions: given the current state and an event, return the next
    :class:`FlowStep`. The engine persists the step and its commands in one transaction.
    """

    @property
    def name(self) -> str:
        """Stable flow name, stored with its state (e.g. ``"mobilize"``)."""
        ...

    def business_key(self, record: CanonicalRecord) -> str | None:
        """The flow instance ``record`` concerns, or ``None`` when it concerns none."""
        ...

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """React to a new version of ``record``; ``None`` leaves the state unchanged."""
        ...

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """React to a command of this flow applied in its target; ``None`` changes nothing."""
        ...

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """React to ``signal`` from another flow instance (``state`` is ``None`` when this
        instance does not exist yet); ``None`` changes nothing."""
        ...

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """The instance's ``wake_at`` has come; ``None`` keeps the state and clears the timer."""
        ...


class Unsignalled:
    """Defaults for a flow that neither takes signals nor sets timers (inherit it)."""

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """Ignore signals."""
        return None

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """Set no timers, so none fires."""
        return None


@dataclass(frozen=True)
class Binding:
    """What the hub does with changes of one vendor object.

    ``mapper`` makes canonical data of type ``canonical_type``; each of ``flows`` is offered
    the record. A change of an object with no binding is refused at intake.
    ``foreign_fields``: top-level canonical fields this system does not own (the ownership
    policy names another system of record): a later version's change to one is not
    propagated but recorded as drift (:mod:`closeloop.engine.apply`).
    """

    system: str
    object: str
    canonical_type: str
    mapper: Mapper
    flows: tuple[Flow, ...] = field(default_factory=tuple)
    foreign_fields: frozenset[str] = frozenset()
