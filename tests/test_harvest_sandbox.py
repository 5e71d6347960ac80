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

from closeloop.sandboxes.harvest.account import APPROVED
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
        started = cli("up", "--system", "harvest")
        assert "harvest: http://127.0.0.1:" in started
        assert "the hub's database is at schema" in started
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
        from closeloop.bootstrap import check_database, connectors_from_settings
        from closeloop.config import load_settings
        from closeloop.store.migrate import head_revision

        settings = load_settings(tmp_path / "closeloop.yaml")  # written by `up`, ready to run
        assert check_database(settings) == head_revision()  # migrated by `up`: run works at once
        connector = connectors_from_settings(settings)["harvest"]
        assert [c.external_id for page in connector.read_changes("clients", None) for c in page]
        getattr(connector, "close", lambda: None)()
    finally:
        stopped = cli("down")
    assert "harvest" in stopped
    from closeloop.devtools.sandboxctl import alive

    assert not alive(int(entry["pid"]))


# --- fixed fees, expenses, receipts and invoices that bill or un-bill them ------------------
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def test_fixed_fee_projects_are_accepted_and_rendered(tmp_path: Path, openapi: Any) -> None:
    with running_harvest(tmp_path, requests_per_window=1000) as server:
        api = Api(server)
        assert api.admin("POST", "seed", json=firm(0)).status_code == 200
        body = {
            "client_id": 10,
            "name": "Brand refresh",
            "code": "FF-1",
            "is_billable": True,
            "is_fixed_fee": True,
            "fee": 48000.0,
            "bill_by": "none",
            "budget_by": "project",
            "budget": 320.0,
            "starts_on": "2026-03-01",
            "ends_on": "2026-06-30",
        }
        created = api.call("POST", "projects", json=body)
        assert created.status_code == 201, created.text
        validate(openapi, "POST", "projects", created)
        project = created.json()
        assert {k: project[k] for k in body if k != "client_id"} == {
            k: v for k, v in body.items() if k != "client_id"
        }
        patched = api.call("PATCH", f"projects/{project['id']}", json={"fee": 52000})
        validate(openapi, "PATCH", f"projects/{project['id']}", patched)
        assert patched.json()["fee"] == 52000 and patched.json()["is_fixed_fee"] is True
        bad_date = api.call("PATCH", f"projects/{project['id']}", json={"ends_on": "30/06/2026"})
        assert (bad_date.status_code, bad_date.json()["message"]) == (422, "Ends on is invalid")
        bad_fee = api.call("PATCH", f"projects/{project['id']}", json={"fee": "lots"})
        assert bad_fee.status_code == 422
        api.close()


