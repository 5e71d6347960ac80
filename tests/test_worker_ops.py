"""Operable workers (issue 19): a `closeloop worker` process serves /metrics and /healthz,
logs every library's lines as JSON when asked, and stops gracefully on SIGTERM (finishing or
giving back its claimed commands); `closeloop run --once` processes what is due and exits.

Real processes over real HTTP: memory sandboxes, a proxy in front of the target that holds
its batch calls until the test lets them through, and the hub's own command line."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from closeloop.observability import ProbeServer
from closeloop.store.db import create_db_engine
from tests.conftest import Sandbox, free_port, make_hub, wait_http
from tests.faultproxy import FaultProxy, Hold
from tests.memory_system import MemorySystem

RECORDS = 30
BATCH = 10
WAIT_S = 60.0


def write_config(path: Path, db_url: str, crm: str, erp: str, **worker: Any) -> Path:
    """A hub mirroring the sandbox ``crm``'s records into ``erp`` (one poll at start)."""
    path.write_text(
        yaml.safe_dump(
            {
                "database_url": db_url,
                "log_level": "info",
                "worker": {
                    "threads": 1,
                    "poll_interval_s": 3600,
                    "lease_s": 120,
                    "idle_wait_s": 0.05,
                    "retry_base_delay_s": 0.05,
                    **worker,
                },
                "systems": {
                    "crm": {"kind": "memory", "url": crm, "objects": ["Record"], "timeout_s": 30},
                    "erp": {
                        "kind": "memory",
                        "url": erp,
                        "objects": [],
                        "timeout_s": 30,
                        "batch_size": BATCH,
                        "max_concurrent": 2,
                    },
                },
                "mirrors": [{"source": "crm", "object": "Record", "target": "erp"}],
            }
        )
    )
    return path


def cli(*args: str, config: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``closeloop ARGS -c CONFIG`` with JSON logs; its result."""
    return subprocess.run(
        [sys.executable, "-m", "closeloop.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "CLOSELOOP_LOG_FORMAT": "json"},
    )


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


class Worker:
    """A ``closeloop worker`` process with JSON logs; its stderr lines, parsed, in a queue."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "closeloop.cli", "worker", "-c", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CLOSELOOP_LOG_FORMAT": "json"},
        )
        self.lines: list[str] = []
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                self._events.put(json.loads(line))
            except ValueError:
                self._events.put({"event": "(not JSON)", "line": line})

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first log event named ``event`` from now on (fails after a minute)."""
        while True:
            try:
                found = self._events.get(timeout=WAIT_S)
            except queue.Empty:
                pytest.fail(f"no {event!r} from the worker: {''.join(self.lines)[-3000:]}")
            if found.get("event") == event:
                return found

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=WAIT_S)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def systems(sandbox_factory: type[Sandbox]) -> Iterator[tuple[Sandbox, Sandbox, FaultProxy]]:
    """A CRM with ``RECORDS`` records, an ERP, and a proxy in front of the ERP."""
    crm, erp = sandbox_factory("crm"), sandbox_factory("erp")
    crm.http.post(
        "/records/Record",
        json=[{"id": f"r{i:03d}", "data": {"name": f"r{i:03d}"}} for i in range(RECORDS)],
    )
    proxy = FaultProxy(erp.url)
    try:
        yield crm, erp, proxy
    finally:
        if proxy.hold is not None:
            proxy.hold.release.set()
        proxy.close()


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in Prometheus text."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def commands(db_url: str) -> list[dict[str, Any]]:
    """The hub's outbox rows (status, attempts, ambiguous, claimed_by), by id."""
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("select id, status, attempts, ambiguous, claimed_by from commands order by id")
            )
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def assert_each_delivered_once(erp: Sandbox, db_url: str) -> dict[str, Any]:
    """Every record reached the ERP exactly once and every command is done; the ERP's
    state."""
    state: dict[str, Any] = erp.http.get("/effects").json()
    keys = [e["idempotency_key"] for e in state["effects"]]
    assert len(keys) == len(set(keys)) == RECORDS, "a command was lost or applied twice"
    assert {r["status"] for r in commands(db_url)} == {"done"}
    return state


