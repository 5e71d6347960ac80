"""Reconciliation's core on each store backend, with fact sources of our own (the
:class:`~closeloop.ports.reconcile.FactSource` Protocol): what it calls drift and what not,
how it explains it, what a repair sends through the engine, what a person gets, the report
kept in the store, its metrics and its schedule. The systems themselves are read in
tests/test_reconcile_e2e.py (sandboxes and a real Tryton)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from closeloop.domain.changes import Change
from closeloop.domain.commands import Command, CommandStatus, ExceptionClass, Impact
from closeloop.domain.records import FlowState
from closeloop.engine.registry import Registry
from closeloop.flows.status_back import StatusBackFlow
from closeloop.mdm.ownership import OwnershipPolicy
from closeloop.ports.flows import Binding
from closeloop.ports.reconcile import Fact
from closeloop.ports.store import NewCommand
from closeloop.reconcile.compare import Owners
from closeloop.reconcile.run import (
    ReconcileInputError,
    ReconcileMetrics,
    Reconciler,
    RunRequest,
    drift_total,
)
from closeloop.reconcile.schedule import Schedule, due_slot
from closeloop.store.sql import SqlStore

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
KEY = "SF-006A"
SYSTEMS = {"crm": "crm", "psa": "psa", "erp": "erp"}


class Clock:
    """A clock a test moves."""

    def __init__(self) -> None:
        self.moment = NOW

    def now(self) -> datetime:
        return self.moment


class Source:
    """One system's facts, as a test sets them; counts the pages read."""

    def __init__(self, system: str, facts: list[Fact]) -> None:
        self.system = system
        self.facts = facts
        self.pages = 0

    def fact_domains(self) -> Sequence[str]:
        return sorted({f.domain for f in self.facts})

    def objects(self) -> Sequence[str]:
        """The change feed's objects (as a connector lists them)."""
        return sorted({f.object for f in self.facts if f.object})

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        self.pages += 1
        yield [f for f in self.facts if f.domain == domain]


def fact(domain: str, key: str, system: str, **fields: Any) -> Fact:
    return Fact(domain, key, system, f"{system}-{key}", fields, NOW - timedelta(hours=1))


def seed_hub(store: SqlStore, *, invoiced: str = "1190.00") -> None:
    """One mobilized engagement with a customer, one recorded time entry and one posted
    invoice the status-back instance reported."""
    mobilize = {
        "project_key": KEY,
        "deal_id": "006A",
        "systems": SYSTEMS,
        "customer": {"crm_id": "001A"},
        "erp_customer_code": "C1",
        "billing_method": "time_and_materials",
        "roles": [{"role": "Dev", "rate": "100.00"}],
    }
    status = {
        "project_key": KEY,
        "deal_id": "006A",
        "client": "Acme",
        "crm": "crm",
        "psa": "psa",
        "currency": "EUR",
        "account_currency": "EUR",
        "as_of": "2026-12-01",
        "invoices": {
            f"{KEY}/2026-11": {
                "number": "INV-1",
                "date": "2026-12-01",
                "currency": "EUR",
                "total": invoiced,
                "paid": "0",
                "due_date": "2026-12-31",
                "credit_of": None,
            }
        },
    }
    with store.transaction() as tx:
        tx.put_flows(
            [
                FlowState("mobilize", "engagement:1", "mobilized", mobilize),
                FlowState("bill_time", "time_entry:1", "recorded", {"line": {"key": "psa-1"}}),
                FlowState(
                    "invoice",
                    f"billing:{KEY}",
                    "open",
                    {"invoices": {f"{KEY}/2026-11": {"number": "INV-1", "state": "posted"}}},
                ),
                FlowState("status_back", f"status:{KEY}", "reported", status),
            ],
            NOW,
        )


