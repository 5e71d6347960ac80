"""Billing methods beyond time and materials in Tryton: fixed-fee projects with milestones,
retainer fees and overage, re-billed expenses, charges billed exactly once, credit notes in
full and by line key, and the refusals. Through the connector's commands, against a real
Tryton (one server for the module, restored from the pristine sandbox database; invoices of
the module's company are dated forward, test after test, as Tryton numbers them by date)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import find_ids
from closeloop.domain.commands import Applied, Command, ExceptionClass, Permanent
from closeloop.domain.taxrules import TaxTreatment
from closeloop.ports.connector import AmbiguousError
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.test_tryton import count, unique

pytestmark = pytest.mark.tryton
Y = date.today().year - 1  # a past fiscal year of the sandbox: no future-date warnings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """A real Tryton of its own for the module (its invoice sequences number by date)."""
    from closeloop.devtools.sandboxctl import start_tryton
    from closeloop.sandboxes.tryton.server import SandboxError

    uri = os.environ.get("CLOSELOOP_TEST_TRYTON_URI", "sqlite://")
    try:
        started = start_tryton(
            tmp_path_factory.mktemp("billing"), uri=uri, database=f"cl_bill_{os.getpid()}"
        )
    except SandboxError as exc:
        pytest.skip(f"no Tryton here: {exc}")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(server: TrytonServer) -> Iterator[TrytonRPC]:
    rpc = TrytonRPC(server.url, server.database, server.user, server.password)
    yield rpc
    rpc.close()


@pytest.fixture(scope="module")
def erp(server: TrytonServer) -> Iterator[TrytonConnector]:
    """The DE-GMBH entity's connector (EUR, VAT 19 %)."""
    rpc = TrytonRPC(server.url, server.database, server.user, server.password)
    connector = TrytonConnector(TrytonOperations(rpc, find_ids(rpc, "DE-GMBH")))
    yield connector
    connector.close()


def command(operation: str, key: str, payload: dict[str, Any]) -> Command:
    return Command("tryton", operation, key, idempotency_key(operation, key), payload)


def run(connector: TrytonConnector, *commands: Command) -> list[dict[str, Any]]:
    outcomes = connector.execute(list(commands))
    for outcome in outcomes:
        assert isinstance(outcome, Applied), outcome
    return [o.result for o in outcomes if isinstance(o, Applied)]


def refused(connector: TrytonConnector, one: Command) -> Permanent:
    (outcome,) = connector.execute([one])
    assert isinstance(outcome, Permanent), outcome
    return outcome


def project(
    key: str,
    customer: str,
    method: str,
    *,
    milestones: tuple[tuple[str, str, str], ...] = (),
    rate: str = "150",
    treatment: str | None = None,
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
            "tasks": [{"name": "Dev", "hourly_rate": rate}],
            "fee": "30000" if method == "fixed_fee" else None,
            "milestones": [
                {"key": k, "name": n, "amount": a, "planned_date": f"{Y}-06-30"}
                for k, n, a in milestones
            ],
            "tax_treatment": treatment,
        },
    )


def engagement(
    erp: TrytonConnector,
    method: str,
    *,
    hours: str = "10",
    day: date = date(Y, 1, 10),
    country: str = "DE",
    tax_ids: tuple[tuple[str, str], ...] = (("eu_vat", "DE136695976"),),
    treatment: str | None = "domestic",
    milestones: tuple[tuple[str, str, str], ...] = (),
) -> str:
    """A customer, a project of ``method`` with a Dev task (and ``milestones``) and
    ``hours`` of time on ``day``; the project's key."""
    customer, key = unique("C"), unique("ENG")
    run(
        erp,
        command(
            "upsert_customer",
            customer,
            {
                "code": customer,
                "name": f"Customer {customer}",
                "country": country,
                "tax_ids": [list(t) for t in tax_ids],
            },
        ),
        project(key, customer, method, milestones=milestones, treatment=treatment),
        command(
            "add_timesheet_line",
            f"{key}-1",
            {
                "key": f"{key}-1",
                "employee_key": "ana",
                "employee_name": "Ana Example",
                "task_key": f"{key}:Dev",
                "date": day.isoformat(),
                "hours": hours,
            },
        ),
    )
    return key


