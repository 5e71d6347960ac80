"""The connector contract's cases: one :class:`ContractCase` per connector, each building its
connector through the connector table (:func:`closeloop.connectors.catalog.build_connector`)
under a configured, non-default system name, as the hub does, against a running sandbox or a
real Tryton. ``tests/test_connector_contract.py`` runs the contract on every case.

A case knows four things about its system: how to make a fresh writable command in canonical
form (and one the system refuses, and one whose payload does not fit its operation), how to
have a command applied with its answer lost, how to change a record the connector's change
feed reads, and how to count a command's effects in the system (read with the system's own
API, never through the connector under test).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from closeloop.connectors.catalog import BuildContext, build_connector, plugin, systems_adapter
from closeloop.connectors.harvest.connector import HarvestConnector
from closeloop.connectors.memory.client import MemoryConnector
from closeloop.connectors.salesforce.connector import SalesforceConnector, sync_stamp
from closeloop.connectors.tryton.connector import TrytonConnector
from closeloop.connectors.tryton.invoicing import InvoiceRequest
from closeloop.connectors.tryton.operations import (
    ProjectSpec,
    TaskSpec,
    TimesheetEntry,
    TrytonOperations,
)
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import find_ids
from closeloop.connectors.xero.connector import XeroConnector
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.operations import (
    ProjectTask,
    UpdateEngagement,
    UpsertCustomer,
    UpsertProject,
    idempotency_key,
    role_command,
)
from closeloop.ports.connector import AmbiguousError, Connector
from closeloop.sandboxes.harvest.server import HarvestServer
from closeloop.sandboxes.salesforce.server import SalesforceServer
from closeloop.sandboxes.tryton.server import TrytonServer
from closeloop.sandboxes.xero.server import XeroServer
from tests import harvest_support, salesforce_support, xero_support
from tests.conftest import Sandbox, fresh_tax_id
from tests.faultproxy import FaultProxy, Rule

BATCH_SIZE = 20
"""The ``batch_size`` every case configures: the connector's limits must carry it."""

HARVEST_REQUESTS = 600
"""The sandbox account's (and the client's) requests per 15 s: the suite makes a few hundred
requests in a few seconds, which Harvest's real 100 per 15 s would only slow down."""


