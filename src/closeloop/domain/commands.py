"""Commands the hub sends to target systems, and the outcomes a connector reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CommandStatus(StrEnum):
    """Lifecycle of an outbox command.

    ``pending`` -> ``in_flight`` -> ``done``; a transient failure returns it to ``pending``
    with a later due time; a permanent one ``parked`` (a business exception is open);
    ``resolved`` (skipped by an operator) and ``superseded`` (a newer source version replaced
    it) end it without an effect. Only ``done``, ``resolved`` and ``superseded`` let the next
    command of the same business key run.
    """

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    PARKED = "parked"
    RESOLVED = "resolved"
    SUPERSEDED = "superseded"


TERMINAL_STATUSES = frozenset(
    {CommandStatus.DONE, CommandStatus.RESOLVED, CommandStatus.SUPERSEDED}
)


class ExceptionClass(StrEnum):
    """Why a business exception was opened (docs/architecture.md)."""

    VALIDATION = "validation"
    MAPPING = "mapping"
    CLOSED_PERIOD = "closed_period"
    DUPLICATE = "duplicate"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RETRIES_EXHAUSTED = "retries_exhausted"
    INTERNAL = "internal"
    DRIFT = "drift"  # reconciliation: the systems disagree and a person decides


class Impact(StrEnum):
    """The business impact of an exception, for triage by finance and operations."""

    REVENUE = "revenue"
    CLIENT = "client"
    COMPLIANCE = "compliance"
    REPORTING = "reporting"


@dataclass(frozen=True, slots=True)
class Command:
    """A write a flow asks for in a target system.

    ``idempotency_key`` is deterministic (same flow, business key and source version give the
    same key) and unique in the outbox; the connector makes it visible in the target so that a
    retry after a lost response finds the earlier write. Commands of one ``business_key`` run
    in the order they were written. ``entity`` names the target record the command writes
    (e.g. ``"Account:001..."``); a newer command on the same entity supersedes a parked one.
    """

    system: str
    operation: str
    business_key: str
    idempotency_key: str
    payload: dict[str, Any]
    entity: str = ""
    impact: Impact = Impact.REPORTING


@dataclass(frozen=True, slots=True)
class Applied:
    """The target applied the command (now or earlier); ``result`` is what it returned."""

    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transient:
    """The command was not applied and may succeed later (timeout before send, 429, 5xx)."""

    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """The request may or may not have been applied (sent, no answer): look up before retry."""

    reason: str


@dataclass(frozen=True, slots=True)
class Permanent:
    """The target refused the command; retrying unchanged cannot succeed."""

    error_class: ExceptionClass
    message: str


Outcome = Applied | Transient | Ambiguous | Permanent


def command_to_dict(command: Command) -> dict[str, Any]:
    """A command as plain JSON (wire format of the memory sandbox and of logs)."""
    return {
        "system": command.system,
        "operation": command.operation,
        "business_key": command.business_key,
        "idempotency_key": command.idempotency_key,
        "payload": command.payload,
        "entity": command.entity,
        "impact": command.impact.value,
    }


def command_from_dict(data: dict[str, Any]) -> Command:
    """Inverse of :func:`command_to_dict`. Raises ``KeyError``/``ValueError`` on bad input."""
    return Command(
        system=str(data["system"]),
        operation=str(data["operation"]),
        business_key=str(data["business_key"]),
        idempotency_key=str(data["idempotency_key"]),
        payload=dict(data["payload"]),
        entity=str(data.get("entity", "")),
        impact=Impact(data.get("impact", Impact.REPORTING.value)),
    )


def outcome_to_dict(outcome: Outcome) -> dict[str, Any]:
    """An outcome as plain JSON: ``{"outcome": "applied"|..., ...fields}``."""
    if isinstance(outcome, Applied):
        return {"outcome": "applied", "result": outcome.result}
    if isinstance(outcome, Permanent):
        return {
            "outcome": "permanent",
            "error_class": outcome.error_class.value,
            "message": outcome.message,
        }
    if isinstance(outcome, Transient):
        return {
            "outcome": "transient",
            "reason": outcome.reason,
            "retry_after_s": outcome.retry_after_s,
        }
    return {"outcome": "ambiguous", "reason": outcome.reason}


def outcome_from_dict(data: dict[str, Any]) -> Outcome:
    """Inverse of :func:`outcome_to_dict`. Raises ``ValueError`` on an unknown outcome."""
    kind = data.get("outcome")
    if kind == "applied":
        return Applied(dict(data.get("result") or {}))
    if kind == "permanent":
        return Permanent(ExceptionClass(data["error_class"]), str(data["message"]))
    if kind == "transient":
        return Transient(str(data["reason"]), data.get("retry_after_s"))
    if kind == "ambiguous":
        return Ambiguous(str(data["reason"]))
    raise ValueError(f"unknown outcome {kind!r}")