def agreeing_facts() -> dict[str, list[Fact]]:
    """What each system holds when everything agrees."""
    return {
        "crm": [
            fact("customers", "001A", "crm", legal_name="Acme  GmbH", tax_ids=("DE123456789",)),
            fact(
                "invoices",
                KEY,
                "crm",
                invoiced=Decimal("1190.00"),
                outstanding=Decimal("1190.00"),
                last_invoice_number="INV-1",
            ),
        ],
        "psa": [
            fact("projects", KEY, "psa", status="open", rates={"Dev": Decimal("100.00")}),
            fact(
                "time",
                "psa-1",
                "psa",
                project_key=KEY,
                task="Dev",
                date="2026-11-03",
                hours=Decimal("8.00"),
                approved=True,
                billable=True,
                billed=True,
            ),
        ],
        "erp": [
            # the ERP keeps the VAT number without its country letters, the name in capitals
            fact("customers", "C1", "erp", legal_name="ACME GmbH", tax_ids=("123456789",)),
            fact("projects", KEY, "erp", status="open", rates={"Dev": Decimal("100.00")}),
            fact(
                "time",
                "psa-1",
                "erp",
                project_key=KEY,
                task="Dev",
                date="2026-11-03",
                hours=Decimal("8.00"),
                invoice_reference=f"{KEY}/2026-11",
            ),
            fact(
                "invoices",
                f"{KEY}/2026-11",
                "erp",
                project_key=KEY,
                state="posted",
                number="INV-1",
                total=Decimal("1190.00"),
                outstanding=Decimal("1190.00"),
                invoice_date="2026-12-01",
                credited_reference=None,
            ),
        ],
    }


def reconciler(
    store: SqlStore, facts: dict[str, list[Fact]], registry: CollectorRegistry | None = None
) -> tuple[Reconciler, dict[str, Source]]:
    sources = {name: Source(name, list(f)) for name, f in facts.items()}
    owners = Owners(
        OwnershipPolicy({"account": {"legal_name": "erp"}}),
        {"crm": "crm", "psa": "psa", "erp": "erp"},
    )
    flows = Registry(flows=[StatusBackFlow(("SF",))])
    metrics = ReconcileMetrics(registry) if registry is not None else None
    return Reconciler(store, flows, Clock(), sources, owners, metrics), sources


def edit(facts: dict[str, list[Fact]], system: str, domain: str, **fields: Any) -> None:
    """Change the fields of ``system``'s one fact of ``domain`` (edited by hand, now)."""
    for n, f in enumerate(facts[system]):
        if f.domain == domain:
            facts[system][n] = Fact(
                f.domain, f.key, f.system, f.external_id, {**f.fields, **fields}, NOW
            )


def test_systems_that_agree_show_no_drift_and_each_page_is_one_read(store: SqlStore) -> None:
    seed_hub(store)
    rec, _ = reconciler(store, agreeing_facts())
    run = rec.run()
    assert run.status == "ok" and drift_total(run) == 0, run.drifts
    assert run.records == {"customers": 2, "projects": 2, "time": 2, "invoices": 2}
    assert run.pages == {"crm": 2, "psa": 2, "erp": 4}  # one page per domain a system holds
    assert [r.id for r in rec.runs()] == [run.id]


