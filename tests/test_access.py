"""API keys and sessions: made, checked, expired and revoked, on SQLite and PostgreSQL, and
the HTTP app's answers to each kind of caller."""

from __future__ import annotations

import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def test_the_hub_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """A new database is made 0600 in a 0700 folder; one made before (0644, as every
    local user could read it) is taken down to 0600 with its WAL files."""
    fresh = tmp_path / "new" / "hub.db"
    SqlStore.from_url(f"sqlite:///{fresh}").close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)  # an old hub's database, in WAL mode, world-readable
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("create table t (a)")
    conn.execute("insert into t values (1)")
    conn.commit()  # kept open: its -wal and -shm files stay
    for each in (old, Path(f"{old}-wal"), Path(f"{old}-shm")):
        each.chmod(0o644)
    store = SqlStore.from_url(f"sqlite:///{old}")
    with store.engine.connect() as db:
        assert db.exec_driver_sql("select a from t").scalar() == 1  # nothing lost
    store.close()
    for each in (old, Path(f"{old}-wal"), Path(f"{old}-shm")):
        assert stat.S_IMODE(each.stat().st_mode) == 0o600, each
    conn.close()


def test_the_sandbox_state_and_its_hub_configuration_are_private(tmp_path: Path) -> None:
    """``closeloop sandbox up`` writes the sandboxes' secrets: owner-only, from creation."""
    from closeloop.devtools import sandboxctl

    (tmp_path / "closeloop.yaml.tmp").write_text("left over")  # a crashed write's leftover
    (tmp_path / "closeloop.yaml.tmp").chmod(0o644)
    sandboxctl.write_state(tmp_path, {})
    for name in ("sandbox.json", "closeloop.yaml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
