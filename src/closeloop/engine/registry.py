"""What the engine knows: the connectors by system and the bindings by vendor object."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from closeloop.domain.errors import NotFoundError
from closeloop.ports.connector import Connector
from closeloop.ports.flows import Binding, Flow


class UnknownObjectError(NotFoundError):
    """A change names a system or object the configuration does not bind."""


@dataclass
class Registry:
    """Connectors (by system name) and bindings (by ``(system, object)``); built once by bootstrap.
    ``flows`` adds flows that no record drives (only signals and timers).

    Raises ``ValueError`` on two bindings for one object or two flows with one name.
    """

    connectors: Mapping[str, Connector] = field(default_factory=dict)
    bindings: Sequence[Binding] = ()
    flows: Sequence[Flow] = ()

    def __post_init__(self) -> None:
        self._bindings: dict[tuple[str, str], Binding] = {}
        self._flows: dict[str, Flow] = {}
        for binding in self.bindings:
            key = (binding.system, binding.object)
            if key in self._bindings:
                raise ValueError(f"two bindings for {binding.system}.{binding.object}")
            self._bindings[key] = binding
        for flow in [*(f for b in self.bindings for f in b.flows), *self.flows]:
            known = self._flows.setdefault(flow.name, flow)
            if known is not flow:
                raise ValueError(f"two different flows named {flow.name!r}")

    def binding(self, system: str, object_name: str) -> Binding:
        """The binding of one vendor object. Raises :class:`UnknownObjectError`."""
        try:
            return self._bindings[(system, object_name)]
        except KeyError:
            known = ", ".join(f"{s}.{o}" for s, o in sorted(self._bindings)) or "none"
            raise UnknownObjectError(
                f"no binding for {system}.{object_name} (configured: {known})"
            ) from None

    def flow(self, name: str) -> Flow:
        """A flow by name. Raises :class:`UnknownObjectError`."""
        try:
            return self._flows[name]
        except KeyError:
            raise UnknownObjectError(f"no flow named {name!r}") from None

    def has_flow(self, name: str) -> bool:
        """Whether a flow named ``name`` is configured."""
        return name in self._flows

    def connector(self, system: str) -> Connector:
        """The connector of ``system``. Raises :class:`UnknownObjectError`."""
        try:
            return self.connectors[system]
        except KeyError:
            raise UnknownObjectError(f"no connector for system {system!r}") from None

    def polled_objects(self) -> Iterable[tuple[str, str]]:
        """``(system, object)`` pairs bound to a flow whose connector can read them."""
        for system, object_name in self._bindings:
            connector = self.connectors.get(system)
            if connector is not None and object_name in connector.objects():
                yield system, object_name