def test_expense_receipts_are_uploaded_as_multipart_and_kept(tmp_path: Path, openapi: Any) -> None:
    """Harvest takes a receipt only as a file of a multipart/form-data request; the expense
    then shows it as {url, file_name, file_size, content_type} and the file is served at the
    url. A JSON receipt, or a file type Harvest does not take, is refused."""
    with running_harvest(tmp_path, requests_per_window=1000) as server:
        api = Api(server)
        assert api.admin("POST", "seed", json=firm(0)).status_code == 200
        fields = {
            "project_id": "30",
            "expense_category_id": "50",
            "spent_date": "2026-02-10",
            "total_cost": "118.40",
            "notes": "Taxi to the client",
            "billable": "true",
            "user_id": "100",
        }
        made = api.call(
            "POST", "expenses", data=fields, files={"receipt": ("taxi.pdf", PDF, "application/pdf")}
        )
        assert made.status_code == 201, made.text
        validate(openapi, "POST", "expenses", made)
        expense = made.json()
        assert (expense["total_cost"], expense["billable"], expense["user"]["id"]) == (
            118.4,
            True,
            100,
        )
        receipt = expense["receipt"]
        assert receipt == {
            "url": f"{server.base_url.removesuffix('/v2')}/expenses/{expense['id']}/receipt",
            "file_name": "taxi.pdf",
            "file_size": len(PDF),
            "content_type": "application/pdf",
        }
        downloaded = api.call("GET", receipt["url"])
        assert downloaded.status_code == 200 and downloaded.content == PDF
        assert downloaded.headers["content-type"] == "application/pdf"
        assert httpx.get(receipt["url"]).status_code == 401  # the API's headers, as any call
        path = f"expenses/{expense['id']}"
        validate(openapi, "GET", path, api.call("GET", path))
        as_json = api.call("POST", "expenses", json={**fields, "receipt": "taxi.pdf"})
        assert as_json.status_code == 422 and "multipart" in as_json.json()["message"]
        wrong_type = api.call(
            "POST", "expenses", data=fields, files={"receipt": ("taxi.docx", b"PK..", "")}
        )
        assert wrong_type.status_code == 422 and ".pdf" in wrong_type.json()["message"]
        replaced = api.call(
            "PATCH",
            f"expenses/{expense['id']}",
            data={"notes": "Taxi (night rate)"},
            files={"receipt": ("taxi.jpg", b"\xff\xd8\xff\xe0jpeg", "image/jpeg")},
        )
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["notes"] == "Taxi (night rate)"
        assert replaced.json()["receipt"]["file_name"] == "taxi.jpg"
        removed = api.call("PATCH", f"expenses/{expense['id']}", json={"delete_receipt": True})
        assert removed.status_code == 200 and removed.json()["receipt"] is None
        assert api.call("GET", receipt["url"]).status_code == 404
        api.close()