def test_each_drift_names_field_values_owner_and_cause(store: SqlStore) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "erp", "customers", legal_name="Acme Holding GmbH")
    edit(facts, "psa", "time", hours=Decimal("9.50"))
    edit(facts, "crm", "invoices", invoiced=Decimal("999.00"))
    edit(facts, "psa", "projects", status="closed")
    facts["psa"].append(fact("projects", "SF-006B", "psa", status="open", rates={}))
    facts["crm"].append(fact("invoices", "SF-006B", "crm", invoiced=Decimal(0)))
    run = reconciler(store, facts)[0].run()
    found = {(d.domain, d.kind, d.key, d.field): d for d in run.drifts}
    assert set(found) == {
        ("customers", "mismatch", "001A", "legal_name"),
        ("time", "mismatch", "psa-1", "hours"),
        ("invoices", "mismatch", KEY, "invoiced"),
        ("projects", "mismatch", KEY, "status"),
        ("projects", "orphan", "SF-006B", None),
    }
    name = found[("customers", "mismatch", "001A", "legal_name")]
    assert name.owner == "erp" and name.values == {"crm": "Acme  GmbH", "erp": "Acme Holding GmbH"}
    assert "erp (the owner) changed it" in name.cause
    hours = found[("time", "mismatch", "psa-1", "hours")]
    assert hours.owner == "psa" and hours.values == {"psa": "9.50", "erp": "8.00"}
    money = found[("invoices", "mismatch", KEY, "invoiced")]
    assert money.owner == "erp" and money.values == {"erp": "1190.00", "crm": "999.00"}
    assert "crm holds its own value" in money.cause
    orphan = found[("projects", "orphan", "SF-006B", None)]
    assert orphan.owner is None and "made outside the hub" in orphan.cause
    assert run.counts["projects"] == {"mismatch": 1, "orphan": 1}
    assert drift_total(run) == 5
    kept = reconciler(store, facts)[0].report(run.id or 0)
    assert kept is not None and {(d.domain, d.key, d.field) for d in kept.drifts} == {
        (k[0], k[2], k[3]) for k in found
    }


def test_a_change_still_in_the_outbox_is_in_flight_not_drift(store: SqlStore) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "crm", "invoices", invoiced=Decimal("0"))
    command = Command(
        system="crm",
        operation="update_billing_totals",
        business_key=f"status:{KEY}",
        idempotency_key="crm:update_billing_totals:opportunity:006A:invoicing:2",
        payload={},
        entity="crm:opportunity:006A",
        impact=Impact.CLIENT,
    )
    with store.transaction() as tx:
        tx.add_commands([NewCommand(command, "status_back", None)], NOW)
    run = reconciler(store, facts)[0].run()
    (row,) = run.drifts
    assert row.status == "in_flight" and "command #" in row.cause and "pending" in row.cause
    assert drift_total(run) == 0 and run.counts["invoices"] == {"in_flight": 1}


def test_repair_sends_the_owners_value_through_the_engine_and_hands_the_rest_to_people(
    store: SqlStore,
) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "crm", "invoices", invoiced=Decimal("999.00"))  # repairable: the ERP owns it
    edit(facts, "psa", "time", hours=Decimal("9.50"))  # invoiced time: a person decides
    edit(facts, "erp", "projects", status="closed")  # finance closed it: close it in the PSA
    rec, _ = reconciler(store, facts)
    plan = rec.run(RunRequest(repair=True, dry_run=True))
    assert {d.status for d in plan.drifts} == {"planned"}
    with store.transaction() as tx:
        assert tx.undelivered_commands(100) == [] and tx.list_exceptions("open", 10) == []
    run = rec.run(RunRequest(repair=True, actor="ops@example.com"))
    by_field = {d.field: d for d in run.drifts}
    assert by_field["invoiced"].status == "repaired"
    assert by_field["status"].status == "repaired"
    assert by_field["hours"].status == "exception" and by_field["hours"].exception_id
    with store.transaction() as tx:
        sent = {(c.command.system, c.command.operation): c for c in tx.undelivered_commands(100)}
        (person,) = tx.list_exceptions("open", 10)
        audit = tx.list_audit(None, 10)
    assert set(sent) == {("crm", "update_billing_totals"), ("psa", "close_project")}
    totals = sent[("crm", "update_billing_totals")].command
    assert totals.payload["invoiced"] == "1190.00" and totals.idempotency_key.endswith(
        ":run-20261203T120000000000"
    )
    assert sent[("psa", "close_project")].command.payload == {"key": KEY}
    assert person.error_class is ExceptionClass.DRIFT and person.impact is Impact.REVENUE
    assert (
        "posted invoice" in person.message and f"closeloop credit {KEY}/2026-11" in person.message
    )
    assert {a.actor for a in audit if a.action == "repair"} == {"ops@example.com"}
    # the next run: the repairs are in flight, the person has the rest, no new exception
    again = rec.run(RunRequest(repair=True))
    assert drift_total(again) == 0, again.drifts
    assert again.counts["time"] == {"with_person": 1}
    with store.transaction() as tx:
        assert len(tx.list_exceptions("open", 10)) == 1
        for row in tx.undelivered_commands(100):  # delivered: the systems agree again
            tx.set_command_status(row.id, CommandStatus.DONE, NOW)
    edit(facts, "crm", "invoices", invoiced=Decimal("1190.00"))
    edit(facts, "psa", "projects", status="closed")
    rec.sources = {n: Source(n, f) for n, f in facts.items()}
    final = rec.run()
    assert drift_total(final) == 0 and final.counts["time"] == {"with_person": 1}


