"""Only ``closeloop db upgrade`` migrates, one upgrader at a time; every other command refuses
a database whose schema is empty, behind or ahead (real processes, real databases)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from closeloop.store import migrate
from closeloop.store.db import create_db_engine
from tests.conftest import PG_URL, Sandbox, wait_for

OLDER = "0005"
"""A revision this code knows and has migrations after (a database left behind)."""
UPGRADERS = 3
WORKERS = 3
UPGRADE_HINT = "run `closeloop db upgrade`"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server (advisory locks are per database:
    no other test's upgrade can take ours); dropped after the test."""
    if not PG_URL:
        pytest.skip("no PostgreSQL: set CLOSELOOP_TEST_PG_URL (scripts/test starts one)")
    name = f"t_schema_{uuid.uuid4().hex[:10]}"
    admin = create_db_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def closeloop(*args: str, config: Path) -> subprocess.Popen[str]:
    """``closeloop ARGS -c CONFIG`` started as its own process (output captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "closeloop.cli", *args, "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},  # one message, one line
    )


def finished(process: subprocess.Popen[str], timeout_s: float = 60) -> tuple[int, str, str]:
    """Wait for ``process``; its exit status, stdout and stderr."""
    out, err = process.communicate(timeout=timeout_s)
    return process.returncode, out, err


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"log_level": "warning", **data}))
    return path


def worker_configs(tmp_path: Path, url: str, crm: Sandbox, erp: Sandbox) -> list[Path]:
    """One configuration per worker: worker ``i`` polls the crm sandbox as system ``src<i>``,
    so the inbox rows of ``src<i>`` prove that worker ``i`` passed the schema check and runs."""
    return [
        write_config(
            tmp_path / f"worker{i}.yaml",
            {
                "database_url": url,
                "worker": {"threads": 1, "poll_interval_s": 0.2, "idle_wait_s": 0.05},
                "systems": {
                    f"src{i}": {"kind": "memory", "url": crm.url, "objects": ["Record"]},
                    "sink": {"kind": "memory", "url": erp.url, "objects": []},
                },
                "mirrors": [{"source": f"src{i}", "object": "Record", "target": "sink"}],
            },
        )
        for i in range(WORKERS)
    ]


def waiting_upgraders(engine: Engine) -> int:
    """Sessions waiting for the migration lock in this database (``pg_locks``)."""
    key = migrate.MIGRATION_LOCK_KEY
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "select count(*) from pg_locks l join pg_database d on d.oid = l.database"
                    " where d.datname = current_database() and l.locktype = 'advisory'"
                    " and not l.granted and l.classid::bigint = :hi and l.objid::bigint = :lo"
                ),
                {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
            ).scalar_one()
        )


def inbox_systems(engine: Engine) -> set[str]:
    """The systems with rows in the inbox (none before the schema exists)."""
    with engine.connect() as conn:
        try:
            return set(conn.execute(text("select distinct system from inbox")).scalars())
        except Exception:  # no inbox table yet
            return set()


def public_tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text("select table_name from information_schema.tables where table_schema = :s"),
                {"s": "public"},
            ).scalars()
        )


def assert_one_migrated(results: list[tuple[int, str, str]], before: str | None) -> None:
    """Every upgrader succeeded; exactly one migrated from ``before`` to the head, the others
    found nothing to do."""
    head = migrate.head_revision()
    assert all(code == 0 for code, _, _ in results), results
    outs = [" ".join(out.split()) for _, out, _ in results]
    migrated = [o for o in outs if o.startswith("migrated the database")]
    assert migrated == [f"migrated the database from {before or 'empty'} to {head}"], outs
    idle = [o for o in outs if o == f"the database is at {head} already: nothing to do"]
    assert len(idle) == len(results) - 1, outs


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("start", ["empty", "behind"])
def test_upgraders_wait_for_the_lock_workers_refuse_until_one_has_migrated(
    start: str, tmp_path: Path, pg_database: str, sandbox_factory: type[Sandbox]
) -> None:
    crm, erp = sandbox_factory("crm"), sandbox_factory("erp")
    crm.http.post("/records/Record", json=[{"id": "r1", "data": {"name": "r1"}}])
    engine = create_db_engine(pg_database)
    before = None
    if start == "behind":
        migrate.upgrade(engine, OLDER)
        before = OLDER
    tables_before = public_tables(engine)
    config = write_config(tmp_path / "closeloop.yaml", {"database_url": pg_database})
    workers = worker_configs(tmp_path, pg_database, crm, erp)
    holder = engine.connect()  # an upgrade in progress elsewhere, as far as they can tell
    upgraders: list[subprocess.Popen[str]] = []
    try:
        holder.execute(text("select pg_advisory_lock(:k)"), {"k": migrate.MIGRATION_LOCK_KEY})
        upgraders = [closeloop("db", "upgrade", config=config) for _ in range(UPGRADERS)]
        wait_for(lambda: waiting_upgraders(engine) == UPGRADERS, 60, "the upgraders to queue")
        assert all(u.poll() is None for u in upgraders)  # each waits its turn
        assert migrate.current_revision(engine) == before
        early = [finished(p) for p in [closeloop("worker", config=c) for c in workers]]
        expected = (
            "the database has no closeloop schema yet"
            if start == "empty"
            else f"the database is at schema {OLDER}, this closeloop needs "
            f"{migrate.head_revision()}"
        )
        for code, _, err in early:
            assert code == 3, err
            assert f"{expected}: {UPGRADE_HINT}" in " ".join(err.split())
        assert public_tables(engine) == tables_before  # the refused workers created nothing
        holder.execute(text("select pg_advisory_unlock(:k)"), {"k": migrate.MIGRATION_LOCK_KEY})
        holder.commit()
        results = [finished(u) for u in upgraders]
    finally:
        holder.close()
        for u in upgraders:
            if u.poll() is None:
                u.kill()
                u.wait()
    assert all("waiting for it" in err for _, _, err in results)  # told why they waited
    assert_one_migrated(results, before)
    assert migrate.current_revision(engine) == migrate.head_revision()
    # after the upgrade the same workers start: each polls its own system into the inbox
    running = [closeloop("worker", config=c) for c in workers]
    try:
        wait_for(
            lambda: inbox_systems(engine) >= {f"src{i}" for i in range(WORKERS)},
            60,
            "every worker to take its system's record",
        )
    finally:
        for w in running:
            w.send_signal(signal.SIGTERM)
        stopped = [finished(w, 30) for w in running]
        engine.dispose()
    assert [code for code, _, _ in stopped] == [0] * WORKERS, stopped


@pytest.mark.slow
@pytest.mark.postgres
def test_upgraders_and_workers_started_together_on_a_fresh_postgresql(
    tmp_path: Path, pg_database: str, sandbox_factory: type[Sandbox]
) -> None:
    """The issue's case: nothing holds the lock, every process starts at once. One upgrader
    migrates; each worker either refuses (it checked before the migration committed) or runs."""
    crm, erp = sandbox_factory("crm"), sandbox_factory("erp")
    crm.http.post("/records/Record", json=[{"id": "r1", "data": {"name": "r1"}}])
    engine = create_db_engine(pg_database)
    config = write_config(tmp_path / "closeloop.yaml", {"database_url": pg_database})
    configs = worker_configs(tmp_path, pg_database, crm, erp)
    processes = [closeloop("db", "upgrade", config=config) for _ in range(UPGRADERS)]
    workers = [closeloop("worker", config=c) for c in configs]
    try:
        results = [finished(u) for u in processes]
        assert_one_migrated(results, None)
        for i, worker in enumerate(workers):
            # refused (exited) or running (its system's record reached the inbox)
            wait_for(
                lambda w=worker, i=i: w.poll() is not None or f"src{i}" in inbox_systems(engine),
                60,
                f"worker {i} to refuse or run",
            )
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        stopped = [finished(w, 30) for w in workers]
        engine.dispose()
    for code, _, err in stopped:
        assert code == 0 or (code == 3 and UPGRADE_HINT in " ".join(err.split())), (code, err)


def sqlite_config(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "hub.db"
    return db, write_config(tmp_path / "closeloop.yaml", {"database_url": f"sqlite:///{db}"})


def sqlite_tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}


def test_status_refuses_an_unmigrated_sqlite_database_and_creates_nothing(tmp_path: Path) -> None:
    db, config = sqlite_config(tmp_path)
    code, _, err = finished(closeloop("status", config=config))
    assert code == 3
    assert f"the database has no closeloop schema yet: {UPGRADE_HINT}" in " ".join(err.split())
    assert not db.exists()  # not even the file
    sqlite3.connect(db).close()  # an empty database file
    code, _, err = finished(closeloop("status", config=config))
    assert (code, sqlite_tables(db)) == (3, set())
    assert UPGRADE_HINT in " ".join(err.split())


def test_a_database_behind_is_refused_until_db_upgrade_migrates_it(tmp_path: Path) -> None:
    db, config = sqlite_config(tmp_path)
    engine = create_db_engine(f"sqlite:///{db}")
    migrate.upgrade(engine, OLDER)
    head = migrate.head_revision()
    code, _, err = finished(closeloop("exceptions", "list", config=config))
    assert code == 3
    message = f"the database is at schema {OLDER}, this closeloop needs {head}: {UPGRADE_HINT}"
    assert message in " ".join(err.split())
    assert migrate.current_revision(engine) == OLDER  # refused, not migrated
    code, _, err = finished(closeloop("db", "check", config=config))
    assert code == 3 and message in " ".join(err.split())
    code, out, _ = finished(closeloop("db", "upgrade", config=config))
    assert (code, out.strip()) == (0, f"migrated the database from {OLDER} to {head}")
    code, out, _ = finished(closeloop("db", "check", config=config))
    assert (code, out.strip()) == (0, f"the database is at schema {head}, as this closeloop needs")
    code, out, err = finished(closeloop("exceptions", "list", "--json", config=config))
    assert (code, out.strip()) == (0, "[]"), err
    engine.dispose()


def test_a_database_ahead_is_refused_by_every_command_and_left_alone(tmp_path: Path) -> None:
    db, config = sqlite_config(tmp_path)
    engine = create_db_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    with engine.begin() as conn:  # as a newer closeloop would have left it
        conn.execute(text("update alembic_version set version_num = '9999'"))
    head = migrate.head_revision()
    message = (
        f"the database is at schema 9999, which this closeloop (newest {head}) does not know: "
        "this closeloop is older than the database: upgrade closeloop"
    )
    for args in (("status",), ("db", "upgrade"), ("worker",)):
        code, _, err = finished(closeloop(*args, config=config))
        assert code == 3, (args, err)
        assert message in " ".join(err.split()), (args, err)
    assert migrate.current_revision(engine) == "9999"
    engine.dispose()


def open_files(pid: int) -> set[str]:
    """The files process ``pid`` has open (Linux ``/proc``; none once it exited)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return set()
    return {os.path.realpath(f"/proc/{pid}/fd/{fd}") for fd in fds}


