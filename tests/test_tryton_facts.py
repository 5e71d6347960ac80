"""The Tryton connector as a source of reconciliation facts (:mod:`closeloop.ports.reconcile`):
customers, projects, time, invoices and charges of its own company, canonical fields, read in pages.
Against a real Tryton (the fixtures of the entities module: one server for the module, a
connector per sandbox entity), with records made through the connector's commands."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from closeloop.connectors.tryton.charge_facts import charge_facts
from closeloop.connectors.tryton.connector import PAGE, TrytonConnector
from closeloop.connectors.tryton.facts import hours_of, role_of
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.commands import Command
from closeloop.ports.reconcile import (
    CHARGES,
    CUSTOMERS,
    DOMAINS,
    INVOICES,
    PROJECTS,
    TIME,
    Fact,
    FactSource,
)
from tests.test_tryton import unique
from tests.test_tryton_entities import (  # noqa: F401 - fixtures: the module's Tryton, connectors
    admin,
    applied,
    command,
    engagement,
    erp,
    invoice,
    post,
    server,
)

pytestmark = pytest.mark.tryton
Y = date.today().year - 1  # a past fiscal year of the sandbox: no future-date warnings


@pytest.fixture
def de(erp: dict[str, TrytonConnector]) -> TrytonConnector:  # noqa: F811
    """The DE-GMBH entity's connector (EUR, VAT 19 %)."""
    return erp["DE-GMBH"]


@pytest.fixture
def gb(erp: dict[str, TrytonConnector]) -> TrytonConnector:  # noqa: F811
    """The GB-LTD entity's connector (GBP), in another company of the same database."""
    return erp["GB-LTD"]


def read(connector: TrytonConnector, domain: str) -> tuple[dict[str, Fact], list[Sequence[Fact]]]:
    """Every fact of ``domain`` by key (each key once), and the pages as read."""
    pages = list(connector.read_facts(domain))
    facts = [f for page in pages for f in page]
    assert all(pages)
    assert all(f.domain == domain and f.system == connector.system for f in facts)
    by_key = {f.key: f for f in facts}
    assert len(by_key) == len(facts)
    return by_key, pages


def project_command(
    key: str, customer: str, tasks: list[tuple[str, str]], method: str = "time_and_materials"
) -> Command:
    return command(
        "upsert_project",
        key,
        {
            "key": key,
            "name": f"Project {key}",
            "customer_name": f"Customer {customer}",
            "customer_code": customer,
            "currency": "EUR",
            "billing_method": method,
            "tasks": [{"name": n, "hourly_rate": r} for n, r in tasks],
            "tax_treatment": "domestic",
        },
    )


def line(key: str, task_key: str, day: date, hours: str) -> Command:
    return command(
        "add_timesheet_line",
        key,
        {
            "key": key,
            "employee_key": "ana",
            "employee_name": "Ana Example",
            "task_key": task_key,
            "date": day.isoformat(),
            "hours": hours,
            "description": "Workshop",
        },
    )


def charge(key: str, kind: str, quantity: str, price: str) -> dict[str, Any]:
    return {"key": key, "kind": kind, "description": key, "quantity": quantity, "unit_price": price}


def credit(reference: str, on: date, *keys: str) -> Command:
    credit_reference = f"{reference}/credit-{unique('n')}"
    payload = {
        "reference": reference,
        "credit_reference": credit_reference,
        "reason": "Disputed by the client",
        "line_keys": list(keys),
        "credit_date": on.isoformat(),
    }
    return command("credit_invoice", credit_reference, payload)


def test_the_connector_is_a_fact_source(de: TrytonConnector) -> None:
    assert isinstance(de, FactSource)
    assert tuple(de.fact_domains()) == DOMAINS
    with pytest.raises(ValueError, match="expenses"):
        de.read_facts("expenses")  # at once, not on the first page
    assert role_of(f"Senior consultant (from {Y}-06-01)") == ("Senior consultant", date(Y, 6, 1))
    assert role_of("Dev (from soon)") == ("Dev (from soon)", None)
    assert hours_of(timedelta(hours=1.333)) == Decimal("1.33")
    assert hours_of(timedelta(minutes=10)) == Decimal("0.17")  # 0.1666... half up


