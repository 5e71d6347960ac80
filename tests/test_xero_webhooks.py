"""Xero webhooks, both ends, over real HTTP: the sandbox (its own process) subscribes a URL
with Intent to receive and delivers signed events of contacts, invoices and credit notes;
the hub's route (``POST /webhooks/xero/{system}`` in the hub's app, served by uvicorn)
verifies ``x-xero-signature``, answers as Xero demands, and reads the named records back
from the sandbox through a stand-in for the Xero connector (which does not exist yet) that
implements :class:`~closeloop.connectors.xero.webhook.NotifiedReader`. Signatures are
checked against values computed here with ``hmac`` and, when ../shared/realdata is present,
against its Xero vector; deliveries validate against Xero's Webhooks OpenAPI description
there (skipped, with the reason, when absent)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from closeloop.bootstrap import Hub, build_http_app, build_hub
from closeloop.config import Settings
from closeloop.connectors.xero.webhook import (
    OTHER_TENANT,
    NotifiedReader,
    signature,
    verified,
    webhook_router,
)
from closeloop.devtools.sandboxctl import alive
from closeloop.domain.changes import Change
from closeloop.ports.connector import ConnectorLimits
from closeloop.ports.flows import Binding
from closeloop.sandboxes.tryton.server import stop_pid
from closeloop.sandboxes.xero import webhooks as sandbox_webhooks
from closeloop.sandboxes.xero.server import XeroServer, start_xero
from closeloop.store.tables import inbox
from tests.conftest import free_port, wait_for, wait_http

pytestmark = pytest.mark.timeout(120)

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
VECTORS = REALDATA / "webhook-signature-vectors" / "vectors.json"
CONTRACT = REALDATA / "xero-openapi" / "xero-webhooks.yaml"
ROOMY = {"minute": 10_000, "day": 100_000, "concurrent": 50}
KEY = "hub-test-key-" + "k" * 40
FAST = {"batch_s": 0.1, "timeout_s": 2.0, "retry_first_s": 0.2, "retry_max_s": 0.5}


# --- servers -------------------------------------------------------------------------------------
@contextlib.contextmanager
def serving_app(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on 127.0.0.1 (as conftest's ``serving`` serves a
    hub's app; the hub's app here has the Xero route added); its base URL."""
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XeroServer]:
    started = start_xero(tmp_path_factory.mktemp("xero"), free_port(), **ROOMY)
    try:
        yield started
    finally:
        stop_pid(started.pid)
        assert not alive(started.pid), f"sandbox process {started.pid} outlived its stop"


class Api:
    """A caller of the sandbox's Accounting API (a fresh token, the tenant header) and of
    its admin routes."""

    def __init__(self, server: XeroServer) -> None:
        self.server = server
        grant = httpx.post(
            server.token_url,
            auth=(server.client_id, server.client_secret),
            data={"grant_type": "client_credentials"},
        )
        assert grant.status_code == 200, grant.text
        self.http = httpx.Client(
            timeout=10,
            headers={
                "Authorization": f"Bearer {grant.json()['access_token']}",
                "xero-tenant-id": server.tenant_id,
            },
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"{self.server.base_url}/{path}", **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}/__sandbox/{path}", timeout=30, **kwargs)

    def subscribe(self, url: str, key: str = KEY, **timings: float) -> dict[str, Any]:
        answer = self.admin("PUT", "webhook", json={"url": url, "key": key, **FAST, **timings})
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state

    def contact(self, name: str) -> str:
        answer = self.call("PUT", "Contacts", json={"Contacts": [{"Name": name}]})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["Contacts"][0]["ContactID"])

    def invoice(self, contact_id: str, **fields: Any) -> str:
        element = {
            "Type": "ACCREC",
            "Contact": {"ContactID": contact_id},
            "LineItems": [
                {"Description": "Consulting", "Quantity": "1", "UnitAmount": "100.00"}
                | {"AccountCode": "200", "TaxType": "OUTPUT2"}
            ],
            **fields,
        }
        answer = self.call("PUT", "Invoices", json={"Invoices": [element]})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["Invoices"][0]["InvoiceID"])


