"""The Harvest sandbox against Harvest's contract: every answer the hub relies on validates
against the OpenAPI description in ../shared/realdata (openapi-core; skipped, with the reason,
when absent); authentication, paging, updated_since, the rate limit, approval locks,
invoicing that imports time once, seed and faults. Over real HTTP to its own process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from closeloop.sandboxes.harvest.server import HarvestServer
from tests.conftest import sandbox_cli
from tests.harvest_support import OPENAPI, Api, firm, running_harvest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarvestServer]:
    with running_harvest(tmp_path_factory.mktemp("harvest")) as started:
        api = Api(started)
        assert api.admin("POST", "seed", json=firm(60, approved_share=0.5)).status_code == 200
        api.close()
        yield started


@pytest.fixture
def api(server: HarvestServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def openapi() -> Any:
    if not OPENAPI.is_file():
        pytest.skip(f"{OPENAPI} is absent: Harvest conformance tests skipped")
    from openapi_core import Config, OpenAPI

    # The published description uses `type: 'null'` (OpenAPI 3.1) inside a 3.0.1 document, so
    # the document itself is not checked; every answer is still validated against it.
    return OpenAPI.from_file_path(str(OPENAPI), config=Config(spec_validator_cls=None))


def validate(openapi: Any, method: str, path: str, response: httpx.Response) -> None:
    """Validate one answer against the OpenAPI description (raises when it does not fit)."""
    from openapi_core.testing import MockRequest, MockResponse

    request = MockRequest("https://api.harvestapp.com", method.lower(), f"/v2/{path}")
    answer = MockResponse(
        response.content, status_code=response.status_code, content_type="application/json"
    )
    openapi.validate_response(request, answer)


def test_answers_validate_against_the_openapi_description(api: Api, openapi: Any) -> None:
    checked = 0
    for resource in (
        "clients",
        "projects",
        "tasks",
        "users",
        "time_entries",
        "expenses",
        "task_assignments",
        "user_assignments",
        "invoices",
    ):
        listed = api.call("GET", resource)
        assert listed.status_code == 200
        validate(openapi, "GET", resource, listed)
        rows = listed.json()[resource]
        if rows and resource not in ("task_assignments", "user_assignments"):
            one = api.call("GET", f"{resource}/{rows[0]['id']}")
            validate(openapi, "GET", f"{resource}/{rows[0]['id']}", one)
        checked += 1
    validate(openapi, "GET", "company", api.call("GET", "company"))
    validate(openapi, "GET", "users/me", api.call("GET", "users/me"))
    client = api.call("POST", "clients", json={"name": "Conformance Ltd", "currency": "GBP"})
    assert client.status_code == 201
    validate(openapi, "POST", "clients", client)
    body = {
        "client_id": client.json()["id"],
        "name": "Conformance",
        "code": "CONF-1",
        "is_billable": True,
        "bill_by": "Tasks",
        "budget_by": "project",
        "budget": 40.0,
    }
    project = api.call("POST", "projects", json=body)
    validate(openapi, "POST", "projects", project)
    pid = project.json()["id"]
    assignment = api.call(
        "POST", f"projects/{pid}/task_assignments", json={"task_id": 20, "hourly_rate": 180.0}
    )
    validate(openapi, "POST", f"projects/{pid}/task_assignments", assignment)
    people = api.call("POST", f"projects/{pid}/user_assignments", json={"user_id": 100})
    validate(openapi, "POST", f"projects/{pid}/user_assignments", people)
    entry = api.call(
        "POST",
        "time_entries",
        json={
            "project_id": pid,
            "task_id": 20,
            "spent_date": "2026-02-02",
            "hours": 3.5,
            "user_id": 100,
        },
    )
    assert entry.status_code == 201
    validate(openapi, "POST", "time_entries", entry)
    assert entry.json()["billable_rate"] == 180.0 and entry.json()["is_locked"] is False
    patched = api.call("PATCH", f"time_entries/{entry.json()['id']}", json={"notes": "edited"})
    validate(openapi, "PATCH", f"time_entries/{entry.json()['id']}", patched)
    assert checked == 9


def test_auth_headers_and_errors(server: HarvestServer, api: Api) -> None:
    anonymous = httpx.get(f"{server.base_url}/clients")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_token"
    wrong_account = httpx.get(
        f"{server.base_url}/clients",
        headers={"Authorization": f"Bearer {server.token}", "Harvest-Account-Id": "1"},
    )
    assert wrong_account.status_code == 403
    assert api.call("GET", "clients/999999").status_code == 404
    duplicate = api.call("POST", "clients", json={"name": "acme gmbh"})
    assert (duplicate.status_code, duplicate.json()["message"]) == (
        422,
        "Name has already been taken",
    )
    missing = api.call("POST", "projects", json={"name": "No client"})
    assert missing.status_code == 422 and "can't be blank" in missing.json()["message"]
    unassigned = api.call(
        "POST", "time_entries", json={"project_id": 30, "task_id": 999, "spent_date": "2026-01-01"}
    )
    assert unassigned.status_code == 422


def test_paging_links_and_updated_since(api: Api) -> None:
    first = api.call("GET", "time_entries", params={"per_page": 8, "client_id": 10}).json()
    assert (first["total_entries"], first["total_pages"], first["page"]) == (20, 3, 1)
    seen = [e["id"] for e in first["time_entries"]]
    page = first
    while page["links"]["next"]:
        page = api.call("GET", page["links"]["next"]).json()
        seen += [e["id"] for e in page["time_entries"]]
    assert len(seen) == len(set(seen)) == 20
    dates = [e["spent_date"] for e in first["time_entries"]]
    assert dates == sorted(dates, reverse=True)  # newest spent_date first, as Harvest
    touched = api.call("PATCH", "time_entries/1055", json={"notes": "touched"}).json()
    mark = touched["updated_at"]  # the seeded entries were last updated on their day
    changed = api.call("GET", "time_entries", params={"updated_since": mark}).json()
    assert 1055 in [e["id"] for e in changed["time_entries"]]
    assert all(e["updated_at"] >= mark for e in changed["time_entries"])
    assert changed["total_entries"] < 10


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with running_harvest(tmp_path, requests_per_window=5, window_s=15) as server:
        api = Api(server)
        statuses = [api.call("GET", "company").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        refused = api.call("GET", "company")
        assert 1 <= int(refused.headers["Retry-After"]) <= 15
        api.close()


def test_approval_locks_entries_and_invoicing_imports_each_entry_once(api: Api) -> None:
    entries = api.call("GET", "time_entries", params={"project_id": 30}).json()["time_entries"]
    open_entry = next(e for e in entries if not e["is_closed"])
    assert api.admin("POST", "approve", json={"ids": [open_entry["id"]]}).json() == {"approved": 1}
    locked = api.call("GET", f"time_entries/{open_entry['id']}").json()
    assert (
        locked["is_locked"]
        and locked["locked_reason"] == "Item Approved and Locked for this Time Period"
    )
    refused = api.call("PATCH", f"time_entries/{open_entry['id']}", json={"hours": 9})
    assert refused.status_code == 422 and "locked" in refused.json()["message"]
    reference = {
        "id": "tryton-line-7",
        "group_id": "INV/2026/0001",
        "permalink": "https://erp.example/7",
    }
    allowed = api.call(
        "PATCH", f"time_entries/{open_entry['id']}", json={"external_reference": reference}
    )
    assert (
        allowed.status_code == 200 and allowed.json()["external_reference"]["id"] == "tryton-line-7"
    )
    body = {
        "client_id": 10,
        "number": "INV/2026/0001",
        "line_items_import": {
            "project_ids": [30],
            "time": {"summary_type": "task", "from": "2026-01-01", "to": "2026-12-31"},
        },
    }
    invoice = api.call("POST", "invoices", json=body)
    assert invoice.status_code == 201
    approved = [
        e
        for e in api.call("GET", "time_entries", params={"project_id": 30}).json()["time_entries"]
        if e["is_closed"]
    ]
    assert approved and all(
        e["is_billed"] and e["invoice"]["number"] == "INV/2026/0001" for e in approved
    )
    billed_hours = sum(line["quantity"] for line in invoice.json()["line_items"])
    assert billed_hours == pytest.approx(sum(e["hours"] for e in approved))
    assert invoice.json()["amount"] == pytest.approx(
        sum(e["hours"] * e["billable_rate"] for e in approved), abs=0.01
    )
    again = api.call("POST", "invoices", json={**body, "number": "INV/2026/0002"})
    assert again.status_code == 201 and again.json()["line_items"] == []  # nothing billed twice
    taken = api.call("POST", "invoices", json=body)
    assert taken.status_code == 422 and "already been taken" in taken.json()["message"]


def test_seed_is_all_or_nothing_and_faults_are_real(tmp_path: Path) -> None:
    with running_harvest(tmp_path) as server:
        api = Api(server)
        bad = firm(3)
        bad["time_entries"][2]["task"] = {"id": 999}
        refused = api.admin("POST", "seed", json=bad)
        assert refused.status_code == 422 and "time_entries[2]" in refused.json()["message"]
        assert api.call("GET", "clients").json()["total_entries"] == 0
        assert api.admin("POST", "seed", json=firm(3)).status_code == 200
        api.admin("PUT", "faults", json={"server_error": 1.0})
        assert api.call("GET", "clients").status_code == 503
        api.admin("PUT", "faults", json={"lost_response": 1.0})
        with pytest.raises(httpx.RemoteProtocolError):
            api.call("POST", "clients", json={"name": "Applied, answer lost"})
        api.admin("PUT", "faults", json={})
        names = [c["name"] for c in api.call("GET", "clients").json()["clients"]]
        assert "Applied, answer lost" in names
        stats = api.admin("GET", "stats").json()
        assert stats["records"]["time_entries"] == 3
        api.close()
    assert json.loads((tmp_path / "account.json").read_text())["token"]


def test_sandbox_cli_up_seed_status_down(tmp_path: Path) -> None:

    def cli(*args: str, ok: bool = True) -> str:
        return sandbox_cli(tmp_path, *args, ok=ok)

    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(firm(4)))
    try:
        assert "harvest: http://127.0.0.1:" in cli("up", "--system", "harvest")
        entry = json.loads((tmp_path / "sandbox.json").read_text())["harvest"]
        assert {"base_url", "token", "account_id"} <= set(entry)
        assert "4 time_entries" in cli("seed", "harvest", str(seed))
        listed = httpx.get(
            f"{entry['base_url']}/time_entries",
            headers={
                "Authorization": f"Bearer {entry['token']}",
                "Harvest-Account-Id": entry["account_id"],
            },
        )
        assert listed.json()["total_entries"] == 4
        assert "harvest: running at http://127.0.0.1:" in cli("status")
        from closeloop.bootstrap import connectors_from_settings
        from closeloop.config import load_settings

        settings = load_settings(tmp_path / "closeloop.yaml")  # written by `up`, ready to run
        connector = connectors_from_settings(settings)["harvest"]
        assert [c.external_id for page in connector.read_changes("clients", None) for c in page]
        getattr(connector, "close", lambda: None)()
    finally:
        stopped = cli("down")
    assert "harvest" in stopped
    from closeloop.devtools.sandboxctl import alive

    assert not alive(int(entry["pid"]))
