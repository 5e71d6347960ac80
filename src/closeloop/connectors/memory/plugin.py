"""The memory sandbox's row of the connector table: a generic system of records."""

from __future__ import annotations

from typing import Literal

from closeloop.connectors.catalog import BuildContext, ConnectorPlugin
from closeloop.connectors.memory.client import MemoryConnector
from closeloop.connectors.settings import SystemSettings
from closeloop.ports.connector import Connector, ConnectorLimits


class MemorySettings(SystemSettings):
    """A memory sandbox (``python -m closeloop.sandboxes.memory``) at ``url``; limits
    default to 100 commands a batch and 100 requests a second."""

    kind: Literal["memory"]


def build(name: str, settings: MemorySettings, context: BuildContext) -> Connector:
    """A connector to the memory sandbox at ``settings.url``."""
    limits = ConnectorLimits(
        batch_size=settings.batch_size or 100,
        requests_per_window=settings.requests_per_window or 100,
        window_s=settings.window_s or 1.0,
        max_concurrent=settings.max_concurrent,
        call_timeout_s=settings.timeout_s,
    )
    return MemoryConnector(
        settings.url,
        system=name,
        source_objects=settings.objects or ["Record"],
        limits=limits,
        timeout_s=settings.timeout_s,
    )


PLUGIN = ConnectorPlugin(kind="memory", settings=MemorySettings, factory=build, key_prefix="MEM")
