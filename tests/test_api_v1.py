"""The governed API under ``/api/v1``, through the hub's real HTTP app (in process) on a real
SQLite store: who may call what, exception filters and keyset paging, bulk actions where one
id fails alone, the audit trail and the key routes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.responses import Response
from fastapi.testclient import TestClient
from pydantic import SecretStr

from closeloop.api.auth import SESSION_COOKIE, Authenticator
from closeloop.bootstrap import Hub, build_http_app
from closeloop.domain.changes import Change
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.ports.store import NewException
from tests.conftest import make_hub
from tests.memory_system import MemorySystem

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
SECRET = "a session secret for the tests"
PROBLEM = "application/problem+json"


class ManualClock:
    """A clock the test moves (for key expiry)."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


@dataclass
class Api:
    """The app, its hub, the keys' clock and a bearer header per role."""

    client: TestClient
    hub: Hub
    clock: ManualClock
    viewer: dict[str, str]
    operator: dict[str, str]
    admin: dict[str, str]

    def key(self, name: str, role: str, days: int | None = None) -> dict[str, str]:
        """A bearer header for a new key."""
        expires = timedelta(days=days) if days else None
        token = self.hub.access.create(name, role, "test", expires).token
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    """The hub's app on each backend, with a viewer, an operator and an admin key."""
    hub = make_hub(db_url, MemorySystem("crm"), MemorySystem("erp"))
    hub.settings.http.session_secret = SecretStr(SECRET)
    clock = ManualClock()
    hub.access.clock = clock
    client = TestClient(build_http_app(hub))
    made = Api(client, hub, clock, {}, {}, {})
    made.viewer, made.operator, made.admin = (
        made.key("eve", "viewer"),
        made.key("olga", "operator"),
        made.key("ada", "admin"),
    )
    try:
        yield made
    finally:
        hub.close()


def v1_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every ``(method, path)`` under /api/v1 in the OpenAPI document, ids filled in."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in paths.items()
        if path.startswith("/api/v1/")
        for method in item
    ]


def test_every_route_needs_a_live_key_of_the_right_role(api: Api) -> None:
    client = api.client
    operations = v1_operations(client)
    assert len(operations) == 19
    for method, path in operations:
        path = path.replace("exception_id", "1").replace("key_id", "1").replace("run_id", "1")
        answer = client.request(method, path, json={})
        assert answer.status_code == 401, (method, path)
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["status"] == 401 and answer.json()["instance"] == path
        if method != "GET" or path.startswith("/api/v1/keys"):
            refused = client.request(method, path, json={}, headers=api.viewer)
            assert refused.status_code == 403, (method, path)
            assert "has role viewer" in refused.json()["detail"]
    for method, path in (("GET", "/api/v1/keys"), ("POST", "/api/v1/keys")):
        assert client.request(method, path, json={}, headers=api.operator).status_code == 403
    assert client.get("/api/v1/status", headers=api.viewer).status_code == 200

    soon = api.key("temp", "viewer", days=1)
    assert client.get("/api/v1/status", headers=soon).status_code == 200
    api.clock.at += timedelta(days=1)
    expired = client.get("/api/v1/status", headers=soon)
    assert expired.status_code == 401 and expired.headers["www-authenticate"].startswith("Bearer")

    doomed = api.key("doomed", "operator")
    listed = client.get("/api/v1/keys", headers=api.admin).json()
    (row,) = [k for k in listed if k["name"] == "doomed"]
    revoked = client.delete(f"/api/v1/keys/{row['id']}", headers=api.admin)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert client.get("/api/v1/status", headers=doomed).status_code == 401
    malformed = {"Authorization": "Bearer clk_1_short"}
    assert client.get("/api/v1/status", headers=malformed).status_code == 401


