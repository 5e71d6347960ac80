"""The built-in example flow: mirror each record of a source object into a target system.

It exercises every engine guarantee (ordering per record, idempotent upserts, exceptions
for refused records, resumption when the source is fixed) without a vendor, and is what
``closeloop bench engine`` and the built-in demo run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, MappingError
from closeloop.ports.flows import Unsignalled


def record_mapper(change: Change) -> dict[str, Any]:
    """Map a generic record: it needs a non-blank text ``name``; other fields pass through.

    Raises :class:`MappingError` listing every problem.
    """
    problems = []
    name = change.payload.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name: required text field is missing or blank")
    for key, value in change.payload.items():
        if not key.isidentifier():
            problems.append(f"{key}: field names must be identifiers")
        if isinstance(value, float):
            problems.append(f"{key}: floats are not accepted (send amounts as decimal strings)")
    if problems:
        raise MappingError(problems)
    return dict(change.payload)


@dataclass(frozen=True)
class MirrorFlow(Unsignalled):
    """Upserts every new version of a record into ``target_system`` as ``target_object``.

    States: ``syncing`` (a command is out) and ``synced`` (the target holds ``version``).
    The idempotency key is ``mirror:<target>:<canonical id>:<source version>``, so a version
    is written at most once; the business key is the record, so versions apply in order.
    """

    target_system: str
    target_object: str = "Record"
    name: str = "mirror"

    def business_key(self, record: CanonicalRecord) -> str | None:
        """One flow instance per canonical record."""
        return f"{record.canonical_type}:{record.canonical_id}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep:
        """Send the new version to the target."""
        entity = f"{self.target_object}:{record.canonical_id}"
        command = Command(
            system=self.target_system,
            operation="upsert",
            business_key=self.business_key(record) or "",
            idempotency_key=f"mirror:{self.target_system}:{record.canonical_id}:{record.version}",
            payload={"object": self.target_object, "id": record.canonical_id, "data": record.data},
            entity=entity,
            impact=Impact.REPORTING,
        )
        data = dict(state.data) if state else {}
        data.update(source="/".join(record.source), pending_version=record.version)
        return FlowStep("syncing", data, commands=(command,))

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Record the version the target now holds."""
        data = dict(state.data)
        data["target_id"] = outcome.result.get("id", entity)
        data["synced_writes"] = int(data.get("synced_writes", 0)) + 1
        return FlowStep("synced", data)
