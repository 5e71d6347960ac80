"""``closeloop bench harvest``: time entries per second synced from Harvest into the hub's
inbox, with Harvest's rate limit on (100 requests per 15 s, taken from the hub database's
shared window as in production), next to the bound the limit and the page size allow.

Each run polls every time entry of the sandbox account into a fresh hub database (one poll:
``updated_since`` paging at 2,000 per page, sorted by modification, committed per chunk).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from closeloop.bootstrap import build_hub
from closeloop.config import Settings
from closeloop.connectors.harvest.client import (
    PER_PAGE,
    REQUESTS_PER_WINDOW,
    WINDOW_S,
    HarvestClient,
)
from closeloop.connectors.harvest.connector import HarvestConnector
from closeloop.domain.changes import Change
from closeloop.ports.flows import Binding
from closeloop.sandboxes.harvest.server import start_harvest
from closeloop.sandboxes.tryton.server import free_port, stop_pid
from closeloop.store import migrate
from closeloop.store.ratelimit_repo import SqlSharedRateLimit
from closeloop.store.sql import SqlStore


def _payload(change: Change) -> dict[str, Any]:
    return dict(change.payload)


def _seed(url: str, entries: int) -> None:
    people = 25
    start = date(2026, 1, 5)
    data = {
        "users": [
            {
                "id": 100 + i,
                "first_name": f"C{i}",
                "last_name": "Bench",
                "email": f"c{i}@bench.example",
                "default_hourly_rate": 150.0,
            }
            for i in range(people)
        ],
        "clients": [{"id": 10, "name": "Bench Client", "currency": "EUR"}],
        "tasks": [{"id": 20, "name": "Consulting"}],
        "projects": [
            {
                "id": 30,
                "client": {"id": 10},
                "name": "Bench",
                "code": "B-1",
                "is_billable": True,
                "bill_by": "People",
                "budget_by": "none",
            }
        ],
        "task_assignments": [{"id": 40, "project": {"id": 30}, "task": {"id": 20}}],
        "user_assignments": [
            {"id": 60 + i, "project": {"id": 30}, "user": {"id": 100 + i}} for i in range(people)
        ],
        "time_entries": [
            {
                "id": 1000 + i,
                "spent_date": (start + timedelta(days=i % 180)).isoformat(),
                "user": {"id": 100 + i % people},
                "project": {"id": 30},
                "task": {"id": 20},
                "hours": 1.5 + (i % 6),
                "notes": f"bench {i}",
                "is_closed": i % 5 != 0,
            }
            for i in range(entries)
        ],
    }
    httpx.post(f"{url}/__sandbox/seed", json=data, timeout=600).raise_for_status()


def run_harvest_bench(entries: int = 10_000, runs: int = 3) -> dict[str, Any]:
    """Run the benchmark; medians over ``runs``."""
    rates, requests = [], []
    with tempfile.TemporaryDirectory(prefix="closeloop-bench-harvest-") as tmp:
        server = start_harvest(Path(tmp) / "harvest", free_port())
        try:
            _seed(server.base_url.removesuffix("/v2"), entries)
            for run in range(runs):
                url = f"sqlite:///{tmp}/hub-{run}.db"
                limits = SqlStore.from_url(url)
                migrate.upgrade(limits.engine)
                client = HarvestClient(
                    server.base_url,
                    server.token,
                    str(server.account_id),
                    shared_limit=SqlSharedRateLimit(limits.engine),
                )
                hub = build_hub(
                    Settings(database_url=url),
                    connectors={"harvest": HarvestConnector(client, objects=("time_entries",))},
                    bindings=[Binding("harvest", "time_entries", "time_entry", _payload)],
                )
                try:
                    start = time.perf_counter()
                    accepted = hub.intake.poll("harvest", "time_entries", 60).accepted
                    rates.append(accepted / (time.perf_counter() - start))
                    requests.append(sum(client.calls.values()))
                finally:
                    hub.close()
                    limits.close()
        finally:
            stop_pid(server.pid)
    pages = math.ceil(entries / PER_PAGE)
    return {
        "entries": entries,
        "runs": runs,
        "entries_per_s": statistics.median(rates),
        "requests": statistics.median(requests),
        "fewest_requests": pages,
        "rate_limit_bound_per_s": REQUESTS_PER_WINDOW * PER_PAGE / WINDOW_S,
    }