def test_invoices_import_expenses_and_deleting_one_unbills_its_time_and_expenses(
    tmp_path: Path, openapi: Any
) -> None:
    """line_items_import with ``expenses`` bills the period's approved, billable, unbilled
    expenses as Product lines (one per category), attaches the receipts' report, and locks
    and flags them billed; a refund (negative cost) is a negative line; deleting the invoice
    un-bills its time entries and expenses, which a new invoice then bills again."""
    with running_harvest(tmp_path, requests_per_window=1000) as server:
        api = Api(server)
        seed = firm(12, approved_share=1.0)
        seed["expense_categories"].append({"id": 51, "name": "Hotel"})
        seed["expenses"] += [
            {
                "id": 5002,
                "project": {"id": 30},
                "user": {"id": 101},
                "expense_category": {"id": 51},
                "spent_date": "2026-02-03",
                "total_cost": 310.0,
                "notes": "Two nights",
                "is_closed": True,
                "receipt": {"file_name": "hotel.pdf", "file_size": 20480},
            },
            {  # a refund of part of the train fare
                "id": 5003,
                "project": {"id": 30},
                "user": {"id": 100},
                "expense_category": {"id": 50},
                "spent_date": "2026-02-04",
                "total_cost": -12.5,
                "is_closed": True,
            },
            {  # not billable: never imported
                "id": 5004,
                "project": {"id": 30},
                "user": {"id": 100},
                "expense_category": {"id": 51},
                "spent_date": "2026-02-04",
                "total_cost": 99.0,
                "billable": False,
                "is_closed": True,
            },
            {  # outside the period
                "id": 5005,
                "project": {"id": 30},
                "user": {"id": 100},
                "expense_category": {"id": 50},
                "spent_date": "2026-03-04",
                "total_cost": 20.0,
                "is_closed": True,
            },
        ]
        assert api.admin("POST", "seed", json=seed).status_code == 200
        period = {"from": "2026-01-01", "to": "2026-02-28"}
        expenses_import = {"summary_type": "category", **period, "attach_receipt": True}
        for wrong, message in (
            ({"project_ids": [30], "expenses": {"from": "2026-01-01"}}, "summary type"),
            (
                {"project_ids": [30], "expenses": {"summary_type": "category", "to": "2026-02-28"}},
                "both from and to",
            ),
            ({"expenses": expenses_import}, "Project ids can't be blank"),
            (
                {"project_ids": [30], "expenses": {**expenses_import, "attach_receipt": "yes"}},
                "Attach receipt",
            ),
        ):
            refused = api.call(
                "POST", "invoices", json={"client_id": 10, "line_items_import": wrong}
            )
            assert refused.status_code == 422 and message in refused.json()["message"], wrong
        assert api.listed("invoices") == []  # nothing of a refused invoice stays
        body = {
            "client_id": 10,
            "number": "HUB-1",
            "line_items_import": {
                "project_ids": [30],
                "time": {"summary_type": "task", **period},
                "expenses": expenses_import,
            },
        }
        made = api.call("POST", "invoices", json=body)
        assert made.status_code == 201, made.text
        validate(openapi, "POST", "invoices", made)
        invoice = made.json()
        products = sorted(
            (line["description"], line["quantity"], line["unit_price"], line["amount"])
            for line in invoice["line_items"]
            if line["kind"] == "Product"
        )
        # Travel: 42.50 approved on 1 Feb less the 12.50 refund (43.50 of 2 Feb is not
        # approved); Hotel: 310
        assert products == [("Hotel", 1.0, 310.0, 310.0), ("Travel", 1.0, 30.0, 30.0)]
        services = [line for line in invoice["line_items"] if line["kind"] == "Service"]
        assert services and all(line["project"]["code"] == "CL-30" for line in services)
        assert invoice["amount"] == pytest.approx(sum(line["amount"] for line in services) + 340)
        expenses = {x["id"]: x for x in api.listed("expenses")}
        billed = {i for i, x in expenses.items() if x["is_billed"]}
        assert billed == {5000, 5002, 5003}
        for i in billed:
            assert expenses[i]["invoice"] == {"id": invoice["id"], "number": "HUB-1"}
            assert expenses[i]["is_locked"] and expenses[i]["locked_reason"] == (
                "Expense is invoiced."
            )
        assert expenses[5002]["receipt"]["file_name"] == "hotel.pdf"  # kept on billing
        assert expenses[5002]["receipt"]["url"].endswith("/expenses/5002/receipt")
        validate(openapi, "GET", "expenses", api.call("GET", "expenses"))
        attachments = api.admin("GET", f"invoices/{invoice['id']}/attachments").json()
        assert attachments["attachments"] == [
            {
                "file_name": "expense-report-HUB-1.pdf",
                "content_type": "application/pdf",
                "expenses": [5000, 5002, 5003],
                "receipts": [
                    {
                        "expense_id": 5002,
                        "file_name": "hotel.pdf",
                        "file_size": 20480,
                        "content_type": "application/pdf",
                    }
                ],
            }
        ]
        locked = api.call("PATCH", "expenses/5002", json={"total_cost": 1.0})
        assert locked.status_code == 422 and "Expense is invoiced." in locked.json()["message"]
        assert api.call("DELETE", "expenses/5002").status_code == 422
        time_billed = {e["id"] for e in api.listed("time_entries") if e["is_billed"]}
        assert time_billed

        assert api.call("DELETE", f"invoices/{invoice['id']}").status_code == 200
        assert api.call("GET", f"invoices/{invoice['id']}").status_code == 404
        assert api.call("DELETE", f"invoices/{invoice['id']}").status_code == 404
        entries = api.listed("time_entries")
        assert not any(e["is_billed"] or e["invoice"] for e in entries)
        assert all(e["is_closed"] for e in entries if e["id"] in time_billed)  # still approved
        expenses = {x["id"]: x for x in api.listed("expenses")}
        assert not any(x["is_billed"] or x["invoice"] for x in expenses.values())
        assert expenses[5002]["locked_reason"] == APPROVED  # approval stays
        again = api.call("POST", "invoices", json={**body, "number": "HUB-2"})
        assert again.status_code == 201 and again.json()["amount"] == invoice["amount"]
        api.close()
