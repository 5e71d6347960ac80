"""The Tryton connector against a real Tryton server over its JSON-RPC (SQLite by default;
PostgreSQL when CLOSELOOP_TEST_TRYTON_URI names one)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import TaskSpec, TimesheetEntry, TrytonOperations
from closeloop.connectors.tryton.rpc import (
    TrytonLoginError,
    TrytonRPC,
    TrytonServerError,
    TrytonUserError,
)
from closeloop.connectors.tryton.sandbox import SANDBOX_ENTITIES
from closeloop.connectors.tryton.setup import TrytonIds, TrytonSetup, initialize
from closeloop.domain.commands import Applied, Command, ExceptionClass, Permanent
from closeloop.ports.connector import AmbiguousError, TransientError
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.conftest import fresh_tax_id, sandbox_cli
from tests.faultproxy import FaultProxy, Rule

pytestmark = pytest.mark.tryton
Y = date.today().year - 1  # a past year of the sandbox: invoice dates in it raise no warning


@pytest.fixture(scope="session")
def tryton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """One real Tryton for the session, restored from the pristine copy."""
    from closeloop.devtools.sandboxctl import start_tryton
    from closeloop.sandboxes.tryton.server import SandboxError

    uri = os.environ.get("CLOSELOOP_TEST_TRYTON_URI", "sqlite://")
    try:
        server = start_tryton(
            tmp_path_factory.mktemp("sandbox"), uri=uri, database=f"cl_test_{os.getpid()}"
        )
    except SandboxError as exc:
        pytest.skip(f"no Tryton here: {exc}")
    yield server
    server.stop()


def connect(url: str, server: TrytonServer, **kwargs: object) -> TrytonRPC:
    return TrytonRPC(url, server.database, server.user, server.password, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def rpc(tryton: TrytonServer) -> Iterator[TrytonRPC]:
    client = connect(tryton.url, tryton)
    yield client
    client.close()


@pytest.fixture
def ids(rpc: TrytonRPC) -> TrytonIds:
    return initialize(rpc, TrytonSetup.for_entity(SANDBOX_ENTITIES[0]))  # the current company


@pytest.fixture
def ops(rpc: TrytonRPC, ids: TrytonIds) -> TrytonOperations:
    return TrytonOperations(rpc, ids)


@pytest.fixture
def proxy(tryton: TrytonServer) -> Iterator[FaultProxy]:
    p = FaultProxy(tryton.url)
    yield p
    p.close()


@pytest.fixture
def proxied(proxy: FaultProxy, tryton: TrytonServer, ids: TrytonIds) -> Iterator[TrytonConnector]:
    client = connect(proxy.url, tryton)
    yield TrytonConnector(TrytonOperations(client, ids))
    client.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def count(rpc: TrytonRPC, model: str, domain: list[object]) -> int:
    return len(rpc.search_read(model, domain, ["id"], context={"active_test": False}))


def project_with_task(ops: TrytonOperations, price: str = "150") -> tuple[str, str]:
    customer = unique("C")
    ops.upsert_customer(customer, "Acme GmbH", "DE", [("eu_vat", "DE136695976")])
    project = unique("ENG")
    ops.upsert_project(
        project,
        "Acme rollout",
        customer,
        [TaskSpec(f"{project}/dev", "Development", Decimal(price))],
        Decimal(price),
    )
    return project, f"{project}/dev"


def test_init_is_idempotent(rpc: TrytonRPC, ids: TrytonIds) -> None:
    before = {
        m: count(rpc, m, [])
        for m in (
            "company.company",
            "account.account",
            "account.fiscalyear",
            "account.tax",
            "product.product",
            "account.invoice.payment.method",
        )
    }
    assert initialize(rpc, TrytonSetup.for_entity(SANDBOX_ENTITIES[0])) == ids
    assert {m: count(rpc, m, []) for m in before} == before
    assert before["account.fiscalyear"] == 9 and before["company.company"] == 3  # 3 entities


def test_customer_upsert_creates_once_and_updates(rpc: TrytonRPC, ops: TrytonOperations) -> None:
    code = unique("C")
    first = ops.upsert_customer(
        code,
        "Beta SARL",
        "FR",
        [("eu_vat", "FR40303265045")],
        {"line1": "1 rue de la Paix", "city": "Paris"},
    )
    again = ops.upsert_customer(
        code,
        "Beta SAS",
        "FR",
        [("eu_vat", "FR40303265045")],
        {"line1": "2 rue de la Paix", "city": "Paris"},
    )
    assert first == again and count(rpc, "party.party", [["code", "=", code]]) == 1
    (party,) = rpc.search_read(
        "party.party", [["id", "=", first]], ["name", "addresses", "identifiers"]
    )
    assert party["name"] == "Beta SAS" and len(party["addresses"]) == 1
    assert len(party["identifiers"]) == 1
    (address,) = rpc.search_read("party.address", [["party", "=", first]], ["street"])
    assert address["street"] == "2 rue de la Paix"


def test_project_upsert_adds_tasks_and_updates_prices(
    rpc: TrytonRPC, ops: TrytonOperations
) -> None:
    project, task = project_with_task(ops)
    works = ops.upsert_project(
        project,
        "Acme rollout 2",
        ops.rpc.search_read(
            "project.work", [["comment", "=", f"closeloop:{project}"]], ["party.code"]
        )[0]["party."]["code"],
        [
            TaskSpec(task, "Development", Decimal("160")),
            TaskSpec(f"{project}/qa", "QA", Decimal("90")),
        ],
        Decimal("160"),
    )
    assert set(works) == {project, task, f"{project}/qa"}
    assert count(rpc, "project.work", [["parent", "=", works[project]]]) == 2
    (dev,) = rpc.search_read("project.work", [["id", "=", works[task]]], ["list_price"])
    assert dev["list_price"] == Decimal("160")
    with pytest.raises(LookupError, match="customer NOPE does not exist"):
        ops.upsert_project(unique("P"), "x", "NOPE", [], Decimal(1))


def test_five_thousand_timesheet_lines_in_bulk_and_never_twice(
    rpc: TrytonRPC, ops: TrytonOperations
) -> None:
    _, task = project_with_task(ops)
    base = unique("te")
    entries = [
        TimesheetEntry(
            f"{base}-{i}",
            f"p{i % 25}",
            f"Consultant {i % 25}",
            task,
            date(Y, 10, 1) + timedelta(days=i % 28),
            Decimal("1.5"),
            "work",
        )
        for i in range(5000)
    ]
    calls = rpc.calls
    for start in range(0, 5000, 1000):
        ops.add_timesheet_lines(entries[start : start + 1000])
    used = rpc.calls - calls
    assert used <= 5 * 6, used  # a handful of calls per 1,000 lines, not one per line
    assert count(rpc, "timesheet.line", [["description", "like", f"%[cl:{base}-%"]]) == 5000
    again = ops.add_timesheet_lines(entries[:1000])
    assert len(again) == 1000
    assert count(rpc, "timesheet.line", [["description", "like", f"%[cl:{base}-%"]]) == 5000


def test_invoice_post_read_and_pay(rpc: TrytonRPC, ops: TrytonOperations) -> None:
    project, task = project_with_task(ops, price="150")
    ops.add_timesheet_lines(
        [
            TimesheetEntry(unique("te"), "kim", "Kim Allen", task, date(Y, 9, 3), Decimal("7.5")),
            TimesheetEntry(unique("te"), "kim", "Kim Allen", task, date(Y, 9, 4), Decimal("2")),
        ]
    )
    reference = unique("INV")
    draft = ops.invoice_project(project, date(Y, 9, 30), reference)
    assert draft is not None and draft.state == "draft"
    assert draft.untaxed_amount == Decimal("1425.00")  # 9.5 h x 150
    assert draft.tax_amount == Decimal("270.75") and draft.total_amount == Decimal("1695.75")
    assert ops.invoice_project(project, date(Y, 9, 30), reference) == draft  # idempotent
    assert ops.invoice_project(project, date(Y, 9, 30), unique("INV")) is None  # nothing left
    posted = ops.post_invoices([reference])[reference]
    assert posted.state == "posted" and posted.number and posted.amount_to_pay == Decimal("1695.75")
    assert ops.record_payment(reference, f"pay-{reference}", Decimal("695.75"), date(Y, 10, 5))
    assert not ops.record_payment(reference, f"pay-{reference}", Decimal("695.75"), date(Y, 10, 5))
    assert ops.find_invoices([reference])[reference].amount_to_pay == Decimal("1000.00")
    ops.record_payment(reference, f"pay2-{reference}", Decimal("1000.00"), date(Y, 10, 20))
    assert ops.find_invoices([reference])[reference].state == "paid"


def test_change_feed_sees_posted_and_paid_invoices(rpc: TrytonRPC, ops: TrytonOperations) -> None:
    connector = TrytonConnector(ops)
    start = max((i.write_date for i in ops.read_invoices([])), default=None)
    project, task = project_with_task(ops)
    ops.add_timesheet_lines(
        [TimesheetEntry(unique("te"), "kim", "Kim", task, date(Y, 10, 3), Decimal("1"))]
    )
    reference = unique("INV")  # invoice dates only go forward: Tryton numbers them in order
    ops.invoice_project(project, date(Y, 10, 31), reference)
    ops.post_invoices([reference])
    changes = [c for page in connector.read_changes("account.invoice", start) for c in page]
    mine = [c for c in changes if c.payload["reference"] == reference]
    assert mine and mine[-1].payload["state"] == "posted"
    ops.record_payment(
        reference, unique("pay"), Decimal(mine[-1].payload["total_amount"]), date(Y, 11, 2)
    )
    later = [
        c
        for page in connector.read_changes("account.invoice", mine[-1].modified_at)
        for c in page
        if c.payload["reference"] == reference
    ]
    assert later[-1].payload["state"] == "paid" and later[-1].version > mine[-1].version


# --- the connector through faults -----------------------------------------------------------
def test_every_operation_is_exactly_once_when_its_response_is_lost(
    rpc: TrytonRPC, ops: TrytonOperations, proxy: FaultProxy, proxied: TrytonConnector
) -> None:
    customer, project = unique("C"), unique("ENG")
    task, reference = f"{project}:Dev", unique("INV")
    commands = [
        Command(
            "tryton",
            "upsert_customer",
            customer,
            idempotency_key("upsert_customer", customer),
            {
                "code": customer,
                "name": "Gamma AG",
                "country": "CH",
                "tax_ids": [["ch_uid", "CHE-100.155.212"]],
            },
        ),
        Command(
            "tryton",
            "upsert_project",
            project,
            idempotency_key("upsert_project", project),
            {
                "key": project,
                "name": "Gamma",
                "customer_name": "Gamma AG",
                "customer_code": customer,
                "currency": "CHF",
                "tasks": [{"name": "Dev", "hourly_rate": "200"}],
            },
        ),
        Command(
            "tryton",
            "add_timesheet_line",
            project,
            idempotency_key("add_timesheet_line", f"{project}-1"),
            {
                "key": f"{project}-1",
                "employee_key": "ana",
                "employee_name": "Ana",
                "task_key": task,
                "date": f"{Y}-11-02",
                "hours": "4",
            },
        ),
        Command(
            "tryton",
            "invoice_project",
            project,
            idempotency_key("invoice_project", reference),
            {"project_key": project, "up_to": f"{Y}-11-30", "reference": reference},
        ),
        Command(
            "tryton",
            "post_invoice",
            project,
            idempotency_key("post_invoice", reference),
            {"reference": reference},
        ),
    ]
    methods = [
        "party.party.create",
        "project.work.create",
        "timesheet.line.create",
        "account.invoice.write",
        "account.invoice.post",
    ]
    for command, method in zip(commands, methods, strict=True):
        proxy.rules.append(Rule(method, drop=True))
        with pytest.raises(AmbiguousError):
            proxied.execute([command])
        found = proxied.find([command.idempotency_key])
        assert command.idempotency_key in found, f"{command.operation}: earlier write not found"
        if command.operation == "add_timesheet_line":
            continue  # found, the engine never sends it again; bulk creates read nothing first
        (again,) = proxied.execute([command])  # a replay changes nothing
        assert isinstance(again, Applied), again
    assert count(rpc, "party.party", [["code", "=", customer]]) == 1
    assert count(rpc, "project.work", [["comment", "=", f"closeloop:{project}"]]) == 1
    assert count(rpc, "timesheet.line", [["description", "like", f"%[cl:{project}-1]"]]) == 1
    (invoice,) = rpc.search_read(
        "account.invoice", [["reference", "=", reference]], ["state", "total_amount"]
    )
    assert invoice["state"] == "posted" and invoice["total_amount"] == Decimal("952.00")


def test_transport_errors_are_classified(proxy: FaultProxy, proxied: TrytonConnector) -> None:
    code = unique("C")
    command = Command(
        "tryton",
        "upsert_customer",
        code,
        idempotency_key("upsert_customer", code),
        {"code": code, "name": "Delta", "country": "US"},
    )
    proxy.rules.append(Rule("party.party.search_read", status=429, retry_after="3"))
    with pytest.raises(TransientError) as limited:
        proxied.execute([command])
    assert limited.value.retry_after_s == 3
    proxy.rules.append(Rule("party.party", status=503))
    with pytest.raises(TransientError):
        proxied.execute([command])
    proxy.rules.append(Rule("party.party", status=504))
    with pytest.raises(AmbiguousError):
        proxied.execute([command])
    (done,) = proxied.execute([command])
    assert isinstance(done, Applied)


def test_refusals_become_permanent_outcomes_with_their_class(
    rpc: TrytonRPC, ops: TrytonOperations, ids: TrytonIds
) -> None:
    connector = TrytonConnector(ops)
    code = unique("C")
    bad_vat, unknown_task, bad = connector.execute(
        [
            Command(
                "tryton",
                "upsert_customer",
                code,
                idempotency_key("upsert_customer", code),
                {
                    "code": code,
                    "name": "Epsilon",
                    "country": "DE",
                    "tax_ids": [["eu_vat", "DE136695977"]],
                },
            ),
            Command(
                "tryton",
                "add_timesheet_line",
                "x",
                idempotency_key("add_timesheet_line", "x1"),
                {
                    "key": "x1",
                    "employee_key": "a",
                    "employee_name": "A",
                    "task_key": "NOPE",
                    "date": f"{Y}-07-01",
                    "hours": "1",
                },
            ),
            Command(
                "tryton",
                "upsert_project",
                "y",
                idempotency_key("upsert_project", "y"),
                {"name": "no key"},
            ),
        ]
    )
    assert isinstance(bad_vat, Permanent) and bad_vat.error_class is ExceptionClass.VALIDATION
    assert "DE136695977" in bad_vat.message
    assert isinstance(unknown_task, Permanent)
    assert unknown_task.error_class is ExceptionClass.NOT_FOUND and "NOPE" in unknown_task.message
    assert isinstance(bad, Permanent) and "malformed command" in bad.message
    assert count(rpc, "party.party", [["code", "=", code]]) == 0  # refused whole, nothing written


def test_a_bad_line_in_a_bulk_batch_is_singled_out(rpc: TrytonRPC, ops: TrytonOperations) -> None:
    connector = TrytonConnector(ops)
    _, task = project_with_task(ops)
    base = unique("te")

    def line(i: int, task_key: str) -> Command:
        return Command(
            "tryton",
            "add_timesheet_line",
            f"{base}-{i}",
            idempotency_key("add_timesheet_line", f"{base}-{i}"),
            {
                "key": f"{base}-{i}",
                "employee_key": "bo",
                "employee_name": "Bo",
                "task_key": task_key,
                "date": f"{Y}-06-02",
                "hours": "2",
            },
        )

    outcomes = connector.execute([line(0, task), line(1, "GONE"), line(2, task)])
    assert [type(o).__name__ for o in outcomes] == ["Applied", "Permanent", "Applied"]
    assert count(rpc, "timesheet.line", [["description", "like", f"%[cl:{base}-%"]]) == 2


def test_closed_period_and_rpc_errors(
    rpc: TrytonRPC, ops: TrytonOperations, ids: TrytonIds
) -> None:
    project, task = project_with_task(ops)
    ops.add_timesheet_lines(
        [TimesheetEntry(unique("te"), "kim", "Kim", task, date(Y, 12, 3), Decimal("1"))]
    )
    reference = unique("INV")
    ops.invoice_project(project, date(Y, 12, 28), reference, invoice_date=date(Y, 12, 28))
    (period,) = rpc.search_read(
        "account.period",
        [
            ["start_date", "=", date(Y, 12, 1)],
            ["type", "=", "standard"],
            ["company", "=", ids.company],  # one database, a company per legal entity
        ],
        ["id"],
    )
    rpc.call("account.period", "close", [period["id"]])
    try:
        with pytest.raises(TrytonUserError) as closed:
            ops.post_invoices([reference])
        assert closed.value.error_class is ExceptionClass.CLOSED_PERIOD, closed.value
    finally:
        rpc.call("account.period", "reopen", [period["id"]])
    with pytest.raises(TrytonServerError):
        rpc.call("no.such.model", "search", [])
    wrong = TrytonRPC(rpc._http.base_url.__str__(), rpc.database, "admin", "wrong-password")
    with pytest.raises(TrytonLoginError):
        wrong.login()
    rpc.call_raw("common.db.logout", [])  # the session ends: the next call logs in again
    assert rpc.search_read("company.company", [], ["id"])


def test_the_connector_declares_its_limits(ops: TrytonOperations, tmp_path: Path) -> None:
    connector = TrytonConnector(ops)
    assert connector.limits.max_concurrent == 1 and connector.limits.batch_size == 1000
    assert connector.objects() == ("account.invoice",)


def test_warnings_are_acknowledged_and_the_call_retried(
    tryton: TrytonServer, ids: TrytonIds, proxy: FaultProxy
) -> None:
    client = connect(proxy.url, tryton)
    ops = TrytonOperations(client, ids)
    project, task = project_with_task(ops)
    ahead = date(date.today().year + 1, 1, 20)  # an invoice date in the future warns
    ops.add_timesheet_lines([TimesheetEntry(unique("te"), "kim", "Kim", task, ahead, Decimal("1"))])
    reference = unique("INV")
    ops.invoice_project(project, ahead, reference, invoice_date=ahead)
    assert ops.post_invoices([reference])[reference].state == "posted"
    posts = [m for m in proxy.seen if m.endswith("account.invoice.post")]
    acknowledged = [m for m in proxy.seen if m.endswith("res.user.warning.create")]
    assert len(posts) == len(acknowledged) + 1 >= 2  # warned, acknowledged, posted
    client.close()


def test_http_status_errors(rpc: TrytonRPC) -> None:
    with pytest.raises(TrytonLoginError, match="not exposed"):
        rpc.call_raw("model.ir.model.data.search", [[], rpc.context])
    with pytest.raises(TrytonServerError, match="HTTP 422"):
        rpc.call_raw("model.party.party.search", [[]])  # no context


def test_the_engine_polls_invoices_with_its_overlap_window(
    tmp_path: Path, rpc: TrytonRPC, ops: TrytonOperations
) -> None:
    from closeloop.bootstrap import build_hub
    from closeloop.config import Settings
    from closeloop.ports.flows import Binding

    hub = build_hub(
        Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}"),
        connectors={"tryton": TrytonConnector(ops)},
        bindings=[
            Binding(
                "tryton", "account.invoice", "invoice_status", lambda change: dict(change.payload)
            )
        ],
        upgrade=True,
    )
    try:
        first = hub.intake.poll("tryton", "account.invoice", overlap_s=3600)
        again = hub.intake.poll("tryton", "account.invoice", overlap_s=3600)
        project, task = project_with_task(ops)
        ops.add_timesheet_lines(
            [TimesheetEntry(unique("te"), "kim", "Kim", task, date(Y, 12, 5), Decimal("1"))]
        )
        reference = unique("INV")
        ops.invoice_project(project, date(Y, 12, 31), reference)
        ops.post_invoices([reference])
        third = hub.intake.poll("tryton", "account.invoice", overlap_s=3600)
        with hub.store.transaction() as tx:
            (row,) = [r for r in tx.claim_inbox(1000) if r.change.payload["reference"] == reference]
    finally:
        hub.close()
    assert row.change.payload["state"] == "posted" and row.change.payload["number"]
    assert first.accepted >= 1 and again.accepted == 0 and again.duplicates == first.accepted
    assert third.accepted == 1  # the invoice as it stood at the poll: posted


def test_a_stale_write_is_a_transient_concurrency_error(
    rpc: TrytonRPC, ops: TrytonOperations
) -> None:
    code = unique("C")
    party = ops.upsert_customer(code, "Zeta", "US")
    stale = {"_timestamp": {f"party.party,{party}": "2000-01-01 00:00:00.000000"}}
    with pytest.raises(TransientError, match="concurrency"):
        rpc.call("party.party", "write", [party], {"name": "Zeta 2"}, context=stale)


def test_sandbox_cli_up_status_down(tmp_path: Path, tryton: TrytonServer) -> None:
    """The commands a developer runs; the pristine copy already exists (session fixture)."""
    import json

    def cli(*args: str, ok: bool = True) -> str:
        return sandbox_cli(tmp_path, *args, ok=ok)

    try:
        assert "tryton: http://127.0.0.1:" in cli("up")
        state = json.loads((tmp_path / "sandbox.json").read_text())["tryton"]
        assert {"url", "database", "user", "password", "pid"} <= set(state)
        client = TrytonRPC(state["url"], state["database"], state["user"], state["password"])
        assert client.search_read("company.company", [], ["id"])  # initialised, ready to use
        client.close()
        salesforce = json.loads((tmp_path / "sandbox.json").read_text())["salesforce"]
        assert {
            "instance_url",
            "token_url",
            "client_id",
            "client_secret",
            "username",
            "password",
            "ca_bundle",
            "organization_id",
            "api_version",
        } <= set(salesforce)
        report = cli("status")
        assert "tryton: running at" in report
        assert "salesforce: running at https://127.0.0.1:" in report
    finally:
        stopped = cli("down")
    assert "tryton" in stopped
    assert "salesforce" in stopped
    assert not (tmp_path / "sandbox.json").exists()
    from closeloop.devtools.sandboxctl import alive

    assert not alive(int(state["pid"]))


def test_a_configured_tryton_system_is_wired_without_writing(
    tmp_path: Path, tryton: TrytonServer, ids: TrytonIds, ops: TrytonOperations
) -> None:
    from closeloop.bootstrap import build_hub
    from closeloop.config import Settings
    from closeloop.ports.flows import Binding

    project, task = project_with_task(ops)
    ops.add_timesheet_lines(
        [TimesheetEntry(unique("te"), "kim", "Kim", task, date(Y, 6, 1), Decimal("1"))]
    )
    assert ops.invoice_project(project, date(Y, 6, 30), unique("INV"))  # a draft invoice

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        systems={
            "tryton": {
                "kind": "tryton",
                "url": tryton.url,
                "database": tryton.database,
                "user": tryton.user,
                "password": tryton.password,
            }
        },
    )
    hub = build_hub(
        settings,
        bindings=[
            Binding(
                "tryton", "account.invoice", "invoice_status", lambda change: dict(change.payload)
            )
        ],
        upgrade=True,
    )
    try:
        connector = hub.registry.connector("tryton")
        assert isinstance(connector, TrytonConnector)
        assert connector.operations.ids == ids and connector.limits.batch_size == 1000
        assert hub.worker.poll_all() >= 1
    finally:
        hub.close()
    with pytest.raises(ValueError, match=r"systems\.erp\.tryton\.database\n  Field required"):
        Settings(systems={"erp": {"kind": "tryton", "url": tryton.url}})


def test_match_customer_by_tax_id_then_name_and_address(ops: TrytonOperations) -> None:
    """The ERP side of mobilization: which existing customer a deal's account is."""
    connector = TrytonConnector(ops)
    code = unique("CUST")
    name = f"Zorblax Analytics {code}"
    tax_id = fresh_tax_id("CH")
    ops.upsert_customer(
        code,
        name,
        "CH",
        [("ch_uid", tax_id)],
        {"line1": "Bahnhofstrasse 1", "city": "Zurich", "postal_code": "8001"},
    )

    def match(**payload: object) -> dict[str, object]:
        command = Command("tryton", "match_customer", "k", unique("m"), payload)
        (outcome,) = connector.execute([command])
        assert isinstance(outcome, Applied), outcome
        return outcome.result

    spaced = f"{tax_id[:3]}-{tax_id[3:6]}.{tax_id[6:9]}.{tax_id[9:]}"  # as people type it
    by_tax_id = match(name="Something else entirely", country="CH", tax_ids=[spaced])
    assert (by_tax_id["kind"], by_tax_id["party_code"]) == ("tax_id", code)
    assert by_tax_id["party_id"]
    similar = match(
        name=f"ZORBLAX Analytics AG {code}",
        country="CH",
        tax_ids=[],
        street="Bahnhofstr. 1",
        city="Zürich",
        postal_code="8001",
    )
    assert (similar["kind"], similar["party_code"]) == ("similar", code)
    assert match(name=unique("Nobody Like This"), country="CH", tax_ids=[])["kind"] == "none"