def test_unknown_domain_is_refused_before_anything_is_read(store: SqlStore) -> None:
    rec, sources = reconciler(store, agreeing_facts())
    with pytest.raises(ReconcileInputError, match="unknown domain payments"):
        rec.run(RunRequest(domains=("payments",)))
    assert all(s.pages == 0 for s in sources.values())
    assert rec.runs() == []


def test_since_reports_only_records_changed_since(store: SqlStore) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "psa", "time", hours=Decimal("9.50"))  # changed NOW
    rec, _ = reconciler(store, facts)
    assert drift_total(rec.run(RunRequest(since=NOW - timedelta(minutes=5)))) == 1
    assert drift_total(rec.run(RunRequest(since=NOW + timedelta(minutes=5)))) == 0


def test_metrics_show_the_last_runs_drift_by_domain_and_kind(store: SqlStore) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "psa", "time", hours=Decimal("9.50"))
    registry = CollectorRegistry()
    rec, _ = reconciler(store, facts, registry)
    rec.run()
    drift = registry.get_sample_value(
        "closeloop_reconcile_drift", {"domain": "time", "kind": "mismatch"}
    )
    assert drift == 1
    assert registry.get_sample_value("closeloop_reconcile_runs_total", {"status": "ok"}) == 1
    assert registry.get_sample_value("closeloop_reconcile_duration_seconds") is not None


def test_the_schedule_runs_each_slot_once() -> None:
    at = time(2, 0)
    night = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    assert due_slot(None, night + timedelta(minutes=1), at, 24) == night
    assert due_slot(night + timedelta(seconds=5), night + timedelta(hours=3), at, 24) is None
    assert due_slot(night - timedelta(days=1), night + timedelta(hours=3), at, 24) == night
    before = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
    assert due_slot(None, before, at, 24) == night - timedelta(days=1)
    assert due_slot(
        night - timedelta(hours=1), night + timedelta(hours=7), at, 6
    ) == night + timedelta(hours=6)
    assert due_slot(None, night, at, 0) is None


