"""The console's views as ``/api/v1`` routes (overview, engagements and their timelines,
exceptions grouped by cause), through the hub's real HTTP app in process on each backend
(SQLite and PostgreSQL): a hub with two systems, a blocked deal and an engagement with
time, invoices and money, a parked command, exceptions of a few causes and a
reconciliation run. The API answers what the console shows (the same read models):
checked against the console's pages where both show a figure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from closeloop.bootstrap import Hub, build_http_app
from closeloop.config import Settings
from closeloop.domain.changes import Change
from closeloop.domain.commands import Command, ExceptionClass, Impact
from closeloop.domain.records import FlowState
from closeloop.ports.store import NewCommand, NewException, ReconcileRun, Snapshot
from tests.conftest import make_hub
from tests.memory_system import MemorySystem

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
PROBLEM = "application/problem+json"
BLOCKED, BILLED = "0065g00000DEAL1AAA", "0065g00000DEAL2AAA"
KEY = f"SF-{BILLED}"
INVOICE = f"{KEY}/2026-03"
TAX_ID = "the account's tax id is missing"
ROUTES = (
    "/api/v1/overview",
    "/api/v1/engagements",
    f"/api/v1/engagements/{BLOCKED}",
    "/api/v1/exceptions/groups",
)


@dataclass
class Seeded:
    """The app, its hub, a viewer's header and the ids of what was seeded."""

    client: TestClient
    hub: Hub
    viewer: dict[str, str]
    ids: dict[str, Any]

    def get(self, path: str, **params: Any) -> Any:
        answer = self.client.get(path, params=params, headers=self.viewer)
        assert answer.status_code == 200, answer.text
        return answer.json()


def flow_states() -> list[FlowState]:
    systems = {"crm": "crm", "erp": "erp"}
    return [
        FlowState(
            "mobilize",
            "engagement:c-1",
            "blocked",
            {
                "deal_id": BLOCKED,
                "deal_entity": f"crm:Opportunity:{BLOCKED}",
                "problems": [TAX_ID],
                "systems": systems,
            },
        ),
        FlowState(
            "mobilize",
            "engagement:c-2",
            "mobilized",
            {
                "deal_id": BILLED,
                "deal_entity": f"crm:Opportunity:{BILLED}",
                "project_key": KEY,
                "systems": systems,
                "customer": {"crm_id": "001B", "legal_name": "Beta Systems AG"},
            },
        ),
        FlowState(
            "bill_time",
            "time:1",
            "recorded",
            {"project_code": KEY, "hours": "7.5", "entity": "crm:time_entry:1"},
        ),
        FlowState(
            "invoice",
            f"billing:{KEY}",
            "open",
            {"project_key": KEY, "invoices": {INVOICE: {"number": "INV-0042"}}},
        ),
        FlowState(
            "status_back",
            f"status:{KEY}",
            "reported",
            {
                "project_key": KEY,
                "as_of": "2026-03-20",
                "invoices": {
                    INVOICE: {
                        "number": "INV-0042",
                        "date": "2026-03-01",
                        "due_date": "2026-03-31",
                        "currency": "EUR",
                        "total": "1250.50",
                        "paid": "250.25",
                    }
                },
            },
        ),
    ]