def charge(key: str, kind: str, quantity: str, price: str, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "description": extra.pop("description", f"{kind} {key}"),
        "quantity": quantity,
        "unit_price": price,
        **extra,
    }


def invoice(
    key: str, on: date, *charges: dict[str, Any], reference: str | None = None, **terms: Any
) -> Command:
    reference = reference or unique("INV")
    payload = {
        "project_key": key,
        "up_to": on.isoformat(),
        "reference": reference,
        "charges": list(charges),
        **terms,
    }
    return command("invoice_project", reference, payload)


def post(reference: str) -> Command:
    return command("post_invoice", reference, {"reference": reference})


def credit(reference: str, on: date, *keys: str, credit_reference: str | None = None) -> Command:
    credit_reference = credit_reference or unique("CN")
    payload = {
        "reference": reference,
        "credit_reference": credit_reference,
        "reason": "Disputed by the client",
        "line_keys": list(keys),
        "credit_date": on.isoformat(),
    }
    return command("credit_invoice", credit_reference, payload)


def lines(admin: TrytonRPC, reference: str) -> list[dict[str, Any]]:
    return admin.search_read(
        "account.invoice.line",
        [["invoice.reference", "=", reference]],
        [
            "note",
            "description",
            "quantity",
            "unit_price",
            "amount",
            "taxes",
            "origin",
            "product.template.name",
            "unit.symbol",
        ],
        order=[["id", "ASC"]],
    )


def test_a_fixed_fee_project_keeps_its_milestones_and_bills_no_time(
    admin: TrytonRPC, erp: TrytonConnector
) -> None:
    milestones = (("M1", "Design", "10000"), ("M2", "Build", "15000"))
    key = engagement(erp, "fixed_fee", hours="12", milestones=milestones)
    (work,) = admin.search_read(
        "project.work",
        [["comment", "=", f"closeloop:{key}"]],
        ["project_invoice_method", "children", "party.code"],
    )
    assert work["project_invoice_method"] == "manual"
    children = admin.search_read(
        "project.work",
        [["parent", "=", work["id"]]],
        ["comment", "name", "list_price", "timesheet_available", "product", "timesheet_duration"],
        order=[["id", "ASC"]],
    )
    by_key = {c["comment"].removeprefix("closeloop:"): c for c in children}
    assert set(by_key) == {f"{key}:Dev", f"{key}:milestone:M1", f"{key}:milestone:M2"}
    design = by_key[f"{key}:milestone:M1"]
    assert (design["name"], design["list_price"]) == ("Design", Decimal("10000"))
    assert not design["timesheet_available"] and design["product"] is None
    assert by_key[f"{key}:Dev"]["timesheet_duration"] == timedelta(hours=12)  # for cost
    # project invoicing bills nothing of a fixed-fee project: its time is for cost only
    (nothing,) = run(erp, invoice(key, date(Y, 1, 31)))
    assert nothing == {"invoice": None}
    (line,) = admin.search_read(
        "timesheet.line", [["description", "like", f"%[cl:{key}-1]"]], ["invoice_line"]
    )
    assert line["invoice_line"] is None
    # an upsert again renames, re-values and adds milestones, changes rates, removes nothing
    customer = work["party."]["code"]
    again = project(
        key,
        customer,
        "fixed_fee",
        milestones=(("M2", "Build and test", "16000"), ("M3", "Go-live", "4000")),
        rate="160",
    )
    (result,) = run(erp, again)
    assert f"{key}:milestone:M3" in result["works"] and result["project_id"] == work["id"]
    children = admin.search_read(
        "project.work", [["parent", "=", work["id"]]], ["comment", "name", "list_price"]
    )
    now = {c["comment"].removeprefix("closeloop:"): c for c in children}
    assert len(now) == 4 and now[f"{key}:milestone:M1"]["name"] == "Design"  # kept
    assert (now[f"{key}:milestone:M2"]["name"], now[f"{key}:milestone:M2"]["list_price"]) == (
        "Build and test",
        Decimal("16000"),
    )
    assert now[f"{key}:milestone:M3"]["list_price"] == Decimal("4000")
    assert now[f"{key}:Dev"]["list_price"] == Decimal("160")  # the rate change