def test_sigterm_mid_dispatch_finishes_the_calls_in_flight_and_exits_0(
    tmp_path: Path, db_url: str, systems: tuple[Sandbox, Sandbox, FaultProxy]
) -> None:
    crm, erp, proxy = systems
    proxy.hold = Hold("/batch")
    config = write_config(tmp_path / "closeloop.yaml", db_url, crm.url, proxy.url)
    assert cli("db", "upgrade", config=config).returncode == 0
    worker = Worker(config)
    try:
        probes = worker.wait_for("worker probes listening")["metrics"].removesuffix("/metrics")
        assert proxy.hold.arrived.wait(WAIT_S), "no batch call reached the ERP"
        # a call is in flight: the worker's own endpoints describe it
        health = httpx.get(f"{probes}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["database"] == "ok" and health.json()["worker"]["running"]
        scrape = httpx.get(f"{probes}/metrics", timeout=10).text
        received = sample(
            scrape,
            "closeloop_changes_received_total",
            system="crm",
            object="Record",
            result="accepted",
        )
        assert received == RECORDS, scrape
        in_flight = sample(scrape, "closeloop_commands", system="erp", status="in_flight")
        assert in_flight == 2 * BATCH, scrape
        worker.process.send_signal(signal.SIGTERM)
        worker.wait_for("stopping: claiming nothing more")
        proxy.hold.release.set()  # the calls in flight end within the grace period
        assert worker.stop() == 0
    finally:
        proxy.hold.release.set()
        if worker.process.poll() is None:
            worker.process.kill()
    lines = json_lines("".join(worker.lines))  # every line is JSON, the libraries' too
    assert any(line.get("logger") == "httpx" for line in lines)
    rows = commands(db_url)
    pid = f":{worker.process.pid}:"
    finished = [r for r in rows if r["status"] == "done"]
    assert len(finished) == 2 * BATCH and all(pid in r["claimed_by"] for r in finished)
    assert [(r["status"], r["attempts"]) for r in rows if r not in finished] == [("pending", 0)] * (
        RECORDS - 2 * BATCH
    )  # nothing claimed after SIGTERM
    done = cli("run", "--once", config=config)
    assert done.returncode == 0, done.stderr
    assert_each_delivered_once(erp, db_url)


def test_sigterm_past_the_grace_period_gives_the_claims_back_and_nothing_is_duplicated(
    tmp_path: Path, db_url: str, systems: tuple[Sandbox, Sandbox, FaultProxy]
) -> None:
    crm, erp, proxy = systems
    proxy.hold = Hold("/batch")
    config = write_config(
        tmp_path / "closeloop.yaml", db_url, crm.url, proxy.url, shutdown_grace_s=0.2
    )
    assert cli("db", "upgrade", config=config).returncode == 0
    worker = Worker(config)
    try:
        assert proxy.hold.arrived.wait(WAIT_S), "no batch call reached the ERP"
        worker.process.send_signal(signal.SIGTERM)
        released = worker.wait_for("stopping: claims released after the grace period")
        # one batch's call is held in flight, the other batch waited for the one thread
        assert (released["released"], released["sent_unanswered"]) == (2 * BATCH, BATCH)
        rows = commands(db_url)
        assert {r["status"] for r in rows} == {"pending"}  # none left claimed
        assert {r["attempts"] for r in rows} == {0}  # the attempt is not counted
        assert sum(r["ambiguous"] for r in rows) == BATCH  # the sent ones: looked up first
        proxy.hold.release.set()  # the held call now reaches the ERP, after the release
        assert worker.stop() == 0
    finally:
        proxy.hold.release.set()
        if worker.process.poll() is None:
            worker.process.kill()
    json_lines("".join(worker.lines))
    done = cli("run", "--once", config=config)
    assert done.returncode == 0, done.stderr
    state = assert_each_delivered_once(erp, db_url)
    assert state["calls"].get("find", 0) >= 1  # the late write was found, not sent again


def test_run_once_does_what_is_due_leaves_later_retries_and_exits_0(
    tmp_path: Path, sqlite_url: str, systems: tuple[Sandbox, Sandbox, FaultProxy]
) -> None:
    crm, erp, _ = systems
    erp.http.put("/faults", json={"server_error": 1.0})  # every batch: 503
    config = write_config(
        tmp_path / "closeloop.yaml", sqlite_url, crm.url, erp.url, retry_base_delay_s=600
    )
    assert cli("db", "upgrade", config=config).returncode == 0
    first = cli("run", "--once", config=config)
    assert first.returncode == 0, first.stderr
    events = json_lines(first.stderr)
    assert any(e.get("logger") == "httpx" for e in events)  # stdlib records as JSON too
    rows = commands(sqlite_url)
    assert len(rows) == RECORDS  # polled once, applied, dispatched
    assert {(r["status"], r["ambiguous"]) for r in rows} == {("pending", False)}
    assert min(r["attempts"] for r in rows) >= 1  # tried, the retry left for a later pass
    erp.http.put("/faults", json={})
    engine = create_db_engine(sqlite_url)
    with engine.begin() as conn:  # the retries come due (as time passes between passes)
        conn.execute(text("update commands set next_attempt_at = created_at"))
    engine.dispose()
    second = cli("run", "--once", config=config)
    assert second.returncode == 0, second.stderr
    assert_each_delivered_once(erp, sqlite_url)


def test_run_once_exits_1_when_the_hub_itself_fails(tmp_path: Path) -> None:
    nothing_there = f"postgresql://hub@127.0.0.1:{free_port()}/hub"  # connection refused
    config = tmp_path / "closeloop.yaml"
    config.write_text(yaml.safe_dump({"database_url": nothing_there}))
    result = cli("run", "--once", config=config)
    assert result.returncode == 1
    (failure,) = [e for e in json_lines(result.stderr) if e["level"] == "error"]
    assert failure["event"] == "closeloop run --once failed"
    assert "Connection refused" in failure["exception"]  # the cause, in the JSON line


def test_healthz_says_whether_the_loop_runs_and_the_database_answers(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    hub = make_hub(f"sqlite:///{folder / 'hub.db'}", MemorySystem("crm"), MemorySystem("erp"))
    probes = ProbeServer("127.0.0.1", 0, hub.metrics.registry, lambda: hub.worker.health(5.0))
    stop = threading.Event()
    loop = threading.Thread(target=hub.worker.run, args=(stop,))
    try:
        idle = httpx.get(f"{probes.url}/healthz", timeout=10)
        assert idle.status_code == 503  # no loop runs in this process yet
        assert idle.json()["worker"] == {"running": False, "last_round_s_ago": None}
        loop.start()
        wait_http(f"{probes.url}/healthz")  # 200 once a round started
        assert httpx.get(f"{probes.url}/nothing", timeout=10).status_code == 404
        assert "closeloop_inbox_lag_seconds 0.0" in httpx.get(f"{probes.url}/metrics").text
        stop.set()
        loop.join(timeout=30)
        stopped = httpx.get(f"{probes.url}/healthz", timeout=10)
        assert stopped.status_code == 503 and not stopped.json()["worker"]["running"]
        assert stopped.json()["database"] == "ok"
        hub.store.close()  # no pooled connection left, and the database moves away
        folder.rename(tmp_path / "elsewhere")
        down = httpx.get(f"{probes.url}/healthz", timeout=10)
        assert down.status_code == 503
        assert down.json()["database"] == "unreachable: OperationalError"
    finally:
        stop.set()
        if loop.is_alive():
            loop.join(timeout=30)
        probes.close()
        hub.close()


@pytest.mark.parametrize(("value", "port"), [("off", None), ("", None), ("9464", 9464)])
def test_the_probe_port_is_set_or_turned_off_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, port: int | None
) -> None:
    from closeloop.config import load_settings

    monkeypatch.chdir(tmp_path)  # no ./closeloop.yaml: the environment alone
    monkeypatch.setenv("CLOSELOOP_WORKER__METRICS_PORT", value)
    assert load_settings(None).worker.metrics_port == port