def seed(hub: Hub) -> dict[str, Any]:
    """Flows, the blocked deal as applied, exceptions, commands, a pending change and a
    reconciliation run; the ids of the exceptions by name."""
    now = datetime.now(UTC)
    hub.intake.accept(  # the ERP refuses a mirrored record: a parked command, an exception
        [
            Change(
                system="crm",
                object="Record",
                external_id="r1",
                version="1",
                payload={"name": "r1", "reject_reason": "VAT id missing"},
            )
        ]
    )
    assert hub.worker.run_until_idle(10)
    (vat,) = [e.id for e in hub.operations.list_exceptions("open", 10)]
    deal_key = ("crm", "Opportunity", BLOCKED)
    with hub.store.transaction() as tx:
        tx.put_flows(flow_states(), now)
        tx.put_snapshots(
            [
                (
                    Snapshot(deal_key, "opportunity", BLOCKED, "v1", "h"),
                    {"name": "Gamma review", "customer": {"legal_name": "Gamma Labs AG"}},
                )
            ],
            now,
        )
        tx.add_commands(
            [
                NewCommand(
                    Command(
                        "erp",
                        "upsert_project",
                        f"engagement:{BILLED}",
                        "k-project",
                        {},
                        f"erp:project:{KEY}",
                        Impact.REVENUE,
                    ),
                    "mobilize",
                    None,
                )
            ],
            now,
        )
        blocked, closed_1, closed_2, period = tx.open_exceptions(
            [
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.REVENUE,
                    f"crm:Opportunity:{BLOCKED}",
                    f"closed-won deal blocked: {TAX_ID}",
                ),
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.REVENUE,
                    "erp:time_entry:101",
                    "time entry 101 (7.5 h on 2026-03-03) cannot be billed: project P-1 is closed",
                ),
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.CLIENT,
                    "erp:time_entry:102",
                    "time entry 102 (2 h on 2026-03-04) cannot be billed: project P-1 is closed",
                ),
                NewException(
                    ExceptionClass.CLOSED_PERIOD,
                    Impact.COMPLIANCE,
                    "erp:invoice:SF-1/2026-02",
                    "the period 2026-02 is closed",
                ),
            ],
            now - timedelta(days=2),
        )
        run_id = tx.save_reconcile_run(
            ReconcileRun(
                started_at=now - timedelta(minutes=2),
                finished_at=now - timedelta(minutes=1),
                trigger="schedule",
                actor="scheduler",
                domains=("customers", "invoices"),
                repair=False,
                dry_run=False,
                records={"customers": 10, "invoices": 4},
                pages={"crm": 2},
                counts={"customers": {"missing": 2, "in_flight": 1}, "invoices": {"amount": 1}},
                status="ok",
            )
        )
    hub.intake.accept(  # a change waiting in the inbox (the worker does not run again)
        [Change(system="crm", object="Record", external_id="r2", version="1", payload={})]
    )
    return {
        "vat": vat,
        "blocked": blocked,
        "closed": [closed_1, closed_2],
        "period": period,
        "run": run_id,
    }


@pytest.fixture
def api(db_url: str) -> Iterator[Seeded]:
    hub = make_hub(db_url, MemorySystem("crm"), MemorySystem("erp"))
    systems = {"kind": "memory", "url": "http://127.0.0.1:9", "objects": []}
    hub.settings.systems = Settings(systems={"crm": systems, "erp": systems}).systems
    ids = seed(hub)
    client = TestClient(build_http_app(hub))
    viewer = hub.access.create("eve", "viewer", "test", None).token
    try:
        yield Seeded(client, hub, {"Authorization": f"Bearer {viewer}"}, ids)
    finally:
        hub.close()


def test_every_view_needs_a_key(api: Seeded) -> None:
    for path in ROUTES:
        refused = api.client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["content-type"] == PROBLEM
        wrong = api.client.get(path, headers={"Authorization": "Bearer clk_1_nope"})
        assert wrong.status_code == 401, path