def test_the_hub_schedule_runs_when_due_and_not_again(store: SqlStore) -> None:
    seed_hub(store)
    rec, _ = reconciler(store, agreeing_facts())
    clock = Clock()
    schedule = Schedule(rec, store, clock, RunRequest(trigger="schedule"), time(2, 0), 24)
    assert schedule.run_due() is True
    assert schedule.run_due() is False
    clock.moment += timedelta(days=1)
    rec.clock = clock
    assert schedule.run_due() is True
    assert [r.trigger for r in rec.runs()] == ["schedule", "schedule"]


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_http_api_runs_reconciliation_and_serves_its_reports(store: SqlStore) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from closeloop.api import problems
    from closeloop.api.auth import Authenticator
    from closeloop.api.v1.reconcile import reconcile_router
    from closeloop.engine.access import Access

    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "psa", "time", hours=Decimal("9.50"))
    rec, _ = reconciler(store, facts)
    access = Access(store, rec.clock)
    auth = Authenticator(access, None, 3600)
    app = FastAPI()
    problems.install(app)
    app.include_router(reconcile_router(rec, auth))
    client = TestClient(app)
    kim = {"Authorization": f"Bearer {access.create('kim', 'operator', 'test', None).token}"}
    eve = {"Authorization": f"Bearer {access.create('eve', 'viewer', 'test', None).token}"}
    body = {"domains": ["time"], "repair": True, "dry_run": True}
    assert client.post("/api/v1/reconcile", json=body, headers=eve).status_code == 403
    answer = client.post(
        "/api/v1/reconcile", json=body, headers={**kim, "X-Closeloop-Actor": "mallory"}
    )
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["domains"] == ["time"] and run["actor"] == "key:kim" and run["dry_run"] is True
    assert [(d["field"], d["status"]) for d in run["drifts"]] == [("hours", "planned")]
    assert {v for d in run["drifts"] for v in d["values"].values()} == {"9.50", "8.00"}
    listed = client.get("/api/v1/reconcile/runs", headers=eve).json()
    assert [r["id"] for r in listed] == [run["id"]] and listed[0]["drifts"] == []
    shown = client.get(f"/api/v1/reconcile/runs/{run['id']}", headers=eve).json()
    assert shown["drifts"] == run["drifts"]
    missing = client.get("/api/v1/reconcile/runs/999", headers=eve)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/reconcile/runs/0", headers=eve).status_code == 422
    assert client.get(f"/api/v1/reconcile/runs/{2**63}", headers=eve).status_code == 422
    bad = client.post("/api/v1/reconcile", json={"domains": ["payments"]}, headers=kim)
    assert bad.status_code == 422
    assert client.get("/api/v1/reconcile/runs").status_code == 401


def test_a_change_the_hub_has_not_read_or_applied_yet_is_in_flight(store: SqlStore) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "psa", "time", hours=Decimal("9.50"))  # changed NOW in the PSA
    facts["psa"] = [replace(f, object="time_entries") for f in facts["psa"]]
    rec, sources = reconciler(store, facts)
    binding = Binding("psa", "time_entries", "time_entry", lambda c: dict(c.payload))
    rec.registry = Registry(connectors={"psa": sources["psa"]}, bindings=[binding])  # type: ignore[dict-item]

    def receive(at: datetime) -> None:
        change = Change(
            system="psa",
            object="time_entries",
            external_id="psa-psa-1",
            version=at.isoformat(),
            payload={},
        )
        with store.transaction() as tx:
            tx.insert_changes([change], NOW)

    receive(NOW - timedelta(hours=2))  # the version the hub recorded
    (row,) = rec.run().drifts
    assert row.status == "in_flight" and "has not read it yet" in row.cause
    receive(NOW)  # polled, not applied
    (row,) = rec.run().drifts
    assert row.status == "in_flight" and "has not applied it yet" in row.cause
    for _ in range(2):  # one version of a record at a time, oldest first
        with store.transaction() as tx:
            tx.mark_inbox([(r.id, "applied", None) for r in tx.claim_inbox(10)], NOW)
    (row,) = rec.run().drifts  # applied, and the ERP kept the old hours: drift
    assert row.status == "drift" and "psa (the owner) changed it" in row.cause


class Failing(Source):
    """A source whose second page of time fails (a system that stops answering mid-read)."""

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        self.pages += 1
        page = [f for f in self.facts if f.domain == domain]
        if domain != "time":
            yield page
            return
        yield page[:0]
        raise ConnectionError("Harvest stopped answering")


