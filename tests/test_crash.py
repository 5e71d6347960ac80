"""Crash test: the hub runs in its own process over real HTTP to two memory sandboxes (one
failing at random), is killed with SIGKILL at random points several times and restarted;
nothing is lost and no effect is applied twice."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import (
    WEBHOOK_SECRET,
    Sandbox,
    db_upgrade,
    done_commands,
    free_port,
    signed,
    wait_http,
)

pytestmark = pytest.mark.slow

RECORDS = 2500
UPDATED = 500


def write_config(path: Path, db: Path, crm: Sandbox, erp: Sandbox, port: int) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{db}",
                "log_format": "json",
                "log_level": "warning",
                "http": {"port": port, "webhook_secret": WEBHOOK_SECRET},
                "worker": {
                    "threads": 4,
                    "poll_interval_s": 0.3,
                    "overlap_s": 30,
                    "lease_s": 3,
                    "retry_base_delay_s": 0.05,
                    "retry_max_delay_s": 0.5,
                    "idle_wait_s": 0.05,
                    "breaker_failures": 20,
                    "breaker_cooldown_s": 0.2,
                },
                "systems": {
                    "crm": {
                        "kind": "memory",
                        "url": crm.url,
                        "objects": ["Record"],
                        "timeout_s": 1.0,
                    },
                    "erp": {
                        "kind": "memory",
                        "url": erp.url,
                        "objects": [],
                        "timeout_s": 0.5,
                        "batch_size": 50,
                    },
                },
                "mirrors": [{"source": "crm", "object": "Record", "target": "erp"}],
            }
        )
    )


def start_hub(config: Path, port: int, log: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "closeloop.cli", "run", "-c", str(config)],
        stdout=log,
        stderr=log,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=30)
    return process


def redeliver(port: int, changes: list[dict[str, Any]]) -> None:
    """Push changes again through the webhook, as a vendor retrying its deliveries would."""
    with contextlib.suppress(httpx.HTTPError):  # hub down: the vendor would retry later
        body = json.dumps(changes).encode()
        url = f"http://127.0.0.1:{port}/webhooks/changes"
        answer = httpx.post(url, content=body, headers=signed(body), timeout=10)
        assert answer.status_code == 200, answer.text  # signed and accepted (or repeats)


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, sandbox_factory: type[Sandbox]
) -> None:
    rng = random.Random(20261122)
    crm = sandbox_factory("crm")
    erp = sandbox_factory("erp", hang_s=1.0)
    erp.http.put(
        "/faults",
        json={
            "rate_limited": 0.05,
            "server_error": 0.05,
            "timeout": 0.03,
            "lost_response": 0.08,
            "retry_after_s": 0.05,
            "seed": 11,
        },
    )
    crm.http.post(
        "/records/Record",
        json=[{"id": f"r{i:05d}", "data": {"name": f"r{i:05d}", "v": 1}} for i in range(RECORDS)],
    )
    db, config, port = tmp_path / "hub.db", tmp_path / "closeloop.yaml", free_port()
    write_config(config, db, crm, erp, port)
    db_upgrade(config)
    log_path = tmp_path / "hub.log"
    killed_at: list[int] = []  # commands done when each kill came
    with log_path.open("ab") as log:
        for round_ in range(5):
            process = start_hub(config, port, log)
            if round_ == 1:  # changes land while the hub runs: new versions of some records
                crm.http.post(
                    "/records/Record",
                    json=[
                        {"id": f"r{i:05d}", "data": {"name": f"r{i:05d}", "v": 2}}
                        for i in rng.sample(range(RECORDS), UPDATED)
                    ],
                )
            pages = crm.http.get("/changes/Record").json()["pages"]
            redeliver(port, rng.sample([c for page in pages for c in page], 300))
            if round_ == 4:
                break
            # kill after a random amount of progress (never more than the work there is)
            target = min(done_commands(db) + rng.randint(50, 500), RECORDS + UPDATED)
            deadline = time.monotonic() + 120
            while done_commands(db) < target and time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"hub exited by itself: {log_path.read_text()[-3000:]}")
                time.sleep(rng.uniform(0.01, 0.2))  # a random moment to kill at, not a race fix
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_at.append(done_commands(db))
        expected = {
            c["external_id"]: c["payload"]
            for page in crm.http.get("/changes/Record").json()["pages"]
            for c in page
        }
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline:
                state = erp.http.get("/effects").json()
                held = {d["name"]: d for d in state["targets"].values()}
                if held == expected:
                    break
                time.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert len(killed_at) == 4
    assert sum(done < RECORDS + UPDATED for done in killed_at) >= 2, killed_at  # mid-work kills
    assert held == expected, "some change never reached the target"
    keys = [e["idempotency_key"] for e in state["effects"]]
    duplicates = {k for k in keys if keys.count(k) > 1} if len(keys) != len(set(keys)) else set()
    assert not duplicates, f"effects applied twice: {sorted(duplicates)[:5]}"
    versions: dict[str, list[int]] = {}
    for effect in state["effects"]:
        versions.setdefault(effect["entity"], []).append(effect["data"]["v"])
    assert all(v == sorted(v) for v in versions.values()), "versions applied out of order"
    assert len(keys) == RECORDS + UPDATED
    assert state["calls"].get("find", 0) > 0  # ambiguous outcomes were looked up