def test_a_milestone_is_invoiced_exactly_once_and_then_not_re_valued(
    admin: TrytonRPC, erp: TrytonConnector
) -> None:
    key = engagement(erp, "fixed_fee", milestones=(("A1", "Kick-off", "8000"),))
    milestone = charge("milestone:A1", "milestone", "1", "8000", task="A1", description="Kick-off")
    first = invoice(key, date(Y, 2, 10), milestone, include_time=False)
    reference = first.payload["reference"]
    calls = erp.operations.rpc.calls
    (draft,) = run(erp, first)
    used = erp.operations.rpc.calls - calls
    assert used <= 6, used  # project, billed keys, line and invoice on_change, create, read
    assert draft["charges"] == ["milestone:A1"] and draft["reference"] == reference
    assert (draft["untaxed_amount"], draft["tax_amount"], draft["total_amount"]) == (
        "8000.00",
        "1520.00",
        "9520.00",
    )
    (line,) = lines(admin, reference)
    assert line["note"] == "closeloop:milestone:A1" and line["description"] == "Kick-off"
    assert line["product."]["template."]["name"] == "Consulting"
    assert line["taxes"] == [erp.operations.ids.taxes[TaxTreatment.DOMESTIC]]
    # replayed with another reference, and again with its own: billed once
    (again,) = run(erp, invoice(key, date(Y, 2, 10), milestone, include_time=False))
    assert again == {"invoice": None}
    (same,) = run(erp, first)
    assert same == draft
    (posted,) = run(erp, post(reference))
    assert posted["state"] == "posted"
    assert erp.find([first.idempotency_key])[first.idempotency_key].result["charges"] == [
        "milestone:A1"
    ]
    # the invoiced milestone keeps its amount: a new one is refused, a new name is not
    customer = admin.search_read(
        "project.work", [["comment", "=", f"closeloop:{key}"]], ["party.code"]
    )[0]["party."]["code"]
    revalued = refused(
        erp, project(key, customer, "fixed_fee", milestones=(("A1", "Kick-off", "9000"),))
    )
    assert revalued.error_class is ExceptionClass.CONFLICT
    assert "already invoiced at 8000" in revalued.message and reference in revalued.message
    (work,) = admin.search_read(
        "project.work", [["comment", "=", f"closeloop:{key}:milestone:A1"]], ["list_price"]
    )
    assert work["list_price"] == Decimal("8000")
    run(erp, project(key, customer, "fixed_fee", milestones=(("A1", "Kick-off workshop", "8000"),)))


def test_a_retainer_bills_its_fee_and_overage_not_its_time(
    admin: TrytonRPC, erp: TrytonConnector
) -> None:
    key = engagement(erp, "retainer", hours="43.5", day=date(Y, 3, 5))
    period = f"{Y}-03"
    (draft,) = run(
        erp,
        invoice(
            key,
            date(Y, 3, 31),
            charge(f"retainer:{key}:{period}", "retainer", "1", "5000"),
            charge(f"overage:{key}:{period}:Dev", "overage", "3.5", "150", task="Dev"),
            payment_terms_days=14,
        ),
    )
    assert draft["untaxed_amount"] == "5525.00" and draft["total_amount"] == "6574.75"
    assert sorted(draft["charges"]) == sorted(
        [f"retainer:{key}:{period}", f"overage:{key}:{period}:Dev"]
    )
    rows = lines(admin, draft["reference"])
    assert [r["amount"] for r in rows] == [Decimal("5000.00"), Decimal("525.00")]
    (time_line,) = admin.search_read(
        "timesheet.line", [["description", "like", f"%[cl:{key}-1]"]], ["invoice_line"]
    )
    assert time_line["invoice_line"] is None  # the 43.5 h are for cost, never billed
    (posted,) = run(erp, post(draft["reference"]))
    assert posted["due_date"] == f"{Y}-04-14"