def test_a_system_failing_mid_read_fails_its_domain_and_nothing_is_repaired(
    store: SqlStore,
) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "crm", "invoices", invoiced=Decimal("999.00"))
    rec, _ = reconciler(store, facts)
    rec.sources["psa"] = Failing("psa", facts["psa"])
    run = rec.run(RunRequest(repair=True))
    assert run.status == "failed" and "psa could not be read for time" in (run.error or "")
    assert run.records["time"] == 1  # the ERP's line only: the PSA's partial read is left out
    assert [(d.field, d.status) for d in run.drifts] == [("invoiced", "drift")]  # not repaired
    with store.transaction() as tx:
        assert tx.undelivered_commands(10) == [] and tx.list_exceptions("open", 10) == []


def test_repairs_are_one_per_engagement_and_only_where_the_owners_value_differs(
    store: SqlStore,
) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "crm", "invoices", invoiced=Decimal(1), outstanding=Decimal(1))
    edit(facts, "erp", "customers", tax_ids=("DE987654321",))  # GB123 is not DE123
    with store.transaction() as tx:  # the deal was lost: the hub closed the engagement
        (state,) = [f for f in tx.list_flows("mobilize", 10)]
        tx.put_flows(
            [
                FlowState(
                    "mobilize", state.business_key, "closed", {**state.data, "psa_project_id": "9"}
                )
            ],
            NOW,
        )
    edit(facts, "erp", "projects", status="closed")  # the ERP closed it, Harvest did not
    run = reconciler(store, facts)[0].run(RunRequest(repair=True))
    found = {(d.domain, d.field): d for d in run.drifts}
    assert found[("customers", "tax_ids")].status == "exception"
    status = found[("projects", "status")]
    assert status.owner == "crm" and status.status == "repaired"
    assert status.repair == f"close project {KEY} in psa"  # not in the ERP: it is closed
    assert {found[("invoices", f)].status for f in ("invoiced", "outstanding")} == {"repaired"}
    with store.transaction() as tx:
        sent = [c.command.operation for c in tx.undelivered_commands(10)]
    assert sorted(sent) == ["close_project", "update_billing_totals"]  # one update, not two


def test_a_rate_change_dated_later_is_not_yet_in_force(store: SqlStore) -> None:
    seed_hub(store)
    terms = {"Dev": [{"from": None, "rate": "100.00"}, {"from": "2027-01-01", "rate": "120.00"}]}
    with store.transaction() as tx:
        (state,) = tx.list_flows("mobilize", 10)
        roles = [{"role": "Dev", "rate": "120.00"}]  # the deal holds the new rate at once
        invoice = {"project_key": KEY, "terms": {"rates": terms}, "invoices": {}}
        tx.put_flows(
            [
                FlowState(
                    "mobilize", state.business_key, state.state, {**state.data, "roles": roles}
                ),
                FlowState("invoice", f"billing:{KEY}", "open", invoice),
            ],
            NOW,
        )
    run = reconciler(store, agreeing_facts())[0].run(RunRequest(domains=("projects",)))
    assert run.drifts == (), run.drifts  # both systems hold 100.00, in force until January


def test_weekly_slots_keep_their_day() -> None:
    monday = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # a Monday
    assert due_slot(None, monday + timedelta(days=2), time(2, 0), 168) == monday
    assert (
        due_slot(monday + timedelta(minutes=1), monday + timedelta(days=6), time(2, 0), 168) is None
    )


def charge_line(charge: str, line_id: int, amount: str, reference: str) -> Fact:
    """An ERP invoice (or credit-note) line carrying ``charge``."""
    kind = charge.split(":", 1)[0]
    return Fact(
        "charges",
        f"{charge}@{line_id}",
        "erp",
        str(line_id),
        {
            "charge": charge,
            "kind": kind,
            "project_key": KEY,
            "amount": Decimal(amount),
            "invoice_reference": reference,
            "state": "posted",
        },
        NOW - timedelta(hours=1),
    )