def test_a_session_must_send_its_csrf_token_to_change_state(api: Api) -> None:
    client = api.client
    (exc_id,) = open_exceptions(api, [("mapping", "reporting", "crm:Record:x", "no mapping")])
    signer = Authenticator(api.hub.access, SECRET, 3600)
    token = api.hub.access.create("sam", "operator", "test", None).token
    signed = Response()
    caller = signer.sign_in(token, signed, secure=False)
    cookie = signed.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    client.cookies.set(SESSION_COOKIE, cookie.split(";")[0].split("=", 1)[1])

    assert client.get("/api/v1/exceptions").json()["items"][0]["id"] == exc_id  # reads: no token
    url = f"/api/v1/exceptions/{exc_id}/resolve"
    refused = client.post(url, json={"reason": "mapped by hand"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    wrong = client.post(url, json={"reason": "x"}, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    assert client.get(f"/api/v1/exceptions/{exc_id}").json()["status"] == "open"  # untouched
    done = client.post(url, json={"reason": "mapped"}, headers={"X-CSRF-Token": caller.csrf_token})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["resolved_by"]) == ("resolved", "key:sam")


def open_exceptions(
    api: Api, specs: list[tuple[str, str, str, str]], age: timedelta = timedelta(0)
) -> list[int]:
    """Exceptions opened in the store directly, ``age`` ago: ``(class, impact, entity,
    message)`` each."""
    with api.hub.store.transaction() as tx:
        return tx.open_exceptions(
            [NewException(ExceptionClass(c), Impact(i), e, m) for c, i, e, m in specs],
            datetime.now(UTC) - age,
        )


def parked(api: Api, *reasons: str) -> list[int]:
    """Exceptions of commands the erp refused (replayable), one per reason, oldest first."""
    changes = [
        Change(
            system="crm",
            object="Record",
            external_id=f"r{n}",
            version="1",
            payload={"name": f"r{n}", "reject_reason": reason},
        )
        for n, reason in enumerate(reasons)
    ]
    api.hub.intake.accept(changes)
    assert api.hub.worker.run_until_idle(10)
    found = api.hub.operations.list_exceptions("open", 100)
    return sorted(e.id for e in found if e.command_id is not None)


def ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def test_exception_filters_and_keyset_paging(api: Api) -> None:
    client, get = (
        api.client,
        lambda **q: api.client.get("/api/v1/exceptions", params=q, headers=api.viewer),
    )
    old_mapping, old_auth = open_exceptions(
        api,
        [
            ("mapping", "reporting", "crm:Record:x", "no mapping for stage Won-ish"),
            ("auth", "revenue", "erp:Invoice:9", "token expired"),
        ],
        age=timedelta(days=3),
    )
    vat, period = parked(api, "VAT id missing", "period closed")
    every = [period, vat, old_auth, old_mapping]  # newest first

    assert ids(get()) == every
    items = get().json()["items"]
    assert {i["id"]: i["system"] for i in items} == {
        period: "erp",
        vat: "erp",
        old_auth: "erp",
        old_mapping: "crm",
    }
    assert ids(get(**{"class": "mapping"})) == [old_mapping]
    assert ids(get(impact="revenue")) == [old_auth]
    assert ids(get(system="crm")) == [old_mapping]
    assert ids(get(system="erp")) == [period, vat, old_auth]
    assert ids(get(older_than_h=24)) == [old_auth, old_mapping]
    assert ids(get(older_than_h=24, system="erp")) == [old_auth]
    assert ids(get(q="vat ID")) == [vat]  # case-insensitive, in the message
    assert ids(get(q="invoice:9")) == [old_auth]  # in the entity
    assert ids(get(q="100%")) == []  # a wildcard is literal
    assert ids(get(status="resolved")) == []

    resolved = client.post(
        f"/api/v1/exceptions/{vat}/resolve",
        json={"reason": "VAT id added in the CRM"},
        headers={**api.operator, "X-Closeloop-Actor": "mallory"},
    )
    assert resolved.json()["resolved_by"] == "key:olga"  # the key, never a header
    assert ids(get()) == [period, old_auth, old_mapping]
    assert ids(get(status="resolved")) == [vat]
    assert ids(get(status="any")) == every

    pages, cursor = [], None
    while True:
        answer = get(status="any", limit=1, **({"before_id": cursor} if cursor else {}))
        pages.append(ids(answer))
        cursor = answer.json()["next"]
        if cursor is None:
            break
    assert pages == [[e] for e in every]  # each once, in order, no empty last page
    first = get(status="any", limit=2).json()
    assert first["next"] == every[1]
    assert ids(get(status="any", limit=2, before_id=first["next"])) == every[2:]
    assert get(status="any", limit=4).json()["next"] is None

    for bad in (
        {"limit": 0},
        {"limit": 501},
        {"before_id": 0},
        {"before_id": 2**63},
        {"class": "bogus"},
        {"status": "closed"},
        {"older_than_h": -1},
        {"older_than_h": "nan"},
        {"q": ""},
        {"q": "x" * 201},
        {"system": "erp\x00"},
    ):
        refused = get(**bad)
        assert refused.status_code == 422, bad
        assert refused.headers["content-type"] == PROBLEM and refused.json()["errors"], bad


def test_bulk_actions_fail_one_id_alone(api: Api) -> None:
    client = api.client
    (manual,) = open_exceptions(api, [("mapping", "reporting", "crm:Record:m", "no mapping")])
    first, second = parked(api, "VAT id missing", "period closed")
    body = {"action": "replay", "ids": [first, 999_999, manual, second, first], "reason": "fixed"}
    assert client.post("/api/v1/exceptions/bulk", json=body, headers=api.viewer).status_code == 403
    answer = client.post("/api/v1/exceptions/bulk", json=body, headers=api.operator)
    assert answer.status_code == 200, answer.text
    outcomes = answer.json()["outcomes"]
    assert [(o["id"], o["ok"]) for o in outcomes] == [
        (first, True),
        (999_999, False),
        (manual, False),
        (second, True),
    ]
    assert outcomes[0]["detail"] == "replayed"
    assert "no exception 999999" in outcomes[1]["detail"]
    assert "nothing to replay" in outcomes[2]["detail"]
    shown = {
        i: client.get(f"/api/v1/exceptions/{i}", headers=api.viewer).json()
        for i in body["ids"][:4]
        if i != 999_999
    }
    assert {i: s["status"] for i, s in shown.items()} == {
        first: "replayed",
        manual: "open",
        second: "replayed",
    }
    assert shown[first]["resolved_by"] == "key:olga"

    audit = client.get("/api/v1/audit", params={"limit": 500}, headers=api.viewer).json()
    replays = [a for a in audit["items"] if a["action"] == "replay"]
    assert sorted(a["detail"]["exception_id"] for a in replays) == [first, second]
    assert {a["actor"] for a in replays} == {"key:olga"}

    resolve = {"action": "resolve", "ids": [manual]}
    no_reason = client.post("/api/v1/exceptions/bulk", json=resolve, headers=api.operator)
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    for bad in (
        {"action": "delete", "ids": [manual]},
        {"action": "replay", "ids": []},
        {"action": "replay", "ids": [0]},
        {"action": "replay", "ids": list(range(1, 1002))},
        {"action": "replay", "ids": [manual], "extra": 1},
    ):
        refused = client.post("/api/v1/exceptions/bulk", json=bad, headers=api.operator)
        assert refused.status_code == 422, bad
    assert client.get(f"/api/v1/exceptions/{manual}", headers=api.viewer).json()["status"] == "open"


def test_single_actions_audit_and_status(api: Api) -> None:
    client = api.client
    (vat,) = parked(api, "VAT id missing")
    status = client.get("/api/v1/status", headers=api.viewer).json()
    assert status["open_exceptions_by_class"] == {"validation": 1}
    assert status["commands_by_system"] == {"erp": {"parked": 1}}
    url = f"/api/v1/exceptions/{vat}"
    assert client.post(f"{url}/replay", headers=api.operator).json()["status"] == "replayed"
    again = client.post(f"{url}/replay", json={"reason": "again"}, headers=api.operator)
    assert again.status_code == 409 and "not open" in again.json()["detail"]
    blank = client.post(f"{url}/resolve", json={"reason": " "}, headers=api.operator)
    assert blank.status_code == 422
    assert client.get("/api/v1/exceptions/999", headers=api.viewer).status_code == 404
    for bad in ("0", str(2**63), "abc"):
        assert client.get(f"/api/v1/exceptions/{bad}", headers=api.viewer).status_code == 422

    link = client.post(
        "/api/v1/xref/account/crm/A-1",
        json={"target_system": "erp", "target_id": "E-1", "reason": "same VAT number"},
        headers=api.operator,
    )
    assert link.status_code == 200 and link.json() == {"moved": []}
    credit = client.post(
        "/api/v1/invoices/SF-1/2026-08/credit", json={"reason": "hours"}, headers=api.operator
    )
    assert credit.status_code == 404 and "made no invoice 'SF-1/2026-08'" in credit.text

    entity = "xref:account:crm:A-1"
    trail = client.get("/api/v1/audit", params={"entity": entity}, headers=api.viewer).json()
    (linked,) = trail["items"]
    assert (linked["actor"], linked["action"], trail["next"]) == ("key:olga", "link", None)
    assert linked["detail"]["target"] == "erp:E-1"
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"before_id": cursor} if cursor else {})}
        page = client.get("/api/v1/audit", params=params, headers=api.viewer).json()
        pages += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    full = client.get("/api/v1/audit", params={"limit": 500}, headers=api.viewer).json()
    assert pages == full["items"] and len(pages) >= 5  # keys made, replay, link
    assert [a["id"] for a in pages] == sorted((a["id"] for a in pages), reverse=True)


