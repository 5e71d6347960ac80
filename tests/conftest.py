"""Shared fixtures: databases (SQLite file, PostgreSQL schema), hubs wired to memory systems."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import Settings
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.flows import Binding
from closeloop.store import migrate
from closeloop.store.db import create_db_engine
from closeloop.store.sql import SqlStore
from tests.memory_system import MemorySystem

PG_URL = os.environ.get("CLOSELOOP_TEST_PG_URL")
WEBHOOK_SECRET = "test-webhook-secret"
"""The change webhook's secret in the tests' hubs (``http.webhook_secret``)."""
REPO = Path(__file__).resolve().parent.parent


def pg_schema_url(schema: str) -> str:
    """The test server's URL with ``search_path`` set to ``schema``."""
    assert PG_URL
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty schema on the test PostgreSQL (CLOSELOOP_TEST_PG_URL), dropped after."""
    if not PG_URL:
        pytest.skip("no PostgreSQL: set CLOSELOOP_TEST_PG_URL (scripts/test starts one)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_db_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'closeloop.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn: the contract suite runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'closeloop.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A migrated store on each backend."""
    s = SqlStore.from_url(db_url)
    migrate.upgrade(s.engine)
    yield s
    s.close()


def make_hub(url: str, source: MemorySystem, target: MemorySystem, **worker: object) -> Hub:
    """A hub mirroring ``source.Record`` into ``target`` with fast retries."""
    settings = Settings(database_url=url, http={"webhook_secret": WEBHOOK_SECRET})
    settings.worker.retry_base_delay_s = 0.01
    settings.worker.retry_max_delay_s = 0.05
    settings.worker.idle_wait_s = 0.01
    settings.worker.breaker_cooldown_s = 0.05
    for key, value in worker.items():
        setattr(settings.worker, key, value)
    return build_hub(
        settings,
        connectors={source.name: source, target.name: target},
        bindings=[
            Binding(source.name, "Record", "record", record_mapper, (MirrorFlow(target.name),))
        ],
        upgrade=True,
    )


def signed(body: bytes, secret: str = WEBHOOK_SECRET, at: float | None = None) -> dict[str, str]:
    """Headers of a JSON request to the change webhook signing ``body`` at ``at`` (unix
    seconds; now by default)."""
    from closeloop.api.webhooks import sign

    stamp = int(time.time() if at is None else at)
    return {"Content-Type": "application/json", **sign(secret, body, stamp)}


@contextlib.contextmanager
def serving(hub: Hub) -> Iterator[str]:
    """``hub``'s HTTP app served by uvicorn in a thread on a free port; its base URL. The
    server stops and the hub closes on leaving."""
    import threading

    import uvicorn

    from closeloop.bootstrap import build_http_app

    port = free_port()
    web = uvicorn.Server(uvicorn.Config(build_http_app(hub), port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=10)
        hub.close()


def key_headers(hub: Hub, role: str = "viewer") -> dict[str, str]:
    """The ``Authorization`` header of a new API key of ``hub`` with ``role``."""
    made = hub.access.create(f"{role}-{len(hub.access.keys())}", role, "test", None)
    return {"Authorization": f"Bearer {made.token}"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    """Wait until ``url`` answers 200 (a server we started is up); :func:`wait_for`."""

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout_s, f"{url} to answer")


def wait_for(check: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it is truthy (an observable state of other processes or threads,
    not a guess at how long they take); its value. Raises ``TimeoutError`` naming ``what``
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Sandbox:
    """A memory sandbox in its own process (``python -m closeloop.sandboxes.memory``)."""

    def __init__(self, name: str, hang_s: float = 1.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "closeloop.sandboxes.memory",
                "--port",
                str(self.port),
                "--name",
                name,
                "--hang-s",
                str(hang_s),
            ],
        )
        wait_http(f"{self.url}/healthz")
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def sandbox_factory() -> Iterator[type[Sandbox]]:
    """Start sandboxes with ``factory(name)``; all are stopped after the test."""
    started: list[Sandbox] = []

    class _Factory(Sandbox):
        def __init__(self, name: str, hang_s: float = 1.0) -> None:
            super().__init__(name, hang_s)
            started.append(self)

    yield _Factory
    for sandbox in started:
        sandbox.stop()


def firm_seed() -> int:
    """The seed of an end-to-end test's firm (100-999): ``CLOSELOOP_TEST_FIRM_SEED`` when
    set, to replay a failed run, else a fresh one (records stay unique in a shared ERP). The
    seed is in every record id of the firm: opportunity ``0065g0000246005AAA`` is seed 246."""
    import random

    chosen = os.environ.get("CLOSELOOP_TEST_FIRM_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(100, 999)


def fresh_tax_id(country: str) -> str:
    """A valid tax id no other test uses (a German VAT number or a Swiss UID): tests that
    share one ERP database must not share tax ids, or customer matching rightly sees twins."""
    import random

    from stdnum.ch import uid
    from stdnum.de import vat
    from stdnum.iso7064 import mod_11_10

    rng = random.SystemRandom()
    while True:  # some bases have no check digit (a Swiss UID's mod 11 of 10): draw again
        digits = f"{rng.randrange(10_000_000, 99_999_999)}"
        if country == "DE":
            number = f"DE{digits}{mod_11_10.calc_check_digit(digits)}"
            valid = vat.is_valid(number)
        elif country == "CH":
            number = f"CHE{digits}{uid.calc_check_digit(digits)}"
            valid = uid.is_valid(number)
        else:
            raise ValueError(f"no tax id maker for {country}")
        if valid:
            return number


def done_commands(db: Path) -> int:
    """Commands done in the hub database ``db`` (SQLite; 0 before the hub created it)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return int(
                conn.execute("select count(*) from commands where status='done'").fetchone()[0]
            )
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def db_upgrade(config: Path) -> str:
    """Run ``closeloop db upgrade -c CONFIG`` as an operator does before starting a hub on a
    new database (no other command migrates it); its output. Asserts it succeeded."""
    result = subprocess.run(
        [sys.executable, "-m", "closeloop.cli", "db", "upgrade", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def sandbox_cli(home: Path, *args: str, ok: bool = True, timeout_s: float = 300) -> str:
    """Run ``closeloop sandbox ARGS --home HOME`` as a user would; its output (stdout and
    stderr). Asserts it succeeded (or, with ``ok=False``, that it failed)."""
    result = subprocess.run(
        [sys.executable, "-m", "closeloop.cli", "sandbox", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result.stdout + result.stderr