def test_the_overview_has_each_system_the_queue_exceptions_and_the_last_run(
    api: Seeded,
) -> None:
    view = api.get("/api/v1/overview")
    crm, erp = view["systems"]
    assert (crm["name"], crm["breaker"], crm["quota"], crm["healthy"]) == (
        "crm",
        "closed",
        "-",
        True,
    )
    assert (erp["name"], erp["pending"], erp["in_flight"], erp["parked"]) == ("erp", 1, 0, 1)
    assert erp["breaker"] == "closed" and erp["healthy"] is False
    assert view["inbox_pending"] == 1
    assert 0 <= view["oldest_pending_age_s"] < 600
    assert view["open_exceptions"] == 5
    assert view["exceptions_by_class"] == {"closed_period": 1, "validation": 4}
    assert view["exceptions_by_impact"] == {
        "client": 1,
        "compliance": 1,
        "reporting": 1,  # the mirrored record's parked command
        "revenue": 2,
    }
    run = view["last_run"]
    assert (run["id"], run["status"], run["trigger"]) == (api.ids["run"], "ok", "schedule")
    assert run["drifts"] == 3  # the one in flight is not a drift
    assert datetime.fromisoformat(run["finished_at"]) < datetime.now(UTC)

    page = api.client.get("/console", headers=api.viewer).text  # the console shows the same
    assert re.search(r'id="open-exceptions">5<', page)


def test_engagements_are_found_by_client_deal_project_or_invoice(api: Seeded) -> None:
    every = api.get("/api/v1/engagements")
    assert every["total"] == 2
    beta, gamma = every["items"]
    assert (beta["client"], beta["deal_id"], gamma["client"]) == (
        "Beta Systems AG",
        BILLED,
        "Gamma Labs AG",
    )
    assert (gamma["deal_name"], gamma["stage"], gamma["blockers"]) == (
        "Gamma review",
        "blocked",
        [TAX_ID],
    )
    assert (beta["stage"], beta["blockers"], beta["project_key"]) == ("mobilized", [], KEY)
    money = {k: beta[k] for k in ("invoiced", "paid", "outstanding", "hours_recorded")}
    assert money == {
        "invoiced": "1250.50",
        "paid": "250.25",
        "outstanding": "1000.25",
        "hours_recorded": "7.5",
    }
    assert beta["invoices"] == {INVOICE: "INV-0042"} and beta["invoices_posted"] == 1
    assert beta["time_entries"] == {"recorded": 1} and beta["hours_held"] == "0"

    for text, deal in (
        ("gamma LABS", BLOCKED),  # client, case-insensitive
        ("review", BLOCKED),  # deal name
        (BILLED[-8:], BILLED),  # deal id
        (KEY.lower(), BILLED),  # project code
        ("INV-0042", BILLED),  # invoice number
        (INVOICE, BILLED),  # invoice reference
    ):
        found = api.get("/api/v1/engagements", q=text)
        assert [e["deal_id"] for e in found["items"]] == [deal], text
        assert found["total"] == 1
    assert api.get("/api/v1/engagements", q="nobody") == {"items": [], "total": 0}
    first = api.get("/api/v1/engagements", limit=1)
    assert [e["deal_id"] for e in first["items"]] == [BILLED] and first["total"] == 2

    for bad in ({"q": ""}, {"q": "x" * 201}, {"q": "a\x00"}, {"limit": 0}, {"limit": 501}):
        refused = api.client.get("/api/v1/engagements", params=bad, headers=api.viewer)
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == PROBLEM


