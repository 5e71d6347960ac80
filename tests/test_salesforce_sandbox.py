"""The Salesforce sandbox against Salesforce's contract: real describe() results and recorded
REST calls from ../shared/realdata (skipped, with the reason, when absent), a standard client
library from PyPI, OAuth, limits, errors, Collections, Composite, outbound messages, faults.
Every test talks HTTPS to a sandbox in its own process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from closeloop.connectors.salesforce.outbound import parse as parse_envelope
from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.salesforce.server import SalesforceServer
from tests.conftest import sandbox_cli
from tests.salesforce_support import CASSETTES, Api, opportunity, running_salesforce, wait_past

pytestmark = pytest.mark.timeout(120)
needs_realdata = pytest.mark.skipif(
    not CASSETTES.is_dir(), reason=f"{CASSETTES} is absent: Salesforce conformance tests skipped"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalesforceServer]:
    with running_salesforce(tmp_path_factory.mktemp("sf")) as started:
        yield started


@pytest.fixture
def api(server: SalesforceServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def account(api: Api, name: str, **fields: Any) -> str:
    response = api.call("POST", "sobjects/Account", json={"Name": name, **fields})
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


# --- conformance with the real describe() and recorded calls -----------------------------------
COMPARED = (
    "type",
    "length",
    "nillable",
    "createable",
    "updateable",
    "defaultedOnCreate",
    "nameField",
    "externalId",
    "unique",
    "idLookup",
    "referenceTo",
    "relationshipName",
)


@needs_realdata
@pytest.mark.parametrize("sobject", ["Account", "Contact", "Opportunity"])
def test_describe_agrees_with_the_real_describe(api: Api, sobject: str) -> None:
    real = json.loads(
        (CASSETTES / "extracted_json" / f"GET_sobjects_{sobject}_describe.json").read_text()
    )
    ours = api.call("GET", f"sobjects/{sobject}/describe").json()
    assert ours["keyPrefix"] == real["keyPrefix"]
    real_fields = {f["name"]: f for f in real["fields"]}
    standard = [f for f in ours["fields"] if not f["custom"] and f["name"] in real_fields]
    assert len(standard) >= 25 if sobject != "Opportunity" else len(standard) >= 24
    for field in standard:
        expected = real_fields[field["name"]]
        for attribute in COMPARED:
            assert field[attribute] == expected[attribute], (field["name"], attribute)
        if field["type"] in ("currency", "double", "percent"):
            assert (field["precision"], field["scale"]) == (
                expected["precision"],
                expected["scale"],
            ), field["name"]
        if field["picklistValues"]:
            values = [p["value"] for p in expected["picklistValues"]]
            assert [p["value"] for p in field["picklistValues"]] == values, field["name"]
    ours_by_name = {f["name"] for f in ours["fields"]}
    missing = {n for n, f in real_fields.items() if not f["custom"]} - ours_by_name
    # Fields an integration reads are all there; what is left out is named here on purpose.
    assert not missing & {"Id", "Name", "OwnerId", "SystemModstamp", "IsDeleted", "AccountId"}


def _cassette(name: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((CASSETTES / name).read_text())
    return [i for i in data["interactions"] if "request" in i]


def _shape(value: Any) -> Any:
    """The JSON shape: keys and value kinds, recursively (first list item only)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "text"


def _replay(api: Api, interaction: dict[str, Any]) -> tuple[httpx.Response, Any]:
    request = interaction["request"]
    path = request["uri"].split("/services/data/vxx.0/", 1)[1].replace("vxx.0", "v62.0")
    body = request.get("body")
    if isinstance(body, str):
        body = json.loads(body.replace("vxx.0", "v62.0"))
    response = api.call(request["method"], path, json=body)
    recorded = interaction["response"]["body"]["string"]
    return response, json.loads(recorded) if recorded else None


