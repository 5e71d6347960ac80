"""The Tryton connector as a source of reconciliation facts (:mod:`closeloop.ports.reconcile`):
customers, projects, time and invoices of its own company, canonical fields, read in pages.
Against a real Tryton (the fixtures of the entities module: one server for the module, a
connector per sandbox entity), with records made through the connector's commands."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from closeloop.connectors.tryton.connector import PAGE, TrytonConnector
from closeloop.connectors.tryton.facts import hours_of, role_of
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.commands import Command
from closeloop.ports.reconcile import CUSTOMERS, DOMAINS, INVOICES, PROJECTS, TIME, Fact, FactSource
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
    for domain in (PROJECTS, TIME, INVOICES):
        assert calls[domain] == counts[domain] // PAGE + 1, (domain, calls, counts)
    assert calls[CUSTOMERS] == calls[PROJECTS]  # read through the projects' pages
    assert calls[TIME] >= 3
