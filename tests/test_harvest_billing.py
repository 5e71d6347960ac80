"""The Harvest connector's billing operations over real HTTP against the sandbox process:
fixed-fee (and retainer) projects set up and updated, approved time and expenses marked
billed by a Harvest invoice (receipts kept), invoices of expenses only, unmarking (the
invoice deleted, its time and expenses unbilled), and the mapping of the expenses Harvest
then shows onto the canonical Expense (version 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from closeloop.config.files import load_mappers
from closeloop.connectors.harvest.connector import HarvestConnector
from closeloop.domain.canonical.delivery import Expense
from closeloop.domain.commands import Applied, Impact, Outcome, Permanent
from closeloop.domain.operations import (
    MarkBilled,
    Operation,
    ProjectAssignment,
    ProjectTask,
    UnmarkBilled,
    UpsertProject,
    role_command,
)
from closeloop.sandboxes.harvest.server import HarvestServer
from tests.harvest_support import Api, client_for, firm, running_harvest

pytestmark = pytest.mark.timeout(300)

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HarvestServer]:
    # the tests' own calls besides the connector's: a roomier window than Harvest's 100
    with running_harvest(tmp_path / "harvest", requests_per_window=1000) as started:
        yield started


@pytest.fixture
def api(server: HarvestServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


@pytest.fixture
def connector(server: HarvestServer) -> Iterator[HarvestConnector]:
    made = HarvestConnector(client_for(server), objects=("expenses",))
    yield made
    made.close()


def run(connector: HarvestConnector, operation: Operation, key: str) -> Outcome:
    """One command of ``operation`` through ``execute``."""
    command = role_command(
        connector.system,
        operation,
        business_key=f"engagement:{key}",
        key=key,
        entity=f"{connector.system}:{operation.operation}:{key}",
        impact=Impact.REVENUE,
    )
    (outcome,) = connector.execute([command])
    return outcome


def applied(outcome: Outcome) -> dict[str, Any]:
    assert isinstance(outcome, Applied), outcome
    return dict(outcome.result)


def project(api: Api, code: str) -> dict[str, Any]:
    (found,) = [p for p in api.listed("projects") if p["code"] == code]
    return found


def rates(api: Api, project_id: int) -> dict[str, float]:
    rows = api.call("GET", f"projects/{project_id}/task_assignments").json()
    return {a["task"]["name"]: a["hourly_rate"] for a in rows["task_assignments"]}


# --- projects -------------------------------------------------------------------------------
def fixed_fee(fee: int, ends_on: date, tasks: dict[str, int]) -> UpsertProject:
    return UpsertProject(
        key="FF-7",
        name="Brand refresh",
        customer_name="Acme GmbH",
        currency="EUR",
        starts_on=date(2026, 3, 1),
        ends_on=ends_on,
        billing_method="fixed_fee",
        fee=Decimal(fee),
        tasks=tuple(
            ProjectTask(name=name, hourly_rate=Decimal(rate), budget_hours=Decimal(100))
            for name, rate in tasks.items()
        ),
        assignments=(ProjectAssignment(email="c0@firm.example", is_project_manager=True),),
    )


def test_a_fixed_fee_project_is_set_up_and_updated_by_a_new_upsert(
    api: Api, connector: HarvestConnector
) -> None:
    """fixed_fee: a Harvest fixed-fee project of ``fee`` (bill_by none: billable rates are
    for Time & Materials projects), budgeted in hours as any; upserted again it gets the new
    fee and end date, the new task and the changed rate, and nothing twice."""
    assert api.admin("POST", "seed", json=firm(0)).status_code == 200
    first = fixed_fee(48_000, date(2026, 6, 30), {"Consulting": 150, "Design": 120})
    result = applied(run(connector, first, "FF-7"))
    made = project(api, "FF-7")
    assert result["project_id"] == made["id"]
    assert {
        k: made[k]
        for k in ("is_fixed_fee", "fee", "bill_by", "budget_by", "budget", "starts_on", "ends_on")
    } == {
        "is_fixed_fee": True,
        "fee": 48_000.0,
        "bill_by": "none",
        "budget_by": "project",
        "budget": 200.0,
        "starts_on": "2026-03-01",
        "ends_on": "2026-06-30",
    }
    assert made["client"]["name"] == "Acme GmbH" and made["is_billable"] is True
    assert rates(api, made["id"]) == {"Consulting": 150.0, "Design": 120.0}

    again = fixed_fee(
        52_000, date(2026, 7, 31), {"Consulting": 160, "Design": 120, "Workshop": 140}
    )
    assert applied(run(connector, again, "FF-7"))["project_id"] == made["id"]
    [updated] = [p for p in api.listed("projects") if p["code"] == "FF-7"]  # not a second one
    assert (updated["fee"], updated["ends_on"], updated["budget"]) == (
        52_000.0,
        "2026-07-31",
        300.0,
    )
    assert rates(api, made["id"]) == {"Consulting": 160.0, "Design": 120.0, "Workshop": 140.0}
    people = api.call("GET", f"projects/{made['id']}/user_assignments").json()
    assert [a["user"]["id"] for a in people["user_assignments"]] == [100]

    retainer = UpsertProject(
        key="RT-1",
        name="Support retainer",
        customer_name="Acme GmbH",
        currency="EUR",
        billing_method="retainer",
        fee=Decimal(5000),
        tasks=(ProjectTask(name="Consulting", hourly_rate=Decimal(150)),),
    )
    applied(run(connector, retainer, "RT-1"))
    hourly = project(api, "RT-1")  # the hub bills the fee: an hourly project in Harvest
    assert (hourly["is_fixed_fee"], hourly["bill_by"], hourly["fee"]) == (False, "Tasks", None)

    no_fee = run(connector, first.model_copy(update={"fee": None, "key": "FF-8"}), "FF-8")
    assert isinstance(no_fee, Permanent) and "fee" in no_fee.message


# --- billing ----------------------------------------------------------------------------------
def billing_seed() -> dict[str, Any]:
    """firm(): approved time on CL-30 (Acme GmbH) plus expenses: train 42.50 (approved), 43.50
    (not approved), a hotel of 310 with its receipt, and a non-billable 99 (approved)."""
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
        {
            "id": 5004,
            "project": {"id": 30},
            "user": {"id": 100},
            "expense_category": {"id": 51},
            "spent_date": "2026-02-04",
            "total_cost": 99.0,
            "billable": False,
            "is_closed": True,
        },
    ]
    return seed


def with_receipt(api: Api) -> dict[str, Any]:
    """An approved taxi expense of 118.40 whose receipt was uploaded (multipart)."""
    made = api.call(
        "POST",
        "expenses",
        data={
            "project_id": "30",
            "expense_category_id": "50",
            "spent_date": "2026-02-10",
            "total_cost": "118.40",
            "notes": "Taxi",
            "user_id": "102",
        },
        files={"receipt": ("taxi.pdf", PDF, "application/pdf")},
    )
    assert made.status_code == 201, made.text
    expense: dict[str, Any] = made.json()
    assert api.admin("POST", "approve", json={"ids": [expense["id"]]}).json() == {"approved": 1}
    return expense


def mark(number: str, *, time: bool = True, expenses: bool = True) -> MarkBilled:
    return MarkBilled(
        number=number,
        customer_name="Acme GmbH",
        project_keys=("CL-30",),
        period_start=date(2026, 1, 1),
        period_end=date(2026, 2, 28),
        subject=f"Billed in the ERP as INV/{number}",
        time=time,
        expenses=expenses,
    )


def test_mark_billed_with_expenses_bills_the_period_s_time_and_expenses_once(
    api: Api, connector: HarvestConnector
) -> None:
    assert api.admin("POST", "seed", json=billing_seed()).status_code == 200
    taxi = with_receipt(api)
    result = applied(run(connector, mark("HUB-100"), "HUB-100"))
    (invoice,) = api.listed("invoices")
    assert (invoice["id"], invoice["number"]) == (result["invoice_id"], "HUB-100")
    assert invoice["subject"] == "Billed in the ERP as INV/HUB-100"
    products = sorted(
        (line["description"], line["amount"])
        for line in invoice["line_items"]
        if line["kind"] == "Product"
    )
    assert products == [("Hotel", 310.0), ("Travel", 160.9)]  # 42.50 + 118.40
    assert result["expenses_amount"] == "470.9"
    entries = [e for e in api.listed("time_entries") if e["project"]["code"] == "CL-30"]
    in_period = [e for e in entries if e["spent_date"] <= "2026-02-28"]
    assert in_period and all(e["is_billed"] for e in in_period)
    assert result["hours"] == pytest.approx(sum(e["hours"] for e in in_period))
    assert Decimal(result["amount"]) == Decimal(str(invoice["amount"]))

    expenses = {x["id"]: x for x in api.listed("expenses")}
    assert {i for i, x in expenses.items() if x["is_billed"]} == {5000, 5002, taxi["id"]}
    for i in (5000, 5002, taxi["id"]):
        assert expenses[i]["invoice"] == {"id": invoice["id"], "number": "HUB-100"}
    assert not expenses[5001]["is_billed"]  # not approved
    assert not expenses[5004]["is_billed"]  # not billable
    assert expenses[taxi["id"]]["receipt"] == taxi["receipt"]  # the receipt stays attached
    assert api.call("GET", taxi["receipt"]["url"]).content == PDF
    report = api.admin("GET", f"invoices/{invoice['id']}/attachments").json()["attachments"]
    assert [r["file_name"] for r in report[0]["receipts"]] == ["hotel.pdf", "taxi.pdf"]

    # idempotent by number: the retry finds the invoice, the engine's find reports it
    assert applied(run(connector, mark("HUB-100"), "HUB-100"))["invoice_id"] == invoice["id"]
    assert len(api.listed("invoices")) == 1
    key = f"{connector.system}:mark_billed:HUB-100"
    assert connector.find([key])[key].result["invoice_id"] == invoice["id"]


def test_an_invoice_of_expenses_only_leaves_the_time_unbilled(
    api: Api, connector: HarvestConnector
) -> None:
    assert api.admin("POST", "seed", json=billing_seed()).status_code == 200
    result = applied(run(connector, mark("HUB-200", time=False), "HUB-200"))
    (invoice,) = api.listed("invoices")
    assert {line["kind"] for line in invoice["line_items"]} == {"Product"}
    assert invoice["amount"] == 352.5 and result["hours"] == 0
    assert invoice["period_start"] is None  # the period of the time billed: none
    assert not any(e["is_billed"] for e in api.listed("time_entries"))
    billed = {x["id"] for x in api.listed("expenses") if x["is_billed"]}
    assert billed == {5000, 5002}
    with pytest.raises(ValueError, match="marks time, expenses or both"):
        mark("HUB-201", time=False, expenses=False)  # refused before any system sees it


def test_unmark_billed_deletes_the_invoice_and_unbills_its_time_and_expenses(
    api: Api, connector: HarvestConnector
) -> None:
    assert api.admin("POST", "seed", json=billing_seed()).status_code == 200
    taxi = with_receipt(api)
    billed = applied(run(connector, mark("HUB-300"), "HUB-300"))
    assert any(e["is_billed"] for e in api.listed("time_entries"))
    # as status back keys it (number and credit note): not done while the invoice is there
    # (a worker killed before sending it must not take it for done)
    asked = f"{connector.system}:unmark_billed:HUB-300:HUB-300/credit-1"
    assert connector.find([asked]) == {}

    result = applied(run(connector, UnmarkBilled(number="HUB-300"), "HUB-300"))
    assert result == {"number": "HUB-300", "invoice_id": billed["invoice_id"]}
    assert api.listed("invoices") == []
    entries = api.listed("time_entries")
    assert not any(e["is_billed"] or e["invoice"] for e in entries)
    assert all(e["is_closed"] for e in entries)  # still approved: billable anew
    expenses = {x["id"]: x for x in api.listed("expenses")}
    assert not any(x["is_billed"] or x["invoice"] for x in expenses.values())
    assert expenses[taxi["id"]]["receipt"] == taxi["receipt"]

    # nothing left to undo is success, and what find reports
    again = applied(run(connector, UnmarkBilled(number="HUB-300"), "HUB-300"))
    assert again == {"number": "HUB-300", "invoice_id": None}
    key = f"{connector.system}:unmark_billed:HUB-300"
    assert connector.find([key])[key].result == {"number": "HUB-300", "invoice_id": None}
    assert connector.find([asked])[asked].result == {"number": "HUB-300", "invoice_id": None}
    never = applied(run(connector, UnmarkBilled(number="NEVER-1"), "NEVER-1"))
    assert never == {"number": "NEVER-1", "invoice_id": None}

    # billed anew (after a credit note): the same time and expenses, a new number
    anew = applied(run(connector, mark("HUB-301"), "HUB-301"))
    assert anew["amount"] == billed["amount"] and anew["invoice_id"] != billed["invoice_id"]
    assert {x["id"] for x in api.listed("expenses") if x["is_billed"]} == {
        5000,
        5002,
        taxi["id"],
    }


def test_harvest_expenses_map_onto_the_canonical_expense(
    api: Api, connector: HarvestConnector
) -> None:
    """An expense read from Harvest (through the connector's change feed) maps with its
    project's code, its person's name, its receipt's URL and the invoice that billed it."""
    assert api.admin("POST", "seed", json=billing_seed()).status_code == 200
    taxi = with_receipt(api)
    billed = applied(run(connector, mark("HUB-400"), "HUB-400"))
    changes = {c.external_id: c for page in connector.read_changes("expenses", None) for c in page}
    mapper = load_mappers()["harvest"]

    result = mapper.map("expenses", changes[str(taxi["id"])].payload)
    assert result.ok, [str(p) for p in result.problems]
    expense = Expense.model_validate(result.data)
    assert Expense.SCHEMA_VERSION == 2
    assert (expense.project_code, expense.person_name) == ("CL-30", "Consultant2 Example")
    assert expense.receipt_url == taxi["receipt"]["url"]
    assert expense.invoice == str(billed["invoice_id"])
    assert (expense.amount.amount, expense.amount.currency) == (Decimal("118.4"), "EUR")
    assert (expense.category, expense.approval_state, expense.billable) == (
        "Travel",
        "approved",
        True,
    )
    assert (expense.project, expense.person) == ("30", "102")

    unbilled = mapper.map("expenses", changes["5001"].payload)
    assert unbilled.ok and unbilled.data is not None
    assert unbilled.data["invoice"] is None and unbilled.data["receipt_url"] is None
    assert unbilled.data["approval_state"] == "submitted"