@pytest.fixture
def api(server: XeroServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.admin("DELETE", "webhook")
    client.http.close()


# --- the hub, with a stand-in for the Xero connector ---------------------------------------------
_ID_KEYS = {"Invoices": "InvoiceID", "Contacts": "ContactID", "CreditNotes": "CreditNoteID"}
_MSDATE = re.compile(r"/Date\((\d+)")


@dataclass
class SandboxReader:
    """The part of a Xero connector the webhook route uses (:class:`NotifiedReader`) and the
    rest of the Connector protocol as no-ops: reads records by id from the sandbox
    (``GET /{object}?IDs=...``) and remembers what it was asked."""

    api: Api
    system: str = "xero"
    limits: ConnectorLimits = field(default_factory=ConnectorLimits)
    asked: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def objects(self) -> Sequence[str]:
        return ("Invoices", "Contacts")

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        return iter(())

    def execute(self, commands: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Any]:
        return {}

    def read_records(self, object_name: str, ids: Sequence[str]) -> Sequence[Change]:
        self.asked.append((object_name, tuple(ids)))
        answer = self.api.call("GET", object_name, params={"IDs": ",".join(ids)})
        answer.raise_for_status()
        changes = []
        for record in answer.json()[object_name]:
            stamp = int(_MSDATE.match(record["UpdatedDateUTC"]).group(1))  # type: ignore[union-attr]
            changes.append(
                Change(
                    system=self.system,
                    object=object_name,
                    external_id=record[_ID_KEYS[object_name]],
                    version=str(stamp),
                    payload=record,
                    modified_at=datetime.fromtimestamp(stamp / 1000, UTC),
                )
            )
        return changes

    def ids(self) -> set[str]:
        return {i for _, ids in self.asked for i in ids}


@dataclass(frozen=True)
class XeroOrg:
    """A Xero system's settings as the route reads them (:class:`XeroWebhookSettings`)."""

    tenant_id: str
    webhook_key: str | None


def passthrough(change: Change) -> dict[str, Any]:
    return dict(change.payload)


@dataclass
class HubUnderTest:
    hub: Hub
    url: str
    reader: SandboxReader

    @property
    def hook(self) -> str:
        return f"{self.url}/webhooks/xero/xero"

    def inbox(self) -> list[tuple[str, str]]:
        with self.hub.store.engine.connect() as db:
            rows = db.execute(sa.select(inbox.c.object, inbox.c.external_id)).all()
        return [(r[0], r[1]) for r in rows]

    def ignored(self, object_name: str) -> float:
        value = self.hub.metrics.registry.get_sample_value(
            "closeloop_notifications_ignored_total", {"system": "xero", "object": object_name}
        )
        return value or 0.0


@pytest.fixture
def hub(tmp_path: Path, server: XeroServer, api: Api) -> Iterator[HubUnderTest]:
    """A hub binding Xero's Invoices and Contacts (no flows; credit notes unbound), its app
    with the Xero route for the system ``xero`` (the sandbox's tenant, key :data:`KEY`) and
    ``nokey`` (no key), served by uvicorn."""
    reader = SandboxReader(api)
    assert isinstance(reader, NotifiedReader)
    built = build_hub(
        Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}"),
        connectors={"xero": reader},  # type: ignore[dict-item]
        bindings=[
            Binding("xero", "Invoices", "invoice", passthrough),
            Binding("xero", "Contacts", "customer", passthrough),
        ],
        upgrade=True,
    )
    app = build_http_app(built)
    systems = {
        "xero": XeroOrg(server.tenant_id, KEY),
        "nokey": XeroOrg(server.tenant_id, None),
    }
    app.include_router(webhook_router(built.intake, systems))
    try:
        with serving_app(app) as url:
            yield HubUnderTest(built, url, reader)
    finally:
        built.close()


