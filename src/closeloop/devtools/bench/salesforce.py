"""``closeloop bench salesforce``: opportunities per second and API requests per 1,000
opportunities, in each direction, through the engine and the connector against the Salesforce
sandbox with a real org's limits (100,000 requests a day, 25 concurrent).

- inbound: one poll of every opportunity (with its line items) into the hub's inbox;
- outbound: one write-back ``update`` per opportunity (invoice figures), from the outbox
  through the dispatcher.

Next to each: the fewest requests the API allows (2,000 records per query page; 5
Collections of 200 records per Composite request) and the records per second the daily
allocation sustains over 24 hours at that rate.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from closeloop.bootstrap import build_hub
from closeloop.config import Settings
from closeloop.connectors.salesforce.client import SalesforceClient, SalesforceCredentials
from closeloop.connectors.salesforce.connector import SalesforceConnector, idempotency_key
from closeloop.domain.changes import Change
from closeloop.domain.commands import Command, Impact
from closeloop.ports.flows import Binding
from closeloop.ports.store import NewCommand
from closeloop.sandboxes.salesforce.server import start_salesforce
from closeloop.sandboxes.tryton.server import free_port, stop_pid

ALLOCATION = 100_000  #: Enterprise Edition's base daily allocation
QUERY_PAGE = 2000
WRITES_PER_REQUEST = 200 * 5
DAY_S = 86_400


def _payload(change: Change) -> dict[str, Any]:
    return dict(change.payload)


def _seed(url: str, verify: Any, count: int) -> None:
    account = "0015g00000BENCHAAA"
    product = "01t5g00000BENCHAAA"
    opportunities, lines = [], []
    for i in range(count):
        rid = f"0065g{i:010d}AAA"
        opportunities.append(
            {
                "Id": rid,
                "Name": f"Bench deal {i}",
                "AccountId": account,
                "StageName": "Closed Won",
                "CloseDate": "2026-06-30",
                "Billing_Method__c": "Time and Materials",
            }
        )
        for role, rate in (("Consultant", 150), ("Analyst", 95)):
            lines.append(
                {
                    "OpportunityId": rid,
                    "Product2Id": product,
                    "Quantity": 40,
                    "UnitPrice": rate,
                    "Role__c": role,
                }
            )
    data = {
        "Account": [{"Id": account, "Name": "Bench Account"}],
        "Product2": [{"Id": product, "Name": "Consulting"}],
        "Opportunity": opportunities,
        "OpportunityLineItem": lines,
    }
    response = httpx.post(f"{url}/__sandbox/seed", json=data, verify=verify, timeout=600)
    response.raise_for_status()


def _spent(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


def run_salesforce_bench(opportunities: int = 2000, runs: int = 3) -> dict[str, Any]:
    """Run the benchmark; medians over ``runs`` of each figure."""
    import ssl

    inbound_rates, outbound_rates, inbound_calls, outbound_calls = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="closeloop-bench-sf-") as tmp:
        server = start_salesforce(
            Path(tmp) / "sf", free_port(), daily_api_requests=ALLOCATION, max_concurrent=25
        )
        try:
            entry = server.as_json()
            verify = ssl.create_default_context(cafile=entry["ca_bundle"])
            _seed(entry["url"], verify, opportunities)
            credentials = SalesforceCredentials(
                instance_url=entry["instance_url"],
                client_id=entry["client_id"],
                client_secret=entry["client_secret"],
                username=entry["username"],
                password=entry["password"],
                ca_bundle=entry["ca_bundle"],
            )
            connector = SalesforceConnector(SalesforceClient(credentials), objects=("Opportunity",))
            connector.select_list("Opportunity")  # describe once, as a running hub does
            for run in range(runs):
                settings = Settings(database_url=f"sqlite:///{tmp}/hub-{run}.db")
                hub = build_hub(
                    settings,
                    connectors={"salesforce": connector},
                    bindings=[Binding("salesforce", "Opportunity", "opportunity", _payload)],
                    upgrade=True,  # a fresh database per run
                )
                try:
                    written = datetime.now(UTC)  # seeded, or written back by the last run
                    while connector.client.server_now() <= written:  # a poll reads up to the
                        time.sleep(0.05)  # org's clock in whole seconds: let it pass the writes
                    before = dict(connector.client.calls)
                    start = time.perf_counter()
                    accepted = hub.intake.poll("salesforce", "Opportunity", 60).accepted
                    inbound_rates.append(accepted / (time.perf_counter() - start))
                    inbound_calls.append(_spent(before, connector.client.calls))
                    commands = [
                        NewCommand(_write_back(run, i), "bench", None) for i in range(opportunities)
                    ]
                    with hub.store.transaction() as tx:
                        tx.add_commands(commands, datetime.now(UTC))
                    before = dict(connector.client.calls)
                    start = time.perf_counter()
                    while hub.dispatcher.dispatch_once():
                        pass
                    outbound_rates.append(opportunities / (time.perf_counter() - start))
                    outbound_calls.append(_spent(before, connector.client.calls))
                finally:
                    hub.dispatcher.close()
                    hub.store.close()
            connector.close()
        finally:
            stop_pid(server.pid)
    per_1000 = 1000 / opportunities
    floor_in = math.ceil(opportunities / QUERY_PAGE)
    floor_out = math.ceil(opportunities / WRITES_PER_REQUEST)
    return {
        "opportunities": opportunities,
        "runs": runs,
        "inbound_per_s": statistics.median(inbound_rates),
        "inbound_calls_per_1000": statistics.median(inbound_calls) * per_1000,
        "inbound_floor_calls_per_1000": floor_in * per_1000,
        "inbound_quota_bound_per_s": ALLOCATION * QUERY_PAGE / DAY_S,
        "outbound_per_s": statistics.median(outbound_rates),
        "outbound_calls_per_1000": statistics.median(outbound_calls) * per_1000,
        "outbound_floor_calls_per_1000": floor_out * per_1000,
        "outbound_quota_bound_per_s": ALLOCATION * WRITES_PER_REQUEST / DAY_S,
    }


def _write_back(run: int, i: int) -> Command:
    rid = f"0065g{i:010d}AAA"
    return Command(
        system="salesforce",
        operation="update",
        business_key=f"opportunity:{rid}",
        idempotency_key=idempotency_key("Opportunity", rid, f"bench-{run}"),
        payload={
            "object": "Opportunity",
            "id": rid,
            "fields": {
                "Invoiced_Amount__c": "9800.00",
                "Paid_Amount__c": "4900.00",
                "Outstanding_Amount__c": "4900.00",
                "Last_Invoice_Number__c": f"INV-{run}-{i}",
                "Payment_Status__c": "Partially Paid",
            },
        },
        entity=f"Opportunity:{rid}",
        impact=Impact.REVENUE,
    )
