"""Starting the Harvest sandbox: its state directory (``account.json`` with the access token
and account id, made once; ``account.db`` with the records) and its process."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.harvest.account import Account
from closeloop.sandboxes.harvest.app import HarvestSandbox, create_app
from closeloop.sandboxes.process import spawn


def account_settings(home: Path, **overrides: Any) -> dict[str, Any]:
    """``home/account.json`` (token, account id, rate limit), made the first time."""
    path = home / "account.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not data:
        data = {
            "token": secrets.token_urlsafe(32),
            "account_id": 1_234_567,
            "requests_per_window": 100,
            "window_s": 15.0,
        }
    data.update(overrides)
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    path.chmod(0o600)
    return data


def build_sandbox(
    home: Path, faults: FaultPlan | None = None, hang_s: float = 5.0
) -> tuple[HarvestSandbox, FastAPI]:
    """The sandbox of ``home`` and its app, in this process."""
    settings = account_settings(home)
    account = Account(home / "account.db", int(settings["account_id"]))
    sandbox = HarvestSandbox(
        account,
        str(settings["token"]),
        int(settings["requests_per_window"]),
        float(settings["window_s"]),
        faults or FaultPlan(),
        hang_s,
    )
    return sandbox, create_app(sandbox)


@dataclass
class HarvestServer:
    """A running sandbox process and what a client needs to reach it."""

    pid: int
    base_url: str
    token: str
    account_id: int
    log: Path

    def as_json(self) -> dict[str, Any]:
        """The ``harvest`` entry of ``sandbox.json``."""
        return {
            "base_url": self.base_url,
            "token": self.token,
            "account_id": str(self.account_id),
            "url": self.base_url.removesuffix("/v2"),
            "pid": self.pid,
            "log": str(self.log),
        }


def start_harvest(
    home: Path, port: int, faults: FaultPlan | None = None, hang_s: float = 5.0, **overrides: Any
) -> HarvestServer:
    """Start the sandbox of ``home`` on ``port`` and wait until it answers. ``overrides``
    set ``requests_per_window`` or ``window_s``. Raises
    :class:`~closeloop.sandboxes.process.SandboxStartError`."""
    settings = account_settings(home, **overrides)
    log = home / "harvest.log"
    arguments = [
        "--home",
        str(home),
        "--port",
        str(port),
        "--faults",
        json.dumps(asdict(faults or FaultPlan())),
        "--hang-s",
        str(hang_s),
    ]
    url = f"http://127.0.0.1:{port}"
    pid = spawn("closeloop.sandboxes.harvest", arguments, f"{url}/healthz", log)
    return HarvestServer(pid, f"{url}/v2", str(settings["token"]), int(settings["account_id"]), log)