@needs_realdata
def test_recorded_calls_get_answers_of_the_recorded_shape(api: Api) -> None:
    interactions = _cassette("TestUpsert.test_upsert__rest.yaml")
    create, upsert = interactions[0], interactions[1]
    response, recorded = _replay(api, create)  # Collections create
    assert response.status_code == create["response"]["status"]["code"]
    assert _shape(response.json()) == _shape(recorded)
    response, recorded = _replay(api, upsert)  # Collections upsert on Contact.Email
    assert response.status_code == 200
    assert _shape(response.json()) == _shape(recorded)
    assert all(r["created"] for r in response.json())
    again, _ = _replay(api, upsert)  # same emails again: updated, not duplicated
    assert [r["id"] for r in again.json()] == [r["id"] for r in response.json()]
    assert not any(r["created"] for r in again.json())
    query = next(i for i in interactions if "select+Name+from+Account" in i["request"]["uri"])
    response = api.call("GET", "query", params={"q": "select Name from Account"})
    recorded = json.loads(query["response"]["body"]["string"])
    assert _shape(response.json()["records"][0]) == _shape(recorded["records"][0])
    assert set(response.json()) == set(recorded)


@needs_realdata
def test_recorded_composite_calls_and_errors(api: Api) -> None:
    account(api, "Smith Corp.")
    for name in (
        "TestCompositeParallelSalesforce.test_composite_parallel_salesforce.yaml",
        "TestCompositeParallelSalesforce.test_errors.yaml",
        "TestCountSObjects.test_count_sobjects_simple.yaml",
    ):
        for interaction in _cassette(name):
            if not interaction["request"]["uri"].endswith("/composite"):
                continue
            response, recorded = _replay(api, interaction)
            assert response.status_code == 200
            ours = response.json()["compositeResponse"]
            theirs = recorded["compositeResponse"]
            assert [r["httpStatusCode"] for r in ours] == [r["httpStatusCode"] for r in theirs]
            assert [_shape(r) for r in ours] == [_shape(r) for r in theirs], name
            for mine, recorded_sub in zip(ours, theirs, strict=True):
                if recorded_sub["httpStatusCode"] >= 400:
                    assert mine["body"][0]["errorCode"] == recorded_sub["body"][0]["errorCode"]


@needs_realdata
def test_recorded_upsert_by_id_and_record_count(api: Api) -> None:
    interactions = _cassette(
        "TestUpsert.test_upsert_complex_external_id_field_rest__duplicate_error.yaml"
    )
    upsert = next(i for i in interactions if i["request"]["uri"].endswith("Account/Id"))
    response, recorded = _replay(api, upsert)  # "Id": null creates
    assert _shape(response.json()) == _shape(recorded)
    assert response.json()[0]["created"] is True
    counted = api.call("GET", "limits/recordCount", params={"sObjects": "Account"}).json()
    assert counted["sObjects"][0]["name"] == "Account" and counted["sObjects"][0]["count"] >= 1


