"""``closeloop status``: engagements, commands, exceptions and each system's calls and quota,
gathered for printing or JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from closeloop.bootstrap import Hub
from closeloop.connectors.catalog import plugin
from closeloop.flows.engagements import engagements


def hub_calls(hub: Hub) -> dict[str, float] | None:
    """API calls per system made by the hub running with these settings (its ``/metrics``),
    or ``None`` when no hub answers there."""
    http = hub.settings.http
    try:
        text = httpx.get(f"http://{http.host}:{http.port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    calls: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "closeloop_calls":
            continue
        for sample in family.samples:
            if sample.name == "closeloop_calls_total":
                system = sample.labels.get("system", "?")
                calls[system] = calls.get(system, 0.0) + sample.value
    return calls


def quota(hub: Hub, system: str) -> str:
    """What the vendor allows and what is left, asked now through the row of the system's
    connector (one cheap call where needed); ``-`` for a connector that says nothing."""
    describe = plugin(hub.settings.systems[system].kind).quota
    if describe is None:
        return "-"
    try:
        return describe(hub.registry.connector(system), hub.requests_used)
    except Exception as exc:  # a status page reports, it does not fail
        return f"unknown ({type(exc).__name__}: {exc})"


def gather(hub: Hub) -> dict[str, Any]:
    """Everything ``closeloop status`` shows, as JSON-ready data."""
    stats = hub.operations.stats()
    calls = hub_calls(hub)
    return {
        **asdict(stats),
        "engagements": [
            {
                k: str(v) if not isinstance(v, (list, dict, int, str)) else v
                for k, v in asdict(e).items()
            }
            for e in engagements(hub.operations.flows())
        ],
        "systems": {
            name: {
                "calls": None if calls is None else int(calls.get(name, 0)),
                "quota": quota(hub, name),
            }
            for name in hub.settings.systems
        },
        "hub_running": calls is not None,
    }
