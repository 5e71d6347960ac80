"""API keys and sessions: made, checked, expired and revoked, on SQLite and PostgreSQL, and
the HTTP app's answers to each kind of caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from closeloop.bootstrap import build_http_app
from closeloop.domain.access import AccessRole
from closeloop.domain.errors import ConflictError
from closeloop.engine.access import Access, KeyInputError, KeyNotFound, Unauthenticated
from closeloop.store.sql import SqlStore
from tests.conftest import make_hub
from tests.memory_system import MemorySystem


class ManualClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


def test_a_key_works_until_it_expires_or_is_revoked(store: SqlStore) -> None:
    clock = ManualClock()
    access = Access(store, clock)
    made = access.create("dana", "operator", "cli:root", timedelta(days=1))
    assert made.token.startswith(f"clk_{made.row.id}_")
    assert made.row.secret_hash not in made.token  # only the hash is stored
    principal = access.authenticate(made.token)
    assert (principal.name, principal.role, principal.actor) == (
        "dana",
        AccessRole.OPERATOR,
        "key:dana",
    )
    wrong = made.token[:-4] + ("AAAA" if not made.token.endswith("AAAA") else "BBBB")
    for bad in (wrong, "clk_999_" + "x" * 43, "Bearer nothing", ""):
        with pytest.raises(Unauthenticated):
            access.authenticate(bad)
    clock.at += timedelta(days=1)
    with pytest.raises(Unauthenticated, match="expired"):
        access.authenticate(made.token)
    other = access.create("ci", AccessRole.VIEWER, "cli:root", None)
    access.revoke(other.row.id, "cli:root")
    with pytest.raises(Unauthenticated, match="revoked"):
        access.authenticate(other.token)
    with pytest.raises(KeyNotFound):
        access.revoke(12345, "cli:root")
    with store.transaction() as tx:
        actions = [(a.action, a.entity, a.actor) for a in tx.list_audit(None, 10)]
    assert ("key_create", "key:dana", "cli:root") in actions
    assert ("key_revoke", "key:ci", "cli:root") in actions


def test_bad_keys_are_refused_whole(store: SqlStore) -> None:
    access = Access(store, ManualClock())
    access.create("dana", "viewer", "cli:root", None)
    with pytest.raises(ConflictError):
        access.create("dana", "admin", "cli:root", None)
    for name, role, expires in (
        ("", "viewer", None),
        ("has space", "viewer", None),
        ("ok", "root", None),
        ("ok", "viewer", timedelta(0)),
    ):
        with pytest.raises(KeyInputError):
            access.create(name, role, "cli:root", expires)
    assert [k.name for k in access.keys()] == ["dana"]  # noqa: SIM118 (not a dict)


@pytest.fixture
def app_client(sqlite_url: str) -> tuple[TestClient, Access]:
    hub = make_hub(sqlite_url, MemorySystem("crm"), MemorySystem("erp"))
    return TestClient(build_http_app(hub)), hub.access


def test_every_route_but_health_and_webhooks_needs_a_key(
    app_client: tuple[TestClient, Access],
) -> None:
    client, access = app_client
    assert client.get("/healthz").status_code == 200
    for path in ("/api/v1/status", "/api/v1/exceptions", "/metrics", "/api/v1/reconcile/runs"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    viewer = access.create("eve", "viewer", "test", None).token
    operator = access.create("olga", "operator", "test", None).token
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    assert client.get("/api/v1/status", headers=as_viewer).status_code == 200
    refused = client.post("/api/v1/exceptions/1/replay", json={}, headers=as_viewer)
    assert refused.status_code == 403
    assert "operator" in refused.json()["detail"]
    as_operator = {"Authorization": f"Bearer {operator}"}
    assert (
        client.post("/api/v1/exceptions/1/replay", json={}, headers=as_operator).status_code == 404
    )
    assert client.get("/api/v1/status", headers={"Authorization": "Basic abc"}).status_code == 401