def test_an_engagement_read_back_in_every_domain(
    admin: TrytonRPC,  # noqa: F811
    de: TrytonConnector,
) -> None:
    customer, project, entry = unique("C"), unique("SF"), unique("harvest")
    today = datetime.now(UTC).date()
    soon = today + timedelta(days=30)
    tasks = [("Dev", "150"), ("QA", "90")]
    applied(
        de,
        command(
            "upsert_customer",
            customer,
            {
                "code": customer,
                "name": f"Customer {customer}",
                "country": "DE",
                "tax_ids": [["eu_vat", "DE136695976"]],
                "address": {"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115"},
            },
        ),
        project_command(project, customer, tasks),
    )
    # two rate changes, as a change order makes them: Dev's in force, QA's still to come
    rate_tasks = [(f"Dev (from {Y}-06-01)", "180"), (f"QA (from {soon.isoformat()})", "120")]
    applied(de, project_command(project, customer, tasks + rate_tasks))
    applied(
        de,
        line(f"{entry}-1", f"{project}:Dev", date(Y, 1, 10), "2.5"),
        line(f"{entry}-2", f"{project}:QA", date(Y, 2, 5), "1.333"),
        line(f"{entry}-3", f"{project}:Dev (from {Y}-06-01)", date(Y, 6, 10), "3"),
    )
    reference = f"{project}/{Y}-01"
    applied(
        de,
        command(
            "invoice_project",
            reference,
            {"project_key": project, "up_to": f"{Y}-01-31", "reference": reference},
        ),
    )
    applied(de, post(reference))
    credit_reference = f"{reference}/credit-1"
    applied(
        de,
        command(
            "credit_invoice",
            credit_reference,
            {
                "reference": reference,
                "credit_reference": credit_reference,
                "reason": "Disputed by the client",
                "credit_date": f"{Y}-02-05",
            },
        ),
    )

    customers, _ = read(de, CUSTOMERS)
    (party,) = admin.search_read("party.party", [["code", "=", customer]], ["id"])
    fact = customers[customer]
    assert fact.external_id == str(party["id"])
    assert fact.fields == {
        "legal_name": f"Customer {customer}",
        "tax_ids": ("DE136695976",),
        "country": "DE",
        "street": "Hauptstr. 1",
        "city": "Berlin",
        "postal_code": "10115",
    }
    assert fact.modified_at is not None and fact.modified_at.tzinfo is not None

    projects, _ = read(de, PROJECTS)
    (work,) = admin.search_read("project.work", [["comment", "=", f"closeloop:{project}"]], ["id"])
    fact = projects[project]
    assert fact.external_id == str(work["id"])
    assert fact.fields == {
        "status": "open",
        "rates": {"Dev": Decimal("180"), "QA": Decimal("90")},
        "billing_method": "time_and_materials",
    }
    assert fact.modified_at is not None and fact.modified_at.tzinfo is not None
    assert all("milestone" not in str(f.fields["rates"]) for f in projects.values())

    time, _ = read(de, TIME)
    lines = admin.search_read(
        "timesheet.line", [["description", "like", f"%[cl:{entry}-%"]], ["description"]
    )
    ids = {row["description"].rsplit("[cl:", 1)[1].rstrip("]"): str(row["id"]) for row in lines}
    assert {k: time[k].external_id for k in ids} == ids
    assert {k: dict(time[k].fields) for k in sorted(ids)} == {
        f"{entry}-1": {
            "project_key": project,
            "task": "Dev",
            "date": f"{Y}-01-10",
            "hours": Decimal("2.50"),
            "invoice_reference": reference,  # credited since, but invoiced on it
        },
        f"{entry}-2": {
            "project_key": project,
            "task": "QA",
            "date": f"{Y}-02-05",
            "hours": Decimal("1.33"),
            "invoice_reference": None,
        },
        f"{entry}-3": {
            "project_key": project,
            "task": "Dev",  # the rate-change task, mapped back to its role
            "date": f"{Y}-06-10",
            "hours": Decimal("3.00"),
            "invoice_reference": None,
        },
    }

    invoices, _ = read(de, INVOICES)
    fact = invoices[reference]
    (row,) = admin.search_read("account.invoice", [["reference", "=", reference]], ["id"])
    assert fact.external_id == str(row["id"]) and fact.modified_at is not None
    number = fact.fields["number"]
    due = de.operations.find_invoices([reference])[reference].due_date
    assert due is not None
    assert number.startswith(f"DE-GMBH/{Y}/")
    assert fact.fields == {
        "project_key": project,
        "currency": "EUR",
        "state": "posted",
        "number": number,
        "total": Decimal("446.25"),  # 2.5 h x 150 + 19 %
        "outstanding": Decimal("446.25"),  # the credit note is a document of its own
        "invoice_date": f"{Y}-01-31",
        "due_date": due.isoformat(),  # as the connector reads it elsewhere
        "credited_reference": None,
    }
    credit = invoices[credit_reference]
    assert credit.fields["project_key"] == project
    assert credit.fields["credited_reference"] == reference
    assert credit.fields["total"] == Decimal("-446.25") and credit.fields["state"] == "posted"


