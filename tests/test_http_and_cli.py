"""The hub's HTTP app and CLI, as separate processes over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import (
    WEBHOOK_SECRET,
    Sandbox,
    db_upgrade,
    free_port,
    signed,
    wait_for,
    wait_http,
)


def cli(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "closeloop.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLOSELOOP_API_KEY": "", **env},
    )


@pytest.fixture
def hub(tmp_path: Path, sandbox_factory: type[Sandbox]) -> Iterator[tuple[str, Path, Sandbox, str]]:
    """``closeloop run`` on a SQLite file, mirroring a crm sandbox into an erp sandbox, and
    an operator key made with ``closeloop keys create``."""
    crm, erp = sandbox_factory("crm"), sandbox_factory("erp")
    port = free_port()
    config = tmp_path / "closeloop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
                "http": {"port": port, "webhook_secret": WEBHOOK_SECRET},
                "worker": {"poll_interval_s": 0, "idle_wait_s": 0.05},
                "systems": {
                    "crm": {"kind": "memory", "url": crm.url},
                    "erp": {"kind": "memory", "url": erp.url, "objects": []},
                },
                "mirrors": [{"source": "crm", "object": "Record", "target": "erp"}],
            }
        )
    )
    db_upgrade(config)
    process = subprocess.Popen(
        [sys.executable, "-m", "closeloop.cli", "run", "-c", str(config)], stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    made = cli(config, "keys", "create", "dana", "--role", "operator", "--expires-days", "1")
    assert made.returncode == 0 and "shown only once" in made.stderr, made.stderr
    yield base, config, erp, made.stdout.strip()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def change(eid: str, version: str = "1", **payload: Any) -> dict[str, Any]:
    return {
        "system": "crm",
        "object": "Record",
        "external_id": eid,
        "version": version,
        "payload": payload or {"name": eid},
    }


def post_changes(
    http: httpx.Client, changes: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST ``changes`` (JSON, or bytes as they are) to the change webhook, signed."""
    body = changes if isinstance(changes, bytes) else json.dumps(changes).encode()
    return http.post("/webhooks/changes", content=body, headers={**signed(body), **(headers or {})})


