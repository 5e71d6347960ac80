"""The in-memory system and its fault plan."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from closeloop.sandboxes.faults import Fault, FaultPlan


@dataclass
class _Record:
    version: int
    data: dict[str, Any]
    modified_at: datetime


@dataclass
class Effect:
    """One write the system applied: which command, on which entity, with what data."""

    idempotency_key: str
    entity: str
    data: dict[str, Any]
    seq: int


@dataclass
class MemorySystem:
    """A system that holds records in memory, emits changes and applies ``upsert`` commands.

    As a source: :meth:`put` writes a record (version + 1, modification time now);
    :meth:`read_pages` pages through them. As a target: ``upsert`` commands (``{"operation":
    "upsert", "idempotency_key", "payload": {"object", "id", "data"}}``) are applied and
    logged in :attr:`effects`; ``data`` holding ``reject_reason`` is refused as a permanent
    validation error. The system does not dedupe writes itself, so :attr:`effects` shows any
    duplicate effect the hub caused. Everything goes in and out as plain JSON-shaped data (the
    wire format of :mod:`.app`): a sandbox knows nothing of the hub.
    """

    name: str = "memory"
    source_objects: tuple[str, ...] = ("Record",)
    faults: FaultPlan = field(default_factory=FaultPlan)
    page_size: int = 500
    records: dict[str, dict[str, _Record]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    effects: list[Effect] = field(default_factory=list)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)  # results by idempotency key
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._rng = random.Random(self.faults.seed)

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (and reseed)."""
        with self._lock:
            self.faults = plan
            self._rng = random.Random(plan.seed)

    # --- source side -------------------------------------------------------------------
    def put(
        self, object_name: str, external_id: str, data: dict[str, Any], at: datetime | None = None
    ) -> int:
        """Create or change a record; returns its new version."""
        with self._lock:
            table = self.records.setdefault(object_name, {})
            old = table.get(external_id)
            version = old.version + 1 if old else 1
            table[external_id] = _Record(version, dict(data), at or datetime.now(UTC))
            return version

    def objects(self) -> Sequence[str]:
        """Objects that can be polled."""
        return self.source_objects

    def read_pages(
        self, object_name: str, since: datetime | None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of changes at or after ``since``, by (modification time, id); keyset-paged.
        A change: ``{"system", "object", "external_id", "version", "payload", "modified_at"}``
        (``modified_at`` an aware datetime)."""
        after: tuple[datetime, str] | None = None
        while True:
            with self._lock:
                self._count("read")
                table = self.records.get(object_name, {})
                rows = sorted(
                    (
                        (r.modified_at, eid, r)
                        for eid, r in table.items()
                        if since is None or r.modified_at >= since
                    ),
                    key=lambda x: (x[0], x[1]),
                )
                if after is not None:
                    rows = [x for x in rows if (x[0], x[1]) > after]
                page = rows[: self.page_size]
                changes = [
                    {
                        "system": self.name,
                        "object": object_name,
                        "external_id": eid,
                        "version": str(r.version),
                        "payload": dict(r.data),
                        "modified_at": at,
                    }
                    for at, eid, r in page
                ]
            if changes:
                yield changes
            if len(rows) <= self.page_size:
                return
            after = (page[-1][0], page[-1][1])

    # --- target side -------------------------------------------------------------------
    def apply_batch(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply a batch of commands (see the class), or raise :class:`Fault` for the fault
        the plan drew; one outcome per command: ``{"outcome": "applied", "result"}`` or
        ``{"outcome": "permanent", "error_class": "validation", "message"}``.

        A ``lost_response`` fault is raised after the batch was applied.
        """
        with self._lock:
            self._count("execute")
            fault = self.faults.draw(self._rng)
            if fault in ("rate_limited", "server_error", "timeout"):
                raise Fault(fault)
            outcomes = [self._apply(c) for c in commands]
            if fault == "lost_response":
                raise Fault(fault)
            return outcomes

    def _apply(self, command: dict[str, Any]) -> dict[str, Any]:
        payload = command.get("payload") or {}
        if command.get("operation") != "upsert":
            return _refused(f"unknown operation {command.get('operation')!r}")
        data = payload.get("data")
        if not isinstance(data, dict) or not payload.get("id") or not payload.get("object"):
            return _refused("upsert needs object, id and data")
        if data.get("reject_reason"):
            return _refused(str(data["reject_reason"]))
        entity = f"{payload['object']}:{payload['id']}"
        key = str(command["idempotency_key"])
        self.targets[entity] = dict(data)
        self.effects.append(Effect(key, entity, dict(data), len(self.effects)))
        result = {"id": entity}
        self.by_key[key] = result
        return {"outcome": "applied", "result": result}

    def lookup(self, idempotency_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Earlier writes' results by idempotency key (no faults: used to settle ambiguity)."""
        with self._lock:
            self._count("find")
            return {k: dict(self.by_key[k]) for k in idempotency_keys if k in self.by_key}

    def _count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1


def _refused(message: str) -> dict[str, Any]:
    return {"outcome": "permanent", "error_class": "validation", "message": message}
