"""Start and stop a local Tryton server (``trytond`` from its own virtual environment).

The database is initialised once (``trytond-admin``, about 40 s on SQLite) and kept as a
pristine copy; every start restores that copy (about 1 s). PostgreSQL databases are cloned
from a pristine template database instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODULES = (
    "party company currency country product account account_invoice account_payment "
    "account_product project timesheet timesheet_cost project_invoice project_revenue "
    "company_work_time"
).split()
"""Tryton modules activated in the sandbox database."""

ADMIN = "admin"
ADMIN_PASSWORD = "closeloop-admin"  # noqa: S105 - a local sandbox's fixed password


class SandboxError(RuntimeError):
    """The Tryton sandbox could not start; the message says why and where the log is."""


def find_trytond() -> Path:
    """The folder holding ``trytond`` and ``trytond-admin``.

    Looks at ``CLOSELOOP_TRYTON_BIN``, then ``.venv-tryton/bin`` in the working folder, then
    the environment closeloop runs in (``pip install 'closeloop[tryton]'``), then
    ``.venv-tryton/bin`` of the source checkout, then ``PATH``. Raises :class:`SandboxError`
    naming the install step.
    """
    candidates = []
    if os.environ.get("CLOSELOOP_TRYTON_BIN"):
        candidates.append(Path(os.environ["CLOSELOOP_TRYTON_BIN"]))
    candidates.append(Path.cwd() / ".venv-tryton" / "bin")
    candidates.append(Path(sys.executable).parent)  # not resolved: a venv's python is a link
    candidates.append(Path(__file__).resolve().parents[4] / ".venv-tryton" / "bin")
    on_path = shutil.which("trytond")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "trytond").is_file() and (folder / "trytond-admin").is_file():
            return folder
    raise SandboxError(
        "trytond is not installed: pip install 'closeloop[tryton]' (or, in a checkout, run "
        "scripts/setup: it creates .venv-tryton from requirements-tryton.lock), or set "
        "CLOSELOOP_TRYTON_BIN to the folder holding trytond"
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TrytonServer:
    """A running sandbox server: where to reach it and how to stop it."""

    url: str
    database: str
    user: str
    password: str
    pid: int
    log: Path

    def as_json(self) -> dict[str, Any]:
        """The ``tryton`` entry of ``sandbox.json``."""
        return {
            "url": self.url,
            "database": self.database,
            "user": self.user,
            "password": self.password,
            "pid": self.pid,
            "log": str(self.log),
        }

    def stop(self) -> None:
        """Stop the server (its process group), by PID."""
        stop_pid(self.pid)


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it if it outlives ``timeout_s``;
    reap ``pid`` when it is this process's child (no zombie is left behind)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(pid)
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _reap(pid):
            return
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            _reap(pid)
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _reap(pid: int) -> bool:
    """Collect ``pid``'s exit when it is our child and has exited; ``True`` when it has."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or already collected)
        return False
    return done == pid


