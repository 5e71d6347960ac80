"""Tryton at its batch floor: refused records fail alone, invoices and posts go in grouped
calls, and a lost answer is still found, on a real Tryton through the real engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import Settings
from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import (
    ProjectSpec,
    TaskSpec,
    TimesheetEntry,
    TrytonOperations,
)
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.sandbox import SANDBOX_ENTITIES
from closeloop.connectors.tryton.setup import TrytonIds, TrytonSetup, initialize
from closeloop.domain.commands import Applied, Command, ExceptionClass, Impact, Permanent
from closeloop.engine.breaker import BreakerState
from closeloop.ports.store import NewCommand
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.faultproxy import FaultProxy, Rule
from tests.test_tryton import (
    Y,
    connect,
    count,
    tryton,  # noqa: F401 - the session's real Tryton
    unique,
)

pytestmark = pytest.mark.tryton
CLOSED_ON = date(Y, 6, 15)


@pytest.fixture
def rpc(tryton: TrytonServer) -> Iterator[TrytonRPC]:  # noqa: F811
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
def proxy(tryton: TrytonServer) -> Iterator[FaultProxy]:  # noqa: F811
    p = FaultProxy(tryton.url)
    yield p
    p.close()


@pytest.fixture
def proxied(proxy: FaultProxy, tryton: TrytonServer, ids: TrytonIds) -> Iterator[TrytonRPC]:  # noqa: F811
    client = connect(proxy.url, tryton)
    yield client
    client.close()


def projects(ops: TrytonOperations, n: int, price: str = "120") -> list[str]:
    """``n`` new projects of one new customer, each with a task ``<key>/dev``."""
    customer = unique("C")
    ops.upsert_customer(customer, "Batch Kunde GmbH", "DE", [("eu_vat", "DE136695976")])
    keys = [unique(f"ENG{i}") for i in range(n)]
    tasks = {k: (TaskSpec(f"{k}/dev", "Dev", Decimal(price)),) for k in keys}
    ops.upsert_projects(
        [ProjectSpec(k, f"Project {k}", customer, tasks[k], Decimal(price)) for k in keys]
    )
    return keys


def line(key: str, task: str, day: date, hours: str = "2", text: str = "work") -> Command:
    return Command(
        "tryton",
        "add_timesheet_line",
        key,
        idempotency_key("add_timesheet_line", key),
        {
            "key": key,
            "employee_key": f"p{len(key) % 7}",
            "employee_name": f"Consultant {len(key) % 7}",
            "task_key": task,
            "date": day.isoformat(),
            "hours": hours,
            "description": text,
        },
        f"tryton:line:{key}",
        Impact.REVENUE,
    )


def thousand_lines(ops: TrytonOperations) -> tuple[list[Command], set[str]]:
    """950 lines on an open project, 50 dated after the other project closed."""
    open_key, closed_key = projects(ops, 2)
    ops.close_project(closed_key, on=CLOSED_ON)
    base = unique("te")
    commands = []
    refused = set()
    for i in range(1000):
        if i % 20 == 7:
            key = f"{base}-{i}"
            commands.append(line(key, f"{closed_key}/dev", date(Y, 7, 1 + i % 28)))
            refused.add(key)
        else:
            commands.append(line(f"{base}-{i}", f"{open_key}/dev", date(Y, 6, 1 + i % 28)))
    return commands, refused


def invoice_commands(project: str, up_to: date, *, post: bool) -> list[Command]:
    """The Invoice flow's commands for ``project``'s month ending ``up_to``: invoice it as
    ``<project>/<YYYY-MM>``, then (``post``) post it."""
    reference = f"{project}/{up_to:%Y-%m}"
    payloads = {
        "invoice_project": {
            "project_key": project,
            "up_to": up_to.isoformat(),
            "reference": reference,
        },
        "post_invoice": {"reference": reference},
    }
    return [
        Command(
            "tryton",
            operation,
            f"billing:{project}",
            idempotency_key(operation, reference),
            payload,
            f"tryton:invoice:{reference}",
            Impact.REVENUE,
        )
        for operation, payload in payloads.items()
        if post or operation == "invoice_project"
    ]


def calls_of(rpc: TrytonRPC, method: str) -> int:
    return sum(n for (m, _), n in rpc.calls_by_method.items() if m == f"model.{method}")


def engine(tmp_path: Path, connector: TrytonConnector) -> Hub:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}")
    settings.worker.retry_base_delay_s = 0.01
    settings.worker.retry_max_delay_s = 0.05
    settings.worker.idle_wait_s = 0.01
    return build_hub(settings, connectors={"tryton": connector}, bindings=[], upgrade=True)


def enqueue(hub: Hub, commands: list[Command]) -> None:
    with hub.store.transaction() as tx:
        tx.add_commands([NewCommand(c, "test", None) for c in commands], datetime.now(UTC))


def test_refused_lines_fail_alone_and_the_rest_go_in_one_bulk_create(
    rpc: TrytonRPC, ops: TrytonOperations
) -> None:
    commands, refused = thousand_lines(ops)
    connector = TrytonConnector(ops)
    before_calls, before_creates = rpc.calls, calls_of(rpc, "timesheet.line.create")
    outcomes = connector.execute(commands)
    assert calls_of(rpc, "timesheet.line.create") - before_creates == 1
    # one read of the tasks, one of their timesheet dates, the people (new: read and two
    # creates), the bulk create
    assert rpc.calls - before_calls <= 7
    for command, outcome in zip(commands, outcomes, strict=True):
        if command.business_key in refused:
            assert isinstance(outcome, Permanent), outcome
            assert outcome.error_class is ExceptionClass.CLOSED_PERIOD
            assert "is closed" in outcome.message and CLOSED_ON.isoformat() in outcome.message
        else:
            assert isinstance(outcome, Applied), outcome
    base = commands[0].business_key.rsplit("-", 1)[0]
    assert count(rpc, "timesheet.line", [["description", "like", f"%[cl:{base}-%"]]) == 950


@pytest.mark.parametrize(
    "fault",
    [Rule("timesheet.line.create", drop=True), Rule("timesheet.line.create", status_after=502)],
    ids=["answer lost", "gateway error after the create"],
)
def test_a_lost_answer_of_the_bulk_create_writes_nothing_twice(
    fault: Rule,
    tmp_path: Path,
    rpc: TrytonRPC,
    ops: TrytonOperations,
    proxy: FaultProxy,
    proxied: TrytonRPC,
) -> None:
    commands, refused = thousand_lines(ops)
    proxy.rules.append(fault)
    hub = engine(tmp_path, TrytonConnector(TrytonOperations(proxied, ops.ids)))
    try:
        enqueue(hub, commands)
        assert hub.worker.run_until_idle(120)
        stats = hub.operations.stats()
        exceptions = hub.operations.list_exceptions("open", 100)
    finally:
        hub.close()
    assert stats.commands_by_status == {"done": 950, "parked": 50}
    assert {e.entity.removeprefix("tryton:line:") for e in exceptions} == refused
    assert {e.error_class for e in exceptions} == {ExceptionClass.CLOSED_PERIOD}
    base = commands[0].business_key.rsplit("-", 1)[0]
    assert count(rpc, "timesheet.line", [["description", "like", f"%[cl:{base}-%"]]) == 950
    assert proxy.seen.count("model.timesheet.line.create") == 1  # found, never sent again


def test_a_line_no_system_can_take_fails_at_once_and_the_others_in_one_call(
    tmp_path: Path,
    tryton: TrytonServer,  # noqa: F811
    rpc: TrytonRPC,
    ops: TrytonOperations,
) -> None:
    (key,) = projects(ops, 1)
    base = unique("te")
    commands = [line(f"{base}-{i}", f"{key}/dev", date(Y, 5, 1 + i % 28)) for i in range(200)]
    poisoned = line(f"{base}-x", f"{key}/dev", date(Y, 5, 3), text="Kickoff \udc00 notes")
    commands.insert(120, poisoned)
    hub_rpc = connect(tryton.url, tryton)
    hub = engine(tmp_path, TrytonConnector(TrytonOperations(hub_rpc, ops.ids)))
    try:
        enqueue(hub, commands)
        assert hub.worker.run_until_idle(60)
        stats = hub.operations.stats()
        (exception,) = hub.operations.list_exceptions("open", 10)
        breaker = hub.worker.dispatcher.gates["tryton"].breaker.state
    finally:
        hub.close()
    assert stats.commands_by_status == {"done": 200, "parked": 1}
    assert exception.error_class is ExceptionClass.VALIDATION
    assert "U+DC00" in exception.message and poisoned.entity == exception.entity
    assert calls_of(hub_rpc, "timesheet.line.create") == 1
    assert breaker is BreakerState.CLOSED
    # the connector alone (no engine in front) halves the bulk call until the line is alone
    connector = TrytonConnector(ops)
    again = [line(f"{base}-b{i}", f"{key}/dev", date(Y, 5, 9)) for i in range(30)]
    again.insert(11, line(f"{base}-y", f"{key}/dev", date(Y, 5, 9), text="\udc00"))
    outcomes = connector.execute(again)
    assert [type(o).__name__ for o in outcomes].count("Applied") == 30
    assert isinstance(outcomes[11], Permanent) and "U+DC00" in outcomes[11].message


def test_many_projects_are_invoiced_and_posted_in_grouped_calls_despite_lost_answers(
    tmp_path: Path, rpc: TrytonRPC, ops: TrytonOperations, proxy: FaultProxy, proxied: TrytonRPC
) -> None:
    keys = projects(ops, 12, price="150")
    ops.add_timesheet_lines(
        [
            TimesheetEntry(
                unique("te"), "ann", "Ann", f"{k}/dev", date(Y, 3, 2 + n), Decimal(n + 1)
            )
            for n, k in enumerate(keys)
        ]
    )
    commands = [c for k in keys for c in invoice_commands(k, date(Y, 3, 31), post=True)]
    proxy.rules += [
        Rule("project.work.invoice", drop=True),
        Rule("account.invoice.post", drop=True),
    ]
    hub = engine(tmp_path, TrytonConnector(TrytonOperations(proxied, ops.ids)))
    try:
        enqueue(hub, commands)
        assert hub.worker.run_until_idle(120)
        stats = hub.operations.stats()
    finally:
        hub.close()
    assert stats.commands_by_status == {"done": 24}
    invoices = rpc.search_read(
        "account.invoice",
        [["reference", "in", [f"{k}/{Y}-03" for k in keys]]],
        ["reference", "state", "untaxed_amount"],
    )
    assert sorted(i["reference"] for i in invoices) == sorted(f"{k}/{Y}-03" for k in keys)
    for n, k in enumerate(keys):
        (invoice,) = [i for i in invoices if i["reference"] == f"{k}/{Y}-03"]
        assert invoice["state"] == "posted"
        assert invoice["untaxed_amount"] == Decimal(150 * (n + 1))
    drafts = rpc.search_read(
        "account.invoice",
        [["state", "=", "draft"], ["description", "in", [f"Project {k}" for k in keys]]],
        ["id"],
    )
    assert drafts == []  # no invoice made twice
    assert proxy.seen.count("model.project.work.invoice") == 1  # the drafts were adopted
    # a batch that failed together is retried together: posted found by the lookup
    assert proxy.seen.count("model.account.invoice.post") == 1
    assert proxy.seen.count("model.account.invoice.write") == 1


def test_a_failure_after_the_invoice_button_is_looked_up_not_refused(
    tmp_path: Path, rpc: TrytonRPC, ops: TrytonOperations, proxy: FaultProxy, proxied: TrytonRPC
) -> None:
    keys = projects(ops, 3)
    ops.add_timesheet_lines(
        [
            TimesheetEntry(unique("te"), "bo", "Bo", f"{k}/dev", date(Y, 2, 3), Decimal(3))
            for k in keys
        ]
    )
    commands = [c for k in keys for c in invoice_commands(k, date(Y, 2, 28), post=False)]
    # the drafts are made, then writing their references fails as a refusal would look
    proxy.rules.append(Rule("account.invoice.write", status=422, count=3))
    hub = engine(tmp_path, TrytonConnector(TrytonOperations(proxied, ops.ids)))
    try:
        enqueue(hub, commands)
        assert hub.worker.run_until_idle(60)
        stats = hub.operations.stats()
    finally:
        hub.close()
    assert stats.commands_by_status == {"done": 3}  # not parked: the drafts were adopted
    for k in keys:
        invoices = rpc.search_read(
            "account.invoice", [["description", "=", f"Project {k}"]], ["reference", "state"]
        )
        assert [(i["reference"], i["state"]) for i in invoices] == [(f"{k}/{Y}-02", "draft")]
    assert proxy.seen.count("model.project.work.invoice") == 1
