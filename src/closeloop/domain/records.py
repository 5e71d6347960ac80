"""Canonical records and flow state as the core passes them around."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from closeloop.domain.commands import Command, ExceptionClass, Impact
from closeloop.domain.errors import InputError


@dataclass(frozen=True, slots=True)
class CanonicalRecord:
    """A vendor record mapped to the hub's language.

    ``canonical_type`` names the canonical model (``"account"``, ``"time_entry"``);
    ``canonical_id`` is the hub's id for it, stable across systems through the xref map;
    ``source`` is ``(system, object, external_id)`` and ``version`` the source's version.
    """

    canonical_type: str
    canonical_id: str
    source: tuple[str, str, str]
    version: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BusinessIssue:
    """A business exception a flow raises about a record (e.g. invalid tax id on a deal)."""

    error_class: ExceptionClass
    impact: Impact
    entity: str
    message: str


@dataclass(frozen=True, slots=True)
class FlowState:
    """The persisted state of one flow instance (one per flow name and business key).

    ``wake_at`` (aware) is when the engine next offers the instance its timer, if ever.
    """

    flow: str
    business_key: str
    state: str
    data: dict[str, Any] = field(default_factory=dict)
    wake_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """A message from one flow instance to another (e.g. mobilize telling invoicing that an
    engagement is approved), delivered in the same transaction as the step that sends it.

    ``flow`` and ``business_key`` name the receiving instance (which need not exist yet);
    ``name`` says what happened and ``data`` (JSON) carries the details.
    """

    flow: str
    business_key: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditNote:
    """A line a flow writes to the audit trail with its step (actor ``flow:<name>``):
    ``action`` (e.g. ``change_order``), the ``entity`` it concerns and the ``detail``
    (JSON) a person reads to know what was decided and why."""

    action: str
    entity: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowStep:
    """What a flow decided: its next state and data, commands to send, issues to open.

    ``resolves`` lists entities whose open business exceptions the step settles (the source
    record was fixed), so they close with the same transaction. ``signals`` go to other flow
    instances in the same transaction. ``wake_at`` (aware) replaces the instance's timer:
    a step that does not set it leaves the instance without one. ``audit``: lines for the
    audit trail, written with the step.
    """

    state: str
    data: dict[str, Any]
    commands: tuple[Command, ...] = ()
    issues: tuple[BusinessIssue, ...] = ()
    resolves: tuple[str, ...] = ()
    signals: tuple[Signal, ...] = ()
    wake_at: datetime | None = None
    audit: tuple[AuditNote, ...] = ()


class MappingError(InputError):
    """A vendor record could not be mapped; ``problems`` lists every problem with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