def test_expenses_and_milestones_against_what_the_erp_billed_net_of_credit_notes(
    store: SqlStore,
) -> None:
    seed_hub(store)
    with store.transaction() as tx:  # a fixed-fee engagement
        (state,) = tx.list_flows("mobilize", 10)
        data = {**state.data, "billing_method": "fixed_fee"}
        tx.put_flows([FlowState("mobilize", state.business_key, state.state, data)], NOW)
    taxi, hotel, lunch = (f"expense:{KEY}:psa-{n}" for n in (1, 2, 3))
    first, second, third = (f"milestone:{KEY}:a0M{n}" for n in (1, 2, 3))
    facts = agreeing_facts()
    facts["psa"] += [
        fact("charges", taxi, "psa", kind="expense", billable=True, billed=True),
        fact("charges", hotel, "psa", kind="expense", billable=True, billed=True),
        fact("charges", lunch, "psa", kind="expense", billable=False, billed=False),
    ]
    facts["crm"] += [
        fact("charges", first, "crm", kind="milestone", status="accepted", amount=Decimal(500)),
        fact("charges", second, "crm", kind="milestone", status="accepted", amount=Decimal(700)),
        fact("charges", third, "crm", kind="milestone", status="disputed", amount=Decimal(300)),
    ]
    facts["erp"] += [
        charge_line(taxi, 1, "55.00", f"{KEY}/2026-11"),  # billed: agrees
        charge_line(hotel, 2, "180.00", f"{KEY}/2026-11"),  # billed, then credited in full
        charge_line(hotel, 3, "-180.00", f"{KEY}/2026-11/credit-1"),
        charge_line(first, 4, "500.00", f"{KEY}/milestone-a0M1"),  # agrees
        charge_line(second, 5, "650.00", f"{KEY}/milestone-a0M2"),  # the wrong amount
        charge_line(third, 6, "300.00", f"{KEY}/milestone-a0M3"),  # disputed, not credited
    ]
    run = reconciler(store, facts)[0].run(RunRequest(domains=("charges",)))
    found = {(d.key, d.field): d for d in run.drifts}
    assert set(found) == {(hotel, "billed"), (second, "amount"), (third, "status")}, run.drifts
    assert found[(hotel, "billed")].values == {"psa": True, "erp": "0.00"}
    assert found[(hotel, "billed")].owner == "erp"
    assert found[(second, "amount")].values == {"crm": "700", "erp": "650.00"}
    assert found[(third, "status")].owner == "crm"
    assert run.records["charges"] == 12


def test_the_psa_client_and_the_address_are_compared_with_the_customer(store: SqlStore) -> None:
    seed_hub(store)
    facts = agreeing_facts()
    edit(facts, "psa", "projects", client_id="77")
    facts["psa"].append(fact("customers", "77", "psa", legal_name="acme gmbh", currency="EUR"))
    edit(facts, "crm", "customers", street="1 Market  Street", city="Munich", postal_code="80331")
    edit(facts, "erp", "customers", street="1 Market Street", city="Munich", postal_code="80331")
    rec, _ = reconciler(store, facts)
    assert drift_total(rec.run(RunRequest(domains=("customers",)))) == 0
    for system, name in (("psa", "Acme Ltd"),):
        for n, f in enumerate(facts[system]):
            if f.domain == "customers":
                facts[system][n] = replace(f, fields={**f.fields, "legal_name": name})
    edit(facts, "erp", "customers", city="Berlin")
    rec.sources = {n: Source(n, f) for n, f in facts.items()}
    run = rec.run(RunRequest(domains=("customers",)))
    found = {d.field: d for d in run.drifts}
    assert set(found) == {"legal_name", "city"}, run.drifts
    assert found["legal_name"].values == {
        "crm": "Acme  GmbH",
        "erp": "ACME GmbH",
        "psa": "Acme Ltd",
    }
    assert found["legal_name"].owner == "erp" and "psa" in found["legal_name"].cause
    assert "crm" not in found["legal_name"].cause  # the CRM's name is the owner's but for case
    assert found["city"].values == {"crm": "Munich", "erp": "Berlin"}
    assert found["city"].owner == "erp"
