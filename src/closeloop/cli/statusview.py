"""``closeloop status``: engagements, commands, exceptions and each system's calls and quota,
gathered for printing or JSON."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from closeloop.bootstrap import Hub
from closeloop.connectors.catalog import plugin
from closeloop.flows.engagements import engagements

NOT_RUNNING = "hub not running"
NEEDS_KEY = "hub running; set CLOSELOOP_API_KEY to read its calls"
KEY_REFUSED = "hub running; it refused CLOSELOOP_API_KEY (revoked, expired or not its key)"
API_KEY_ENV = "CLOSELOOP_API_KEY"
"""The environment variable holding the API key (viewer or above) ``closeloop status`` sends
to the running hub's ``/metrics``."""


def hub_calls(hub: Hub) -> dict[str, float] | str:
    """API calls per system made by the hub running with these settings (its ``/metrics``,
    read with the key in ``$CLOSELOOP_API_KEY``), or why there are none to show:
    :data:`NOT_RUNNING` when no hub answers there, :data:`NEEDS_KEY` or
    :data:`KEY_REFUSED` when it answers 401 or 403, else ``hub answered <status>``."""
    http = hub.settings.http
    key = os.environ.get(API_KEY_ENV, "").strip()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = httpx.get(f"http://{http.host}:{http.port}/metrics", headers=headers, timeout=2)
    except httpx.HTTPError:
        return NOT_RUNNING
    if answer.status_code in (401, 403):
        return KEY_REFUSED if key else NEEDS_KEY
    if answer.status_code != 200:
        return f"hub answered {answer.status_code}"
    text = answer.text
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
                "calls": int(calls.get(name, 0)) if isinstance(calls, dict) else None,
                "quota": quota(hub, name),
            }
            for name in hub.settings.systems
        },
        "hub_running": calls != NOT_RUNNING,
        "hub_calls_unavailable": None if isinstance(calls, dict) else calls,
    }