def test_sqlite_upgraders_take_turns_on_the_write_lock(tmp_path: Path) -> None:
    """On SQLite the whole upgrade is one ``BEGIN IMMEDIATE`` transaction: with the write lock
    held here until every upgrader has the file open, they then race for it together, and
    still exactly one migrates. (Where the winner would commit between two migrations, as
    alembic does by itself on SQLite, it takes the lock back before the waiters wake in
    practice: this test cannot force that interleaving, the single transaction rules it out.)"""
    db, config = sqlite_config(tmp_path)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("PRAGMA journal_mode=WAL")  # as the hub's engine sets it
    lock.execute("BEGIN IMMEDIATE")
    upgraders = [closeloop("db", "upgrade", config=config) for _ in range(UPGRADERS)]
    try:

        def holding_the_file() -> bool:
            return all(str(db.resolve()) in open_files(u.pid) for u in upgraders)

        wait_for(holding_the_file, 60, "every upgrader to open the database")
        assert sqlite_tables(db) == set()  # none got past the lock
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    results = [finished(u) for u in upgraders]
    assert_one_migrated(results, None)


def test_readiness_names_the_fix_when_the_schema_moves_under_a_running_hub(
    sqlite_url: str,
) -> None:
    from fastapi.testclient import TestClient

    from closeloop.bootstrap import build_http_app, build_hub
    from closeloop.config import Settings

    hub = build_hub(Settings(database_url=sqlite_url), connectors={}, bindings=[], upgrade=True)
    try:
        client = TestClient(build_http_app(hub))
        assert client.get("/readyz").json() == {"ready": True, "reason": "ok"}
        for stamp, fix in ((OLDER, UPGRADE_HINT), ("9999", "upgrade closeloop")):
            with hub.store.engine.begin() as conn:
                conn.execute(text("update alembic_version set version_num = :v"), {"v": stamp})
            answer = client.get("/readyz")
            assert answer.status_code == 503 and answer.json()["reason"].endswith(fix)
            assert "sqlite" not in answer.text  # no database address to anonymous callers
    finally:
        hub.close()