def test_webhook_health_metrics_and_exception_operations(
    hub: tuple[str, Path, Sandbox, str],
) -> None:
    base, config, erp, key = hub
    http = httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {key}"})
    assert http.get("/readyz").json() == {"ready": True, "reason": "ok"}

    bad = post_changes(http, [change("a"), change("", "1"), {"oops": 1}])
    assert bad.status_code == 422 and len(bad.json()["problems"]) >= 2
    assert post_changes(http, b"{not json").status_code == 400
    assert http.get("/api/v1/status").json()["inbox_by_status"] == {}  # nothing stored

    ok = post_changes(
        http,
        [change("a"), change("a"), change("b", name="b", reject_reason="tax id invalid")],
        headers={"X-Correlation-Id": "deal-0042"},
    )
    assert ok.json() == {"accepted": 2, "duplicates": 1}
    assert post_changes(http, change("a")).json() == {
        "accepted": 0,
        "duplicates": 1,
    }

    exceptions = wait_for(lambda: http.get("/api/v1/exceptions").json()["items"])
    (exc,) = exceptions
    assert exc["error_class"] == "validation" and "tax id invalid" in exc["message"]
    assert exc["correlation_id"] == "deal-0042"  # carried from intake to the target's answer
    assert wait_for(lambda: len(erp.http.get("/effects").json()["effects"]) == 1)

    metrics = http.get("/metrics").text
    assert (
        'closeloop_changes_received_total{object="Record",result="duplicate",system="crm"} 2.0'
        in metrics
    )
    assert 'closeloop_exceptions_open{error_class="validation"} 1.0' in metrics
    assert "closeloop_inbox_lag_seconds 0.0" in metrics
    assert httpx.get(f"{base}/metrics").status_code == 401  # /metrics needs a key too

    # the CLI sees the same state
    listed = json.loads(cli(config, "exceptions", "list", "--json").stdout)
    assert [e["id"] for e in listed] == [exc["id"]]
    status = json.loads(cli(config, "status", "--json").stdout)
    assert status["commands_by_status"] == {"done": 1, "parked": 1}
    assert status["hub_running"] and status["systems"]["crm"]["calls"] is None
    assert status["hub_calls_unavailable"] == "hub running; set CLOSELOOP_API_KEY to read its calls"
    status = json.loads(cli(config, "status", "--json", CLOSELOOP_API_KEY=key).stdout)
    assert status["systems"]["erp"]["calls"] >= 1 and status["hub_calls_unavailable"] is None
    status = json.loads(cli(config, "status", "--json", CLOSELOOP_API_KEY=key + "x").stdout)
    assert "refused CLOSELOOP_API_KEY" in status["hub_calls_unavailable"]
    no_reason = http.post(f"/api/v1/exceptions/{exc['id']}/resolve", json={"reason": " "})
    assert no_reason.status_code == 422  # bad input, by its error type
    assert http.post("/api/v1/exceptions/999/replay", json={}).status_code == 404
    result = cli(
        config,
        "exceptions",
        "resolve",
        str(exc["id"]),
        "--reason",
        "customer exempt",
        "--actor",
        "carol",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resolved_by"] == "carol"
    again = cli(config, "exceptions", "replay", str(exc["id"]))
    assert again.returncode == 1 and "not open" in again.stderr
    assert http.get("/api/v1/exceptions").json() == {"items": [], "next": None}

    # a person links records across systems, over HTTP and from the CLI
    url = "/api/v1/xref/account/crm/A-1"
    body = {"target_system": "erp", "target_id": "E-1", "reason": "same VAT number"}
    linked = http.post(url, json=body, headers={"X-Closeloop-Actor": "mallory"})  # ignored
    assert linked.status_code == 200 and linked.json() == {"moved": []}
    assert http.post(url, json={**body, "reason": ""}).status_code == 422
    result = cli(
        config,
        "xref",
        "link",
        "account",
        "crm:A-1",
        "erp:E-2",
        "--reason",
        "merged",
        "--actor",
        "erin",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"linked": ["crm:A-1", "erp:E-2"], "moved": []}
    bad = cli(config, "xref", "link", "account", "crm", "erp:E-3", "--reason", "x")
    assert bad.returncode == 2 and "<system>:<id>" in bad.stderr
    with sqlite3.connect(config.parent / "hub.db") as db:
        rows = db.execute("select system, external_id from xref where system = 'erp'").fetchall()
        actors = db.execute("select actor from audit where action = 'link'").fetchall()
    assert rows == [("erp", "E-2")] and sorted(actors) == [("erin",), ("key:dana",)]

    # a credit note is asked only of an invoice the hub made (this hub made none)
    credit = http.post("/api/v1/invoices/SF-1/2026-08/credit", json={"reason": "wrong hours"})
    assert credit.status_code == 404 and "made no invoice 'SF-1/2026-08'" in credit.text
    no_reason = http.post("/api/v1/invoices/SF-1/2026-08/credit", json={"reason": ""})
    assert no_reason.status_code == 422
    result = cli(config, "credit", "SF-1/2026-08", "--reason", "wrong hours")
    assert result.returncode == 1 and "made no invoice" in result.stderr


def test_bad_configuration_is_reported_with_its_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "worker": {"threads": 0},
                "mirrors": [{"source": "nowhere", "target": "erp"}],
                "unknown_key": 1,
            }
        )
    )
    result = cli(config, "status")
    assert result.returncode == 2
    message = result.stderr
    assert message.startswith(f"configuration error: {config}: ")
    assert "worker.threads" in message and "unknown_key" in message
    missing = cli(tmp_path / "absent.yaml", "status")
    assert missing.returncode == 2 and "no such configuration file" in missing.stderr
