"""The Xero connector as a source of reconciliation facts (:mod:`closeloop.ports.reconcile`,
:mod:`closeloop.connectors.xero.facts`): customers, projects, time, invoices and charges in
the shapes the Tryton connector gives them, over real HTTP against the Xero sandbox. Records
are made through the connector's commands, then edited by hand through Xero's own API
(:class:`tests.xero_support.Api`, as a person in Xero would), and the facts show both; the
last test compares them with a PSA's and a CRM's as reconciliation does, no Tryton involved."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from closeloop.connectors.xero import facts, facts_billing
from closeloop.connectors.xero.client import XeroClient
from closeloop.connectors.xero.connector import XeroConnector
from closeloop.connectors.xero.marks import item_code, wip_reference
from closeloop.domain.commands import Applied
from closeloop.domain.keys import task_key
from closeloop.domain.operations import (
    ChargeLine,
    CreditInvoice,
    InvoiceProject,
    PostInvoice,
    ProjectTask,
)
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
from closeloop.reconcile.compare import MISMATCH, Owners, compare_projects, index
from closeloop.reconcile.compare_billing import compare_invoices, compare_time
from closeloop.reconcile.compare_charges import compare_charges
from closeloop.reconcile.view import Engagement, HubView
from tests import xero_support
from tests.contract_support import fresh
from tests.xero_driving import (  # noqa: F401 - fixtures
    SYSTEM,
    api,
    cmd,
    customer,
    entry,
    project,
    run,
    server,
    xero,
)

pytestmark = pytest.mark.timeout(120)
NOV = date(2026, 11, 30)


def read(xero: XeroConnector, domain: str) -> dict[str, Fact]:
    """Every fact of ``domain`` by key, checking each key comes once and pages are lists of
    the domain's facts of this system."""
    pages = list(xero.read_facts(domain))
    assert all(0 < len(page) <= facts_billing.PAGE for page in pages)
    read_ = [f for page in pages for f in page]
    assert {(f.domain, f.system) for f in read_} <= {(domain, SYSTEM)}
    by_key = {f.key: f for f in read_}
    assert len(by_key) == len(read_), "a key read twice"
    return by_key


def option(api: xero_support.Api, name: str) -> tuple[str, str]:
    """``(TrackingCategoryID, TrackingOptionID)`` of the project option ``name``."""
    answer = api.call("GET", "TrackingCategories", params={"includeArchived": "true"})
    for category in answer.json()["TrackingCategories"]:
        if category["Name"] == "Project":
            for found in category["Options"]:
                if found["Name"] == name:
                    return category["TrackingCategoryID"], found["TrackingOptionID"]
    raise AssertionError(f"no option {name}")


# --- tests --------------------------------------------------------------------------------
def test_the_connector_is_a_fact_source_of_every_domain(xero: XeroConnector) -> None:
    assert isinstance(xero, FactSource)
    assert tuple(xero.fact_domains()) == DOMAINS == facts.DOMAINS
    with pytest.raises(ValueError, match="no 'nope' records"):
        xero.read_facts("nope")  # at once, before any call
    assert facts_billing.hours_of("3.333") == Decimal("3.33")
    assert facts_billing.hours_of(None) == Decimal("0.00")
    assert facts.role_of("Consulting (from 2026-12-01)") == ("Consulting", date(2026, 12, 1))
    assert facts.role_of("Consulting (from 2026-13-01)") == ("Consulting (from 2026-13-01)", None)
    assert [facts.country_code(c) for c in ("gb", "United Kingdom", "Atlantis", " ")] == [
        "GB",
        "GB",
        "Atlantis",
        None,
    ]


