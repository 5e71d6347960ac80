"""What an installer sees: the version, the licence, the dependency locks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from closeloop.cli import app

REPO = Path(__file__).resolve().parent.parent


def test_version_prints_the_installed_distributions_version_and_exits() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"closeloop {version('closeloop')}\n"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version("closeloop") == declared
    # eager: no subcommand needed, none run
    assert CliRunner().invoke(app, ["--version", "status"]).stdout.startswith("closeloop ")


def test_the_licence_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO / "LICENSE").read_text()
    assert declared == "Apache-2.0"
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def _pins(lock: Path) -> dict[str, str]:
    """``{name: version}`` of a lock file's requirements."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M)
    return dict(found)


def _tool(name: str) -> str:
    """A console script of the dev lock, next to the running Python (scripts/setup)."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed: scripts/setup installs requirements-dev.lock"
    return str(path)


def test_the_runtime_lock_holds_no_development_tool_and_the_dev_lock_adds_them() -> None:
    runtime = _pins(REPO / "requirements.lock")
    dev = _pins(REPO / "requirements-dev.lock")
    assert not set(runtime) & set(dev)  # one version of each package: the two install together
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[\[<>=;]", r)[0].lower() for r in project["dependencies"]}
    assert wanted <= set(runtime)
    tools = {re.split(r"[\[<>=;]", r)[0].lower() for r in project["optional-dependencies"]["dev"]}
    assert tools <= set(dev)
    assert {"pytest", "ruff", "mypy", "playwright", "schemathesis", "hypothesis"} <= set(dev)
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert "://" not in (REPO / lock).read_text()  # names, versions, hashes: no index


def test_the_committed_locks_are_what_scripts_lock_writes(tmp_path: Path) -> None:
    """pyproject's dependencies and the locks agree: ``scripts/lock`` (uv, keeping the locked
    versions) pins the same packages at the same versions again (hashes are compared by pip
    on every install; a file a project adds later to a pinned release changes no pin)."""
    for lock in ("requirements.lock", "requirements-dev.lock"):
        shutil.copy(REPO / lock, tmp_path / lock)
    env = {**os.environ, "LOCK_DIR": str(tmp_path), "UV": _tool("uv")}
    subprocess.run([REPO / "scripts" / "lock"], env=env, check=True, timeout=120)
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert _pins(tmp_path / lock) == _pins(REPO / lock), lock


def test_the_tryton_extra_installs_what_requirements_tryton_in_pins() -> None:
    """``pip install 'closeloop[tryton]'`` gives an installed hub the same Tryton server a
    checkout's ``.venv-tryton`` has (from requirements-tryton.in's lock)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = (REPO / "requirements-tryton.in").read_text().splitlines()
    pinned = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert set(project["optional-dependencies"]["tryton"]) == pinned


def test_trytond_is_found_in_the_environment_closeloop_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from closeloop.sandboxes.tryton import server

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # no .venv-tryton here
    monkeypatch.delenv("CLOSELOOP_TRYTON_BIN", raising=False)
    monkeypatch.setattr(server.sys, "executable", str(venv_bin / "python"))
    for name in ("trytond", "trytond-admin"):
        (venv_bin / name).write_text("#!/bin/sh\n")
    assert server.find_trytond() == venv_bin
    monkeypatch.setenv("CLOSELOOP_TRYTON_BIN", str(tmp_path))  # the variable comes first
    (tmp_path / "trytond").write_text("")
    (tmp_path / "trytond-admin").write_text("")
    assert server.find_trytond() == tmp_path