def fresh(prefix: str) -> str:
    """A name no other test, case or earlier run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def configured(name: str, settings: dict[str, Any]) -> Connector:
    """The connector of system ``name`` as the hub builds it from its ``systems:`` entry."""
    validated = systems_adapter().validate_python({name: settings})[name]
    return build_connector(name, validated, BuildContext())


class ContractCase(ABC):
    """One connector under the contract. Subclasses set the class attributes, start what
    they need in ``__init__`` and stop it in :meth:`close`.

    ``system``: the configured system name (never the connector's default ``kind``);
    ``object_name``: the object whose change feed the contract reads.
    """

    kind: str
    system: str
    object_name: str
    connector: Connector

    @abstractmethod
    def command(self, tag: str) -> Command:
        """A fresh command the system applies, in canonical form where the connector takes
        canonical operations (built with :func:`role_command` and ``self.system``)."""

    @abstractmethod
    def refused(self, tag: str) -> Command:
        """A well-formed command of the same operation that the system itself refuses."""

    @abstractmethod
    def malformed(self, tag: str) -> Command:
        """A command whose payload does not fit its operation (a required field missing)."""

    @abstractmethod
    def effects(self, command: Command) -> int:
        """How many times ``command``'s write is in the system (read with the system's own
        API): 1 once applied, 0 before or when refused."""

    @abstractmethod
    def lose_answer(self, command: Command) -> None:
        """Have ``command`` applied by the system with its answer never reaching the hub."""

    @abstractmethod
    def change(self, record: str, tag: str) -> str:
        """Create (first time) or change the source record named ``record`` so that it now
        carries ``tag``; returns its external id in the change feed."""

    @abstractmethod
    def tag_of(self, change: Change) -> str | None:
        """The tag a change of :attr:`object_name` carries (see :meth:`change`)."""

    @abstractmethod
    def failing(self, fault: str) -> AbstractContextManager[Connector]:
        """For the ``with`` block, the system answers every call with ``fault``
        (``server_error``: HTTP 503, ``rate_limited``: HTTP 429) and applies nothing; yields
        the connector to call meanwhile."""

    def settle(self) -> None:
        """Return once the change feed can see every change made so far (a feed that reads
        only up to the system's clock waits for it to pass the last change)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Stop what the case started."""


# --- cases on a sandbox process with fault plans ---------------------------------------------
class FaultPlanCase(ContractCase):
    """A case whose sandbox takes fault plans (:meth:`_set_faults`; by default through
    ``api.admin``): failing calls are a plan of one fault, a lost answer the sandbox cutting
    the connection after the write."""

    api: Any

    def _set_faults(self, plan: dict[str, float]) -> None:
        """Replace the sandbox's fault plan (``{}``: none)."""
        self.api.admin("PUT", "faults", json=plan).raise_for_status()

    @contextmanager
    def failing(self, fault: str) -> Iterator[Connector]:
        self._set_faults({fault: 1.0})
        try:
            yield self.connector
        finally:
            self._set_faults({})

    def lose_answer(self, command: Command) -> None:
        self._set_faults({"lost_response": 1.0})
        try:
            with pytest.raises(AmbiguousError):
                self.connector.execute([command])
        finally:
            self._set_faults({})


class SandboxCase(FaultPlanCase):
    """A case whose connector the case can build again (:meth:`_configured`): a lost answer
    is the command applied through a second connector whose answer is thrown away (the
    sandbox's faults hit every request alike, reads first, so they cannot cut just the
    write)."""

    @abstractmethod
    def _configured(self) -> Any:
        """A fresh connector of the case's system, as the hub builds it."""

    def lose_answer(self, command: Command) -> None:
        other = self._configured()
        try:
            (outcome,) = other.execute([command])
        finally:
            other.close()
        assert isinstance(outcome, Applied), outcome  # applied; the answer goes no further


# --- memory ---------------------------------------------------------------------------------
class MemoryCase(FaultPlanCase):
    """The memory sandbox in its own process (``python -m closeloop.sandboxes.memory``, under
    its own default name) and the HTTP :class:`MemoryConnector` configured as ``kind:
    memory``. Writes: the generic ``upsert`` (``{"object", "id", "data"}``); ``data`` with
    ``reject_reason`` is refused. Effects: the sandbox's log of applied writes."""

    kind = "memory"
    system = "acme_records"
    object_name = "Record"

    def __init__(self) -> None:
        self.sandbox = Sandbox("memory")
        self.connector = configured(
            self.system,
            {
                "kind": "memory",
                "url": self.sandbox.url,
                "objects": [self.object_name],
                "batch_size": BATCH_SIZE,
            },
        )
        assert isinstance(self.connector, MemoryConnector)

    def _upsert(self, tag: str, record_id: str | None, data: dict[str, Any]) -> Command:
        payload: dict[str, Any] = {"object": "Target", "data": data}
        if record_id is not None:
            payload["id"] = record_id
        return Command(
            system=self.system,
            operation="upsert",
            business_key=f"target:{tag}",
            idempotency_key=idempotency_key(self.system, "upsert", f"target:{tag}"),
            payload=payload,
            entity=f"{self.system}:Target:{tag}",
        )

    def command(self, tag: str) -> Command:
        return self._upsert(tag, tag, {"tag": tag})

    def refused(self, tag: str) -> Command:
        return self._upsert(tag, tag, {"tag": tag, "reject_reason": "refused by the contract"})

    def malformed(self, tag: str) -> Command:
        return self._upsert(tag, None, {"tag": tag})

    def effects(self, command: Command) -> int:
        answer = self.sandbox.http.get("/effects")
        assert answer.status_code == 200, answer.text
        return sum(
            e["idempotency_key"] == command.idempotency_key for e in answer.json()["effects"]
        )

    def _set_faults(self, plan: dict[str, float]) -> None:
        self.sandbox.http.put("/faults", json=plan).raise_for_status()

    def change(self, record: str, tag: str) -> str:
        answer = self.sandbox.http.put(f"/records/{self.object_name}/{record}", json={"tag": tag})
        assert answer.status_code == 200, answer.text
        return record

    def tag_of(self, change: Change) -> str | None:
        tag = change.payload.get("tag")
        return str(tag) if tag is not None else None

    def close(self) -> None:
        assert isinstance(self.connector, MemoryConnector)
        self.connector.close()
        self.sandbox.stop()


# --- Tryton ---------------------------------------------------------------------------------
class TrytonCase(ContractCase):
    """A real Tryton (the session's server) and the :class:`TrytonConnector` configured as
    ``kind: tryton``. Writes: canonical ``upsert_customer``; a VAT number with a wrong check
    digit is refused by Tryton. Effects: parties with the customer's code. Change feed:
    customer invoices; a change rewrites a draft invoice's reference. A lost answer: a
    fault proxy drops Tryton's answer to the party's ``create``."""

    kind = "tryton"
    system = "acme_erp"
    object_name = "account.invoice"

    def __init__(self, server: TrytonServer) -> None:
        self.server = server
        self.connector = self._configured(server.url)
        self.proxy = FaultProxy(server.url)
        self.lossy = self._configured(self.proxy.url)
        self.rpc = TrytonRPC(server.url, server.database, server.user, server.password)
        self.ops = TrytonOperations(self.rpc, find_ids(self.rpc))
        self.invoices: dict[str, int] = {}
        self.spare: list[int] = []

    def _configured(self, url: str) -> Connector:
        entry = {
            "url": url,
            "database": self.server.database,
            "user": self.server.user,
            "password": self.server.password,
        }
        wiring = plugin("tryton").sandbox
        assert wiring is not None
        connector = configured(self.system, {**wiring.settings(entry), "batch_size": BATCH_SIZE})
        assert isinstance(connector, TrytonConnector)
        return connector

    def _customer(self, tag: str, vat: str) -> Command:
        code = f"CT-{tag}"
        customer = UpsertCustomer(
            code=code,
            name=f"Kontrakt {tag} GmbH",
            country="DE",
            tax_ids=(("eu_vat", vat),),
        )
        return role_command(
            self.system,
            customer,
            business_key=f"customer:{code}",
            key=code,
            entity=f"{self.system}:customer:{code}",
            impact=Impact.CLIENT,
        )

    def command(self, tag: str) -> Command:
        return self._customer(tag, fresh_tax_id("DE"))

    def refused(self, tag: str) -> Command:
        return self._customer(tag, "DE136695977")  # DE136695976 is valid: a wrong check digit

    def malformed(self, tag: str) -> Command:
        code = f"CT-{tag}"
        return Command(
            system=self.system,
            operation=UpsertCustomer.operation,
            business_key=f"customer:{code}",
            idempotency_key=idempotency_key(self.system, UpsertCustomer.operation, code),
            payload={"name": f"Kontrakt {tag} GmbH", "country": "DE"},  # no code
        )

    def effects(self, command: Command) -> int:
        code = command.payload.get("code")
        rows = self.rpc.search_read(
            "party.party", [["code", "=", code]], ["id"], context={"active_test": False}
        )
        return len(rows)

    @contextmanager
    def failing(self, fault: str) -> Iterator[Connector]:
        status = {"server_error": 503, "rate_limited": 429}[fault]
        self.proxy.rules.append(Rule("party.party", status=status, retry_after="1", count=1000))
        try:
            yield self.lossy
        finally:
            self.proxy.rules.clear()

    def lose_answer(self, command: Command) -> None:
        self.proxy.rules.append(Rule("party.party.create", drop=True))
        try:
            with pytest.raises(AmbiguousError):
                self.lossy.execute([command])
        finally:
            self.proxy.rules.clear()

    def _drafts(self, count: int = 3) -> list[int]:
        """``count`` new draft customer invoices (a project each, with one hour on it)."""
        year = date.today().year - 1
        customer = fresh("CTC")
        self.ops.upsert_customer(customer, f"Kontrakt Feed {customer} GmbH", "DE")
        keys = [fresh("CTP") for _ in range(count)]
        self.ops.upsert_projects(
            [
                ProjectSpec(
                    k,
                    f"Feed {k}",
                    customer,
                    (TaskSpec(f"{k}/dev", "Dev", Decimal(100)),),
                    Decimal(100),
                )
                for k in keys
            ]
        )
        self.ops.add_timesheet_lines(
            [
                TimesheetEntry(
                    fresh("CTE"),
                    "contract",
                    "Contract Tester",
                    f"{k}/dev",
                    date(year, 3, 2),
                    Decimal(1),
                )
                for k in keys
            ]
        )
        drafts = self.ops.invoice_projects(
            [InvoiceRequest(k, date(year, 3, 31), fresh("CTI")) for k in keys]
        )
        assert all(d is not None and d.state == "draft" for d in drafts), drafts
        return [d.id for d in drafts if d is not None]

    def change(self, record: str, tag: str) -> str:
        if record not in self.invoices:
            if not self.spare:
                self.spare = self._drafts()
            self.invoices[record] = self.spare.pop()
        self.rpc.write("account.invoice", [self.invoices[record]], {"reference": tag})
        return str(self.invoices[record])

    def tag_of(self, change: Change) -> str | None:
        reference = change.payload.get("reference")
        return str(reference) if reference is not None else None

    def close(self) -> None:
        for connector in (self.connector, self.lossy):
            assert isinstance(connector, TrytonConnector)
            connector.close()
        self.rpc.close()
        self.proxy.close()


# --- Salesforce -----------------------------------------------------------------------------
class SalesforceCase(FaultPlanCase):
    """The Salesforce sandbox (real HTTPS) and the :class:`SalesforceConnector` configured as
    ``kind: salesforce``. Writes: canonical ``update_engagement`` on an Opportunity seeded
    for the command; a status outside the restricted picklist is refused by Salesforce.
    Effects: Opportunities stamped with the command's key and carrying its status. Change
    feed: Opportunities (``NextStep`` carries the tag). A lost answer: the sandbox cuts the
    connection after the write."""

    kind = "salesforce"
    system = "acme_crm"
    object_name = "Opportunity"

    def __init__(self, server: SalesforceServer) -> None:
        self.api = salesforce_support.Api(server)
        wiring = plugin("salesforce").sandbox
        assert wiring is not None
        settings = {
            **wiring.settings(server.as_json()),
            "objects": [self.object_name],
            "batch_size": BATCH_SIZE,
        }
        self.connector = configured(self.system, settings)
        assert isinstance(self.connector, SalesforceConnector)
        self.client = self.connector.client
        # the feed's describe calls, made now: the client has seen the org's clock (the Date
        # header) before settle() waits on it, and a poll makes no call before its upper bound
        self.connector.select_list(self.object_name)
        self.account = self._created("Account", {"Name": f"Kontrakt {fresh('acct')} AG"})
        self.deals: dict[str, str] = {}
        self.stamps: list[str] = []

    def _created(self, sobject: str, body: dict[str, Any]) -> str:
        answer = self.api.call("POST", f"sobjects/{sobject}", json=body)
        assert answer.status_code == 201, answer.text
        rid: str = answer.json()["id"]
        return rid

    def _deal(self, name: str, **fields: Any) -> str:
        body = salesforce_support.opportunity(name, self.account, **fields)
        return self._created("Opportunity", body)

    def _engagement(self, tag: str, status: str) -> Command:
        deal = self._deal(f"Deal {tag}")
        update = UpdateEngagement(deal_id=deal, status=status, message=f"contract {tag}")
        return role_command(
            self.system,
            update,
            business_key=f"deal:{deal}",
            key=f"opportunity:{deal}:mobilization:{status}:{tag}",
            entity=f"{self.system}:Opportunity:{deal}",
            impact=Impact.REVENUE,
        )

    def command(self, tag: str) -> Command:
        return self._engagement(tag, "Mobilized")

    def refused(self, tag: str) -> Command:
        return self._engagement(tag, "Maybe")  # not a value of the restricted picklist

    def malformed(self, tag: str) -> Command:
        return Command(
            system=self.system,
            operation=UpdateEngagement.operation,
            business_key=f"deal:{tag}",
            idempotency_key=idempotency_key(
                self.system, UpdateEngagement.operation, f"opportunity:{tag}:mobilization"
            ),
            payload={"status": "Mobilized"},  # no deal_id
        )

    def effects(self, command: Command) -> int:
        stamp = sync_stamp(command.idempotency_key).replace("'", "\\'")
        soql = (
            "SELECT Id, Mobilization_Status__c FROM Opportunity "
            f"WHERE Closeloop_Sync_Key__c = '{stamp}'"
        )
        answer = self.api.call("GET", "query", params={"q": soql})
        assert answer.status_code == 200, answer.text
        status = command.payload.get("status")
        return sum(r["Mobilization_Status__c"] == status for r in answer.json()["records"])

    def change(self, record: str, tag: str) -> str:
        if record not in self.deals:
            self.deals[record] = self._deal(f"Feed {record}", NextStep=tag)
        else:
            path = f"sobjects/Opportunity/{self.deals[record]}"
            answer = self.api.call("PATCH", path, json={"NextStep": tag})
            assert answer.status_code == 204, answer.text
        row = self.api.call("GET", f"sobjects/Opportunity/{self.deals[record]}").json()
        self.stamps.append(row["SystemModstamp"])
        return self.deals[record]

    def tag_of(self, change: Change) -> str | None:
        tag = change.payload.get("NextStep")
        return str(tag) if tag is not None else None

    def settle(self) -> None:
        """The feed reads up to the org's clock in whole seconds: wait for it to pass the
        last change (:func:`tests.salesforce_support.wait_past`)."""
        if self.stamps:
            salesforce_support.wait_past(self.client, max(self.stamps))

    def close(self) -> None:
        self.client.close()
        self.api.close()


# --- Harvest --------------------------------------------------------------------------------
class HarvestCase(SandboxCase):
    """The Harvest sandbox (its own process) and the :class:`HarvestConnector` configured as
    ``kind: harvest``. Writes: canonical ``upsert_project`` of a new client; a client name
    that is blank is refused by Harvest. Effects: projects with the command's code. Change
    feed: clients (``address`` carries the tag). A lost answer: the command is applied
    through another connector whose answer is thrown away (the sandbox's faults hit every
    request alike, reads first, so they cannot cut just the write)."""

    kind = "harvest"
    system = "acme_psa"
    object_name = "clients"

    def __init__(self, server: HarvestServer) -> None:
        self.server = server
        self.api = harvest_support.Api(server)
        self.connector = self._configured()
        self.clients: dict[str, int] = {}

    def _configured(self) -> HarvestConnector:
        wiring = plugin("harvest").sandbox
        assert wiring is not None
        settings = {
            **wiring.settings(self.server.as_json()),
            "objects": [self.object_name],
            "batch_size": BATCH_SIZE,
            "requests_per_window": HARVEST_REQUESTS,
            "window_s": 15.0,
        }
        connector = configured(self.system, settings)
        assert isinstance(connector, HarvestConnector)
        return connector

    def _project(self, tag: str, customer: str) -> Command:
        code = f"CT-{tag}"
        project = UpsertProject(
            key=code,
            name=f"Engagement {tag}",
            customer_name=customer,
            currency="EUR",
            tasks=(ProjectTask(name="Consulting", hourly_rate=Decimal(150), budget_hours=10),),
        )
        return role_command(
            self.system,
            project,
            business_key=f"engagement:{code}",
            key=code,
            entity=f"{self.system}:project:{code}",
            impact=Impact.REVENUE,
        )

    def command(self, tag: str) -> Command:
        return self._project(tag, f"Kontrakt {tag} GmbH")

    def refused(self, tag: str) -> Command:
        return self._project(tag, "   ")  # Harvest: "Name can't be blank"

    def malformed(self, tag: str) -> Command:
        code = f"CT-{tag}"
        return Command(
            system=self.system,
            operation=UpsertProject.operation,
            business_key=f"engagement:{code}",
            idempotency_key=idempotency_key(self.system, UpsertProject.operation, code),
            payload={"key": code, "name": f"Engagement {tag}", "currency": "EUR"},  # no tasks
        )

    def effects(self, command: Command) -> int:
        code = command.payload.get("key")
        return sum(p["code"] == code for p in self.api.listed("projects"))

    def change(self, record: str, tag: str) -> str:
        if record not in self.clients:
            answer = self.api.call("POST", "clients", json={"name": record, "address": tag})
            assert answer.status_code == 201, answer.text
            self.clients[record] = int(answer.json()["id"])
        else:
            path = f"clients/{self.clients[record]}"
            answer = self.api.call("PATCH", path, json={"address": tag})
            assert answer.status_code == 200, answer.text
        return str(self.clients[record])

    def tag_of(self, change: Change) -> str | None:
        tag = change.payload.get("address")
        return str(tag) if tag is not None else None

    def close(self) -> None:
        assert isinstance(self.connector, HarvestConnector)
        self.connector.close()
        self.api.close()


# --- xero -----------------------------------------------------------------------------------
class XeroCase(SandboxCase):
    """The Xero sandbox (its own process) and the :class:`XeroConnector` configured as
    ``kind: xero``. Writes: canonical ``upsert_customer`` of a new contact; a blank name is
    refused by Xero ("The contact name must be specified"). Effects: contacts holding the
    command's code as ``ContactNumber``. Change feed: customer invoices (the tag is the part
    of ``Reference`` after its ``/``). A lost answer: the command is applied through another
    connector whose answer is thrown away."""

    kind = "xero"
    system = "acquired_erp"
    object_name = "Invoices"

    def __init__(self, server: XeroServer) -> None:
        self.server = server
        self.api = xero_support.Api(server)
        self.connector = self._configured()
        self.invoices: dict[str, str] = {}
        self.contact_id = ""

    def _configured(self) -> XeroConnector:
        wiring = plugin("xero").sandbox
        assert wiring is not None
        settings = {**wiring.settings(self.server.as_json()), "batch_size": BATCH_SIZE}
        connector = configured(self.system, settings)
        assert isinstance(connector, XeroConnector)
        return connector

    def _customer(self, tag: str, name: str) -> Command:
        code = f"CT-{tag}"
        customer = UpsertCustomer(code=code, name=name, country="GB", tax_ids=(("gb_vat", tag),))
        return role_command(
            self.system,
            customer,
            business_key=f"customer:{code}",
            key=code,
            entity=f"{self.system}:customer:{code}",
            impact=Impact.REVENUE,
        )

    def command(self, tag: str) -> Command:
        return self._customer(tag, f"Kontrakt {tag} Ltd")

    def refused(self, tag: str) -> Command:
        return self._customer(tag, "   ")

    def malformed(self, tag: str) -> Command:
        code = f"CT-{tag}"
        return Command(
            system=self.system,
            operation=UpsertCustomer.operation,
            business_key=f"customer:{code}",
            idempotency_key=idempotency_key(self.system, UpsertCustomer.operation, code),
            payload={"code": code, "country": "GB"},  # no name
        )

    def effects(self, command: Command) -> int:
        code = command.payload.get("code")
        return sum(c.get("ContactNumber") == code for c in self.api.listed("Contacts"))

    def change(self, record: str, tag: str) -> str:
        if not self.contact_id:
            answer = self.api.call("PUT", "Contacts", json={"Name": fresh("Feed client")})
            answer.raise_for_status()
            self.contact_id = answer.json()["Contacts"][0]["ContactID"]
        invoice: dict[str, Any] = {"Reference": f"{record}/{tag}"}
        if record in self.invoices:
            invoice["InvoiceID"] = self.invoices[record]
        else:
            invoice |= {
                "Type": "ACCREC",
                "Contact": {"ContactID": self.contact_id},
                "LineItems": [{"Description": "Advice", "Quantity": 1, "UnitAmount": 100}],
            }
        answer = self.api.call("POST", "Invoices", json={"Invoices": [invoice]})
        assert answer.status_code == 200, answer.text
        self.invoices[record] = answer.json()["Invoices"][0]["InvoiceID"]
        return self.invoices[record]

    def tag_of(self, change: Change) -> str | None:
        reference = str(change.payload.get("Reference") or "")
        return reference.split("/", 1)[1] if "/" in reference else None

    def close(self) -> None:
        assert isinstance(self.connector, XeroConnector)
        self.connector.close()
        self.api.close()


# --- starting the cases ---------------------------------------------------------------------
def start_case(kind: str, request: pytest.FixtureRequest, home: Path) -> Iterator[ContractCase]:
    """The case of ``kind``, its sandbox started under ``home`` (Tryton: the session's
    server, from the ``tryton`` fixture); everything stopped afterwards."""
    with ExitStack() as stack:
        case: ContractCase
        if kind == "memory":
            case = MemoryCase()
        elif kind == "tryton":
            case = TrytonCase(request.getfixturevalue("tryton"))
        elif kind == "salesforce":
            server = stack.enter_context(salesforce_support.running_salesforce(home / kind))
            case = SalesforceCase(server)
        elif kind == "harvest":
            harvest = stack.enter_context(
                harvest_support.running_harvest(
                    home / kind, requests_per_window=HARVEST_REQUESTS, window_s=15.0
                )
            )
            case = HarvestCase(harvest)
        elif kind == "xero":
            xero = stack.enter_context(xero_support.running_xero(home / kind, **xero_support.ROOMY))
            case = XeroCase(xero)
        else:
            raise ValueError(f"no contract case for {kind!r}")
        stack.callback(case.close)
        yield case