def test_a_customer_is_its_contact_by_code_and_a_hand_edit_shows(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("cu")
    code = customer(xero, tag)
    fact = read(xero, CUSTOMERS)[code]
    contact_id = fact.external_id
    assert dict(fact.fields) == {
        "legal_name": f"Northwind {tag} Ltd",
        "tax_ids": ("GB123456789",),
        "country": "GB",
        "street": "1 King Street",
        "city": "London",
        "postal_code": "EC2V 8AA",
    }
    assert fact.modified_at is not None and fact.object is None
    # a person renames the contact, types the country out and clears the VAT number
    edited = api.call(
        "POST",
        f"Contacts/{contact_id}",
        json={
            "Name": f"Northwind {tag} Holdings Ltd",
            "TaxNumber": "",
            "Addresses": [
                {
                    "AddressType": "POBOX",
                    "AddressLine1": "1 King Street",
                    "AddressLine2": "Floor 3",
                    "City": "London",
                    "PostalCode": "EC2V 8AA",
                    "Country": "United Kingdom",
                }
            ],
        },
    )
    assert edited.status_code == 200, edited.text
    after = read(xero, CUSTOMERS)[code]
    assert after.fields["legal_name"] == f"Northwind {tag} Holdings Ltd"
    assert after.fields["tax_ids"] == () and after.fields["country"] == "GB"
    assert after.fields["street"] == "1 King Street Floor 3"
    assert after.modified_at is not None and after.modified_at >= fact.modified_at
    # a contact without the hub's code is known by its id (a customer matched, not made)
    other = xero_support.contact(api, f"Matched {tag} plc")
    assert read(xero, CUSTOMERS)[other].fields["legal_name"] == f"Matched {tag} plc"


def test_a_project_is_its_option_rates_and_anchor_and_archiving_closes_it(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("pr")
    key = project(
        xero,
        customer(xero, tag),
        tag,
        ProjectTask(name="Consulting", hourly_rate=Decimal("150.00")),
        ProjectTask(name="Consulting (from 2000-01-01)", hourly_rate=Decimal("160.00")),
        ProjectTask(name="Design", hourly_rate=Decimal("112.50")),
        ProjectTask(name="Design (from 2999-01-01)", hourly_rate=Decimal("130.00")),
    )
    category_id, option_id = option(api, key)
    # an option of another form is not a project of the hub's
    outsider = f"Overheads{tag.replace('-', '')}"
    added = api.call("PUT", f"TrackingCategories/{category_id}/Options", json={"Name": outsider})
    assert added.status_code == 200, added.text

    projects = read(xero, PROJECTS)
    assert outsider not in projects
    fact = projects[key]
    assert fact.external_id == option_id
    assert dict(fact.fields) == {
        "status": "open",
        "rates": {"Consulting": Decimal("160.00"), "Design": Decimal("112.50")},
        "billing_method": "time_and_materials",
    }
    assert fact.modified_at is not None

    # finance archives the option (the project closed) and raises Design's item by hand
    archived = api.call(
        "POST",
        f"TrackingCategories/{category_id}/Options/{option_id}",
        json={"Name": key, "Status": "ARCHIVED"},
    )
    assert archived.status_code == 200, archived.text
    raised = api.call(
        "POST",
        "Items",
        json={
            "Items": [
                {"Code": item_code(task_key(key, "Design")), "SalesDetails": {"UnitPrice": 120}}
            ]
        },
    )
    assert raised.status_code == 200, raised.text
    after = read(xero, PROJECTS)[key]
    assert after.fields["status"] == "closed"
    assert after.fields["rates"] == {"Consulting": Decimal("160.00"), "Design": Decimal("120")}
    # the rate-change task of 2999 is in force from that day
    later = facts.read_facts(xero.client, "Project", SYSTEM, PROJECTS, today=date(2999, 1, 1))
    assert {f.key: f for page in later for f in page}[key].fields["rates"] == {
        "Consulting": Decimal("160.00"),
        "Design": Decimal("130.00"),
    }


def test_time_invoices_and_charges_follow_billing_and_hand_edits(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("tb")
    key = project(xero, customer(xero, tag), tag)
    keys = [f"harvest-{tag}-{n}" for n in (1, 2, 3)]
    outcomes = xero.execute(
        [
            entry(keys[0], key, "Consulting", date(2026, 11, 3), "7.5"),
            entry(keys[1], key, "Design", date(2026, 11, 4), "3.333"),
            entry(keys[2], key, "Consulting", date(2026, 12, 1), "2"),
        ]
    )
    assert all(isinstance(o, Applied) for o in outcomes)
    written = outcomes[1]
    assert isinstance(written, Applied)
    time = read(xero, TIME)
    assert dict(time[keys[1]].fields) == {
        "project_key": key,
        "task": "Design",
        "date": "2026-11-04",
        "hours": Decimal("3.33"),
        "invoice_reference": None,
    }
    assert time[keys[1]].external_id == written.result["line"]

    reference = f"{key}/2026-11"
    milestone = ChargeLine(
        key=f"milestone:{key}:m1:1",
        kind="milestone",
        description="Kick-off",
        quantity=Decimal(1),
        unit_price=Decimal("1000.00"),
    )
    expense = ChargeLine(
        key=f"expense:{key}:harvest-{tag}-e1",
        kind="expense",
        description="Train to Leeds",
        quantity=Decimal(1),
        unit_price=Decimal("84.20"),
    )
    invoice = InvoiceProject(
        project_key=key,
        up_to=NOV,
        reference=reference,
        invoice_date=NOV,
        payment_terms_days=30,
        charges=(milestone, expense),
    )
    made = run(xero, invoice, reference)
    # a draft invoice bills nothing yet: its time is not invoiced, its charges are drafts
    time = read(xero, TIME)
    assert [time[k].fields["invoice_reference"] for k in keys] == [None, None, None]
    assert read(xero, INVOICES)[reference].fields["state"] == "draft"
    assert {
        f.fields["state"]
        for f in read(xero, CHARGES).values()
        if f.fields.get("project_key") == key
    } == {"draft"}

    run(xero, PostInvoice(reference=reference), reference)
    credit = CreditInvoice(
        reference=reference,
        credit_reference=f"{reference}/credit-1",
        reason="Kick-off disputed",
        line_keys=(milestone.key,),
        credit_date=NOV,
    )
    run(xero, credit, credit.credit_reference)
    payment = {
        "Invoice": {"InvoiceID": made["id"]},
        "Account": {"Code": "090"},
        "Amount": "100.00",
        "Date": "2026-12-15",
    }
    paid = api.call("PUT", "Payments", json={"Payments": [payment]})
    assert paid.status_code == 200, paid.text

    time = read(xero, TIME)
    assert [time[k].fields["invoice_reference"] for k in keys] == [reference, reference, None]
    assert time[keys[0]].fields["hours"] == Decimal("7.50")
    assert time[keys[2]].fields["date"] == "2026-12-01"

    # invoices: 7.5 x 150 + 374.96 + 1,000 + 84.20, VAT 20 % per line; the milestone credited
    invoices = read(xero, INVOICES)
    assert wip_reference(key) not in invoices
    issued, note = invoices[reference], invoices[credit.credit_reference]
    assert (issued.external_id, issued.object) == (made["id"], "Invoices")
    assert issued.fields == {
        "project_key": key,
        "currency": "GBP",
        "state": "posted",
        "number": made["number"],
        "total": Decimal("3100.99"),
        "paid": Decimal("100.00"),
        "outstanding": Decimal("3100.99") - Decimal("1200.00") - Decimal("100.00"),
        "invoice_date": "2026-11-30",
        "due_date": "2026-12-30",
        "credited_reference": None,
    }
    assert note.object == "CreditNotes"
    assert {
        k: note.fields[k] for k in ("project_key", "state", "total", "paid", "outstanding")
    } == {
        "project_key": key,
        "state": "paid",  # allocated in full
        "total": Decimal("-1200.00"),
        "paid": Decimal("-1200.00"),
        "outstanding": Decimal("0.00"),
    }
    assert (note.fields["credited_reference"], note.fields["due_date"]) == (reference, None)

    # charges: the milestone billed and credited nets to nothing; the expense stays billed
    charges = [f for f in read(xero, CHARGES).values() if f.fields.get("project_key") == key]
    by_charge: dict[str, list[Fact]] = {}
    for fact in charges:
        by_charge.setdefault(str(fact.fields["charge"]), []).append(fact)
    assert set(by_charge) == {f"milestone:{key}:m1", expense.key}
    assert sorted(f.fields["amount"] for f in by_charge[f"milestone:{key}:m1"]) == [
        Decimal("-1000.00"),
        Decimal("1000.00"),
    ]
    (billed,) = by_charge[expense.key]
    assert billed.fields == {
        "charge": expense.key,
        "kind": "expense",
        "project_key": key,
        "amount": Decimal("84.20"),
        "invoice_reference": reference,
        "state": "posted",
    }
    assert billed.key == f"{expense.key}@{billed.external_id}"
    assert {f.fields["invoice_reference"] for f in by_charge[f"milestone:{key}:m1"]} == {
        reference,
        credit.credit_reference,
    }

    # a person changes the hours of the unbilled line on its work-in-progress draft
    (draft,) = [
        d
        for d in api.listed("Invoices", where=f'Reference=="{wip_reference(key)}"')
        if any(keys[2] in (li.get("Description") or "") for li in d["LineItems"])
    ]
    lines = [
        {
            k: li[k]
            for k in (
                "LineItemID",
                "Description",
                "Quantity",
                "UnitAmount",
                "ItemCode",
                "AccountCode",
                "TaxType",
            )
            if k in li
        }
        | {
            "Tracking": [
                {"Name": t["Name"], "Option": t["Option"]} for t in li.get("Tracking") or []
            ]
        }
        | ({"Quantity": "4.25"} if keys[2] in li["Description"] else {})
        for li in draft["LineItems"]
    ]
    edited = api.call("POST", f"Invoices/{draft['InvoiceID']}", json={"LineItems": lines})
    assert edited.status_code == 200, edited.text
    line = read(xero, TIME)[keys[2]]
    assert line.fields["hours"] == Decimal("4.25") and line.fields["invoice_reference"] is None
    assert line.modified_at is not None and line.modified_at <= datetime.now(UTC)


def test_reconciliation_compares_xero_with_a_psa_and_a_crm(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    """Xero's facts against hand-made PSA and CRM facts, through the hub's comparisons: the
    agreeing records give no finding; the hours a person changed in Xero and the option
    archived there are the drift."""
    tag = fresh("rc")
    code = customer(xero, tag)
    key = project(xero, code, tag)
    keys = [f"harvest-{tag}-{n}" for n in (1, 2)]
    xero.execute(
        [
            entry(keys[0], key, "Consulting", date(2026, 11, 3), "6"),
            entry(keys[1], key, "Design", date(2026, 11, 20), "2.5"),
        ]
    )
    reference = f"{key}/2026-11"
    made = run(
        xero,
        InvoiceProject(
            project_key=key,
            up_to=date(2026, 11, 10),
            reference=reference,
            invoice_date=NOV,
            payment_terms_days=30,
        ),
        reference,
    )
    run(xero, PostInvoice(reference=reference), reference)
    # by hand in Xero: the Design line's hours, and the project's option archived
    (draft,) = [
        d
        for d in api.listed("Invoices", where=f'Reference=="{wip_reference(key)}"')
        if any(keys[1] in (li.get("Description") or "") for li in d["LineItems"])
    ]
    lines = [
        {
            k: li[k]
            for k in (
                "LineItemID",
                "Description",
                "ItemCode",
                "UnitAmount",
                "AccountCode",
                "TaxType",
            )
            if k in li
        }
        | {"Quantity": "3" if keys[1] in li["Description"] else li["Quantity"]}
        for li in draft["LineItems"]
    ]
    assert (
        api.call("POST", f"Invoices/{draft['InvoiceID']}", json={"LineItems": lines}).status_code
        == 200
    )
    category_id, option_id = option(api, key)
    archived = api.call(
        "POST",
        f"TrackingCategories/{category_id}/Options/{option_id}",
        json={"Name": key, "Status": "ARCHIVED"},
    )
    assert archived.status_code == 200

    engagement = Engagement(
        project_key=key,
        instance=f"mobilize:{key}",
        state="mobilized",
        deal_id=tag,
        systems={"crm": "sf", "psa": "harvest", "erp": SYSTEM},
        account_id=f"001{tag}",
        customer_code=code,
        billing_method="time_and_materials",
        rates={"Consulting": Decimal("150.00"), "Design": Decimal("112.50")},
        closed=False,
    )
    view = HubView(
        engagements={key: engagement},
        recorded={k: "recorded" for k in keys},
        invoices={reference: {"state": "posted", "number": made["number"]}},
    )

    def psa(n: int, task: str, day: str, hours: str, billed: bool) -> Fact:
        return Fact(
            TIME,
            keys[n],
            "harvest",
            keys[n].rsplit("-", 1)[-1],
            {
                "project_key": key,
                "task": task,
                "date": day,
                "hours": Decimal(hours),
                "approved": True,
                "billable": True,
                "billed": billed,
            },
        )

    total = Decimal("6") * Decimal("150.00") * Decimal("1.2")
    mine = [
        *[
            f
            for d in DOMAINS
            for page in xero.read_facts(d)
            for f in page
            if f.fields.get("project_key") == key or f.key == key
        ],
        psa(0, "Consulting", "2026-11-03", "6.00", True),
        psa(1, "Design", "2026-11-20", "2.50", False),
        Fact(PROJECTS, key, "harvest", "p1", {"status": "open", "rates": dict(engagement.rates)}),
        Fact(
            INVOICES,
            key,
            "sf",
            tag,
            {
                "invoiced": total,
                "paid": 0,
                "outstanding": total,
                "overdue": 0,
                "last_invoice_number": made["number"],
                "payment_status": "unpaid",
            },
        ),
    ]
    indexed = index(mine)
    owners = Owners(role_of={"sf": "crm", "harvest": "psa", SYSTEM: "erp"})
    found = [
        *compare_time(indexed, view),
        *compare_projects(indexed, view, owners, {key}),
        *compare_invoices(indexed, view, {key}),
        *compare_charges(indexed, view),
    ]
    assert sorted((f.domain, f.kind, f.key, f.field) for f in found) == [
        (PROJECTS, MISMATCH, key, "status"),
        (TIME, MISMATCH, keys[1], "hours"),
    ]
    status = next(f for f in found if f.field == "status")
    assert status.values == {"harvest": "open", SYSTEM: "closed"} and status.owner == SYSTEM
    hours = next(f for f in found if f.field == "hours")
    assert hours.values == {"harvest": "2.50", SYSTEM: "3.00"} and hours.owner == "harvest"


def test_every_domain_is_read_in_bulk(xero: XeroConnector) -> None:
    """A domain's reads are a few list calls, whatever the number of records: no call per
    record."""
    client: XeroClient = xero.client
    tag = fresh("bk")
    code = customer(xero, tag)
    for n in range(3):
        project(xero, code, f"{tag}{n}")
    expected = {
        CUSTOMERS: {"GET Contacts": 1},
        PROJECTS: {"GET TrackingCategories": 1, "GET Items": 1, "GET Invoices": 1},
        TIME: {"GET Items": 1, "GET Invoices": 1},
        INVOICES: {"GET Invoices": 1, "GET CreditNotes": 1},
        CHARGES: {"GET Invoices": 1, "GET CreditNotes": 1},
    }
    for domain, calls in expected.items():
        client.calls.clear()
        assert list(xero.read_facts(domain))
        assert client.calls == calls, domain


def test_a_voided_invoice_is_cancelled_and_an_uncleaned_draft_does_not_hide_billing(
    xero: XeroConnector, api: xero_support.Api
) -> None:
    tag = fresh("vd")
    key = project(xero, customer(xero, tag), tag)
    keys = [f"harvest-{tag}-{n}" for n in (1, 2)]
    xero.execute(
        [
            entry(keys[0], key, "Consulting", date(2026, 11, 3), "7.5"),
            entry(keys[1], key, "Design", date(2026, 11, 4), "1"),
        ]
    )
    reference = f"{key}/2026-11"
    fee = ChargeLine(
        key=f"retainer:{key}:2026-11",
        kind="retainer",
        description="Retainer, November",
        quantity=Decimal(1),
        unit_price=Decimal("500.00"),
    )
    invoice = InvoiceProject(
        project_key=key, up_to=NOV, reference=reference, invoice_date=NOV, charges=(fee,)
    )
    made = run(xero, invoice, reference)
    run(xero, PostInvoice(reference=reference), reference)
    # a work-in-progress draft still holding a copy of a billed line (its clean-up lost)
    (billed,) = [
        li
        for li in api.call("GET", f"Invoices/{made['id']}").json()["Invoices"][0]["LineItems"]
        if keys[0] in (li.get("Description") or "")
    ]
    anchor = next(
        d
        for d in api.listed("Invoices", where=f'Reference=="{wip_reference(key)}"')
        if d["Status"] == "DRAFT"
    )
    copy = {k: billed[k] for k in ("Description", "ItemCode", "AccountCode", "TaxType")}
    copied = xero_support.invoice(
        api,
        anchor["Contact"]["ContactID"],
        [copy | {"Quantity": "9", "UnitAmount": billed["UnitAmount"]}],
        Reference=wip_reference(key),
        Status="DRAFT",
    )
    time = read(xero, TIME)
    assert time[keys[0]].external_id == billed["LineItemID"]
    assert (time[keys[0]].fields["hours"], time[keys[0]].fields["invoice_reference"]) == (
        Decimal("7.50"),
        reference,
    )
    # a draft invoice of the hub's form deleted is gone; the posted one voided is cancelled
    gone = xero_support.invoice(
        api, anchor["Contact"]["ContactID"], [xero_support.line("1.00")], Reference=f"{key}/x"
    )
    deleted = api.call("POST", f"Invoices/{gone['InvoiceID']}", json={"Status": "DELETED"})
    voided = api.call("POST", f"Invoices/{made['id']}", json={"Status": "VOIDED"})
    assert deleted.status_code == voided.status_code == 200, (deleted.text, voided.text)
    invoices = read(xero, INVOICES)
    assert f"{key}/x" not in invoices and invoices[reference].fields["state"] == "cancelled"
    (retainer,) = [f for f in read(xero, CHARGES).values() if f.fields["charge"] == fee.key]
    assert (retainer.fields["state"], retainer.fields["amount"]) == ("cancelled", Decimal("500.00"))
    time = read(xero, TIME)
    assert keys[1] not in time  # on the voided invoice only: held nowhere live
    assert time[keys[0]].external_id != billed["LineItemID"]
    assert dict(time[keys[0]].fields) == {
        "project_key": key,
        "task": "Consulting",
        "date": "2026-11-03",
        "hours": Decimal("9.00"),
        "invoice_reference": None,
    }
    assert copied["Status"] == "DRAFT"
