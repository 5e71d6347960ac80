"""The Harvest connector over real HTTP against the sandbox process: a 10,000-time-entry sync
through the engine and the shipped mapping with the rate limit on, the rate limit shared by
several workers, idempotent writes under injected faults, and records moving between pages."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from closeloop.bootstrap import Hub, build_hub, mapped_binding
from closeloop.config import Settings
from closeloop.connectors.harvest.client import HarvestApiError
from closeloop.connectors.harvest.connector import (
    HarvestConnector,
    idempotency_key,
    native_payload,
)
from closeloop.connectors.harvest.operations import Batch
from closeloop.domain.commands import Applied, Command, CommandStatus, Permanent
from closeloop.domain.operations import ProjectAssignment, ProjectTask, UpsertProject
from closeloop.ports.connector import TransientError
from closeloop.ports.flows import Binding
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.harvest.server import HarvestServer
from closeloop.store import migrate
from closeloop.store.ratelimit_repo import SqlSharedRateLimit
from closeloop.store.sql import SqlStore
from closeloop.store.tables import xref
from tests.conftest import done_commands
from tests.harvest_support import Api, SetUpProjects, client_for, firm, passthrough, running_harvest
from tests.memory_system import MemorySystem

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HarvestServer]:
    with running_harvest(tmp_path / "harvest") as started:
        yield started


@pytest.fixture
def api(server: HarvestServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def count(hub: Hub, table: sa.Table) -> int:
    with hub.store.engine.connect() as db:
        return int(db.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_client_or_task_created_after_the_batch_listed_is_found_not_refused(
    server: HarvestServer, api: Api
) -> None:
    """An earlier create of ours that lands after the batch read its lists (a timed-out
    request still running, a killed worker's) makes Harvest answer "Name has already been
    taken": the batch reads again and uses that record instead of refusing the command."""
    assert api.admin("POST", "seed", json=firm(0)).status_code == 200
    client = client_for(server)
    batch = Batch(client)
    assert batch.client_named("Late Client AG") is None and batch.task_named("Late task") is None
    late_client = api.call("POST", "clients", json={"name": "Late Client AG", "currency": "EUR"})
    late_task = api.call("POST", "tasks", json={"name": "Late task"})
    result = batch.upsert_project(
        {
            "client": "Late Client AG",
            "currency": "EUR",
            "code": "LATE-1",
            "name": "Late project",
            "tasks": [{"name": "Late task", "hourly_rate": 120.0}],
        }
    )
    client.close()
    assert result["client_id"] == late_client.json()["id"]
    assert result["task_ids"] == {"Late task": late_task.json()["id"]}
    clients = [c["name"] for c in api.listed("clients")]
    assert clients.count("Late Client AG") == 1
    with pytest.raises(HarvestApiError, match="already been taken"):  # not ours to find
        Batch(client_for(server)).create("tasks", {"name": "late task"}, lambda _: None, "x")


def test_ten_thousand_time_entries_sync_through_the_mapping_with_the_rate_limit_on(
    tmp_path: Path, server: HarvestServer, api: Api
) -> None:
    assert api.admin("POST", "seed", json=firm(10_000, approved_share=0.8)).status_code == 200
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}")
    client = client_for(server)
    connector = HarvestConnector(client, objects=("time_entries", "projects"))
    bindings = [
        mapped_binding(settings, "harvest", "time_entries", ()),
        mapped_binding(settings, "harvest", "projects", ()),
    ]
    hub = build_hub(settings, connectors={"harvest": connector}, bindings=bindings, upgrade=True)
    try:
        assert hub.worker.poll_all() == 10_003
        while hub.applier.apply_batch(1000):
            pass
        stats = hub.operations.stats()
        assert count(hub, xref) == 10_003  # every entry and project mapped to a canonical record
        assert hub.worker.poll_all() == 0  # nothing new: the overlap re-read is all repeats
    finally:
        hub.close()
    assert stats.inbox_by_status == {"applied": 10_003}
    assert not stats.open_exceptions_by_class
    # 2,000 per page; the second poll reads only the overlap window
    assert client.calls == {"time_entries": 5 + 1, "projects": 1 + 1}
    assert api.admin("GET", "stats").json()["throttled"] == 0


