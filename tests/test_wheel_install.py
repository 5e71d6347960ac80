"""Installed like a Python tool: the sdist and wheel built from the source, the wheel installed
with pip into a fresh virtual environment (the runtime lock, then the wheel), and used from a
folder outside the repository, with no ``PYTHONPATH``: ``closeloop --version``, the sandboxes,
``db upgrade`` and a hub that answers and stops on SIGTERM.

Built and installed once per run (about 25 s), shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.package


def _version() -> str:
    """The version pyproject.toml declares."""
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


@dataclass
class Installed:
    """A fresh environment with the wheel installed, and where to run it from."""

    wheel: Path
    sdist: Path
    bin: Path
    work: Path
    env: dict[str, str]

    def closeloop(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the installed ``closeloop`` in the work folder; raises when it fails."""
        return subprocess.run(
            [str(self.bin / "closeloop"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )


def _clean_environment() -> dict[str, str]:
    """This process's environment less what points at the checkout or configures closeloop
    (``PYTHONPATH``, ``VIRTUAL_ENV``, ``CLOSELOOP_*``)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLOSELOOP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


def _run(*command: str | Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(c) for c in command], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    env = _clean_environment()  # pip keeps the user's cache of downloads
    source = root / "source"  # a copy: building writes egg-info and build/ beside the code
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    dist = root / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source, env=env)
    (wheel,) = dist.glob("closeloop-*.whl")
    (sdist,) = dist.glob("closeloop-*.tar.gz")

    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, env=env)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--quiet")
    _run(*pip, "--require-hashes", "-r", REPO / "requirements.lock", env=env)
    _run(*pip, "--no-deps", wheel, env=env)

    work = root / "work"  # outside the repository: nothing of the checkout is found from here
    work.mkdir()
    user = {**env, "HOME": str(root / "home")}  # closeloop's caches and files per user: fresh
    return Installed(wheel, sdist, venv / "bin", work, user)


def test_the_wheel_and_sdist_hold_every_data_file_and_the_licence(installed: Installed) -> None:
    package = REPO / "src" / "closeloop"
    data = {
        f"closeloop/{p.relative_to(package)}"
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert "closeloop/store/migrations/script.py.mako" in data  # the walk found them
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    missing = data - names
    assert not missing, f"add to [tool.setuptools.package-data]: {sorted(missing)}"
    migrations = {p.name for p in (package / "store" / "migrations" / "versions").glob("*.py")}
    shipped = {n.rsplit("/", 1)[1] for n in names if "/migrations/versions/" in n}
    assert migrations <= shipped
    assert f"closeloop-{_version()}.dist-info/licenses/LICENSE" in names
    with tarfile.open(installed.sdist) as sdist:
        assert f"closeloop-{_version()}/LICENSE" in sdist.getnames()


def test_the_installed_command_is_the_wheels_not_the_checkouts(installed: Installed) -> None:
    assert installed.closeloop("--version").stdout == f"closeloop {_version()}\n"
    where = subprocess.run(
        [str(installed.bin / "python"), "-c", "import closeloop; print(closeloop.__file__)"],
        cwd=installed.work,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.bin.parent / "lib")
    assert not Path(where).is_relative_to(REPO)


@pytest.fixture
def sandboxes(installed: Installed) -> Iterator[Path]:
    """Salesforce and Harvest sandboxes started by the installed command; stopped after."""
    home = installed.work / "sandboxes"
    try:
        installed.closeloop(
            "sandbox", "up", "--system", "salesforce", "--system", "harvest", "--home", str(home)
        )
        yield home
    finally:
        subprocess.run(
            [str(installed.bin / "closeloop"), "sandbox", "down", "--home", str(home)],
            cwd=installed.work,
            env=installed.env,
            capture_output=True,
            timeout=60,
        )


def test_sandboxes_db_upgrade_and_a_hub_that_answers_then_stops_on_sigterm(
    installed: Installed, sandboxes: Path
) -> None:
    config = sandboxes / "closeloop.yaml"
    assert "salesforce" in config.read_text() and "harvest" in config.read_text()
    upgraded = installed.closeloop("db", "upgrade", "-c", str(config))  # sandbox up did it
    assert "already: nothing to do" in upgraded.stdout

    port = int(json.loads((sandboxes / "sandbox.json").read_text())["hub"]["port"])
    log = (installed.work / "hub.log").open("w")
    hub = subprocess.Popen(
        [str(installed.bin / "closeloop"), "run", "-c", str(config)],
        cwd=installed.work,
        env=installed.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready = _answer(base, "/readyz", hub)
        assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
        sign_in = httpx.get(f"{base}/console/sign-in", timeout=5)  # a shipped template
        assert sign_in.status_code == 200 and "<form" in sign_in.text
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(timeout=60) == 0, (installed.work / "hub.log").read_text()[-2000:]
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait(timeout=10)
        log.close()


def _answer(base: str, path: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    """The first answer of the starting hub to ``path`` (within 60 s); fails when the process
    exits first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"closeloop run exited with {process.returncode}"
        try:
            return httpx.get(f"{base}{path}", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)  # not listening yet: poll again
    raise AssertionError(f"{base}{path} did not answer within 60 s")