def test_a_closed_project_reads_closed(de: TrytonConnector) -> None:
    _, still_open = engagement(de, "DE")
    _, closed = engagement(de, "DE")
    applied(de, command("close_project", closed, {"key": closed}))
    projects, _ = read(de, PROJECTS)
    assert projects[closed].fields["status"] == "closed"
    assert projects[still_open].fields["status"] == "open"
    assert projects[closed].fields["rates"] == {"Dev": Decimal("150")}


def hand_credit(rpc: TrytonRPC, reference: str, on: date) -> int:
    """Credit the invoice ``reference`` in full with Tryton's wizard alone, as a person does
    in Tryton (no reference, no notes written), and post it; the credit note's id."""
    (row,) = rpc.search_read("account.invoice", [["reference", "=", reference]], ["id"])
    answers = rpc.run_wizard(
        "account.invoice.credit",
        [("credit", {"start": {"with_refund": False, "invoice_date": on}})],
        active_model="account.invoice",
        active_ids=[row["id"]],
    )
    (action,) = [a for a in answers[0]["actions"] if isinstance(a, list) and len(a) == 2]
    (credit_id,) = action[1]["res_id"]
    rpc.call("account.invoice", "post", [credit_id])
    return int(credit_id)


def test_charge_lines_and_credit_notes_read_back(
    admin: TrytonRPC,  # noqa: F811
    de: TrytonConnector,
    gb: TrytonConnector,
) -> None:
    _, project = engagement(de, "DE")
    taxi, hotel, meals = (f"expense:{project}:harvest-{n}" for n in (1, 2, 3))
    milestone = f"milestone:{project}:M1"
    first = invoice(
        project,
        date(Y, 5, 31),
        charges=[
            charge(taxi, "expense", "2", "18.25"),
            charge(milestone, "milestone", "1", "8000"),
        ],
        include_time=False,
    )
    first_reference = first.payload["reference"]
    applied(de, first, post(first_reference))
    # a credit note of the taxi's line, then one in full (of the rest: the milestone)
    applied(
        de, credit(first_reference, date(Y, 6, 5), taxi), credit(first_reference, date(Y, 6, 5))
    )
    # the milestone accepted again: the hub's second attempt, on an invoice left in draft
    second = invoice(
        project,
        date(Y, 6, 30),
        charges=[
            charge(f"{milestone}:2", "milestone", "1", "8000"),
            charge(hotel, "expense", "1", "120"),
        ],
        include_time=False,
    )
    applied(de, second)
    # a credit note made in Tryton by hand: its line has no note, only its origin
    third = invoice(
        project, date(Y, 7, 31), charges=[charge(meals, "expense", "3", "9.50")], include_time=False
    )
    applied(de, third, post(third.payload["reference"]))
    by_hand = hand_credit(de.operations.rpc, third.payload["reference"], date(Y, 8, 5))
    _, gb_project = engagement(gb, "GB")
    gb_charge = f"expense:{gb_project}:harvest-1"
    applied(
        gb,
        invoice(
            gb_project,
            date(Y, 5, 31),
            charges=[charge(gb_charge, "expense", "1", "50")],
            include_time=False,
        ),
    )

    # what Tryton did: the quantity negated, the unit price kept, the amount negative; the
    # note not copied by the wizard (the hub writes it on its credit notes)
    rows = admin.search_read(
        "account.invoice.line",
        [["invoice.origin_invoices.reference", "=", first_reference]],
        ["note", "quantity", "unit_price", "amount", "origin", "invoice.reference"],
        order=[["id", "ASC"]],
    )
    assert [(r["note"], r["quantity"], r["amount"]) for r in rows] == [
        (f"closeloop:{taxi}", -2, Decimal("-36.50")),
        (f"closeloop:{milestone}", -1, Decimal("-8000.00")),
    ]
    assert all(r["unit_price"] > 0 and r["origin"] for r in rows)
    (manual,) = admin.search_read(
        "account.invoice.line", [["invoice", "=", by_hand]], ["note", "quantity", "origin"]
    )
    assert manual["note"] is None and manual["quantity"] == -3 and manual["origin"]

    rpc = de.operations.rpc
    before = rpc.calls
    facts, _ = read(de, CHARGES)
    assert rpc.calls - before == len(facts) // PAGE + 1
    mine = {k: f for k, f in facts.items() if f.fields.get("project_key") == project}
    noted = admin.search_read(
        "account.invoice.line", [["note", "like", f"closeloop:%:{project}:%"]], ["note"]
    )
    expected = {f"{r['note'].removeprefix('closeloop:')}@{r['id']}" for r in noted}
    assert len(noted) == 7 and set(mine) == {*expected, f"{meals}@{manual['id']}"}
    assert all(f.external_id == k.rsplit("@", 1)[1] for k, f in mine.items())
    assert all(
        f.modified_at is not None and f.modified_at.tzinfo is not None for f in mine.values()
    )
    by_charge: dict[str, list[Fact]] = {}
    for fact in mine.values():
        by_charge.setdefault(fact.fields["charge"], []).append(fact)
    assert set(by_charge) == {taxi, hotel, meals, milestone}  # the attempt suffix dropped

    def summary(charge_key: str) -> list[tuple[Any, ...]]:
        return sorted(
            (f.fields["amount"], f.fields["state"], f.fields["invoice_reference"])
            for f in by_charge[charge_key]
        )

    credits = {r["invoice."]["reference"] for r in rows}  # the hub's: by line, in full
    (taxi_credit,) = {r["invoice."]["reference"] for r in rows if taxi in r["note"]}
    (milestone_credit,) = credits - {taxi_credit}
    assert summary(taxi) == [
        (Decimal("-36.50"), "posted", taxi_credit),
        (Decimal("36.50"), "posted", first_reference),
    ]
    assert summary(milestone) == [
        (Decimal("-8000.00"), "posted", milestone_credit),
        (Decimal("8000.00"), "draft", second.payload["reference"]),
        (Decimal("8000.00"), "posted", first_reference),
    ]
    assert summary(meals) == [
        (Decimal("-28.50"), "posted", None),  # by hand: no reference; found by its origin
        (Decimal("28.50"), "posted", third.payload["reference"]),
    ]
    assert summary(hotel) == [(Decimal("120.00"), "draft", second.payload["reference"])]
    for charge_key, net in ((taxi, 0), (meals, 0), (milestone, 8000), (hotel, 120)):
        assert sum(f.fields["amount"] for f in by_charge[charge_key]) == net, charge_key
    first_attempt = [f for f in by_charge[milestone] if f.key.startswith(f"{milestone}@")]
    assert sum(f.fields["amount"] for f in first_attempt) == 0  # credited in full
    (again,) = [f for f in by_charge[milestone] if f.key.startswith(f"{milestone}:2@")]
    assert again.fields == {
        "charge": milestone,
        "kind": "milestone",
        "project_key": project,
        "amount": Decimal("8000.00"),
        "invoice_reference": second.payload["reference"],
        "state": "draft",
    }
    assert {f.fields["kind"] for f in mine.values()} == {"expense", "milestone"}

    # another company's lines are not read; its own connector reads them
    assert not any(f.fields["charge"] == gb_charge for f in facts.values())
    theirs, _ = read(gb, CHARGES)
    assert gb_charge in {f.fields["charge"] for f in theirs.values()}
    assert not any(f.fields.get("project_key") == project for f in theirs.values())

    # one call a page, whatever the count (and one more after a full last page)
    for size in (2, 3):
        before = rpc.calls
        paged = list(charge_facts(de.operations, de.system, page=size))
        count = sum(len(p) for p in paged)
        assert rpc.calls - before == count // size + 1 and all(len(p) <= size for p in paged)
        assert {f.key for p in paged for f in p} == set(facts)


