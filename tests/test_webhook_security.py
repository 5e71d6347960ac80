"""The change webhook is signed, and every route refuses bodies too large, of the wrong
media type, nested too deep or holding unusable numbers, with a JSON reason and nothing
stored (issue 17). In process through the real app (httpx's ASGI transport, which streams
request bodies lazily, so "refused before read whole" is observable), and once through a
real ``closeloop run`` process."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from closeloop.api.limits import nesting_too_deep, parse_json
from closeloop.api.webhooks import sign
from closeloop.bootstrap import Hub, build_http_app
from tests.conftest import (
    WEBHOOK_SECRET,
    Sandbox,
    db_upgrade,
    free_port,
    key_headers,
    make_hub,
    signed,
    wait_http,
)
from tests.memory_system import MemorySystem

LIMIT = 1_048_576  # the default http.max_body_bytes


@pytest.fixture
def hub(sqlite_url: str) -> Iterator[Hub]:
    hub = make_hub(sqlite_url, MemorySystem(name="crm"), MemorySystem(name="erp"))
    yield hub
    hub.close()


def change(eid: str, payload: Any = None, obj: str = "Record") -> dict[str, Any]:
    return {
        "system": "crm",
        "object": obj,
        "external_id": eid,
        "version": "1",
        "payload": {"name": eid} if payload is None else payload,
    }


def call(hub: Hub, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_http_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def post_signed(hub: Hub, body: bytes, **headers: str) -> httpx.Response:
    return call(hub, "POST", "/webhooks/changes", content=body, headers={**signed(body), **headers})


def stored(hub: Hub) -> dict[str, int]:
    return hub.operations.stats().inbox_by_status


# --- signatures --------------------------------------------------------------------------------
def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'[{"system":"crm"}]'
    expected = hmac.new(b"s3cret", b"1767225600." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body, 1767225600) == {
        "X-Closeloop-Timestamp": "1767225600",
        "X-Closeloop-Signature": f"v1={expected}",
    }


def test_only_a_fresh_request_signed_with_the_secret_is_taken(hub: Hub) -> None:
    body = json.dumps([change("a")]).encode()
    now = time.time()
    refused = {
        "unsigned": ({"Content-Type": "application/json"}, "is not signed"),
        "other secret": (signed(body, secret="guess"), "does not match"),
        "stale": (signed(body, at=now - 400), "away from the hub's clock"),
        "from the future": (signed(body, at=now + 400), "away from the hub's clock"),
        "not a number": (
            {**signed(body), "X-Closeloop-Timestamp": "soon"},
            "must be unix seconds",
        ),
        "no scheme": (
            {**signed(body), "X-Closeloop-Signature": "deadbeef"},
            "must be v1=",
        ),
    }
    for name, (headers, reason) in refused.items():
        answer = call(hub, "POST", "/webhooks/changes", content=body, headers=headers)
        assert answer.status_code == 401, name
        assert reason in answer.json()["detail"], (name, answer.json())
    tampered = json.dumps([change("a", {"name": "evil"})]).encode()
    answer = call(hub, "POST", "/webhooks/changes", content=tampered, headers=signed(body))
    assert answer.status_code == 401 and "does not match" in answer.json()["detail"]
    assert stored(hub) == {}

    inside = call(
        hub, "POST", "/webhooks/changes", content=body, headers=signed(body, at=now - 250)
    )
    assert inside.json() == {"accepted": 1, "duplicates": 0}
    rotated = {
        **signed(body),
        "X-Closeloop-Signature": "v1=00, " + signed(body)["X-Closeloop-Signature"],
    }
    again = call(hub, "POST", "/webhooks/changes", content=body, headers=rotated)
    assert again.json() == {"accepted": 0, "duplicates": 1}


def test_without_a_secret_the_webhook_is_off(sqlite_url: str) -> None:
    hub = make_hub(sqlite_url, MemorySystem(name="crm"), MemorySystem(name="erp"))
    hub.settings.http.webhook_secret = None
    try:
        body = json.dumps([change("a")]).encode()
        answer = post_signed(hub, body)
        assert answer.status_code == 403
        assert "configure http.webhook_secret" in answer.json()["detail"]
        assert stored(hub) == {}
    finally:
        hub.close()


# --- body size ---------------------------------------------------------------------------------
class Source:
    """A request body of ``chunks`` pieces of 64 KiB, counting what the server pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b" " * 65536