def test_workers_sharing_an_account_share_its_rate_limit(tmp_path: Path) -> None:
    """Four workers (threads, each with its own client and database connection) make 40
    requests against an account allowing 10 per 2 s: with the shared window Harvest never
    answers 429; with a window per worker it does."""
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate.upgrade(store.engine)
    shared = SqlSharedRateLimit(store.engine)
    with running_harvest(tmp_path / "harvest", requests_per_window=10, window_s=2) as server:
        api = Api(server)

        def run(**kwargs: Any) -> None:
            def worker() -> None:
                client = client_for(server, requests_per_window=10, window_s=2, **kwargs)
                for _ in range(10):
                    with contextlib.suppress(TransientError):  # the second run's 429s
                        client.request("GET", "company")
                client.close()

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        run(shared_limit=shared)
        assert api.admin("GET", "stats").json()["throttled"] == 0
        run()  # each worker counts only its own requests
        assert api.admin("GET", "stats").json()["throttled"] > 0
        api.close()
    store.close()


@dataclass
class MovingPages:
    """A connector client whose first list read loses a record between pages (as when a
    record is deleted while pages are read): the connector must notice and read again."""

    inner: Any
    lost_once: bool = False

    def list_all(self, resource: str, params: dict[str, Any] | None = None) -> Any:
        rows, total = self.inner.list_all(resource, params)
        if not self.lost_once:
            self.lost_once = True
            return rows[:-1], total
        return rows, total

    @property
    def window(self) -> tuple[int, float]:
        return self.inner.window  # type: ignore[no-any-return]

    def close(self) -> None:
        self.inner.close()


def test_a_poll_that_saw_fewer_records_than_harvest_counted_reads_again(
    server: HarvestServer, api: Api
) -> None:
    api.admin("POST", "seed", json=firm(50))
    connector = HarvestConnector(MovingPages(client_for(server)), objects=("time_entries",))  # type: ignore[arg-type]
    pages = list(connector.read_changes("time_entries", None))
    changes = [c for page in pages for c in page]
    assert len(changes) == 50 and len({c.external_id for c in changes}) == 50
    times = [c.modified_at for c in changes]
    assert times == sorted(times)  # oldest first, whatever Harvest's own order