# --- a standard client library ------------------------------------------------------------------
def test_simple_salesforce_works_unchanged(
    server: SalesforceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simple-salesforce (PyPI) with nothing but the instance URL and the CA bundle
    (``REQUESTS_CA_BUNDLE``, how requests is given a CA) changed."""
    import requests
    from simple_salesforce import Salesforce, SalesforceResourceNotFound

    entry = server.as_json()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", entry["ca_bundle"])
    token = Api(server).token
    sf = Salesforce(
        instance_url=entry["instance_url"],
        session_id=token,
        session=requests.Session(),
        version=entry["api_version"],
    )
    created = sf.Account.create({"Name": "Bluth Company", "BillingCountry": "US"})
    assert created["success"]
    assert sf.Account.get(created["id"])["Name"] == "Bluth Company"
    sf.Account.update(created["id"], {"Phone": "+1 555 0100"})
    assert sf.Account.get(created["id"])["Phone"] == "+1 555 0100"
    assert sf.Account.upsert("Closeloop_Id__c/acct-7", {"Name": "Sitwell"}) == 201
    assert sf.Account.upsert("Closeloop_Id__c/acct-7", {"Name": "Sitwell Ent."}) == 200
    assert sf.Account.get_by_custom_id("Closeloop_Id__c", "acct-7")["Name"] == "Sitwell Ent."
    described = sf.Opportunity.describe()
    stage = next(f for f in described["fields"] if f["name"] == "StageName")
    assert "Closed Won" in [p["value"] for p in stage["picklistValues"]]
    records = [{"Name": f"Bulk {i:04d}"} for i in range(2100)]
    for start in range(0, len(records), 200):
        chunk = [{"attributes": {"type": "Account"}, **r} for r in records[start : start + 200]]
        sf.restful("composite/sobjects", method="POST", json={"records": chunk})
    everything = sf.query_all("SELECT Id, Name FROM Account WHERE Name LIKE 'Bulk %'")
    assert everything["totalSize"] == 2100 and len(everything["records"]) == 2100
    assert sf.limits()["DailyApiRequests"]["Max"] > 0
    sf.Account.delete(created["id"])
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(created["id"])


# --- OAuth, sessions, limits ---------------------------------------------------------------------
def test_oauth_flows_and_sessions(api: Api) -> None:
    entry = api.entry
    form = {"client_id": entry["client_id"], "client_secret": entry["client_secret"]}
    answer = api.http.post(entry["token_url"], data={**form, "grant_type": "client_credentials"})
    assert answer.status_code == 200
    assert answer.json()["instance_url"] == entry["instance_url"]
    bad = api.http.post(
        entry["token_url"], data={**form, "client_secret": "x", "grant_type": "client_credentials"}
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_id"
    wrong = api.http.post(
        entry["token_url"],
        data={**form, "grant_type": "password", "username": entry["username"], "password": "no"},
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert api.call("GET", "limits").status_code == 200
    anonymous = api.http.get(f"{api.base}/limits")
    assert anonymous.status_code == 401
    assert anonymous.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    api.admin("POST", "revoke-sessions")
    assert api.call("GET", "limits").status_code == 401


def test_daily_allocation_and_limit_header(tmp_path: Path) -> None:
    with running_salesforce(tmp_path, daily_api_requests=5) as server:
        api = Api(server)
        headers = [api.call("GET", "limits").headers["Sforce-Limit-Info"] for _ in range(5)]
        assert headers == [f"api-usage={n}/5" for n in range(1, 6)]
        refused = api.call("GET", "limits")
        assert refused.status_code == 403
        assert refused.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        api.close()


def test_concurrency_limit(tmp_path: Path) -> None:
    with running_salesforce(tmp_path, FaultPlan(latency_s=0.6), max_concurrent=1) as server:
        api = Api(server)
        statuses: list[int] = []
        barrier = threading.Barrier(3)

        def call() -> None:
            barrier.wait()
            statuses.append(api.call("GET", "limits").status_code)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses)[0] == 200 and 403 in statuses
        api.close()


# --- records, errors, Collections, Composite ---------------------------------------------------
def test_crud_and_error_codes(api: Api) -> None:
    rid = account(api, "Acme", Closeloop_Id__c="acme-1")
    assert rid.startswith("001") and len(rid) == 18
    record = api.call("GET", f"sobjects/Account/{rid}").json()
    assert record["Name"] == "Acme" and record["SystemModstamp"].endswith("+0000")
    assert api.call("PATCH", f"sobjects/Account/{rid}", json={"Phone": "1"}).status_code == 204
    cases = [
        (
            "POST",
            "sobjects/Account",
            {"Name": "Dup", "Closeloop_Id__c": "acme-1"},
            400,
            "DUPLICATE_VALUE",
        ),
        ("POST", "sobjects/Account", {"Name": "x", "Nope__c": 1}, 400, "INVALID_FIELD"),
        ("POST", "sobjects/Account", {"Name": "x" * 256}, 400, "STRING_TOO_LONG"),
        ("POST", "sobjects/Opportunity", {"Name": "x"}, 400, "REQUIRED_FIELD_MISSING"),
        (
            "PATCH",
            f"sobjects/Account/{rid}",
            {"SystemModstamp": "x"},
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        (
            "PATCH",
            f"sobjects/Account/{rid}",
            {"Payment_Status__c": "Maybe"},
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            "POST",
            "sobjects/Contact",
            {"LastName": "x", "AccountId": "001000000000000AAA"},
            400,
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        ("GET", "sobjects/Account/001000000000000AAA", None, 404, "NOT_FOUND"),
        ("GET", "sobjects/Nope/001000000000000AAA", None, 404, "NOT_FOUND"),
    ]
    for method, path, body, status, code in cases:
        response = api.call(method, path, json=body)
        assert (response.status_code, response.json()[0]["errorCode"]) == (status, code), path
    for query, code in [
        ("SELECT Id FROM", "MALFORMED_QUERY"),
        ("SELECT Nope FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
    ]:
        response = api.call("GET", "query", params={"q": query})
        assert (response.status_code, response.json()[0]["errorCode"]) == (400, code)
    assert api.call("DELETE", f"sobjects/Account/{rid}").status_code == 204
    gone = api.call("GET", f"sobjects/Account/{rid}")
    assert (gone.status_code, gone.json()[0]["errorCode"]) == (404, "ENTITY_IS_DELETED")
    deleted = api.call(
        "GET", "queryAll", params={"q": f"SELECT Id, IsDeleted FROM Account WHERE Id = '{rid}'"}
    ).json()
    assert deleted["records"][0]["IsDeleted"] is True


def test_opportunity_lines_roll_up_and_stage_fields(api: Api) -> None:
    acct = account(api, "Roll-up Ltd")
    opp = api.call("POST", "sobjects/Opportunity", json=opportunity("Roll-up", acct)).json()["id"]
    product = api.call("POST", "sobjects/Product2", json={"Name": "Consulting"}).json()["id"]
    for hours, rate in ((10, "150.00"), (4, "95.50")):
        line = {"OpportunityId": opp, "Product2Id": product, "Quantity": hours, "UnitPrice": rate}
        assert api.call("POST", "sobjects/OpportunityLineItem", json=line).status_code == 201
    api.call("PATCH", f"sobjects/Opportunity/{opp}", json={"StageName": "Closed Won"})
    query = (
        "SELECT Amount, IsWon, IsClosed, Probability, Account.Name, (SELECT Quantity, "
        "TotalPrice, Product2.Name FROM OpportunityLineItems ORDER BY Quantity) "
        f"FROM Opportunity WHERE Id = '{opp}'"
    )
    row = api.call("GET", "query", params={"q": query}).json()["records"][0]
    assert row["Amount"] == 1882.0 and row["IsWon"] and row["IsClosed"]
    assert row["Probability"] == 100.0 and row["Account"]["Name"] == "Roll-up Ltd"
    lines = row["OpportunityLineItems"]["records"]
    assert [(line["Quantity"], line["TotalPrice"]) for line in lines] == [
        (4.0, 382.0),
        (10.0, 1500.0),
    ]
    assert lines[0]["Product2"]["Name"] == "Consulting"


def test_collections_all_or_none_and_size_limit(api: Api) -> None:
    good = {"attributes": {"type": "Account"}, "Name": "Fine"}
    bad = {"attributes": {"type": "Account"}, "Name": "x" * 300}
    partial = api.call(
        "POST", "composite/sobjects", json={"allOrNone": False, "records": [good, bad]}
    ).json()
    assert [r["success"] for r in partial] == [True, False]
    assert partial[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    marker = {"attributes": {"type": "Account"}, "Name": "All or none marker"}
    whole = api.call(
        "POST", "composite/sobjects", json={"allOrNone": True, "records": [marker, bad]}
    ).json()
    assert whole[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    found = api.call(
        "GET", "query", params={"q": "SELECT Id FROM Account WHERE Name = 'All or none marker'"}
    ).json()
    assert found["totalSize"] == 0
    too_many = api.call("POST", "composite/sobjects", json={"records": [good] * 201})
    assert too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_composite_references_rollback_and_limits(api: Api) -> None:
    v = "/services/data/v62.0"
    body = {
        "allOrNone": True,
        "compositeRequest": [
            {
                "method": "POST",
                "url": f"{v}/sobjects/Account",
                "referenceId": "acct",
                "body": {"Name": "Composite Co"},
            },
            {
                "method": "POST",
                "url": f"{v}/sobjects/Contact",
                "referenceId": "who",
                "body": {"LastName": "Funke", "AccountId": "@{acct.id}"},
            },
            {"method": "GET", "url": f"{v}/sobjects/Account/@{{acct.id}}", "referenceId": "read"},
        ],
    }
    answer = api.call("POST", "composite", json=body).json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in answer] == [201, 201, 200]
    assert answer[2]["body"]["Name"] == "Composite Co"
    body["compositeRequest"][1]["body"] = {"LastName": "x" * 100, "AccountId": "@{acct.id}"}
    failed = api.call("POST", "composite", json=body).json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in failed] == [400, 400, 400]
    assert failed[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert failed[1]["body"][0]["errorCode"] == "STRING_TOO_LONG"
    count = api.call(
        "GET", "query", params={"q": "SELECT COUNT() FROM Account WHERE Name = 'Composite Co'"}
    )
    assert count.json()["totalSize"] == 1  # the second, rolled back attempt left nothing
    many = {
        "compositeRequest": [
            {"method": "GET", "url": f"{v}/limits", "referenceId": f"r{i}"} for i in range(26)
        ]
    }
    assert api.call("POST", "composite", json=many).json()[0]["errorCode"] == "LIMIT_EXCEEDED"


def test_query_paging_at_2000_with_locator(api: Api) -> None:
    records = [{"attributes": {"type": "Product2"}, "Name": f"P{i:05d}"} for i in range(4100)]
    for start in range(0, len(records), 200):
        api.call("POST", "composite/sobjects", json={"records": records[start : start + 200]})
    page = api.call(
        "GET",
        "query",
        params={"q": "SELECT Name FROM Product2 WHERE Name LIKE 'P0%' ORDER BY Name"},
    ).json()
    names = [r["Name"] for r in page["records"]]
    sizes = [len(page["records"])]
    while not page["done"]:
        page = api.call("GET", page["nextRecordsUrl"].split("/v62.0/", 1)[1]).json()
        names += [r["Name"] for r in page["records"]]
        sizes.append(len(page["records"]))
    assert sizes == [2000, 2000, 100] and names == sorted(names) and len(set(names)) == 4100
    stale = api.call("GET", "query/01g5gNOSUCHCURSOR-2000")
    assert stale.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# --- outbound messages ---------------------------------------------------------------------------
class _Endpoint(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    refuse_first = 2

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(body)
        if len(type(self).bodies) <= type(self).refuse_first:
            self.send_response(503)
            self.end_headers()
            return
        from closeloop.connectors.salesforce.outbound import ack

        answer = ack()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        return


def test_outbound_message_is_retried_until_acked(tmp_path: Path) -> None:
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=endpoint.serve_forever, daemon=True)
    thread.start()
    (tmp_path / "org.json").write_text(json.dumps({"outbound_retry_base_s": 0.1}))
    try:
        with running_salesforce(tmp_path) as server:
            api = Api(server)
            rule = {
                "name": "Closed won to closeloop",
                "object": "Opportunity",
                "condition": "StageName = 'Closed Won'",
                "fields": ["Id", "Name", "StageName", "Amount", "SystemModstamp"],
                "endpoint_url": f"http://127.0.0.1:{endpoint.server_port}/",
            }
            assert api.admin("PUT", "outbound-messages", json=[rule]).status_code == 200
            acct = account(api, "Outbound Inc")
            won = api.call("POST", "sobjects/Opportunity", json=opportunity("Won", acct)).json()
            api.call("POST", "sobjects/Opportunity", json=opportunity("Open", acct))
            api.call("PATCH", f"sobjects/Opportunity/{won['id']}", json={"StageName": "Closed Won"})
            deadline = time.monotonic() + 20
            while api.admin("GET", "stats").json()["outbound"]["delivered"] < 1:
                assert time.monotonic() < deadline, "no Ack-ed delivery"
                time.sleep(0.05)  # polling the sandbox's counter, not a race
            api.close()
    finally:
        endpoint.shutdown()
    assert len(_Endpoint.bodies) == 3  # refused twice, then acknowledged
    message = parse_envelope(_Endpoint.bodies[-1])
    assert message.organization_id == server.settings.organization_id
    (note,) = message.notifications
    assert (note.sobject, note.record_id) == ("Opportunity", won["id"])
    assert note.fields["StageName"] == "Closed Won" and note.fields["SystemModstamp"]


# --- seed, persistence, faults -------------------------------------------------------------------
def test_seed_is_all_or_nothing_and_state_survives_a_restart(tmp_path: Path) -> None:
    seed = {
        "Account": [{"Id": "0015g00000ABCDEAAA", "Name": "Seeded", "Tax_Id__c": "DE136695976"}],
        "Opportunity": [
            opportunity(
                "Seeded deal", "0015g00000ABCDEAAA", SystemModstamp="2026-01-05T10:00:00.000+0000"
            )
        ],
    }
    with running_salesforce(tmp_path) as server:
        api = Api(server)
        bad = {"Account": [{"Name": "Fine"}, {"Name": None}]}
        refused = api.admin("POST", "seed", json=bad)
        assert refused.status_code == 400 and "Account[1]" in refused.json()[0]["message"]
        assert api.admin("POST", "seed", json=seed).json()["loaded"] == {
            "Account": 1,
            "Opportunity": 1,
        }
        api.close()
    with running_salesforce(tmp_path) as server:  # same home, new process
        api = Api(server)
        rows = api.call(
            "GET", "query", params={"q": "SELECT Name, SystemModstamp FROM Opportunity"}
        )
        assert [(r["Name"], r["SystemModstamp"]) for r in rows.json()["records"]] == [
            ("Seeded deal", "2026-01-05T10:00:00.000+0000")
        ]
        names = api.call("GET", "query", params={"q": "SELECT Name FROM Account"}).json()
        assert [r["Name"] for r in names["records"]] == ["Seeded"]  # nothing of the bad seed
        api.close()


def test_faults_server_error_and_lost_response(tmp_path: Path) -> None:
    with running_salesforce(tmp_path) as server:
        api = Api(server)
        api.admin("PUT", "faults", json={"server_error": 1.0})
        failed = api.call("POST", "sobjects/Account", json={"Name": "Not written"})
        assert failed.status_code == 503 and failed.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
        api.admin("PUT", "faults", json={"lost_response": 1.0})
        with pytest.raises(httpx.RemoteProtocolError):
            api.call("POST", "sobjects/Account", json={"Name": "Written, answer lost"})
        api.admin("PUT", "faults", json={})
        names = api.call("GET", "query", params={"q": "SELECT Name FROM Account"}).json()
        assert [r["Name"] for r in names["records"]] == ["Written, answer lost"]
        api.close()


def test_sandbox_cli_up_seed_faults_status_down(tmp_path: Path) -> None:

    def cli(*args: str, ok: bool = True) -> str:
        return sandbox_cli(tmp_path, *args, ok=ok)

    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"Account": [{"Name": "CLI Seeded", "BillingCountry": "CH"}]}))
    try:
        assert "salesforce: https://127.0.0.1:" in cli("up", "--system", "salesforce")
        entry = json.loads((tmp_path / "sandbox.json").read_text())["salesforce"]
        assert "1 Account" in cli("seed", "salesforce", str(seed))
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"Opportunity": [{"Name": "no stage"}]}))
        assert "REQUIRED_FIELD_MISSING" in cli("seed", "salesforce", str(bad), ok=False)
        cli("faults", "salesforce", "--server-error", "1")
        api = Api(
            SalesforceServer(entry["pid"], _settings(entry), Path(entry["ca_bundle"]), tmp_path)
        )
        assert api.call("GET", "limits").status_code == 503
        cli("faults", "salesforce")
        query = {"q": "SELECT Name, SystemModstamp FROM Account"}
        names = api.call("GET", "query", params=query).json()
        assert [r["Name"] for r in names["records"]] == ["CLI Seeded"]
        api.close()
        assert "salesforce: running at https://" in cli("status")
        from closeloop.bootstrap import connectors_from_settings
        from closeloop.config import load_settings

        settings = load_settings(tmp_path / "closeloop.yaml")  # written by `up`, ready to run
        connector = connectors_from_settings(settings)["salesforce"]
        # a poll reads up to the org's clock at its start, as the client last saw it in a
        # Date header: describe first (the poll's only other request), then wait until that
        # clock has passed the seeded record (a condition, as in the other Salesforce tests)
        connector.select_list("Account")  # type: ignore[attr-defined]
        wait_past(connector.client, names["records"][0]["SystemModstamp"])  # type: ignore[attr-defined]
        polled = [
            c.payload["Name"] for page in connector.read_changes("Account", None) for c in page
        ]
        assert polled == ["CLI Seeded"]
        getattr(connector, "close", lambda: None)()
    finally:
        stopped = cli("down")
    assert "salesforce" in stopped
    from closeloop.devtools.sandboxctl import alive

    assert not alive(int(entry["pid"]))


def _settings(entry: dict[str, Any]) -> Any:
    from closeloop.sandboxes.salesforce.org import OrgSettings

    return OrgSettings(
        organization_id=entry["organization_id"],
        instance_url=entry["instance_url"],
        client_id=entry["client_id"],
        client_secret=entry["client_secret"],
        username=entry["username"],
        password=entry["password"],
    )
