"""What an installer sees: the version, the licence, the dependency locks."""

from __future__ import annotations

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
