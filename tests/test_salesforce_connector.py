"""The Salesforce connector over real HTTPS against the sandbox process: polling on
SystemModstamp (5,000 records sharing one timestamp, updates landing during the poll),
batched writes, lookups after lost answers, session renewal, the quota budget, the engine
writing back under faults, and the outbound-message endpoint on the hub's HTTP app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import Settings
from closeloop.connectors.salesforce.connector import (
    SalesforceConnector,
    idempotency_key,
    sync_stamp,
)
from closeloop.connectors.salesforce.quota import QuotaBudget, QuotaExhausted
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, CommandStatus, Impact, Permanent
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep
from closeloop.ports.connector import AmbiguousError
from closeloop.ports.flows import Binding, Unsignalled
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.salesforce.outbound import envelope
from closeloop.sandboxes.salesforce.server import SalesforceServer
from closeloop.store.tables import inbox
from tests.conftest import key_headers, serving
from tests.memory_system import MemorySystem
from tests.salesforce_support import Api, client_for, opportunity, running_salesforce, wait_past

pytestmark = pytest.mark.timeout(300)


def passthrough(change: Change) -> dict[str, Any]:
    """The vendor record as it is (these tests are about intake and dispatch)."""
    return dict(change.payload)


def seed_opportunities(api: Api, count: int, stamp: str | None = None) -> list[str]:
    """``count`` opportunities of one account, with ``SystemModstamp`` = ``stamp``."""
    account = "0015g00000SEED0AAA"
    extra = {"SystemModstamp": stamp} if stamp else {}
    ids = [f"0065g{i:010d}AAA" for i in range(count)]
    data = {
        "Account": [{"Id": account, "Name": "Seed Account", **extra}],
        "Opportunity": [
            opportunity(f"Deal {i:05d}", account, Id=rid, **extra) for i, rid in enumerate(ids)
        ],
    }
    answer = api.admin("POST", "seed", json=data, timeout=120)
    assert answer.status_code == 200, answer.text
    return ids


def hub_for(tmp_path: Path, connector: Any, flows: tuple[Any, ...] = (), **worker: Any) -> Hub:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        worker={"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.2, **worker},
    )
    return build_hub(
        settings,
        connectors={"salesforce": connector},
        bindings=[Binding("salesforce", "Opportunity", "opportunity", passthrough, flows)],
        upgrade=True,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SalesforceServer]:
    with running_salesforce(tmp_path / "sf") as started:
        yield started


@pytest.fixture
def api(server: SalesforceServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


# --- change feed ------------------------------------------------------------------------------
def inbox_versions(hub: Hub) -> list[tuple[str, str]]:
    with hub.store.engine.connect() as db:
        rows = db.execute(sa.select(inbox.c.external_id, inbox.c.version)).all()
    return [(r[0], r[1]) for r in rows]


def test_polling_5000_records_sharing_one_systemmodstamp_while_records_change(
    tmp_path: Path, server: SalesforceServer, api: Api
) -> None:
    shared = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    stamp = shared.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    ids = seed_opportunities(api, 5000, stamp)
    changed = ids[-10:]  # ordered by (SystemModstamp, Id): these are on the last page

    client = client_for(server)
    updated: list[str] = []

    def update_during_poll(response: httpx.Response) -> None:
        """After the first page of the first poll came back: change records of later pages."""
        if "queryAll" in str(response.request.url) and not updated:
            for rid in changed:
                answer = api.call("PATCH", f"sobjects/Opportunity/{rid}", json={"NextStep": "call"})
                assert answer.status_code == 204
                updated.append(rid)

    client._http.event_hooks["response"].append(update_during_poll)  # httpx's own hook
    connector = SalesforceConnector(client, objects=("Opportunity",))
    hub = hub_for(tmp_path, connector)
    try:
        first = hub.intake.poll("salesforce", "Opportunity", overlap_s=60)
        assert first.accepted == 4990  # the ten changed mid-poll are left for the next poll
        # a poll reads up to the org's clock (whole seconds): wait for it to pass the updates
        stamps = [api.call("GET", f"sobjects/Opportunity/{r}").json() for r in changed]
        wait_past(client, max(s["SystemModstamp"] for s in stamps))
        second = hub.intake.poll("salesforce", "Opportunity", overlap_s=60)
        assert (second.accepted, second.duplicates) == (10, 4990)
        third = hub.intake.poll("salesforce", "Opportunity", overlap_s=60)
        assert third.accepted == 0
    finally:
        hub.close()
    versions = inbox_versions(hub)
    assert len(versions) == len(set(versions)) == 5000
    latest = {rid: version for rid, version in versions}
    assert set(latest) == set(ids)
    for rid in ids:
        expected_old = latest[rid] == shared.isoformat()
        assert expected_old == (rid not in changed), rid
    assert client.calls["queryAll"] == 3  # one query per poll
    assert client.calls["query"] == 2 * 2  # two nextRecordsUrl pages in each poll of 5,000


def test_a_fixed_account_is_a_new_version_of_its_opportunities(
    tmp_path: Path, server: SalesforceServer, api: Api
) -> None:
    """Deals carry their account's commercial data; fixing the account in Salesforce brings
    its deals back through the feed (their version is the later of both stamps)."""
    old = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    ids = seed_opportunities(api, 3, old)
    client = client_for(server)
    hub = hub_for(tmp_path, SalesforceConnector(client, objects=("Opportunity",)))
    try:
        assert hub.intake.poll("salesforce", "Opportunity", overlap_s=60).accepted == 3
        fixed = api.call(
            "PATCH", "sobjects/Account/0015g00000SEED0AAA", json={"Tax_Id__c": "DE136695976"}
        )
        assert fixed.status_code == 204
        stamp = api.call("GET", "sobjects/Account/0015g00000SEED0AAA").json()["SystemModstamp"]
        wait_past(client, stamp)
        again = hub.intake.poll("salesforce", "Opportunity", overlap_s=60)
        assert again.accepted == 3
    finally:
        hub.close()
    with hub.store.engine.connect() as db:
        rows = db.execute(sa.select(inbox.c.external_id, inbox.c.payload)).all()
    latest = [payload for rid, payload in rows if rid == ids[0]][-1]
    assert latest["Account"]["Tax_Id__c"] == "DE136695976"


# --- writes ---------------------------------------------------------------------------------------
def write_back(rid: str, number: int) -> Command:
    return Command(
        system="salesforce",
        operation="update",
        business_key=f"opportunity:{rid}",
        idempotency_key=idempotency_key("Opportunity", rid, f"INV-{number}"),
        payload={
            "object": "Opportunity",
            "id": rid,
            "fields": {"Last_Invoice_Number__c": f"INV-{number}", "Invoiced_Amount__c": "1200.50"},
        },
        entity=f"Opportunity:{rid}",
        impact=Impact.REVENUE,
    )


def test_a_thousand_writes_are_one_api_request_and_are_found_after_a_lost_answer(
    server: SalesforceServer, api: Api
) -> None:
    ids = seed_opportunities(api, 1000)
    client = client_for(server)
    connector = SalesforceConnector(client, objects=("Opportunity",))
    commands = [write_back(rid, n) for n, rid in enumerate(ids)]
    before = dict(client.calls)
    outcomes = connector.execute(commands)
    assert all(isinstance(o, Applied) for o in outcomes)
    spent = {k: v - before.get(k, 0) for k, v in client.calls.items() if v != before.get(k, 0)}
    assert spent == {"composite": 1}
    row = api.call("GET", f"sobjects/Opportunity/{ids[7]}").json()
    assert row["Last_Invoice_Number__c"] == "INV-7" and row["Invoiced_Amount__c"] == 1200.5
    assert row["Closeloop_Sync_Key__c"] == sync_stamp(commands[7].idempotency_key)

    again = [write_back(rid, n + 5000) for n, rid in enumerate(ids[:300])]
    api.admin("PUT", "faults", json={"lost_response": 1.0})
    with pytest.raises(AmbiguousError):
        connector.execute(again)
    api.admin("PUT", "faults", json={})
    found = connector.find([c.idempotency_key for c in again] + ["salesforce:Opportunity:none"])
    assert set(found) == {c.idempotency_key for c in again}  # applied, though the answer was lost
    assert found[again[0].idempotency_key].result == {"id": ids[0]}


def test_refused_records_become_permanent_outcomes_that_name_the_problem(
    server: SalesforceServer, api: Api
) -> None:
    ids = seed_opportunities(api, 3)
    api.call("DELETE", f"sobjects/Opportunity/{ids[2]}")
    connector = SalesforceConnector(client_for(server))
    bad_picklist = write_back(ids[1], 1)
    bad_picklist.payload["fields"]["Payment_Status__c"] = "Maybe"
    upsert = Command(
        system="salesforce",
        operation="upsert",
        business_key="account:acme",
        idempotency_key=idempotency_key("Account", "acme", "1"),
        payload={"object": "Account", "external_id": "acme", "fields": {"Name": "Acme AG"}},
    )
    outcomes = connector.execute(
        [write_back(ids[0], 0), bad_picklist, write_back(ids[2], 2), upsert]
    )
    assert isinstance(outcomes[0], Applied) and isinstance(outcomes[3], Applied)
    assert outcomes[3].result["created"] is True
    assert isinstance(outcomes[1], Permanent) and outcomes[1].error_class == "validation"
    assert "Payment_Status__c" in outcomes[1].message and ids[1] in outcomes[1].message
    assert isinstance(outcomes[2], Permanent) and outcomes[2].error_class == "not_found"
    repeat = connector.execute([upsert])  # the same upsert again: the same record, updated
    assert isinstance(repeat[0], Applied) and repeat[0].result["created"] is False


def test_session_expiry_is_renewed_transparently(server: SalesforceServer, api: Api) -> None:
    client = client_for(server)
    assert client.request("GET", "limits")["DailyApiRequests"]["Max"] > 0
    api.admin("POST", "revoke-sessions")
    assert client.request("GET", "limits")["DailyApiRequests"]["Max"] > 0


def test_quota_budget_paces_then_keeps_the_reserve(tmp_path: Path) -> None:
    waits: list[float] = []
    with running_salesforce(tmp_path / "sf", daily_api_requests=1000) as server:
        api = Api(server)
        api.admin("PUT", "api-usage", json={"used": 700})
        budget = QuotaBudget(reserve=0.1, sleep=waits.append)
        client = client_for(server, quota=budget)
        client.request("GET", "limits")  # learns the usage: 701 of 1000, plenty left
        client.request("GET", "limits")
        assert waits == []
        api.admin("PUT", "api-usage", json={"used": 850})
        for _ in range(3):
            client.request("GET", "limits")
        assert budget.paced_calls >= 2 and waits and all(w > 80 for w in waits)  # 86.4 s apart
        api.admin("PUT", "api-usage", json={"used": 899})
        client.request("GET", "limits")  # now 900 used: only the reserve is left
        with pytest.raises(QuotaExhausted) as refused:
            client.request("GET", "limits")
        assert refused.value.retry_after_s == budget.pause_s
        assert api.admin("GET", "stats").json()["api_usage"]["used"] == 900  # not spent
        api.close()


# --- the engine writing back under faults ---------------------------------------------------------
@dataclass(frozen=True)
class InvoiceWriteBack(Unsignalled):
    """A test flow (a fake of the Flow protocol): each billing record writes its invoice
    number and amount back onto its opportunity."""

    name: str = "test-write-back"

    def business_key(self, record: CanonicalRecord) -> str | None:
        return f"opportunity:{record.data['opportunity']}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        rid = str(record.data["opportunity"])
        command = Command(
            system="salesforce",
            operation="update",
            business_key=f"opportunity:{rid}",
            idempotency_key=idempotency_key("Opportunity", rid, record.version),
            payload={
                "object": "Opportunity",
                "id": rid,
                "fields": {
                    "Last_Invoice_Number__c": record.data["number"],
                    "Invoiced_Amount__c": record.data["amount"],
                },
            },
            entity=f"Opportunity:{rid}",
            impact=Impact.REVENUE,
        )
        return FlowStep("writing", {"version": record.version}, commands=(command,))

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        return FlowStep("written", dict(state.data))


def test_engine_writes_back_exactly_under_faults(tmp_path: Path) -> None:
    faults = FaultPlan(server_error=0.15, lost_response=0.15, timeout=0.05, seed=11)
    with running_salesforce(tmp_path / "sf", hang_s=3) as server:
        api = Api(server)
        ids = seed_opportunities(api, 600)
        api.admin("PUT", "faults", json=faults.__dict__)
        billing = MemorySystem(name="billing", source_objects=["Invoice"])
        for n, rid in enumerate(ids):
            billing.put(
                "Invoice", f"inv-{n}", {"opportunity": rid, "number": f"INV-{n}", "amount": "10.00"}
            )
        connector = SalesforceConnector(
            client_for(server, timeout_s=1.5), objects=("Opportunity",), batch_size=250
        )
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'hub.db'}",
            worker={"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.3, "lease_s": 10},
        )
        hub = build_hub(
            settings,
            connectors={"salesforce": connector, "billing": billing},
            bindings=[Binding("billing", "Invoice", "invoice", passthrough, (InvoiceWriteBack(),))],
            upgrade=True,
        )
        try:
            assert hub.worker.run_until_idle(timeout_s=200)
            for n, rid in enumerate(ids[:100]):  # a second version for some: applied in order
                billing.put(
                    "Invoice",
                    f"inv-{n}",
                    {"opportunity": rid, "number": f"INV-{n}-B", "amount": "20.00"},
                )
            hub.worker.poll_all()
            assert hub.worker.run_until_idle(timeout_s=200)
            stats = hub.operations.stats()
        finally:
            hub.close()
        api.admin("PUT", "faults", json={})
        rows = api.call(
            "GET",
            "query",
            params={"q": "SELECT Id, Last_Invoice_Number__c, Invoiced_Amount__c FROM Opportunity"},
        ).json()["records"]
        calls = api.admin("GET", "stats").json()["calls"]
        api.close()
    final = {r["Id"]: (r["Last_Invoice_Number__c"], r["Invoiced_Amount__c"]) for r in rows}
    for n, rid in enumerate(ids):
        assert final[rid] == ((f"INV-{n}-B", 20.0) if n < 100 else (f"INV-{n}", 10.0)), rid
    assert stats.commands_by_system["salesforce"] == {CommandStatus.DONE.value: 700}
    assert not stats.open_exceptions_by_class
    assert calls.get("query", 0) >= 1  # lost answers were looked up before any resend


# --- outbound messages into the hub ------------------------------------------------------------
@pytest.fixture
def hub_http(tmp_path: Path, server: SalesforceServer) -> Iterator[tuple[Hub, str]]:
    entry = server.as_json()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        systems={
            "salesforce": {
                "kind": "salesforce",
                "url": entry["instance_url"],
                "client_id": entry["client_id"],
                "client_secret": entry["client_secret"],
                "user": entry["username"],
                "password": entry["password"],
                "organization_id": entry["organization_id"],
                "ca_bundle": entry["ca_bundle"],
            }
        },
    )
    hub = build_hub(
        settings,
        bindings=[Binding("salesforce", "Opportunity", "opportunity", passthrough)],
        upgrade=True,
    )
    with serving(hub) as url:
        yield hub, url


def test_outbound_messages_reach_the_inbox_and_are_acked_after_commit(
    server: SalesforceServer, api: Api, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    api.admin(  # Salesforce side: two rules, one for an object the hub does not bind
        "PUT",
        "outbound-messages",
        json=[
            {
                "name": "won",
                "object": "Opportunity",
                "condition": "StageName = 'Closed Won'",
                "fields": ["Id", "Name", "StageName", "SystemModstamp"],
                "endpoint_url": f"{url}/webhooks/salesforce/outbound-message",
            },
            {
                "name": "contacts",
                "object": "Contact",
                "fields": ["Id", "LastName", "SystemModstamp"],
                "endpoint_url": f"{url}/webhooks/salesforce/outbound-message",
            },
        ],
    )
    account = api.call("POST", "sobjects/Account", json={"Name": "Push Co"}).json()["id"]
    won = api.call(
        "POST", "sobjects/Opportunity", json=opportunity("Push", account, StageName="Closed Won")
    ).json()["id"]
    api.call("POST", "sobjects/Contact", json={"LastName": "Unbound", "AccountId": account})
    deadline = time.monotonic() + 20
    while api.admin("GET", "stats").json()["outbound"]["delivered"] < 2:
        assert time.monotonic() < deadline, api.admin("GET", "stats").json()
        time.sleep(0.05)
    versions = inbox_versions(hub)
    assert [rid for rid, _ in versions] == [won]  # the contact was acknowledged, not stored
    assert api.admin("GET", "stats").json()["outbound"]["pending"] == 0
    ignored = httpx.get(f"{url}/metrics", headers=key_headers(hub)).text
    sample = 'closeloop_notifications_ignored_total{object="Contact",system="salesforce"}'
    assert f"{sample} 1.0" in ignored


def test_outbound_endpoint_refuses_malformed_and_foreign_envelopes(
    server: SalesforceServer, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    endpoint = f"{url}/webhooks/salesforce/outbound-message"
    xml = {"Content-Type": "text/xml; charset=utf-8"}
    garbage = httpx.post(endpoint, content=b"<not-soap/>", headers=xml)
    assert garbage.status_code == 500 and b"faultstring" in garbage.content
    fields = {"Id": "0065g0000000001AAA", "SystemModstamp": "2026-01-01T00:00:00.000Z"}
    foreign = envelope("00D000000000001AAA", "04k", "https://x", [("04l1", "Opportunity", fields)])
    refused = httpx.post(endpoint, content=foreign, headers=xml)
    assert refused.status_code == 500 and b"not the configured org" in refused.content
    no_stamp = envelope(  # a notification only: the record is read (the org has none such)
        server.settings.organization_id,
        "04k",
        "https://x",
        [("04l2", "Opportunity", {"Id": "0065g0000000001AAA"})],
    )
    taken = httpx.post(endpoint, content=no_stamp, headers=xml)
    assert taken.status_code == 200 and b"<Ack>true</Ack>" in taken.content
    assert inbox_versions(hub) == []


def test_benchmark_uses_the_fewest_requests_the_api_allows() -> None:
    """``closeloop bench salesforce`` runs (small) and its request counts meet the floor."""
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "closeloop.cli",
            "bench",
            "salesforce",
            "--runs",
            "1",
            "--opportunities",
            "2500",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    figures = json.loads(result.stdout)
    for direction, requests in (("inbound", 2), ("outbound", 3)):  # per 2,500 opportunities
        spent = figures[f"{direction}_calls_per_1000"] * 2.5
        assert (
            spent == pytest.approx(requests) == figures[f"{direction}_floor_calls_per_1000"] * 2.5
        )
    assert figures["inbound_per_s"] > 0 and figures["outbound_per_s"] > 0