def test_bodies_over_the_limit_are_refused_before_they_are_read_whole(hub: Hub) -> None:
    declared = Source(1600)  # 100 MiB, announced
    answer = call(
        hub,
        "POST",
        "/webhooks/changes",
        content=declared,
        headers={**signed(b""), "Content-Length": str(1600 * 65536)},
    )
    assert answer.status_code == 413 and "http.max_body_bytes" in answer.json()["detail"]
    assert declared.pulled <= 1  # refused on the header alone

    chunked = Source(1600)  # 100 MiB, streamed without a length
    answer = call(hub, "POST", "/webhooks/changes", content=chunked, headers=signed(b""))
    assert answer.status_code == 413
    assert chunked.pulled <= LIMIT // 65536 + 2  # stopped just past the limit

    operations = call(
        hub, "POST", "/api/v1/exceptions/1/resolve", content=b"x" * (LIMIT + 1), headers={}
    )
    assert operations.status_code == 413  # every route, not only webhooks
    assert stored(hub) == {}

    padded = json.dumps([change("a", {"name": "a", "pad": "x" * (LIMIT - 200)})]).encode()
    assert len(padded) <= LIMIT
    assert post_signed(hub, padded).json() == {"accepted": 1, "duplicates": 0}


def test_webhooks_take_only_their_media_type(hub: Hub) -> None:
    body = json.dumps([change("a")]).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "text/xml"):
        answer = post_signed(hub, body, **{"Content-Type": kind})
        assert answer.status_code == 415, kind
        assert "application/json" in answer.json()["detail"]
    bare = call(
        hub,
        "POST",
        "/webhooks/changes",
        content=body,
        headers=sign(WEBHOOK_SECRET, body, int(time.time())),
    )
    assert bare.status_code == 415 and "(none)" in bare.json()["detail"]
    assert stored(hub) == {}
    charset = post_signed(hub, body, **{"Content-Type": "application/json; charset=utf-8"})
    assert charset.json() == {"accepted": 1, "duplicates": 0}


# --- JSON shape --------------------------------------------------------------------------------
def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


def test_deep_nesting_and_unusable_numbers_get_a_reason_and_store_nothing(hub: Hub) -> None:
    assert post_signed(hub, json.dumps([change("before")]).encode()).status_code == 200
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads would raise RecursionError
    answer = post_signed(hub, deep)
    assert answer.status_code == 400 and "nested deeper than 64" in answer.json()["detail"]
    too_deep = json.dumps([change("d", nested(70))]).encode()
    assert post_signed(hub, too_deep).status_code == 400
    resolve = call(
        hub,
        "POST",
        "/api/v1/exceptions/1/resolve",
        content=deep,
        headers={"Content-Type": "application/json"},
    )
    assert resolve.status_code == 400  # every JSON route, before FastAPI parses it

    bad_numbers = {
        b'[{"system": "crm", "object": "Record", "external_id": "n", "version": "1", '
        b'"payload": {"amount": 1e999}}]': "out of range",
        b'[{"payload": {"amount": ' + b"9" * 5000 + b"}}]": "characters",
        b'[{"payload": {"amount": NaN}}]': "NaN",
        b'[{"payload": {"amount": -Infinity}}]': "Infinity",
    }
    for body, reason in bad_numbers.items():
        answer = post_signed(hub, body)
        assert answer.status_code == 400 and reason in answer.json()["detail"], answer.json()

    fine = json.dumps([change("deep-ok", nested(50)), change("brackets", {"s": "[" * 500})])
    assert post_signed(hub, fine.encode()).json() == {"accepted": 2, "duplicates": 0}
    assert stored(hub) == {"pending": 3}  # before, deep-ok, brackets: nothing else
    assert call(hub, "GET", "/healthz").json() == {"status": "ok"}


