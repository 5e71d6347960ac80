"""The connector table: every kind of system the hub can connect, one row each.

A row (:class:`ConnectorPlugin`) names the connector's settings model, its factory, the role
it plays by default, its shipped mapping files, its webhook routes and how a running sandbox
of it is configured. The built-in rows are the lines of :data:`BUILTIN` (module paths, so
nothing is imported before it is used); a third-party package adds a row through an entry
point in the group ``closeloop.connectors`` whose object is a :class:`ConnectorPlugin`::

    [project.entry-points."closeloop.connectors"]
    kantata = "closeloop_kantata:PLUGIN"

Configuration (``systems:``) is validated against the discriminated union of the rows'
settings models, discriminated by ``kind`` (:func:`systems_adapter`), and bootstrap builds
each system's connector with its row's factory.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter

from closeloop.connectors.settings import SystemSettings
from closeloop.domain.errors import NotFoundError
from closeloop.domain.operations import Role
from closeloop.ports.connector import Connector
from closeloop.ports.ratelimit import SharedRateLimit

if TYPE_CHECKING:
    from fastapi import APIRouter

    from closeloop.engine.intake import Intake

ENTRY_POINT_GROUP = "closeloop.connectors"

BUILTIN: dict[str, str] = {
    "memory": "closeloop.connectors.memory.plugin:PLUGIN",
    "salesforce": "closeloop.connectors.salesforce.plugin:PLUGIN",
    "harvest": "closeloop.connectors.harvest.plugin:PLUGIN",
    "tryton": "closeloop.connectors.tryton.plugin:PLUGIN",
    "xero": "closeloop.connectors.xero.plugin:PLUGIN",
}
"""The built-in connectors: kind -> ``module:attribute`` of its :class:`ConnectorPlugin`."""


@dataclass(frozen=True)
class BuildContext:
    """What a factory may need beyond its system's settings: ``shared_limit`` counts the
    requests of accounts whose rate limit all workers share (``None`` in tools and tests)."""

    shared_limit: SharedRateLimit | None = None


Factory = Callable[[str, Any, BuildContext], Connector]
"""``factory(system name, settings, context)``: a connector (nothing called yet)."""

Webhooks = Callable[["Intake", Mapping[str, Any]], "APIRouter"]
"""``webhooks(intake, {system name: settings})``: the routes of the configured systems."""


Quota = Callable[[Connector, Callable[[str, float], int]], str]
"""``quota(connector, requests_used)``: what the vendor allows and what is left, in words, for
``closeloop status``; ``requests_used(rate limit key, window_s)`` counts the requests all
workers made in a shared window."""

QuotaLeft = Callable[[Connector, Callable[[str, float], int]], "float | None"]
"""``quota_left(connector, requests_used)``: the fraction (0-1) of the vendor's allowance
left now, for the quota alert; ``None`` when not known yet. Makes no vendor call."""


@dataclass(frozen=True)
class SandboxWiring:
    """How ``closeloop sandbox up`` runs this connector's local sandbox and connects a hub to
    it: ``state_key`` is its entry in ``sandbox.json``; ``start(home)`` starts one under
    ``home`` and returns that entry (``url``, ``pid``, ...); ``settings(entry)`` the system's
    settings (a ``systems:`` entry) for it; ``check(entry)`` raises ``httpx.HTTPError`` when
    it does not answer; ``admin``: it serves ``/__sandbox/`` (seed, faults)."""

    state_key: str
    settings: Callable[[Mapping[str, Any]], dict[str, Any]]
    start: Callable[[Path], dict[str, Any]]
    check: Callable[[Mapping[str, Any]], None]
    admin: bool = True


@dataclass(frozen=True)
class ConnectorPlugin:
    """One kind of system.

    ``kind``: the ``kind:`` value in configuration; ``settings``: its settings model (a
    :class:`SystemSettings` with ``kind: Literal[<kind>]``); ``factory`` builds a connector;
    ``role``: the role its systems play when configuration does not say (``None``: none,
    e.g. the generic memory system); ``key_prefix``: the default prefix of business keys
    made from its records; ``mappings``: folders of shipped mapping files (``*.yaml``, one
    per connection, replaced by a user's file of the same connection); ``webhooks``: its
    HTTP routes; ``sandbox``: its local sandbox wiring; ``quota``: its quota in words;
    ``quota_left``: the fraction of it left (alerts).
    """

    kind: str
    settings: type[SystemSettings]
    factory: Factory
    role: Role | None = None
    key_prefix: str = ""
    mappings: Callable[[], Sequence[Traversable]] = field(default=lambda: ())
    webhooks: Webhooks | None = None
    sandbox: SandboxWiring | None = None
    quota: Quota | None = None
    quota_left: QuotaLeft | None = None


def package_mappings(package: str) -> Callable[[], Sequence[Traversable]]:
    """A row's ``mappings``: the ``mappings`` folder of the connector package ``package``."""

    def folders() -> Sequence[Traversable]:
        return (resources.files(package) / "mappings",)

    return folders


class UnknownConnectorError(NotFoundError):
    """A configured ``kind`` that no row of the connector table has."""


def _load(target: str) -> ConnectorPlugin:
    module, _, attribute = target.partition(":")
    plugin = getattr(importlib.import_module(module), attribute)
    if not isinstance(plugin, ConnectorPlugin):
        raise TypeError(f"{target} is not a ConnectorPlugin")
    return plugin


@functools.cache
def plugins() -> dict[str, ConnectorPlugin]:
    """Every connector, by kind: the built-in table, then the entry points (a third-party
    row of a built-in kind is refused). Loaded on first use. Raises ``TypeError`` for an
    entry point that is not a :class:`ConnectorPlugin`, ``ValueError`` for a clash."""
    table = {kind: _load(target) for kind, target in BUILTIN.items()}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        plugin = point.load()
        if not isinstance(plugin, ConnectorPlugin):
            raise TypeError(f"entry point {point.name} ({point.value}) is not a ConnectorPlugin")
        if plugin.kind in table:
            raise ValueError(f"entry point {point.name} declares kind {plugin.kind!r} again")
        table[plugin.kind] = plugin
    return table


def plugin(kind: str) -> ConnectorPlugin:
    """The row of ``kind``. Raises :class:`UnknownConnectorError` naming the known kinds."""
    table = plugins()
    if kind not in table:
        raise UnknownConnectorError(f"no connector of kind {kind!r} (known: {sorted(table)})")
    return table[kind]


@functools.cache
def systems_adapter() -> TypeAdapter[dict[str, SystemSettings]]:
    """Validates ``systems:``: each entry against the union of the table's settings models,
    discriminated by ``kind``."""
    models = tuple(p.settings for p in plugins().values())
    union = Annotated[Union[models], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(dict[str, union])


def build_connector(name: str, settings: SystemSettings, context: BuildContext) -> Connector:
    """The connector of the system ``name``, by its kind's factory."""
    return plugin(settings.kind).factory(name, settings, context)