def test_keys_are_listed_without_secrets_made_once_and_revoked(api: Api) -> None:
    client = api.client
    made = client.post(
        "/api/v1/keys",
        json={"name": "grafana", "role": "viewer", "expires_days": 30},
        headers=api.admin,
    )
    assert made.status_code == 201, made.text
    new = made.json()
    assert new["key"]["state"] == "active" and new["token"].startswith(f"clk_{new['key']['id']}_")
    bearer = {"Authorization": f"Bearer {new['token']}"}
    assert client.get("/api/v1/status", headers=bearer).status_code == 200
    listed = client.get("/api/v1/keys", headers=api.admin)
    text = listed.text
    assert new["token"].split("_", 2)[2] not in text and "secret_hash" not in text
    by_name = {k["name"]: k for k in listed.json()}
    assert set(by_name) == {"eve", "olga", "ada", "grafana"}
    assert by_name["grafana"]["created_by"] == "key:ada"
    assert by_name["grafana"]["last_used_at"] is not None

    again = client.post("/api/v1/keys", json={"name": "grafana"}, headers=api.admin)
    assert again.status_code == 409
    for bad in (
        {"name": "has space"},
        {"name": "ok", "role": "root"},
        {"name": "ok", "expires_days": 0},
        {"name": ""},
    ):
        assert client.post("/api/v1/keys", json=bad, headers=api.admin).status_code == 422, bad
    forever = client.post(
        "/api/v1/keys", json={"name": "ci", "expires_days": None}, headers=api.admin
    ).json()
    assert forever["key"]["expires_at"] is None and forever["key"]["role"] == "viewer"

    gone = client.delete(f"/api/v1/keys/{new['key']['id']}", headers=api.admin)
    assert gone.status_code == 200 and gone.json()["state"] == "revoked"
    assert client.get("/api/v1/status", headers=bearer).status_code == 401
    assert client.delete("/api/v1/keys/999", headers=api.admin).status_code == 404
    assert client.delete(f"/api/v1/keys/{2**63}", headers=api.admin).status_code == 422
    with api.hub.store.transaction() as tx:
        actions = [(a.action, a.entity, a.actor) for a in tx.list_audit(None, 20)]
    assert ("key_create", "key:grafana", "key:ada") in actions
    assert ("key_revoke", "key:grafana", "key:ada") in actions


def test_the_openapi_document_types_every_answer_and_error(api: Api) -> None:
    for public in ("/openapi.json", "/docs", "/redoc"):  # nothing served without a key
        assert api.client.get(public).status_code == 404, public
    assert api.client.get("/api/v1/openapi.json").status_code == 401
    doc = api.client.get("/api/v1/openapi.json", headers=api.viewer).json()
    for path, item in doc["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            ok = responses.get("200") or responses["201"]
            schema = ok["content"]["application/json"]["schema"]
            assert "$ref" in schema or schema.get("type") == "array", (method, path)
            for code in ("401", "403", "422"):
                problem = responses[code]["content"]
                assert list(problem) == [PROBLEM], (method, path, code)
                assert problem[PROBLEM]["schema"]["title"] == "Problem"
    limit = next(
        p for p in doc["paths"]["/api/v1/exceptions"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
