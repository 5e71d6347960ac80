"""Which system of a role serves an engagement: routing rules over canonical fields.

A role (``psa``, ``erp``) may be served by several systems (the group's and an acquired
unit's). A :class:`RoleRouting` picks one per engagement: the first rule whose canonical
``field`` (a dotted path into the canonical opportunity, e.g. ``customer.country`` or
``legal_entity``) has one of the rule's values, else the ``default``. An engagement keeps the
systems it was routed to (the Mobilize flow stores them), so a later rule change moves no
engagement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from closeloop.domain.taxids import country_code


class RouteRule(BaseModel):
    """Route to ``system`` the engagements whose ``field`` is one of ``values`` (compared
    as text, case-insensitively). A ``...country`` field compares ISO 3166 codes: its values
    are normalised (``France`` -> ``FR``) and one that names no country is refused with
    ``ValueError``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(min_length=1, description="dotted canonical path, e.g. customer.country")
    values: tuple[str, ...] = Field(min_length=1)
    system: str

    @field_validator("values")
    @classmethod
    def _countries(cls, values: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if str(info.data.get("field", "")).rsplit(".", 1)[-1] == "country":
            return tuple(country_code(v) for v in values)  # ValueError names the value
        return values

    def matches(self, data: Mapping[str, Any]) -> bool:
        """Whether the canonical record ``data`` has one of the values at ``field``."""
        value = field_value(data, self.field)
        if value is None:
            return False
        return str(value).strip().casefold() in {v.strip().casefold() for v in self.values}


class RoleRouting(BaseModel):
    """The systems serving one role and how an engagement picks one.

    ``systems``: the configured system names; ``rules`` in order; ``default``: the system of
    an engagement no rule routes (``None``: such an engagement is blocked with a business
    exception). With one system and neither rules nor default, that system is the default.
    Raises ``ValueError`` when a rule or the default names a system not in ``systems``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    systems: tuple[str, ...] = Field(min_length=1)
    rules: tuple[RouteRule, ...] = ()
    default: str | None = None

    @model_validator(mode="after")
    def _known(self) -> RoleRouting:
        named = [r.system for r in self.rules] + ([self.default] if self.default else [])
        unknown = sorted({n for n in named if n not in self.systems})
        if unknown:
            raise ValueError(f"routing names {unknown}, not among the role's {self.systems}")
        return self

    @property
    def fallback(self) -> str | None:
        """The system of an engagement no rule routes."""
        if self.default is not None:
            return self.default
        return self.systems[0] if len(self.systems) == 1 and not self.rules else None

    def route(self, data: Mapping[str, Any]) -> str | None:
        """The system for the canonical record ``data``, or ``None`` when nothing routes it."""
        for rule in self.rules:
            if rule.matches(data):
                return rule.system
        return self.fallback

    def explain(self) -> str:
        """The rules in words, for a business exception about an unrouted engagement."""
        if not self.rules:
            return "no routing rule is configured and there is no default"
        said = "; ".join(f"{r.field} in {list(r.values)} -> {r.system}" for r in self.rules)
        return f"no rule matched ({said}) and there is no default"


def single(system: str) -> RoleRouting:
    """A role served by ``system`` alone."""
    return RoleRouting(systems=(system,))


def field_value(data: Mapping[str, Any], path: str) -> Any:
    """The value at the dotted ``path`` of ``data`` (``None`` when any step is missing)."""
    value: Any = data
    for step in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


class Roles(BaseModel):
    """The systems playing each role for the project-to-cash flows, and each CRM's key
    prefix (see :mod:`closeloop.domain.keys`). Every CRM is read (its deals mobilize);
    the PSA and ERP of an engagement are routed once, by :meth:`RoleRouting.route`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    crm: RoleRouting
    psa: RoleRouting
    erp: RoleRouting
    key_prefixes: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prefixed(self) -> Roles:
        missing = [s for s in self.crm.systems if not self.key_prefixes.get(s)]
        if missing:
            raise ValueError(f"CRM systems {missing} have no key prefix")
        prefixes = [self.key_prefixes[s] for s in self.crm.systems]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"CRM systems share a key prefix: {prefixes}")
        return self

    def prefix(self, crm: str) -> str:
        """The key prefix of the CRM ``crm``. Raises ``KeyError`` for a system that is not
        a CRM of these roles."""
        if crm not in self.crm.systems:
            raise KeyError(f"{crm!r} is not a CRM of this configuration")
        return self.key_prefixes[crm]

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every CRM's key prefix."""
        return tuple(self.key_prefixes[s] for s in self.crm.systems)