def test_an_engagement_has_its_timeline_exceptions_and_commands(api: Seeded) -> None:
    blocked = api.get(f"/api/v1/engagements/{BLOCKED}")
    assert blocked["engagement"]["client"] == "Gamma Labs AG"
    stages = [s["stage"] for s in blocked["timeline"]]
    assert stages == ["Closed won", "Customer", "Projects", "Time", "Invoices", "Payments"]
    closed_won = blocked["timeline"][0]["events"]
    deal = closed_won[0]
    assert deal["title"] == "Deal Gamma review closed won" and deal["tone"] == "blocked"
    assert deal["detail"] == f"mobilization blocked: {TAX_ID}" and deal["at"] is None
    failed = [e for e in closed_won if e["tone"] == "failed"]
    assert [e["title"] for e in failed] == [f"Exception {api.ids['blocked']} (validation, open)"]
    (exception,) = blocked["open_exceptions"]
    assert (exception["id"], exception["system"]) == (api.ids["blocked"], "crm")
    assert blocked["commands"] == [] and blocked["commands_by_system"] == {}

    billed = api.get(f"/api/v1/engagements/{BILLED}")
    assert billed["engagement"]["outstanding"] == "1000.25"
    (command,) = billed["commands"]
    assert (command["system"], command["operation"], command["status"]) == (
        "erp",
        "upsert_project",
        "pending",
    )
    assert billed["commands_by_system"] == {"erp": {"pending": 1}}
    projects = next(s for s in billed["timeline"] if s["stage"] == "Projects")["events"]
    assert [(e["title"], e["system"], e["tone"]) for e in projects] == [
        ("Upsert project", "erp", "waiting")
    ]
    payments = next(s for s in billed["timeline"] if s["stage"] == "Payments")["events"]
    assert payments[0]["detail"] == "invoiced 1250.50, paid 250.25, outstanding 1000.25"
    assert billed["open_exceptions"] == []

    missing = api.client.get("/api/v1/engagements/0065g00000NONEAAA", headers=api.viewer)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert "no engagement for deal" in missing.json()["detail"]
    long = api.client.get(f"/api/v1/engagements/{'x' * 201}", headers=api.viewer)
    assert long.status_code == 422


def test_exceptions_are_grouped_by_cause_with_the_list_filters(api: Seeded) -> None:
    closed_1, closed_2 = api.ids["closed"]
    answer = api.get("/api/v1/exceptions/groups")
    assert answer["truncated"] is False
    groups = answer["groups"]
    assert [(g["count"], g["system"], g["error_class"]) for g in groups] == [
        (2, "erp", "validation"),  # largest first
        (1, "crm", "validation"),  # then oldest (opened together: by id)
        (1, "erp", "closed_period"),
        (1, "erp", "validation"),  # the parked command's, opened now
    ]
    closed = groups[0]
    assert closed["cause"] == "time entry … (… h on …) cannot be billed: project … is closed"
    assert closed["exception_ids"] == [closed_1, closed_2] and closed["example"]["id"] == closed_1
    assert closed["impacts"] == ["client", "revenue"]
    assert closed["entities"] == ["erp:time_entry:101", "erp:time_entry:102"]
    assert re.fullmatch("[0-9a-f]{12}", closed["key"])
    assert datetime.fromisoformat(closed["oldest"]) < datetime.now(UTC) - timedelta(days=1)
    assert closed["example"]["system"] == "erp" and closed["example"]["status"] == "open"
    assert groups[-1]["exception_ids"] == [api.ids["vat"]]

    def counts(**filters: Any) -> list[int]:
        return [g["count"] for g in api.get("/api/v1/exceptions/groups", **filters)["groups"]]

    assert counts(**{"class": "closed_period"}) == [1]
    assert counts(system="crm") == [1]
    assert counts(impact="client") == [1]  # one of the two of a cause
    assert counts(older_than_h=24) == [2, 1, 1]  # the parked command's is new
    assert counts(older_than_h=24, system="erp") == [2, 1]
    resolved = api.hub.operations.resolve(closed_1, "test", "project reopened")
    assert resolved.status == "resolved"
    assert counts(system="erp", older_than_h=24) == [1, 1]  # open ones only
    page = api.client.get("/console/exceptions", headers=api.viewer).text
    for group in api.get("/api/v1/exceptions/groups")["groups"]:  # the console's groups
        assert group["key"] in page

    one = api.client.get(f"/api/v1/exceptions/{closed_2}", headers=api.viewer)
    assert one.status_code == 200 and one.json()["id"] == closed_2  # ids still route
    for bad in ({"class": "bogus"}, {"older_than_h": -1}, {"system": "erp\x00"}):
        refused = api.client.get("/api/v1/exceptions/groups", params=bad, headers=api.viewer)
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == PROBLEM
