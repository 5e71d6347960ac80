"""Salesforce outbound messages as notifications (issue 17), against the Salesforce sandbox
over real HTTPS and the hub's HTTP app over real HTTP: the hub reads the notified records
(one query per object per message), acknowledges only after the inbox commit, answers a
fault when Salesforce cannot be read, refuses timestamps beyond the clock skew with an
exception that does not pin the record, and reports objects no flow is bound to (metric,
audit, ``closeloop check``) without growing ``/metrics``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from closeloop.bootstrap import Hub, build_http_app, build_hub
from closeloop.config import Settings
from closeloop.connectors.salesforce.connector import SalesforceConnector
from closeloop.domain.changes import Change, parse_instant
from closeloop.engine.notifications import MAX_NAMES, ignored_objects
from closeloop.ports.flows import Binding
from closeloop.sandboxes.salesforce.outbound import envelope, is_ack
from closeloop.sandboxes.salesforce.server import SalesforceServer
from closeloop.store.tables import inbox
from tests.conftest import key_headers, serving
from tests.salesforce_support import Api, opportunity, running_salesforce

pytestmark = pytest.mark.timeout(300)
XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def passthrough(change: Change) -> dict[str, Any]:
    return dict(change.payload)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SalesforceServer]:
    with running_salesforce(tmp_path / "sf") as started:
        yield started


@pytest.fixture
def api(server: SalesforceServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def system_settings(server: SalesforceServer) -> dict[str, Any]:
    entry = server.as_json()
    return {
        "kind": "salesforce",
        "url": entry["instance_url"],
        "client_id": entry["client_id"],
        "client_secret": entry["client_secret"],
        "user": entry["username"],
        "password": entry["password"],
        "organization_id": entry["organization_id"],
        "ca_bundle": entry["ca_bundle"],
    }


@pytest.fixture
def hub_http(tmp_path: Path, server: SalesforceServer) -> Iterator[tuple[Hub, str]]:
    """A hub binding Opportunity (no flows), its HTTP app served by uvicorn."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        systems={"salesforce": system_settings(server)},
    )
    hub = build_hub(
        settings,
        bindings=[Binding("salesforce", "Opportunity", "opportunity", passthrough)],
        upgrade=True,
    )
    with serving(hub) as url:
        yield hub, url


def rows(hub: Hub) -> list[tuple[str, str, str]]:
    """``(external id, version, status)`` of every inbox row."""
    with hub.store.engine.connect() as db:
        found = db.execute(
            sa.select(inbox.c.external_id, inbox.c.version, inbox.c.status).order_by(inbox.c.id)
        ).all()
    return [(r[0], r[1], r[2]) for r in found]


def notify(
    server: SalesforceServer, url: str, *notes: tuple[str, dict[str, Any]]
) -> httpx.Response:
    """POST an outbound message of ``(object, fields)`` notifications, as the org would."""
    body = envelope(
        server.settings.organization_id,
        "04k5g000000TEST",
        server.as_json()["instance_url"],
        [(f"04l5g{n:013d}", sobject, fields) for n, (sobject, fields) in enumerate(notes)],
    )
    return httpx.post(f"{url}/webhooks/salesforce/outbound-message", content=body, headers=XML)


def new_deal(api: Api, name: str, **fields: Any) -> dict[str, Any]:
    account = api.call("POST", "sobjects/Account", json={"Name": f"{name} Co"}).json()["id"]
    rid = api.call("POST", "sobjects/Opportunity", json=opportunity(name, account, **fields))
    record: dict[str, Any] = api.call("GET", f"sobjects/Opportunity/{rid.json()['id']}").json()
    return record


def wait_delivered(api: Api, count: int) -> None:
    deadline = time.monotonic() + 20
    while api.admin("GET", "stats").json()["outbound"]["delivered"] < count:
        assert time.monotonic() < deadline, api.admin("GET", "stats").json()
        time.sleep(0.05)


