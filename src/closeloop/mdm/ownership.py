"""Field ownership: which system is the system of record for each canonical field.

A write by a system that does not own a field is refused; when its value differs from the
owner's, the disagreement is drift (docs/architecture.md, systems and roles).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Drift:
    """A non-owner's value for a field that differs from the owner's."""

    canonical_type: str
    field: str
    owner: str
    writer: str
    owner_value: Any
    writer_value: Any

    def __str__(self) -> str:
        return (
            f"{self.canonical_type}.{self.field} is owned by {self.owner}; {self.writer} has "
            f"{self.writer_value!r} where {self.owner} has {self.owner_value!r}"
        )


@dataclass(frozen=True, slots=True)
class WriteDecision:
    """What a write may change (``allowed``) and the drift its refused fields show."""

    allowed: dict[str, Any]
    refused: tuple[str, ...] = ()
    drift: tuple[Drift, ...] = ()


@dataclass(frozen=True)
class OwnershipPolicy:
    """``owners[canonical_type][field] = system``; unlisted fields may be written by anyone.

    Fields are top-level canonical fields (``legal_name``, ``billing_address``).
    """

    owners: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def owner(self, canonical_type: str, field_name: str) -> str | None:
        """The system of record of a field, or ``None`` when it has none."""
        return self.owners.get(canonical_type, {}).get(field_name)

    def foreign_fields(
        self, canonical_type: str, system: str, role_of: Mapping[str, str]
    ) -> frozenset[str]:
        """The fields of ``canonical_type`` that ``system`` does not own: those whose owner
        (a system name, or a role such as ``erp`` resolved through ``role_of``: system ->
        role) is neither ``system`` nor its role."""
        role = role_of.get(system)
        foreign = set()
        for name, owner in self.owners.get(canonical_type, {}).items():
            owning_role = role_of.get(owner, owner)
            if owner != system and owning_role != role:
                foreign.add(name)
        return frozenset(foreign)

    def decide(
        self,
        canonical_type: str,
        writer: str,
        proposed: Mapping[str, Any],
        current: Mapping[str, Any] | None = None,
    ) -> WriteDecision:
        """Split ``writer``'s proposed values into the fields it may write and the ones it
        may not; a refused value that differs from ``current`` (the owner's) is drift."""
        allowed: dict[str, Any] = {}
        refused: list[str] = []
        drift: list[Drift] = []
        for name, value in proposed.items():
            owner = self.owner(canonical_type, name)
            if owner is None or owner == writer:
                allowed[name] = value
                continue
            refused.append(name)
            if current is not None and name in current and current[name] != value:
                drift.append(Drift(canonical_type, name, owner, writer, current[name], value))
        return WriteDecision(allowed, tuple(refused), tuple(drift))