# --- writes under faults ---------------------------------------------------------------------
def test_engine_writes_are_idempotent_under_faults(tmp_path: Path) -> None:
    faults = FaultPlan(
        server_error=0.05, lost_response=0.05, rate_limited=0.03, retry_after_s=0.05, seed=3
    )
    with running_harvest(tmp_path / "harvest") as server:
        api = Api(server)
        api.admin("POST", "seed", json=firm(300))
        api.admin("PUT", "faults", json=faults.__dict__)
        crm = MemorySystem(name="crm", source_objects=("Engagement",))
        for n in range(12):
            code = f"NEW-{n}"
            crm.put("Engagement", f"{code}-client", {"client": f"Client {n % 4}", "code": code})
            crm.put(
                "Engagement",
                f"{code}-project",
                {
                    "client": f"Client {n % 4}",
                    "code": code,
                    "project": f"Project {n}",
                    "tasks": ["Consulting", f"Workshop {n % 3}"],
                },
            )
        for code, client in (("CL-30", "Acme GmbH"), ("CL-31", "Bluth Company")):
            crm.put(
                "Engagement",
                f"{code}-bill",
                {"client": client, "code": code, "number": f"ERP-{code}"},
            )
        connector = HarvestConnector(client_for(server, timeout_s=2), objects=())
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'hub.db'}",
            worker={
                "retry_base_delay_s": 0.01,
                "retry_max_delay_s": 0.2,
                "breaker_cooldown_s": 0.2,
            },
        )
        hub = build_hub(
            settings,
            connectors={"harvest": connector, "crm": crm},
            bindings=[Binding("crm", "Engagement", "engagement", passthrough, (SetUpProjects(),))],
            upgrade=True,
        )
        try:
            assert hub.worker.run_until_idle(timeout_s=400)
            stats = hub.operations.stats()
        finally:
            hub.close()
        api.admin("PUT", "faults", json={})
        clients = api.listed("clients")
        projects = api.listed("projects")
        invoices = api.listed("invoices")
        entries = api.listed("time_entries")
        assignments = api.listed("task_assignments")
        injected = api.admin("GET", "stats").json()["faults_injected"]
        api.close()
    assert set(injected) == {"server_error", "lost_response", "rate_limited"}
    names = [c["name"] for c in clients]
    assert len(names) == len(set(names)) == 2 + 4  # seeded two, four new: none twice
    codes = [p["code"] for p in projects]
    assert len(codes) == len(set(codes)) == 3 + 12
    new = {a["project"]["code"] for a in assignments if a["project"]["code"].startswith("NEW-")}
    assert (
        len(new) == 12 and sum(a["project"]["code"].startswith("NEW-") for a in assignments) == 24
    )
    assert sorted(i["number"] for i in invoices) == ["ERP-CL-30", "ERP-CL-31"]
    billed = [e for e in entries if e["is_billed"]]
    assert billed and {e["project"]["code"] for e in billed} == {"CL-30", "CL-31"}
    assert all(e["is_closed"] for e in billed)
    # four clients (one command per name: the outbox keeps one per idempotency key), twelve
    # projects, two billings
    assert stats.commands_by_system["harvest"] == {CommandStatus.DONE.value: 4 + 12 + 2}
    assert not stats.open_exceptions_by_class


def test_refusals_become_business_exceptions_with_harvest_s_reason(
    server: HarvestServer, api: Api
) -> None:
    api.admin("POST", "seed", json=firm(10))
    connector = HarvestConnector(client_for(server))
    outcomes = connector.execute(
        [
            Command(
                "harvest",
                "upsert_project",
                "a",
                "k1",
                UpsertProject(
                    key="X-1",
                    name="Ghost",
                    customer_name="Nobody Inc",
                    currency="EUR",
                    tasks=(ProjectTask(name="Design", hourly_rate=Decimal(100)),),
                    assignments=(
                        ProjectAssignment(email="c0@firm.example"),
                        ProjectAssignment(email="ghost@firm.example"),
                    ),
                ).model_dump(mode="json"),
            ),
            Command(
                "harvest",
                "upsert_harvest_project",
                "b",
                "k2",
                {"client": "Acme GmbH", "code": "X-2", "name": "Bad", "bill_by": "Hourly"},
            ),
            Command("harvest", "close_project", "c", "k3", {"key": "CL-32"}),
        ]
    )
    assert isinstance(outcomes[0], Permanent) and outcomes[0].error_class == "not_found"
    assert "ghost@firm.example" in outcomes[0].message
    assert isinstance(outcomes[1], Permanent) and outcomes[1].error_class == "validation"
    assert "Bill by" in outcomes[1].message
    assert isinstance(outcomes[2], Applied)
    found = connector.find(
        [idempotency_key("close_project", "CL-32"), idempotency_key("upsert_client", "Nobody")]
    )
    assert list(found) == [idempotency_key("close_project", "CL-32")]