# --- receivers that are not the hub --------------------------------------------------------------
@dataclass
class Delivery:
    body: bytes
    signature: str
    at: float


@dataclass
class Receiver:
    """A webhook receiver: ``answer(delivery, n)`` gives the status (and body) of the n-th
    event delivery (Intent to receive answered by the signature, unless ``lax``)."""

    key: str = KEY
    lax: bool = False
    answer: Callable[[Delivery, int], tuple[int, bytes]] = lambda d, n: (200, b"")
    hang: dict[int, float] = field(default_factory=dict)
    """Seconds to wait before answering the n-th event delivery."""
    deliveries: list[Delivery] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            sent = request.headers.get("x-xero-signature", "")
            expected = base64.b64encode(
                hmac.new(self.key.encode(), body, hashlib.sha256).digest()
            ).decode()
            if json.loads(body)["events"] == []:  # Intent to receive
                ok = self.lax or hmac.compare_digest(sent, expected)
                return Response(status_code=200 if ok else 401)
            delivery = Delivery(body, sent, time.monotonic())
            self.deliveries.append(delivery)
            await asyncio.sleep(self.hang.get(len(self.deliveries), 0))
            status, content = self.answer(delivery, len(self.deliveries))
            return Response(content, status_code=status)

        return app

    def events(self) -> list[dict[str, Any]]:
        """Every event delivered (once per payload accepted or not)."""
        return [e for d in self.deliveries for e in json.loads(d.body)["events"]]


@contextlib.contextmanager
def receiving(receiver: Receiver) -> Iterator[str]:
    with serving_app(receiver.app()) as url:
        yield f"{url}/hook"