def test_nesting_scanner_ignores_brackets_in_strings() -> None:
    assert not nesting_too_deep(json.dumps({"a": "[" * 100, "b": '\\"[[[' * 50}).encode(), 3)
    assert nesting_too_deep(b"[[[[]]]]", 3)
    assert not nesting_too_deep(b"[[[]]][[[]]]", 3)
    assert parse_json(b'{"a": "\\"[[["}') == {"a": '"[[['}


# --- metric labels -----------------------------------------------------------------------------
def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def test_unknown_objects_never_become_metric_labels(hub: Hub) -> None:
    assert post_signed(hub, json.dumps([change("a")]).encode()).status_code == 200
    auth = key_headers(hub)
    before = call(hub, "GET", "/metrics", headers=auth).text
    for n in range(300):
        name = f"Invented_{n:03d}_" + "x" * 60
        body = json.dumps([change(f"u{n}", obj=name)]).encode()
        answer = post_signed(hub, body)
        assert answer.status_code == 422 and "no binding for crm.Invented" in answer.text
    other_system = {**change("s"), "system": "nosuch"}
    assert post_signed(hub, json.dumps([other_system]).encode()).status_code == 422
    after = call(hub, "GET", "/metrics", headers=auth).text
    assert series(after) == series(before)
    assert "Invented" not in after
    assert stored(hub) == {"pending": 1}


# --- a real process ----------------------------------------------------------------------------
def test_a_running_hub_refuses_bad_requests_and_keeps_serving(
    tmp_path: Path, sandbox_factory: type[Sandbox]
) -> None:
    crm, erp = sandbox_factory("crm"), sandbox_factory("erp")
    port = free_port()
    config = tmp_path / "closeloop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
                "http": {"port": port, "webhook_secret": WEBHOOK_SECRET, "max_body_bytes": 4096},
                "worker": {"poll_interval_s": 0, "idle_wait_s": 0.05},
                "systems": {
                    "crm": {"kind": "memory", "url": crm.url, "objects": []},
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
    try:
        wait_http(f"{base}/healthz")
        http = httpx.Client(base_url=base, timeout=10)
        url = "/webhooks/changes"
        body = json.dumps([change("a")]).encode()
        assert (
            http.post(url, content=body, headers={"Content-Type": "application/json"}).status_code
            == 401
        )
        big = json.dumps([change("b", {"pad": "x" * 6000})]).encode()
        assert http.post(url, content=big, headers=signed(big)).status_code == 413

        def stream() -> Iterator[bytes]:
            for _ in range(8):
                yield b" " * 1024

        chunked = http.post(url, content=stream(), headers=signed(b""))
        assert chunked.status_code == 413 and "4096" in chunked.json()["detail"]
        deep = b"[" * 1000 + b"]" * 1000
        assert http.post(url, content=deep, headers=signed(deep)).status_code == 400
        wrong = http.post(url, content=body, headers={**signed(body), "Content-Type": "text/plain"})
        assert wrong.status_code == 415
        assert http.post(url, content=body, headers=signed(body)).json() == {
            "accepted": 1,
            "duplicates": 0,
        }
        assert http.get("/healthz").status_code == 200
        key = subprocess.run(
            [sys.executable, "-m", "closeloop.cli", "keys", "create", "ci", "-c", str(config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = http.get("/api/v1/status", headers={"Authorization": f"Bearer {key}"})
        assert status.json()["inbox_by_status"] in ({"pending": 1}, {"applied": 1})
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