def test_a_time_invoice_with_expenses_taxed_by_the_customer_rule(
    admin: TrytonRPC, erp: TrytonConnector
) -> None:
    key = engagement(erp, "time_and_materials", hours="8", day=date(Y, 4, 2))
    travel = charge(
        f"expense:hv-{key}-1",
        "expense",
        "1",
        "245.60",
        category="Travel",
        description="Train Berlin-Munich",
        receipt="https://psa.example/receipts/1",
    )
    meals = charge(f"expense:hv-{key}-2", "expense", "2", "18.25", category="Meals")
    (draft,) = run(erp, invoice(key, date(Y, 4, 30), travel, meals))
    assert draft["untaxed_amount"] == "1482.10"  # 8 h x 150 + 245.60 + 2 x 18.25
    assert draft["tax_amount"] == "281.60" and draft["total_amount"] == "1763.70"
    rows = lines(admin, draft["reference"])
    assert [r["note"] for r in rows] == [
        None,  # the time line of Tryton's project invoicing
        f"closeloop:expense:hv-{key}-1",
        f"closeloop:expense:hv-{key}-2",
    ]
    assert rows[1]["description"] == (
        "Train Berlin-Munich (receipt: https://psa.example/receipts/1)"
    )
    assert rows[1]["product."]["template."]["name"] == "Expense: Travel"
    assert rows[2]["product."]["template."]["name"] == "Expense: Meals"
    assert rows[1]["unit."]["symbol"] == "u"
    domestic = erp.operations.ids.taxes[TaxTreatment.DOMESTIC]
    assert [r["taxes"] for r in rows] == [[domestic]] * 3
    # a reverse-charge customer: the expense gets the tax the customer's rule gives
    abroad = engagement(
        erp,
        "time_and_materials",
        hours="1",
        day=date(Y, 4, 3),
        country="FR",
        tax_ids=(("eu_vat", "FR40303265045"),),
        treatment="reverse_charge",
    )
    hotel = charge(f"expense:hv-{abroad}-1", "expense", "1", "120", category="Travel")
    (french,) = run(erp, invoice(abroad, date(Y, 4, 30), hotel))
    assert french["tax_amount"] == "0.00" and french["untaxed_amount"] == "270.00"
    reverse = erp.operations.ids.taxes[TaxTreatment.REVERSE_CHARGE]
    assert [r["taxes"] for r in lines(admin, french["reference"])] == [[reverse]] * 2
    assert count(admin, "product.template", [["name", "=", "Expense: Travel"]]) == 1


def test_credit_notes_in_full_and_by_line_key(admin: TrytonRPC, erp: TrytonConnector) -> None:
    key = engagement(erp, "time_and_materials", hours="4", day=date(Y, 5, 4))
    taxi = charge(f"expense:hv-{key}-taxi", "expense", "1", "40", category="Travel")
    hotel = charge(f"expense:hv-{key}-hotel", "expense", "1", "200", category="Travel")
    (draft,) = run(erp, invoice(key, date(Y, 5, 31), taxi, hotel))
    reference = draft["reference"]
    run(erp, post(reference))
    on = date(Y, 6, 5)
    by_key = credit(reference, on, taxi["key"])
    calls = erp.operations.rpc.calls
    (note,) = run(erp, by_key)
    assert erp.operations.rpc.calls - calls <= 8
    assert note["credited"] == reference and note["state"] == "posted" and note["number"]
    assert (note["untaxed_amount"], note["tax_amount"], note["total_amount"]) == (
        "-40.00",
        "-7.60",
        "-47.60",
    )
    credit_reference = by_key.payload["credit_reference"]
    (credit_line,) = lines(admin, credit_reference)
    (original,) = [r for r in lines(admin, reference) if r["note"] == f"closeloop:{taxi['key']}"]
    assert credit_line["origin"] == f"account.invoice.line,{original['id']}"
    assert credit_line["note"] == original["note"] and credit_line["quantity"] == -1
    # a replay finds it; so does a lookup by its key
    (again,) = run(erp, by_key)
    assert again == note
    assert count(admin, "account.invoice", [["reference", "=", credit_reference]]) == 1
    assert erp.find([by_key.idempotency_key])[by_key.idempotency_key].result == note
    # read back: a credit note of the invoice, in the change feed too
    (state,) = erp.operations.find_invoices([credit_reference]).values()
    assert state.is_credit_note and state.credited_reference == reference
    assert not erp.operations.find_invoices([reference])[reference].is_credit_note
    changes = [c for page in erp.read_changes("account.invoice", None) for c in page]
    (change,) = [c for c in changes if c.payload["reference"] == credit_reference]
    assert change.payload["is_credit_note"] and change.payload["credited_reference"] == reference
    # the time lines by their key, then the rest in full: each line credited once
    (timed,) = run(erp, credit(reference, on, "time"))
    assert timed["total_amount"] == "-714.00"  # 4 h x 150 + 19 %
    (rest,) = run(erp, credit(reference, on))
    assert rest["total_amount"] == "-238.00"  # the hotel only
    whole = refused(erp, credit(reference, on))
    assert "already credited in full" in whole.message
    # the credited taxi can be billed anew (the time, all invoiced, not), the hotel too
    (rebilled,) = run(erp, invoice(key, date(Y, 6, 30), taxi, hotel))
    assert rebilled["untaxed_amount"] == "240.00"
    assert sorted(rebilled["charges"]) == sorted([taxi["key"], hotel["key"]])
    (none,) = run(erp, invoice(key, date(Y, 6, 30), taxi, include_time=False))
    assert none == {"invoice": None}