def test_a_message_without_systemmodstamp_is_read_and_taken(
    server: SalesforceServer, api: Api, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    api.admin(  # a real rule: only the fields the admin picked, no SystemModstamp
        "PUT",
        "outbound-messages",
        json=[
            {
                "name": "won",
                "object": "Opportunity",
                "condition": "StageName = 'Closed Won'",
                "fields": ["Id", "StageName"],
                "endpoint_url": f"{url}/webhooks/salesforce/outbound-message",
            }
        ],
    )
    deal = new_deal(api, "Lean", StageName="Closed Won")
    wait_delivered(api, 1)
    assert api.admin("GET", "stats").json()["outbound"]["pending"] == 0  # acknowledged
    ((rid, version, status),) = rows(hub)
    assert (rid, status) == (deal["Id"], "pending")
    assert parse_instant(version) == parse_instant(deal["SystemModstamp"])  # the real one
    with hub.store.transaction() as tx:
        (row,) = tx.claim_inbox(10)
    assert row.change.payload["Name"] == "Lean"  # read whole, as polling reads it
    assert row.change.payload["Account"]["Name"] == "Lean Co"


def test_one_query_per_object_per_message(
    server: SalesforceServer, api: Api, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    deals = [new_deal(api, f"Bulk {n}") for n in range(5)]
    connector = hub.registry.connector("salesforce")
    assert isinstance(connector, SalesforceConnector)
    connector.select_list("Opportunity")  # describes are cached per object: not counted
    before = dict(connector.client.calls)
    notes = [("Opportunity", {"Id": d["Id"], "Name": "as sent"}) for d in deals]
    notes.append(("Opportunity", {"Id": deals[0]["Id"]}))  # a repeat in the same message
    assert is_ack(notify(server, url, *notes).content)
    spent = {k: v - before.get(k, 0) for k, v in connector.client.calls.items()}
    assert {k: v for k, v in spent.items() if v} == {"queryAll": 1}
    assert sorted(r[0] for r in rows(hub)) == sorted(d["Id"] for d in deals)


def test_a_forged_future_stamp_is_only_a_hint_and_never_pins_the_record(
    server: SalesforceServer, api: Api, hub_http: tuple[Hub, str]
) -> None:
    """A message stamped 2099 (today's bug: applied, it pinned the record so the next
    genuine edit was dropped as stale) makes the hub read the record; what is stored is the
    record as Salesforce has it. Forged ids the org does not have leave nothing behind."""
    hub, url = hub_http
    deal = new_deal(api, "Pinned")
    forged = {"Id": deal["Id"], "Name": "Forged", "SystemModstamp": "2099-01-01T00:00:00.000Z"}
    invented = [
        ("Opportunity", {"Id": f"0065g00000Z{n:04d}AAA", "SystemModstamp": "2099-01-01T00:00:00Z"})
        for n in range(50)
    ]
    answer = notify(server, url, ("Opportunity", forged), *invented)
    assert is_ack(answer.content)
    ((rid, version, status),) = rows(hub)  # the real record only, nothing of the invented ids
    assert (rid, status) == (deal["Id"], "pending") and not version.startswith("2099")
    assert hub.operations.list_exceptions() == []
    assert hub.applier.apply_batch() == 1

    # the genuine next edit, as Salesforce notifies it, is read and applied, not stale
    api.admin(
        "PUT",
        "outbound-messages",
        json=[
            {
                "name": "any",
                "object": "Opportunity",
                "fields": ["Id"],
                "endpoint_url": f"{url}/webhooks/salesforce/outbound-message",
            }
        ],
    )
    patched = api.call("PATCH", f"sobjects/Opportunity/{deal['Id']}", json={"Name": "Edited"})
    assert patched.status_code == 204
    wait_delivered(api, 1)
    assert hub.applier.apply_batch() == 1
    (first, edit_row) = rows(hub)
    assert first[2] == "applied" and edit_row[2] == "applied"
    with hub.store.transaction() as tx:
        (record,) = tx.applied_records([("salesforce", "Opportunity", deal["Id"])]).values()
    assert record.data["Name"] == "Edited" and record.version == edit_row[1]


def test_a_future_systemmodstamp_read_from_salesforce_is_refused(
    server: SalesforceServer, api: Api, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    stamp = "2099-06-01T00:00:00.000+0000"
    seeded = api.admin(
        "POST",
        "seed",
        json={
            "Account": [{"Id": "0015g00000FUT00AAA", "Name": "Future", "SystemModstamp": stamp}],
            "Opportunity": [
                opportunity(
                    "Future", "0015g00000FUT00AAA", Id="0065g00000FUT00AAA", SystemModstamp=stamp
                )
            ],
        },
    )
    assert seeded.status_code == 200, seeded.text
    fine = new_deal(api, "Fine")
    answer = notify(
        server,
        url,
        ("Opportunity", {"Id": "0065g00000FUT00AAA"}),
        ("Opportunity", {"Id": fine["Id"]}),
    )
    assert is_ack(answer.content)
    assert {(r[0], r[2]) for r in rows(hub)} == {
        ("0065g00000FUT00AAA", "rejected"),  # one bad record fails alone
        (fine["Id"], "pending"),
    }
    (exc,) = hub.operations.list_exceptions()
    assert "0065g00000FUT00AAA" in exc.message and "as read from Salesforce" in exc.message


def test_when_salesforce_cannot_be_read_the_answer_is_a_fault_and_the_retry_is_taken(
    server: SalesforceServer, api: Api, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    deal = new_deal(api, "Retry")
    api.admin("PUT", "faults", json={"server_error": 1.0})
    failed = notify(server, url, ("Opportunity", {"Id": deal["Id"]}))
    assert failed.status_code == 500 and not is_ack(failed.content)
    assert b"soapenv:Server" in failed.content and b"deliver again later" in failed.content
    assert rows(hub) == []
    api.admin("PUT", "faults", json={})
    assert is_ack(notify(server, url, ("Opportunity", {"Id": deal["Id"]})).content)
    assert [r[0] for r in rows(hub)] == [deal["Id"]]


def test_bad_envelopes_and_media_types_are_refused(
    server: SalesforceServer, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    endpoint = f"{url}/webhooks/salesforce/outbound-message"
    good = envelope(
        server.settings.organization_id,
        "04k",
        "https://x",
        [("n", "Opportunity", {"Id": "0065g0000000001AAA"})],
    )
    json_type = httpx.post(endpoint, content=good, headers={"Content-Type": "application/json"})
    assert json_type.status_code == 415 and "text/xml" in json_type.json()["detail"]
    soap12 = httpx.post(endpoint, content=good, headers={"Content-Type": "application/soap+xml"})
    assert is_ack(soap12.content)  # an id the org does not have: acknowledged, nothing stored
    bad_id = envelope(
        server.settings.organization_id,
        "04k",
        "https://x",
        [("n", "Opportunity", {"Id": "x' OR Id != '"})],
    )
    refused = httpx.post(endpoint, content=bad_id, headers=XML)
    assert refused.status_code == 500 and b"bad record Id" in refused.content
    bad_stamp = envelope(
        server.settings.organization_id,
        "04k",
        "https://x",
        [("n", "Opportunity", {"Id": "0065g0000000001AAA", "SystemModstamp": "soon"})],
    )
    assert b"is not a date and time" in httpx.post(endpoint, content=bad_stamp, headers=XML).content
    assert rows(hub) == []


def test_unbound_objects_are_acknowledged_counted_recorded_and_checked(
    tmp_path: Path, server: SalesforceServer, hub_http: tuple[Hub, str]
) -> None:
    hub, url = hub_http
    contact = ("Contact", {"Id": "0035g00000C0001AAA", "LastName": "Nobody"})
    before = httpx.get(f"{url}/metrics", headers=key_headers(hub)).text
    assert is_ack(notify(server, url, contact, contact).content)
    for n in range(120):  # invented names: bounded labels, bounded audit
        invented = (f"Invented{n}__c", {"Id": f"a005g00000X{n:04d}AAA"})
        assert is_ack(notify(server, url, invented).content)
    assert rows(hub) == []
    metrics = httpx.get(f"{url}/metrics", headers=key_headers(hub)).text
    sample = "closeloop_notifications_ignored_total"
    assert f'{sample}{{object="Contact",system="salesforce"}} 2.0' in metrics
    assert f'{sample}{{object="(other)",system="salesforce"}} 120.0' in metrics
    assert "Invented" not in metrics
    assert len(metrics) - len(before) < 1000
    recorded = [str(e.detail["object"]) for e in ignored_objects(hub.store, "salesforce")]
    assert recorded[0] == "Contact" and len(recorded) == MAX_NAMES

    config = tmp_path / "check.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": str(hub.settings.database_url),
                "systems": {"salesforce": system_settings(server)},
            }
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "closeloop.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        "warning: salesforce sends notifications for Contact, which no flow is bound to"
        in checked.stdout
    )
    assert "remove Contact from the org's outbound-message rule" in checked.stdout


def test_with_a_token_only_messages_to_the_tokened_url_are_taken(
    tmp_path: Path, server: SalesforceServer, api: Api
) -> None:
    token = "s3cret-of-the-outbound-rule"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        systems={"salesforce": {**system_settings(server), "outbound_token": token}},
    )
    hub = build_hub(
        settings,
        bindings=[Binding("salesforce", "Opportunity", "opportunity", passthrough)],
        upgrade=True,
    )
    try:
        deal = new_deal(api, "Tokened")
        body = envelope(
            server.settings.organization_id,
            "04k5g000000TEST",
            server.as_json()["instance_url"],
            [("04l5g0000000000001", "Opportunity", {"Id": deal["Id"]})],
        )
        app = build_http_app(hub)

        async def post(query: str) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
                path = f"/webhooks/salesforce/outbound-message{query}"
                return await http.post(path, content=body, headers=XML)

        for query in ("", "?token=guess-of-the-outbound-rule", f"?token={token}x"):
            refused = asyncio.run(post(query))
            assert refused.status_code == 500 and b"token" in refused.content
        assert rows(hub) == []
        assert is_ack(asyncio.run(post(f"?token={token}")).content)
        assert [(r[0], r[2]) for r in rows(hub)] == [(deal["Id"], "pending")]
    finally:
        hub.close()
