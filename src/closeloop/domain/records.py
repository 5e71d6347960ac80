"""Canonical records and flow state as the core passes them around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from closeloop.domain.commands import Command, ExceptionClass, Impact


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
    """The persisted state of one flow instance (one per flow name and business key)."""

    flow: str
    business_key: str
    state: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowStep:
    """What a flow decided: its next state and data, commands to send, issues to open.

    ``resolves`` lists entities whose open business exceptions the step settles (the source
    record was fixed), so they close with the same transaction.
    """

    state: str
    data: dict[str, Any]
    commands: tuple[Command, ...] = ()
    issues: tuple[BusinessIssue, ...] = ()
    resolves: tuple[str, ...] = ()


class MappingError(ValueError):
    """A vendor record could not be mapped; ``problems`` lists every problem with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
