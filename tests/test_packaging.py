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
    versions) writes the same files again."""
    for lock in ("requirements.lock", "requirements-dev.lock"):
        shutil.copy(REPO / lock, tmp_path / lock)
    env = {**os.environ, "LOCK_DIR": str(tmp_path), "UV": _tool("uv")}
    subprocess.run([REPO / "scripts" / "lock"], env=env, check=True, timeout=120)
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert (tmp_path / lock).read_text() == (REPO / lock).read_text(), lock
