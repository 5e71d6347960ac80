"""``closeloop sandbox up|down|status``: the local systems a developer or the demo runs.

``up`` starts a real Tryton (initialised once, restored from a pristine copy after that)
and writes the connection details to ``<home>/sandbox.json``; ``down`` stops what ``up``
started, by PID; ``status`` says what runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.setup import SETUP_VERSION, TrytonSetup, initialize
from closeloop.sandboxes.tryton.server import (
    TrytonSandbox,
    TrytonServer,
    find_trytond,
    stop_pid,
)


def cache_dir() -> Path:
    """Where pristine databases are kept (``CLOSELOOP_SANDBOX_CACHE``, default
    ``~/.cache/closeloop``)."""
    return Path(os.environ.get("CLOSELOOP_SANDBOX_CACHE", Path.home() / ".cache" / "closeloop"))


def init_tryton(server: TrytonServer) -> None:
    """Prepare a fresh sandbox database as ``closeloop tryton init`` does."""
    rpc = TrytonRPC(server.url, server.database, server.user, server.password, timeout_s=300)
    try:
        initialize(rpc, TrytonSetup())
    finally:
        rpc.close()


def start_tryton(home: Path, uri: str = "sqlite://", database: str = "closeloop") -> TrytonServer:
    """A running, initialised Tryton sandbox under ``home/tryton``."""
    sandbox = TrytonSandbox(
        home / "tryton", cache_dir(), database, uri, flavour=f"setup-{SETUP_VERSION}"
    )
    bin_dir = find_trytond()
    sandbox.prepare(bin_dir, init_tryton)
    return sandbox.start(bin_dir)


def read_state(home: Path) -> dict[str, Any]:
    """``home/sandbox.json`` (empty when absent)."""
    path = home / "sandbox.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return data


def write_state(home: Path, state: dict[str, Any]) -> None:
    """Write ``home/sandbox.json`` atomically."""
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / "sandbox.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(home / "sandbox.json")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def up(home: Path) -> dict[str, Any]:
    """Start what is not running yet; returns the sandbox state."""
    state = read_state(home)
    entry = state.get("tryton")
    if not (entry and alive(int(entry["pid"]))):
        state["tryton"] = start_tryton(home).as_json()
        write_state(home, state)
    return state


def down(home: Path) -> list[str]:
    """Stop everything ``up`` started; returns what was stopped."""
    state = read_state(home)
    stopped = []
    for name, entry in state.items():
        if isinstance(entry, dict) and "pid" in entry and alive(int(entry["pid"])):
            stop_pid(int(entry["pid"]))
            stopped.append(name)
    (home / "sandbox.json").unlink(missing_ok=True)
    return stopped


def status(home: Path) -> dict[str, str]:
    """``{system: "running at URL" | "stopped"}``."""
    report = {}
    for name, entry in read_state(home).items():
        if not isinstance(entry, dict) or "pid" not in entry:
            continue
        if not alive(int(entry["pid"])):
            report[name] = f"stopped (pid {entry['pid']} is gone)"
            continue
        try:
            httpx.post(
                f"{entry['url']}/rpc/",
                json={"id": 0, "method": "common.server.version", "params": []},
                timeout=2,
            )
            report[name] = f"running at {entry['url']} (pid {entry['pid']})"
        except httpx.HTTPError:
            report[name] = f"pid {entry['pid']} alive but {entry['url']} does not answer"
    return report