def test_only_the_hub_records_of_its_own_company_are_read(
    de: TrytonConnector, gb: TrytonConnector
) -> None:
    gb_customer, gb_project = engagement(gb, "GB")
    gb_reference = f"{gb_project}/{Y}-01"
    applied(
        gb,
        command(
            "invoice_project",
            gb_reference,
            {"project_key": gb_project, "up_to": f"{Y}-01-31", "reference": gb_reference},
        ),
    )
    _, de_project = engagement(de, "DE")
    (foreign,) = applied(de, invoice(de_project, date(Y, 1, 31)))  # not a hub reference
    theirs = {
        CUSTOMERS: gb_customer,
        PROJECTS: gb_project,
        TIME: f"{gb_project}-1",
        INVOICES: gb_reference,
    }
    for domain, key in theirs.items():
        mine, _ = read(de, domain)
        assert key not in mine, domain
        found, _ = read(gb, domain)
        assert key in found, domain
    gb_invoice = read(gb, INVOICES)[0][gb_reference]
    assert gb_invoice.fields["currency"] == "GBP" and gb_invoice.fields["state"] == "draft"
    assert gb_invoice.fields["due_date"] is None and gb_invoice.fields["number"] is None
    invoices, _ = read(de, INVOICES)
    assert foreign["reference"] not in invoices
    assert all(f.fields["project_key"] == k.split("/")[0] for k, f in invoices.items())


def test_each_domain_is_read_in_pages_not_per_record(de: TrytonConnector) -> None:
    _, project = engagement(de, "DE")
    entry = unique("harvest")
    day = date(Y, 3, 1)
    applied(
        de,
        *[
            line(f"{entry}-{i}", f"{project}:Dev", day + timedelta(days=i % 28), "1.5")
            for i in range(2 * PAGE + 100)
        ],
    )
    rpc = de.operations.rpc
    calls, counts = {}, {}
    for domain in DOMAINS:
        before = rpc.calls
        facts, pages = read(de, domain)
        calls[domain], counts[domain] = rpc.calls - before, len(facts)
        assert all(len(page) <= PAGE for page in pages)
    assert counts[TIME] > 2 * PAGE + 100
    # one call a page of PAGE rows (and one more after a full last page), whatever the count
    for domain in (PROJECTS, TIME, INVOICES, CHARGES):
        assert calls[domain] == counts[domain] // PAGE + 1, (domain, calls, counts)
    assert calls[CUSTOMERS] == calls[PROJECTS]  # read through the projects' pages
    assert calls[TIME] >= 3