def b64_hmac(key: str, body: bytes) -> str:
    """The expected signature, computed here with the standard library."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def signed_post(url: str, body: bytes, key: str = KEY) -> httpx.Response:
    headers = {"Content-Type": "application/json", "x-xero-signature": b64_hmac(key, body)}
    return httpx.post(url, content=body, headers=headers, timeout=10)


def event_payload(tenant_id: str, category: str, resource_id: str) -> bytes:
    event = {
        "resourceUrl": f"https://api.xero.com/api.xro/2.0/X/{resource_id}",
        "resourceId": resource_id,
        "eventDateUtc": "2026-01-05T10:00:00.123",
        "eventType": "UPDATE",
        "eventCategory": category,
        "tenantId": tenant_id,
        "tenantType": "ORGANISATION",
    }
    body = {"events": [event], "firstEventSequence": 1, "lastEventSequence": 1, "entropy": "X"}
    return json.dumps(body).encode()


# --- signatures ----------------------------------------------------------------------------------
ITR_BODY = b'{"events":[],"lastEventSequence":0,"firstEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}'


def test_the_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    expected = base64.b64encode(hmac.new(b"ABC123", ITR_BODY, hashlib.sha256).digest()).decode()
    assert expected == "BliCoqBVe1yagQ1XkGYaIdLyTq+hRS0vVpVeoBQyu7A="  # openssl dgst -hmac
    assert signature("ABC123", ITR_BODY) == expected
    assert sandbox_webhooks.signature("ABC123", ITR_BODY) == expected
    assert verified("ABC123", ITR_BODY, expected)
    assert not verified("ABC123", ITR_BODY + b" ", expected)
    assert not verified("ABC124", ITR_BODY, expected)
    assert not verified("ABC123", ITR_BODY, None)
    assert not verified("ABC123", ITR_BODY, "")
    assert not verified("ABC123", ITR_BODY, "é" + expected)


def test_the_shared_xero_vector() -> None:
    if not VECTORS.exists():
        pytest.skip(f"no signature vectors at {VECTORS}")
    found = [v for v in json.loads(VECTORS.read_text())["vectors"] if v["vendor"] == "xero"]
    assert found, "the vectors file has no Xero vector"
    for vector in found:
        key, body = vector["inputs"]["webhook_key"], vector["inputs"]["body"].encode()
        assert b64_hmac(key, body) == vector["expected"]
        assert signature(key, body) == vector["expected"]
        assert sandbox_webhooks.signature(key, body) == vector["expected"]
        assert verified(key, body, vector["expected"])
        assert not verified(key, body.replace(b"DRAFT", b"PAID"), vector["expected"])


# --- the hub's route -----------------------------------------------------------------------------
def test_the_hub_route_answers_as_xero_requires(hub: HubUnderTest) -> None:
    good = signed_post(hub.hook, ITR_BODY)
    assert (good.status_code, good.content) == (200, b"")
    assert "set-cookie" not in good.headers
    wrong = signed_post(hub.hook, ITR_BODY, key="another key")
    assert (wrong.status_code, wrong.content) == (401, b"")
    unsigned = httpx.post(hub.hook, content=ITR_BODY, headers={"Content-Type": "application/json"})
    assert (unsigned.status_code, unsigned.content) == (401, b"")
    nokey = signed_post(f"{hub.url}/webhooks/xero/nokey", ITR_BODY)
    assert (nokey.status_code, nokey.content) == (401, b"")
    assert signed_post(f"{hub.url}/webhooks/xero/unknown", ITR_BODY).status_code == 404
    malformed = signed_post(hub.hook, b'["not", "a payload"]')
    assert (malformed.status_code, malformed.content) == (400, b"")
    huge = b'{"events":[],"entropy":"' + b"x" * 1_100_000 + b'"}'
    assert signed_post(hub.hook, huge).status_code == 413  # http.max_body_bytes
    assert hub.reader.asked == [] and hub.inbox() == []


def test_intent_to_receive_succeeds_against_the_hub(api: Api, hub: HubUnderTest) -> None:
    state = api.subscribe(hub.hook)
    assert state["status"] == "OK" and state["reason"] is None
    assert api.admin("GET", "webhook").json()["status"] == "OK"
    assert hub.reader.asked == []


def test_intent_to_receive_fails_against_a_receiver_that_takes_bad_signatures(api: Api) -> None:
    with receiving(Receiver(lax=True)) as url:
        state = api.subscribe(url)
    assert state["status"] == "FAILED"
    assert state["reason"] == "the incorrectly signed payload answered 200, not 401"
    with receiving(Receiver(key="not the subscription's key")) as url:
        state = api.subscribe(url)
    assert state["status"] == "FAILED"
    assert state["reason"] == "the correctly signed payload answered 401, not 200"
    api.contact(f"Nobody told {uuid.uuid4().hex[:6]}")  # a failed subscription gets nothing
    time.sleep(0.3)
    assert api.admin("GET", "webhook").json()["delivered_events"] == 0


def test_a_sandbox_change_reaches_the_hub_and_is_read_back(api: Api, hub: HubUnderTest) -> None:
    assert api.subscribe(hub.hook)["status"] == "OK"
    contact = api.contact(f"Acme {uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    invoice = api.invoice(contact, Reference="SF-1/2026-01")
    assert time.monotonic() - started < 2
    wait_for(lambda: {contact, invoice} <= hub.reader.ids())
    assert ("Contacts", contact) in hub.inbox() and ("Invoices", invoice) in hub.inbox()
    updated = api.call(
        "POST", f"Invoices/{invoice}", json={"Invoices": [{"Reference": "SF-1/2026-02"}]}
    )
    assert updated.status_code == 200, updated.text
    wait_for(lambda: [r for r in hub.inbox() if r == ("Invoices", invoice)][1:])
    state = api.admin("GET", "webhook").json()
    assert state["failed_attempts"] == 0 and state["delivered_events"] >= 3


def test_a_tampered_delivery_is_refused_and_nothing_is_read(api: Api, hub: HubUnderTest) -> None:
    receiver = Receiver()
    with receiving(receiver) as url:
        assert api.subscribe(url)["status"] == "OK"
        contact = api.contact(f"Initech {uuid.uuid4().hex[:6]}")
        wait_for(lambda: receiver.deliveries)
    genuine = receiver.deliveries[0]
    assert json.loads(genuine.body)["events"][0]["resourceId"] == contact
    other = api.contact(f"Globex {uuid.uuid4().hex[:6]}")
    tampered = genuine.body.replace(contact.encode(), other.encode())
    headers = {"Content-Type": "application/json", "x-xero-signature": genuine.signature}
    refused = httpx.post(hub.hook, content=tampered, headers=headers)
    assert (refused.status_code, refused.content) == (401, b"")
    assert hub.reader.asked == [] and hub.inbox() == []
    taken = httpx.post(hub.hook, content=genuine.body, headers=headers)
    assert (taken.status_code, taken.content) == (200, b"")
    assert hub.reader.asked == [("Contacts", (contact,))]
    assert hub.inbox() == [("Contacts", contact)]


def test_events_of_another_tenant_or_an_unbound_object_are_acknowledged_and_ignored(
    server: XeroServer, api: Api, hub: HubUnderTest
) -> None:
    contact = api.contact(f"Umbrella {uuid.uuid4().hex[:6]}")
    answer = signed_post(hub.hook, event_payload(str(uuid.uuid4()), "CONTACT", contact))
    assert (answer.status_code, answer.content) == (200, b"")
    assert hub.ignored(OTHER_TENANT) == 1
    note = str(uuid.uuid4())
    answer = signed_post(hub.hook, event_payload(server.tenant_id, "CREDITNOTE", note))
    assert (answer.status_code, answer.content) == (200, b"")
    assert hub.ignored("CreditNotes") == 1
    assert hub.reader.asked == [] and hub.inbox() == []
    answer = signed_post(hub.hook, event_payload(server.tenant_id.upper(), "CONTACT", contact))
    assert answer.status_code == 200 and hub.reader.asked == [("Contacts", (contact,))]


# --- the sandbox's deliveries ------------------------------------------------------------------
def _validator(name: str) -> Any:
    import jsonschema
    import yaml

    document = yaml.safe_load(CONTRACT.read_text())
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_deliveries_follow_xero_s_contract(server: XeroServer, api: Api) -> None:
    receiver = Receiver()
    with receiving(receiver) as url:
        assert api.subscribe(url)["status"] == "OK"
        contact = api.contact(f"Hooli {uuid.uuid4().hex[:6]}")
        renamed = api.call("POST", f"Contacts/{contact}", json={"Name": f"Hooli {contact[:6]}"})
        assert renamed.status_code == 200, renamed.text
        invoice = api.invoice(contact, Status="AUTHORISED")
        note = api.call(
            "PUT",
            "CreditNotes",
            json={
                "CreditNotes": [
                    {
                        "Type": "ACCRECCREDIT",
                        "Contact": {"ContactID": contact},
                        "Status": "AUTHORISED",
                        "LineItems": [
                            {"Description": "x", "Quantity": "1", "UnitAmount": "10.00"}
                            | {"AccountCode": "200", "TaxType": "OUTPUT2"}
                        ],
                    }
                ]
            },
        )
        assert note.status_code == 200, note.text
        note_id = note.json()["CreditNotes"][0]["CreditNoteID"]
        refused = api.call("PUT", "Contacts", json={"Contacts": [{"Name": ""}]})
        assert refused.status_code == 400  # a refused write sends nothing
        wait_for(lambda: len(receiver.events()) >= 4)
        time.sleep(0.3)
    events = receiver.events()
    assert [(e["eventCategory"], e["eventType"], e["resourceId"]) for e in events] == [
        ("CONTACT", "CREATE", contact),
        ("CONTACT", "UPDATE", contact),
        ("INVOICE", "CREATE", invoice),
        ("CREDITNOTE", "CREATE", note_id),
    ]
    assert events[3]["data"] == {"Type": "ACCRECCREDIT", "Status": "AUTHORISED"}
    sequences = []
    for delivery in receiver.deliveries:
        assert delivery.signature == b64_hmac(KEY, delivery.body)
        body = json.loads(delivery.body)
        assert re.fullmatch(r"[A-Z]{20}", body["entropy"])
        sequences.append((body["firstEventSequence"], body["lastEventSequence"]))
    assert sequences[0][0] == 1 and sequences[-1][1] == 4
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(sequences))
    for event in events:
        assert event["tenantId"] == server.tenant_id and event["tenantType"] == "ORGANISATION"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", event["eventDateUtc"])
        path = event["resourceUrl"].removeprefix(server.base_url + "/")
        assert api.call("GET", path).status_code == 200
    if not CONTRACT.exists():
        pytest.skip(f"deliveries not validated: no Webhooks OpenAPI at {CONTRACT}")
    envelope, notes = _validator("WebhookEvent"), _validator("CreditNoteWebhookEvent")
    for delivery in receiver.deliveries:
        body = json.loads(delivery.body)
        envelope.validate(body)
        for event in body["events"]:
            if event["eventCategory"] == "CREDITNOTE":
                notes.validate({**body, "events": [event]})


def test_a_failed_delivery_is_retried_with_the_same_body_and_answers_never_wait(
    api: Api,
) -> None:
    def flaky(delivery: Delivery, n: int) -> tuple[int, bytes]:
        return {2: (503, b""), 3: (200, b"accepted")}.get(n, (200, b""))

    receiver = Receiver(answer=flaky, hang={1: 1.5})  # past the sandbox's timeout_s (1 s)
    with receiving(receiver) as url:
        assert api.subscribe(url, timeout_s=1.0)["status"] == "OK"
        api.contact(f"Massive {uuid.uuid4().hex[:6]}")
        wait_for(lambda: receiver.deliveries)
        started = time.monotonic()  # the receiver hangs now: the API does not wait on it
        api.contact(f"Dynamic {uuid.uuid4().hex[:6]}")
        assert time.monotonic() - started < 1.0
        wait_for(lambda: api.admin("GET", "webhook").json()["delivered_payloads"] == 2)
    first, *retries = receiver.deliveries[:4]
    assert [r.body for r in retries] == [first.body] * 3  # timeout, 503, 200 with a body
    assert retries[1].at - retries[0].at >= 0.3  # the delay doubled (0.2 s, then 0.4 s)
    state = api.admin("GET", "webhook").json()
    assert state["failed_attempts"] == 3 and state["status"] == "OK"
    assert "with a body" in state["last_error"]
    assert json.loads(receiver.deliveries[-1].body)["firstEventSequence"] == 2


def test_a_receiver_failing_past_the_give_up_time_disables_the_subscription(api: Api) -> None:
    receiver = Receiver(answer=lambda d, n: (500, b""))
    with receiving(receiver) as url:
        assert api.subscribe(url, give_up_s=0.8)["status"] == "OK"
        api.contact(f"Stark {uuid.uuid4().hex[:6]}")
        state = wait_for(
            lambda: (s := api.admin("GET", "webhook").json())["status"] == "DISABLED" and s
        )
        assert "answered 500" in state["reason"] and state["pending_events"] == 0
        count = len(receiver.deliveries)
        api.contact(f"Wayne {uuid.uuid4().hex[:6]}")
        time.sleep(0.5)
        assert len(receiver.deliveries) == count >= 2
        assert api.subscribe(url)["status"] == "OK"  # subscribing again re-enables it
