"""Driving the Xero connector in tests: the sandbox (one per test module), its API as a person
in Xero uses it, the connector built through the connector table under the system name
:data:`SYSTEM`, and builders of its canonical commands. Test modules import the fixtures
(``server``, ``api``, ``xero``) from here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from closeloop.connectors.catalog import plugin
from closeloop.connectors.xero.connector import XeroConnector
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.keys import task_key
from closeloop.domain.operations import (
    Address,
    AddTimesheetLine,
    Operation,
    ProjectTask,
    UpsertCustomer,
    UpsertProject,
    role_command,
)
from closeloop.domain.taxrules import TaxTreatment
from closeloop.sandboxes.xero.server import XeroServer
from tests import xero_support
from tests.contract_support import configured

SYSTEM = "uk_erp"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XeroServer]:
    home: Path = tmp_path_factory.mktemp("xero")
    with xero_support.running_xero(home, **xero_support.ROOMY) as running:
        yield running


@pytest.fixture
def api(server: XeroServer) -> Iterator[xero_support.Api]:
    client = xero_support.Api(server)
    yield client
    client.close()


@pytest.fixture
def xero(server: XeroServer) -> Iterator[XeroConnector]:
    wiring = plugin("xero").sandbox
    assert wiring is not None
    connector = configured(SYSTEM, wiring.settings(server.as_json()))
    assert isinstance(connector, XeroConnector)
    yield connector
    connector.close()


def cmd(operation: Operation, key: str) -> Command:
    """The outbox command of ``operation`` for :data:`SYSTEM`, keyed ``key``."""
    return role_command(
        SYSTEM,
        operation,
        business_key=f"test:{operation.operation}:{key}",
        key=key,
        entity=f"{SYSTEM}:{operation.operation}:{key}",
        impact=Impact.REVENUE,
    )


def applied(outcome: Any) -> dict[str, Any]:
    """The result of an ``Applied`` outcome (fails the test on any other)."""
    assert isinstance(outcome, Applied), outcome
    return outcome.result


def run(xero: XeroConnector, operation: Operation, key: str) -> dict[str, Any]:
    """Execute one command; its result."""
    (outcome,) = xero.execute([cmd(operation, key)])
    return applied(outcome)


def customer(xero: XeroConnector, tag: str, tax_id: str = "GB 123 4567 89") -> str:
    """A customer ``C-<tag>`` written through the connector; its code."""
    code = f"C-{tag}"
    upsert = UpsertCustomer(
        code=code,
        name=f"Northwind {tag} Ltd",
        country="GB",
        tax_ids=(("gb_vat", tax_id),),
        address=Address(line1="1 King  Street", city="London", postal_code="EC2V 8AA"),
    )
    run(xero, upsert, code)
    return code


def project(
    xero: XeroConnector,
    code: str,
    tag: str,
    *tasks: ProjectTask,
    treatment: TaxTreatment = TaxTreatment.DOMESTIC,
) -> str:
    """A project ``SF-<tag>`` of customer ``code`` (default tasks Consulting at 150.00 and
    Design at 112.50) set up through the connector; its key."""
    key = f"SF-{tag}"
    upsert = UpsertProject(
        key=key,
        name=f"Engagement {tag}",
        customer_name=f"Northwind {tag} Ltd",
        customer_code=code,
        currency="GBP",
        tasks=tasks
        or (
            ProjectTask(name="Consulting", hourly_rate=Decimal("150.00")),
            ProjectTask(name="Design", hourly_rate=Decimal("112.50")),
        ),
        tax_treatment=treatment,
    )
    assert run(xero, upsert, key)["project_id"]
    return key


def entry(key: str, project_key: str, task: str, day: date, hours: str) -> Command:
    """The ``add_timesheet_line`` command of one time entry."""
    line = AddTimesheetLine(
        key=key,
        employee_key="ada",
        employee_name="Ada Lovelace",
        task_key=task_key(project_key, task),
        date=day,
        hours=Decimal(hours),
    )
    return cmd(line, key)
