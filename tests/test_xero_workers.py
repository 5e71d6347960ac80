"""The Xero connector where the engine runs several workers, retries and batches: a second
worker whose caches are older than another's writes, one refused project in a batch of good
ones, a credit note whose allocation was lost, state changes that come back to an earlier
state, and three workers sharing the tenant's minute. Over real HTTP against the Xero
sandbox; effects read back with Xero's own API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest

from closeloop.connectors.catalog import plugin
from closeloop.connectors.ratelimit import LocalWindows
from closeloop.connectors.xero.client import XeroClient
from closeloop.connectors.xero.connector import XeroConnector
from closeloop.connectors.xero.marks import item_code
from closeloop.domain.commands import Applied, Permanent
from closeloop.domain.keys import task_key
from closeloop.domain.operations import (
    ChargeLine,
    CloseProject,
    CreditInvoice,
    InvoiceProject,
    PostInvoice,
    ProjectTask,
    UpsertProject,
)
from closeloop.sandboxes.xero.server import XeroServer
from tests import xero_support
from tests.contract_support import configured, fresh
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


@pytest.fixture
def other(server: XeroServer) -> Iterator[XeroConnector]:
    """A second worker's connector to the same organisation."""
    wiring = plugin("xero").sandbox
    assert wiring is not None
    connector = configured(SYSTEM, wiring.settings(server.as_json()))
    assert isinstance(connector, XeroConnector)
    yield connector
    connector.close()


def upsert(code: str, tag: str, rate: str = "150.00", key: str | None = None) -> UpsertProject:
    return UpsertProject(
        key=key or f"SF-{tag}",
        name=f"Engagement {tag}",
        customer_name=f"Northwind {tag} Ltd",
        customer_code=code,
        currency="GBP",
        tasks=(ProjectTask(name="Consulting", hourly_rate=Decimal(rate)),),
    )


def test_a_worker_sees_a_project_another_worker_set_up_after_it_read(
    xero: XeroConnector,
    other: XeroConnector,
) -> None:
    tag = fresh("w")
    code = customer(xero, tag)
    other.projects.options()  # the second worker has worked before: its cache is warm
    key = project(xero, code, tag)
    recorded = other.execute([entry(f"harvest-{tag}-1", key, "Consulting", date(2026, 11, 3), "1")])
    assert isinstance(recorded[0], Applied), recorded
    closed = other.execute([cmd(CloseProject(key=key), key)])
    assert isinstance(closed[0], Applied), closed


def test_one_project_xero_refuses_fails_alone_in_its_batch(
    xero: XeroConnector,
) -> None:
    tag = fresh("g")
    code = customer(xero, tag)
    good, bad = f"SF-{tag}", f"SF-{tag}-" + "x" * 120  # an option name over 100 characters
    outcomes = xero.execute(
        [cmd(upsert(code, tag, key=good), good), cmd(upsert(code, tag, key=bad), bad)]
    )
    assert isinstance(outcomes[0], Applied), outcomes
    assert isinstance(outcomes[1], Permanent) and "100" in outcomes[1].message, outcomes


def test_a_credit_note_made_before_is_allocated_when_the_command_runs_again(
    xero: XeroConnector,
    api: xero_support.Api,
) -> None:
    tag = fresh("a")
    key = project(xero, customer(xero, tag), tag)
    charge = ChargeLine(
        key=f"milestone:{tag}",
        kind="milestone",
        description="Kick-off",
        quantity=Decimal(1),
        unit_price=Decimal("1000.00"),
    )
    reference = f"{key}/2026-11"
    invoice = InvoiceProject(
        project_key=key,
        up_to=date(2026, 11, 30),
        reference=reference,
        invoice_date=date(2026, 11, 30),
        charges=(charge,),
    )
    made = run(xero, invoice, reference)
    run(xero, PostInvoice(reference=reference), reference)
    held = api.call("GET", f"Invoices/{made['id']}").json()["Invoices"][0]
    # the first attempt made the credit note; its allocation never happened
    note = {
        "Type": "ACCRECCREDIT",
        "Status": "AUTHORISED",
        "Contact": {"ContactID": held["Contact"]["ContactID"]},
        "Reference": f"{reference}/credit-1",
        "LineItems": [{"Description": "Kick-off", "UnitAmount": 1000, "AccountCode": "200"}],
    }
    api.call("PUT", "CreditNotes", json={"CreditNotes": [note]}).raise_for_status()
    credit = CreditInvoice(
        reference=reference, credit_reference=f"{reference}/credit-1", reason="disputed"
    )
    assert cmd(credit, credit.credit_reference).idempotency_key not in xero.find(
        [cmd(credit, credit.credit_reference).idempotency_key]
    )  # not done while its credit is unallocated: the engine runs it again
    result = run(xero, credit, credit.credit_reference)
    assert Decimal(result["total_amount"]) == Decimal("-1200.00")
    owed = api.call("GET", f"Invoices/{made['id']}").json()["Invoices"][0]["AmountDue"]
    assert Decimal(str(owed)) == 0
    assert xero.find([cmd(credit, credit.credit_reference).idempotency_key])


def test_a_state_that_comes_back_is_applied_not_replayed(
    xero: XeroConnector,
    other: XeroConnector,
    api: xero_support.Api,
) -> None:
    tag = fresh("r")
    code = customer(xero, tag)
    key = project(xero, code, tag)
    run(xero, CloseProject(key=key), key)
    run(xero, upsert(code, tag), key)  # reopened
    run(other, CloseProject(key=key), key + "#2")  # closed again, by another worker
    categories = api.call("GET", "TrackingCategories", params={"includeArchived": "true"})
    status = [
        o["Status"]
        for c in categories.json()["TrackingCategories"]
        if c["Name"] == "Project"
        for o in c["Options"]
        if o["Name"] == key
    ]
    assert status == ["ARCHIVED"]
    for rate in ("150.00", "175.00", "150.00"):  # a change order, then reverted
        run(xero, upsert(code, tag, rate), f"{key}:{rate}")
    items = {i["Code"]: i for i in api.listed("Items")}
    price = items[item_code(task_key(key, "Consulting"))]["SalesDetails"]["UnitPrice"]
    assert Decimal(str(price)) == Decimal("150.00")


class Waited(Exception):
    """A worker had to wait for the shared minute."""


def calls_until_a_wait(clients: list[XeroClient]) -> int:
    """Calls the workers make in turn before one has to wait."""
    made = 0
    try:
        while True:
            for client in clients:
                client.request("GET", "Contacts")
                made += 1
    except Waited:
        return made


def test_workers_sharing_the_minute_get_the_whole_minute_between_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    def sleep(seconds: float) -> None:
        raise Waited(seconds)

    home = tmp_path_factory.mktemp("minute")
    with xero_support.running_xero(home, minute=60, day=5000, concurrent=5) as server:
        shared = LocalWindows()  # as the hubs on several machines share the database's
        clients = [
            XeroClient(
                server.base_url,
                server.token_url,
                server.client_id,
                server.client_secret,
                server.tenant_id,
                shared_limit=shared,
                sleep=sleep,
            )
            for _ in range(3)
        ]
        try:
            made = calls_until_a_wait(clients)
        finally:
            for client in clients:
                client.close()
        assert made >= 55, made  # not 60 / 3: the workers do not count each other twice
        assert xero_support.Api(server).admin("GET", "calls").json()["throttled"] == {}