@dataclass
class TrytonSandbox:
    """Where a sandbox lives: ``home`` (``./.closeloop/tryton``), a ``cache`` for pristine
    databases, and the database URI (``sqlite://`` or ``postgresql://...``)."""

    home: Path
    cache: Path
    database: str = "closeloop"
    uri: str = "sqlite://"
    flavour: str = ""
    """What the prepare step does (a version): part of the pristine copy's name."""

    def __post_init__(self) -> None:
        # trytond turns a relative SQLite path into a URI it cannot open: absolute paths only
        self.home, self.cache = self.home.resolve(), self.cache.resolve()

    @property
    def _sqlite(self) -> bool:
        return self.uri.startswith("sqlite")

    def _config(self, port: int) -> Path:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.home / "trytond.conf"
        conf.write_text(
            f"[database]\nuri = {self.uri}\npath = {data}\n"
            f"[web]\nlisten = 127.0.0.1:{port}\n[session]\ntimeout = 86400\n"
        )
        return conf

    def _pristine_name(self) -> str:
        digest = hashlib.sha256(" ".join([*MODULES, self.flavour]).encode()).hexdigest()[:10]
        return f"pristine-{digest}"

    def prepare(self, bin_dir: Path, prepare_db: Any = None) -> None:
        """Put a fresh copy of the pristine database in place, making the pristine copy
        first when there is none (``trytond-admin``, then ``prepare_db(url)`` on a running
        server, e.g. ``closeloop tryton init``)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        if self._sqlite:
            pristine = self.cache / f"{self._pristine_name()}.sqlite"
            if not pristine.exists():
                self._initialise(bin_dir, prepare_db, pristine)
            target = self.home / "data" / f"{self.database}.sqlite"
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(pristine, target)
        else:
            self._prepare_postgres(bin_dir, prepare_db)

    def _initialise(self, bin_dir: Path, prepare_db: Any, pristine: Path) -> None:
        """Create the pristine SQLite database once."""
        work = self.cache / f"init-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        init = TrytonSandbox(work, self.cache, self.database, self.uri, self.flavour)
        (work / "data").mkdir(parents=True)
        (work / "data" / f"{self.database}.sqlite").touch()
        init._build(bin_dir, prepare_db)
        source = work / "data" / f"{self.database}.sqlite"
        tmp = pristine.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # the backup API copies what is still in the write-ahead log too (a plain file copy
        # would lose it: tryton.md, gotcha 3)
        with sqlite3.connect(source) as src, sqlite3.connect(tmp) as dst:
            src.backup(dst)
        tmp.replace(pristine)
        shutil.rmtree(work, ignore_errors=True)

    def _build(self, bin_dir: Path, prepare_db: Any) -> None:
        """Initialise this database with ``trytond-admin``, then ``prepare_db(server)`` on a
        server started for the purpose."""
        self._admin(bin_dir)
        if prepare_db is not None:
            server = self.start(bin_dir)
            try:
                prepare_db(server)
            finally:
                server.stop()

    def _admin(self, bin_dir: Path) -> None:
        conf = self._config(free_port())
        password_file = self.home / "admin-password"
        password_file.write_text(ADMIN_PASSWORD)
        log = self.home / "trytond-admin.log"
        with log.open("wb") as out:
            result = subprocess.run(
                [
                    str(bin_dir / "trytond-admin"),
                    "-c",
                    str(conf),
                    "-d",
                    self.database,
                    "--all",
                    "--activate-dependencies",
                    "--email",
                    "admin@example.com",
                    "-u",
                    *MODULES,
                ],
                env={**os.environ, "TRYTONPASSFILE": str(password_file)},
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise SandboxError(f"trytond-admin failed (exit {result.returncode}); see {log}")

    def _prepare_postgres(self, bin_dir: Path, prepare_db: Any) -> None:
        import psycopg

        pristine = self._pristine_name().replace("-", "_")
        admin_url = self.uri.rstrip("/") + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (pristine,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{pristine}"')
                init = TrytonSandbox(self.home, self.cache, pristine, self.uri, self.flavour)
                init._build(bin_dir, prepare_db)
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}" TEMPLATE "{pristine}"')

    def start(
        self, bin_dir: Path, port: int | None = None, timeout_s: float = 60.0
    ) -> TrytonServer:
        """Start ``trytond`` on 127.0.0.1 and wait until it answers. Raises
        :class:`SandboxError` with the log's tail when it does not."""
        port = port or free_port()
        conf = self._config(port)
        log = self.home / "trytond.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(bin_dir / "trytond"), "-c", str(conf), "-d", self.database],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SandboxError(f"trytond exited ({process.returncode}): {_tail(log)}")
            try:
                answer = httpx.post(
                    f"{url}/rpc/",
                    json={"id": 0, "method": "common.server.version", "params": []},
                    timeout=2,
                )
                if answer.status_code == 200:
                    return TrytonServer(url, self.database, ADMIN, ADMIN_PASSWORD, process.pid, log)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        stop_pid(process.pid)
        raise SandboxError(f"trytond did not answer within {timeout_s}s: {_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"
