"""The memory sandbox as an in-process connector: a fake of the engine's Connector protocol
for tests of the core (the sandbox itself takes plain JSON-shaped data and knows nothing of
the hub; this adapter translates, as :class:`~closeloop.connectors.memory.client.
MemoryConnector` does over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from closeloop.domain.changes import Change
from closeloop.domain.commands import (
    Applied,
    Command,
    Outcome,
    command_to_dict,
    outcome_from_dict,
)
from closeloop.ports.connector import AmbiguousError, ConnectorLimits, TransientError
from closeloop.sandboxes.faults import Fault
from closeloop.sandboxes.memory.system import MemorySystem as MemorySandbox


@dataclass
class MemorySystem(MemorySandbox):
    """A memory sandbox that is also a connector to itself (faults raised as the connector
    errors an HTTP client sees)."""

    limits: ConnectorLimits = field(default_factory=lambda: ConnectorLimits(batch_size=100))

    @property
    def system(self) -> str:
        """The system's name."""
        return self.name

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """The sandbox's pages as changes."""
        for page in self.read_pages(object_name, since):
            yield [Change.model_validate(c) for c in page]

    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """The sandbox's batch, its faults as connector errors."""
        try:
            outcomes = self.apply_batch([command_to_dict(c) for c in commands])
        except Fault as fault:
            raise _as_connector_error(fault, self.faults.retry_after_s) from None
        return [outcome_from_dict(o) for o in outcomes]

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """The sandbox's lookup."""
        return {k: Applied(v) for k, v in self.lookup(idempotency_keys).items()}


def _as_connector_error(fault: Fault, retry_after_s: float) -> Exception:
    if fault.kind == "rate_limited":
        return TransientError("429 Too Many Requests", retry_after_s=retry_after_s)
    if fault.kind == "server_error":
        return TransientError("503 Service Unavailable")
    return AmbiguousError(f"no answer ({fault.kind})")