def test_sigkill_mid_run_duplicates_nothing_in_harvest(
    tmp_path: Path, sandbox_factory: Any
) -> None:
    """The hub in its own process, Harvest failing 10 % of calls (incl. answers lost after
    the write and hung requests), killed with SIGKILL three times at random points of
    progress and restarted: every client, project, assignment and billing exists once."""
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(6)
    engagements = 30
    crm = sandbox_factory("crm")
    records = []
    for n in range(engagements):
        code, client = f"NEW-{n}", f"Client {n % 6}"
        records.append(
            {
                "id": f"{code}-project",
                "data": {
                    "client": client,
                    "code": code,
                    "project": f"Project {n}",
                    "tasks": ["Consulting", f"Workshop {n % 3}"],
                },
            }
        )
    for code, client in (
        ("CL-30", "Acme GmbH"),
        ("CL-31", "Bluth Company"),
        ("CL-32", "Bluth Company"),
    ):
        records.append(
            {
                "id": f"{code}-bill",
                "data": {"client": client, "code": code, "number": f"ERP-{code}"},
            }
        )
    crm.http.post("/records/Engagement", json=records)
    total = len(records)
    with running_harvest(tmp_path / "harvest", hang_s=1.5) as server:
        api = Api(server)
        api.admin("POST", "seed", json=firm(200, approved_share=0.7))
        api.admin(
            "PUT",
            "faults",
            json={"server_error": 0.03, "lost_response": 0.05, "timeout": 0.02, "seed": 5},
        )
        db, log_path = tmp_path / "hub.db", tmp_path / "hub.log"
        command = [
            sys.executable,
            "-m",
            "tests.harvest_hub",
            str(db),
            crm.url,
            server.base_url,
            server.token,
            str(server.account_id),
        ]
        killed_at = []
        with log_path.open("ab") as log:
            for _ in range(3):
                process = subprocess.Popen(command, stdout=log, stderr=log)
                done = done_commands(db)
                # a random point in the first quarter of what is left, never the end, so
                # each kill lands mid-work however fast the hub runs between polls
                target = min(done + rng.randint(2, max(2, (total - done) // 4)), total - 4)
                deadline = time.monotonic() + 120
                while done_commands(db) < target and time.monotonic() < deadline:
                    assert process.poll() is None, log_path.read_text()[-3000:]
                    time.sleep(rng.uniform(0.005, 0.05))  # a random moment to kill at
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_at.append(done_commands(db))
            process = subprocess.Popen(command, stdout=log, stderr=log)
            deadline = time.monotonic() + 240
            while done_commands(db) < total and time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        api.admin("PUT", "faults", json={})
        clients = api.listed("clients")
        projects = api.listed("projects")
        assignments = api.listed("task_assignments")
        invoices = api.listed("invoices")
        entries = api.listed("time_entries")
        api.close()
    assert done_commands(db) == total, log_path.read_text()[-3000:]
    assert sum(done < total for done in killed_at) >= 2, killed_at  # kills came mid-work
    names = [c["name"] for c in clients]
    assert len(names) == len(set(names)) == 2 + 6
    codes = [p["code"] for p in projects]
    assert len(codes) == len(set(codes)) == 3 + engagements
    pairs = [(a["project"]["code"], a["task"]["name"]) for a in assignments]
    assert len(pairs) == len(set(pairs))
    assert sum(code.startswith("NEW-") for code, _ in pairs) == 2 * engagements
    assert sorted(i["number"] for i in invoices) == ["ERP-CL-30", "ERP-CL-31", "ERP-CL-32"]
    billed = [e for e in entries if e["is_billed"]]
    approved = [e for e in entries if e["is_closed"] and e["billable"]]
    assert {e["id"] for e in billed} == {e["id"] for e in approved}  # each once, none missed
    invoiced_hours = sum(line["quantity"] for i in invoices for line in i["line_items"])
    assert invoiced_hours == pytest.approx(sum(e["hours"] for e in billed))


def test_benchmark_polls_with_the_fewest_requests() -> None:
    """``closeloop bench harvest`` runs (small) and reads 2,000 entries per request."""
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "closeloop.cli",
            "bench",
            "harvest",
            "--runs",
            "1",
            "--entries",
            "4500",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    figures = json.loads(result.stdout)
    assert figures["requests"] == figures["fewest_requests"] == 3
    assert figures["entries_per_s"] > 0


# --- the request floor of a project set-up ---------------------------------------------------
ROLES = {"Partner": 260.0, "Consultant": 140.0, "Analyst": 95.0}
PEOPLE = ("p0@firm.example", "p1@firm.example", "p2@firm.example")


def small_account(**flags: dict[str, Any]) -> dict[str, Any]:
    """A seed: the role tasks and three people, no clients or projects; ``flags`` adds
    fields to a task or person by name or email (``is_default``, ...)."""
    tasks = [{"id": 20 + n, "name": name, **flags.get(name, {})} for n, name in enumerate(ROLES)]
    users = [
        {
            "id": 100 + n,
            "first_name": f"Person{n}",
            "last_name": "Example",
            "email": email,
            **flags.get(email, {}),
        }
        for n, email in enumerate(PEOPLE)
    ]
    return {"tasks": tasks, "users": users}


def set_up(
    code: str,
    client: str,
    tasks: dict[str, float],
    people: tuple[str, ...] = (),
    budget: float = 200.0,
) -> Command:
    """An ``upsert_project`` command shaped as the mobilize flow sends it (the budget on
    the first task)."""
    payload = UpsertProject(
        key=code,
        name=f"Engagement {code}",
        customer_name=client,
        currency="EUR",
        starts_on=date(2026, 3, 2),
        tasks=tuple(
            ProjectTask(
                name=name,
                hourly_rate=Decimal(str(rate)),
                budget_hours=Decimal(str(budget)) if n == 0 else Decimal(0),
            )
            for n, (name, rate) in enumerate(tasks.items())
        ),
        assignments=tuple(ProjectAssignment(email=email) for email in people),
    ).model_dump(mode="json")
    return Command(
        "harvest",
        "upsert_project",
        f"engagement:{code}",
        idempotency_key("upsert_project", code),
        payload,
    )


def run(server: HarvestServer, commands: list[Command]) -> tuple[list[Any], dict[str, int]]:
    """The commands' results through a connector of their own, and its requests by resource
    (assignments are under ``projects``)."""
    client = client_for(server)
    try:
        outcomes = HarvestConnector(client).execute(commands)
    finally:
        client.close()
    assert all(isinstance(o, Applied) for o in outcomes), outcomes
    return [o.result for o in outcomes if isinstance(o, Applied)], dict(client.calls)


def harvest_state(api: Api) -> dict[str, Any]:
    """What the account holds, as comparable values (assignments by project code)."""
    return {
        "clients": sorted(c["name"] for c in api.listed("clients")),
        "projects": sorted(
            (p["code"], p["client"]["name"], p["budget"], p["updated_at"])
            for p in api.listed("projects")
        ),
        "tasks": sorted(
            (a["project"]["code"], a["task"]["name"], a["hourly_rate"], a["billable"])
            for a in api.listed("task_assignments")
        ),
        "people": sorted(
            (a["project"]["code"], a["user"]["id"]) for a in api.listed("user_assignments")
        ),
    }


def test_new_projects_cost_the_request_floor_and_a_retry_only_its_reads_and_changes(
    server: HarvestServer, api: Api
) -> None:
    """A batch of new engagements with tasks and people costs exactly the floor of the
    operations module: per engagement 1 POST client (when new), 1 POST project, one POST per
    task and per person; per batch one read of the projects, the tasks and the people. Run
    again (a retry) it writes nothing and costs the reads plus one read of each project's task
    and user assignments; changed, it adds only the writes of what changed."""
    assert api.admin("POST", "seed", json=small_account()).status_code == 200
    commands = [
        set_up("E-1", "Alder Foods GmbH", {"Partner": 260.0, "Analyst": 95.0}, PEOPLE[:1]),
        set_up("E-2", "Bright Energy AG", dict(ROLES), PEOPLE[:2]),
        set_up("E-3", "Cobalt Media SAS", {"Consultant": 140.0, "Analyst": 95.0}),
        set_up("E-4", "Alder Foods GmbH", dict(ROLES), PEOPLE[1:2]),  # its client: E-1's
    ]
    natives = [native_payload(c) for c in commands]  # as Harvest gets them
    tasks = sum(len(n["tasks"]) for n in natives)
    people = sum(len(n.get("people", [])) for n in natives)
    results, calls = run(server, commands)
    new_clients, projects = 3, 4
    lists = {"projects": 1, "tasks": 1, "users": 1}
    floor = {
        "clients": new_clients,
        "projects": lists["projects"] + projects + tasks + people,
        "tasks": lists["tasks"],
        "users": lists["users"],
    }
    assert calls == floor
    assert sum(calls.values()) == new_clients + projects + tasks + people + 3 == 24
    state = harvest_state(api)
    assert state["clients"] == ["Alder Foods GmbH", "Bright Energy AG", "Cobalt Media SAS"]
    assert [p[:3] for p in state["projects"]] == [(n["code"], n["client"], 200.0) for n in natives]
    assert state["tasks"] == sorted(
        (n["code"], t["name"], t["hourly_rate"], True) for n in natives for t in n["tasks"]
    )
    by_email = {u["email"]: u["id"] for u in api.listed("users")}
    assert state["people"] == sorted(
        (n["code"], by_email[p["email"]]) for n in natives for p in n.get("people", [])
    )
    assert results[0]["client_id"] == results[3]["client_id"]

    again, calls = run(server, commands)  # a retry: the answers were lost
    assert again == results
    assert harvest_state(api) == state  # nothing written, not even a patch
    with_people = sum(bool(n.get("people", [])) for n in natives)
    assert calls == {"projects": 1 + projects + with_people, "tasks": 1, "users": 1}

    changed = [
        set_up("E-1", "Alder Foods GmbH", {"Partner": 260.0, "Analyst": 95.0}, PEOPLE[:1], 240.0),
        set_up("E-2", "Bright Energy AG", {**ROLES, "Analyst": 99.0}, PEOPLE[:2]),
        set_up("E-3", "Cobalt Media SAS", {"Consultant": 140.0, "Analyst": 95.0}, PEOPLE[2:]),
        commands[3],
    ]
    _, calls = run(server, changed)
    # the reads as before (and E-3's people now), a patch of E-1, of E-2's Analyst rate, and
    # E-3's new person
    assert calls == {"projects": 1 + projects + with_people + 1 + 3, "tasks": 1, "users": 1}
    after = harvest_state(api)
    assert {p[0]: p[2] for p in after["projects"]} == {"E-1": 240.0, "E-2": 200.0} | {
        "E-3": 200.0,
        "E-4": 200.0,
    }
    assert ("E-2", "Analyst", 99.0, True) in after["tasks"]
    assert len(after["tasks"]) == len(state["tasks"])
    assert len(after["people"]) == len(state["people"]) + 1
    assert after["clients"] == state["clients"]


def test_a_retry_after_a_lost_answer_writes_only_what_the_first_attempt_missed(
    server: HarvestServer, api: Api
) -> None:
    """The first attempt's client, project and one task assignment landed but its answers
    were lost (the worker then died): the retry finds them, writes only the missing task and
    person, and patches nothing."""
    assert api.admin("POST", "seed", json=small_account()).status_code == 200
    command = set_up("E-9", "Dune Retail B.V.", {"Partner": 260.0, "Analyst": 95.0}, PEOPLE[:1])
    client = api.call("POST", "clients", json={"name": "Dune Retail B.V.", "currency": "EUR"})
    body = {
        k: v
        for k, v in native_payload(command).items()
        if k not in ("client", "currency", "tasks", "people")
    }
    project = api.call("POST", "projects", json={**body, "client_id": client.json()["id"]})
    assert project.status_code == 201, project.text
    tasks = {t["name"]: t["id"] for t in api.listed("tasks")}
    landed = api.call(
        "POST",
        f"projects/{project.json()['id']}/task_assignments",
        json={"task_id": tasks["Partner"], "hourly_rate": 260.0, "billable": True},
    )
    assert landed.status_code == 201, landed.text
    before = harvest_state(api)
    [result], calls = run(server, [command])
    # lists of projects, tasks, people; the project's task and user assignments; two POSTs
    assert calls == {"projects": 1 + 2 + 2, "tasks": 1, "users": 1}
    assert result["project_id"] == project.json()["id"]
    assert result["client_id"] == client.json()["id"]
    after = harvest_state(api)
    assert after["clients"] == before["clients"] == ["Dune Retail B.V."]
    assert after["projects"] == before["projects"]  # found, not patched
    assert after["tasks"] == [("E-9", "Analyst", 95.0, True), ("E-9", "Partner", 260.0, True)]
    assert after["people"] == [("E-9", 100)]


def test_what_harvest_adds_to_a_new_project_is_read_back_only_when_wanted(
    server: HarvestServer, api: Api
) -> None:
    """Harvest adds default tasks (at their default rate, billable as by default) and people
    with access to all future projects to every new project (its documented behaviour, which
    the sandbox follows). A set-up that wants none of them does not read the new project's
    assignments; one that wants some reads them once, patches a rate that differs, and posts
    only the rest."""
    seed = small_account(
        Partner={"is_default": True, "default_hourly_rate": 250.0},
        Analyst={"is_default": True, "default_hourly_rate": 95.0, "billable_by_default": False},
        **{PEOPLE[0]: {"has_access_to_all_future_projects": True}},
    )
    assert api.admin("POST", "seed", json=seed).status_code == 200
    commands = [
        set_up("D-1", "Ember Pharma GmbH", {"Consultant": 140.0}, PEOPLE[1:2]),
        # Partner added at 250 (patched to 260), Analyst added non-billable (patched),
        # Consultant posted; PEOPLE[0] added by Harvest, PEOPLE[1] posted
        set_up(
            "D-2",
            "Ember Pharma GmbH",
            {"Partner": 260.0, "Analyst": 95.0, "Consultant": 140.0},
            PEOPLE[:2],
        ),
        set_up("D-3", "Fjord Insurance NV", {"Partner": 250.0}),  # as Harvest added it
    ]
    _, calls = run(server, commands)
    writes = {"D-1": 1 + 1 + 1 + 1, "D-2": 1 + 2 + 1 + 1, "D-3": 1 + 1}
    reads = {"D-1": 0, "D-2": 2, "D-3": 1}  # the new project's assignments
    assert calls == {
        "clients": 2,
        "projects": 1 + sum(writes.values()) - 2 + sum(reads.values()),
        "tasks": 1,
        "users": 1,
    }
    state = harvest_state(api)
    assert [t for t in state["tasks"] if t[0] == "D-2"] == [
        ("D-2", "Analyst", 95.0, True),
        ("D-2", "Consultant", 140.0, True),
        ("D-2", "Partner", 260.0, True),
    ]
    # what Harvest added and the set-up did not ask for stays as Harvest made it
    assert [t for t in state["tasks"] if t[0] == "D-1"] == [
        ("D-1", "Analyst", 95.0, False),
        ("D-1", "Consultant", 140.0, True),
        ("D-1", "Partner", 250.0, True),
    ]
    assert [t for t in state["tasks"] if t[0] == "D-3"] == [
        ("D-3", "Analyst", 95.0, False),
        ("D-3", "Partner", 250.0, True),
    ]
    assert state["people"] == [("D-1", 100), ("D-1", 101), ("D-2", 100), ("D-2", 101), ("D-3", 100)]
