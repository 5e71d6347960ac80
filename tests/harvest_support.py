"""Helpers for tests against the Harvest sandbox (its own process, real HTTP): start one,
call it, and build realistic seeds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from closeloop.connectors.harvest.client import HarvestClient
from closeloop.connectors.harvest.connector import command_key, idempotency_key
from closeloop.devtools.sandboxctl import alive
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.operations import MarkBilled, ProjectAssignment, ProjectTask, UpsertProject
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep
from closeloop.ports.flows import Unsignalled
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.harvest.server import HarvestServer, start_harvest
from closeloop.sandboxes.tryton.server import stop_pid
from tests.conftest import free_port

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
OPENAPI = REALDATA / "harvest-openapi" / "harvest-openapi.yaml"


@contextmanager
def running_harvest(
    home: Path, faults: FaultPlan | None = None, hang_s: float = 5.0, **overrides: Any
) -> Iterator[HarvestServer]:
    """A sandbox process for the test; stopped (by PID) afterwards."""
    server = start_harvest(home, free_port(), faults, hang_s, **overrides)
    try:
        yield server
    finally:
        stop_pid(server.pid)
        assert not alive(server.pid), f"sandbox process {server.pid} outlived its stop"


class Api:
    """A minimal caller for tests (the connector's client is tested elsewhere)."""

    def __init__(self, server: HarvestServer) -> None:
        self.server = server
        self.http = httpx.Client(
            timeout=30,
            headers={
                "Authorization": f"Bearer {server.token}",
                "Harvest-Account-Id": str(server.account_id),
                "User-Agent": "closeloop tests",
            },
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.server.base_url}/{path.lstrip('/')}"
        return self.http.request(method, url, **kwargs)

    def listed(self, resource: str) -> list[dict[str, Any]]:
        """Every row of ``resource`` (one page of up to 2,000), waiting as a 429's
        ``Retry-After`` says when an earlier client used up the account's rate window."""
        while True:
            response = self.call("GET", resource, params={"per_page": 2000})
            if response.status_code != 429:
                break
            time.sleep(float(response.headers["Retry-After"]))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["links"]["next"] is None, f"{resource} has more than one page"
        rows: list[dict[str, Any]] = body[resource]
        return rows

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        base = self.server.base_url.removesuffix("/v2")
        return httpx.request(method, f"{base}/__sandbox/{path}", timeout=300, **kwargs)

    def close(self) -> None:
        self.http.close()


def client_for(server: HarvestServer, **kwargs: Any) -> HarvestClient:
    """The connector's client for ``server``."""
    return HarvestClient(server.base_url, server.token, str(server.account_id), **kwargs)


def firm(entries: int, *, approved_share: float = 1.0, people: int = 5) -> dict[str, Any]:
    """A seed: two clients, three projects (one archived), tasks, assignments, ``people``
    consultants and ``entries`` time entries over the year's first months."""
    users = [
        {
            "id": 100 + i,
            "first_name": f"Consultant{i}",
            "last_name": "Example",
            "email": f"c{i}@firm.example",
            "default_hourly_rate": 150.0,
            "cost_rate": 70.0,
        }
        for i in range(people)
    ]
    clients = [
        {"id": 10, "name": "Acme GmbH", "currency": "EUR"},
        {"id": 11, "name": "Bluth Company", "currency": "USD"},
    ]
    tasks = [
        {"id": 20, "name": "Consulting", "default_hourly_rate": 150.0},
        {"id": 21, "name": "Project Management", "default_hourly_rate": 120.0},
    ]
    projects = [
        {
            "id": 30,
            "client": {"id": 10},
            "name": "ERP rollout",
            "code": "CL-30",
            "is_billable": True,
            "bill_by": "Tasks",
            "budget_by": "project",
        },
        {
            "id": 31,
            "client": {"id": 11},
            "name": "Audit",
            "code": "CL-31",
            "is_billable": True,
            "bill_by": "People",
            "budget_by": "project",
        },
        {
            "id": 32,
            "client": {"id": 11},
            "name": "Old work",
            "code": "CL-32",
            "is_billable": True,
            "bill_by": "Project",
            "hourly_rate": 90.0,
            "budget_by": "none",
        },
    ]
    task_assignments = [
        {
            "id": 40 + n,
            "project": {"id": p},
            "task": {"id": t},
            "billable": True,
            "hourly_rate": 160.0 if t == 20 else 125.0,
        }
        for n, (p, t) in enumerate((p, t) for p in (30, 31, 32) for t in (20, 21))
    ]
    user_assignments = [
        {"id": 60 + n, "project": {"id": p}, "user": {"id": u["id"]}}
        for n, (p, u) in enumerate((p, u) for p in (30, 31, 32) for u in users)
    ]
    start = date(2026, 1, 5)
    time_entries = []
    for i in range(entries):
        spent = (start + timedelta(days=i % 90)).isoformat()
        time_entries.append(
            {
                "id": 1000 + i,
                "spent_date": spent,
                "created_at": f"{spent}T18:00:00Z",
                "updated_at": f"{spent}T18:00:00Z",
                "user": {"id": users[i % people]["id"]},
                "project": {"id": (30, 31, 32)[i % 3]},
                "task": {"id": (20, 21)[i % 2]},
                "hours": (1.0, 2.5, 4.0, 7.25)[i % 4],
                "notes": f"work item {i}",
                "is_closed": (i % 100) < approved_share * 100,
            }
        )
    expenses = [
        {
            "id": 5000 + i,
            "project": {"id": 30},
            "user": {"id": users[0]["id"]},
            "expense_category": {"id": 50},
            "spent_date": "2026-02-0" + str(i + 1),
            "total_cost": 42.5 + i,
            "notes": "train ticket",
            "is_closed": i == 0,
        }
        for i in range(2)
    ]
    return {
        "users": users,
        "clients": clients,
        "tasks": tasks,
        "projects": projects,
        "task_assignments": task_assignments,
        "user_assignments": user_assignments,
        "expense_categories": [{"id": 50, "name": "Travel"}],
        "time_entries": time_entries,
        "expenses": expenses,
    }


@dataclass(frozen=True)
class SetUpProjects(Unsignalled):
    """A test flow (a fake of the Flow protocol): each engagement record asks for its client
    and project in Harvest; each billing record marks its period billed."""

    name: str = "test-harvest-setup"

    def business_key(self, record: CanonicalRecord) -> str | None:
        return f"engagement:{record.data['code']}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        data = record.data
        if "number" in data:
            payload = MarkBilled(
                number=data["number"],
                customer_name=data["client"],
                project_keys=(data["code"],),
                period_start=date(2026, 1, 1),
                period_end=date(2026, 12, 31),
            ).model_dump(mode="json")
            operation = "mark_billed"
        elif "project" in data:
            payload = UpsertProject(
                key=data["code"],
                name=data["project"],
                customer_name=data["client"],
                currency="EUR",
                tasks=tuple(
                    ProjectTask(
                        name=t,
                        hourly_rate=Decimal(150),
                        budget_hours=Decimal(200) if n == 0 else Decimal(0),
                    )
                    for n, t in enumerate(data["tasks"])
                ),
                assignments=(ProjectAssignment(email="c0@firm.example"),),
            ).model_dump(mode="json")
            operation = "upsert_project"
        else:
            payload = {"name": data["client"], "currency": "EUR"}
            operation = "upsert_client"
        command = Command(
            system="harvest",
            operation=operation,
            business_key=self.business_key(record) or "",
            idempotency_key=idempotency_key(operation, command_key_of(operation, payload)),
            payload=payload,
            impact=Impact.REVENUE,
        )
        return FlowStep("asked", {}, commands=(command,))

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        return FlowStep("done", dict(state.data))


def command_key_of(operation: str, payload: dict[str, Any]) -> str:
    return command_key(Command("harvest", operation, "", "", payload))


def passthrough(change: Change) -> dict[str, Any]:
    return dict(change.payload)
