"""Starting a sandbox in its own process and waiting until it answers."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


class SandboxStartError(RuntimeError):
    """A sandbox did not come up; the message says why, with its log's tail."""


def spawn(
    module: str,
    arguments: list[str],
    health_url: str,
    log: Path,
    *,
    ca_bundle: Path | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Run ``python -m module arguments`` with output appended to ``log``; return its PID once
    ``health_url`` answers (over TLS trusting ``ca_bundle`` when given). Raises
    :class:`SandboxStartError` when the process exits or does not answer in ``timeout_s``."""
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_pid stops it and its children
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SandboxStartError(f"{module} exited:\n{tail}")
        try:
            httpx.get(health_url, verify=verify, timeout=1)
            return process.pid
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise SandboxStartError(f"{module} did not answer within {timeout_s} s")