def test_credits_the_hub_refuses_create_nothing(admin: TrytonRPC, erp: TrytonConnector) -> None:
    key = engagement(erp, "retainer", day=date(Y, 7, 1))
    fee = charge(f"retainer:{key}:{Y}-07", "retainer", "1", "3000")
    (draft,) = run(erp, invoice(key, date(Y, 7, 31), fee))
    reference = draft["reference"]
    before = count(admin, "account.invoice", [])
    not_posted = refused(erp, credit(reference, date(Y, 8, 1)))
    assert not_posted.error_class is ExceptionClass.VALIDATION
    assert f"invoice {reference} is draft, not posted or paid" in not_posted.message
    run(erp, post(reference))
    unknown_key = refused(erp, credit(reference, date(Y, 8, 1), "expense:nope", fee["key"]))
    assert f"does not bill expense:nope (its line keys: {fee['key']})" in unknown_key.message
    unknown = refused(erp, credit(unique("INV"), date(Y, 8, 1)))
    assert unknown.error_class is ExceptionClass.NOT_FOUND
    assert count(admin, "account.invoice", []) == before
    (note,) = run(erp, credit(reference, date(Y, 8, 1)))
    itself = refused(erp, credit(str(note["reference"]), date(Y, 8, 2)))
    assert "is itself a credit note" in itself.message
    taken = credit(unique("INV"), date(Y, 8, 2), credit_reference=str(note["reference"]))
    assert f"credit reference {note['reference']} is already used" in refused(erp, taken).message


def test_lost_answers_bill_and_credit_once(
    admin: TrytonRPC, erp: TrytonConnector, server: TrytonServer
) -> None:
    from tests.faultproxy import FaultProxy, Rule

    key = engagement(erp, "retainer", day=date(Y, 9, 1))
    fee = charge(f"retainer:{key}:{Y}-09", "retainer", "1", "2000")
    proxy = FaultProxy(server.url)
    rpc = TrytonRPC(proxy.url, server.database, server.user, server.password)
    proxied = TrytonConnector(TrytonOperations(rpc, erp.operations.ids))
    try:
        billed = invoice(key, date(Y, 9, 30), fee)
        proxy.rules.append(Rule("account.invoice.create", drop=True))
        with pytest.raises(AmbiguousError):
            proxied.execute([billed])
        found = proxied.find([billed.idempotency_key])[billed.idempotency_key].result
        assert found["charges"] == [fee["key"]]
        (again,) = run(proxied, billed)
        assert again == found
        run(proxied, post(billed.payload["reference"]))
        credited = credit(billed.payload["reference"], date(Y, 10, 2))
        proxy.rules.append(Rule("wizard.account.invoice.credit.execute", drop=True))
        with pytest.raises(AmbiguousError):
            proxied.execute([credited])
        assert proxied.find([credited.idempotency_key]) == {}  # a draft without reference
        (note,) = run(proxied, credited)
        assert note["total_amount"] == "-2380.00" and note["state"] == "posted"
    finally:
        proxied.close()
        proxy.close()
    reference = billed.payload["reference"]
    assert count(admin, "account.invoice", [["reference", "=", reference]]) == 1
    assert count(admin, "account.invoice", [["origin_invoices.reference", "=", reference]]) == 1
