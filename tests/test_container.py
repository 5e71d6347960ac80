"""The container files, checked where no container engine runs: the Dockerfile lints with
hadolint, compose.yaml validates against the Compose Specification's JSON schema
(check-jsonschema's copy), and every command they run is a real ``closeloop`` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from closeloop.cli import app
from closeloop.config import HttpSettings, load_settings

REPO = Path(__file__).resolve().parent.parent


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def _tool(name: str) -> str:
    """A console script of the dev lock, next to the running Python (scripts/setup)."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed: scripts/setup installs requirements-dev.lock"
    return str(path)


def _instruction(name: str) -> list[str]:
    """The JSON (exec) form of the final stage's last ``name`` instruction."""
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", _dockerfile(), re.M)
    assert found, f"no {name} in exec form"
    value: list[str] = json.loads(found[-1])
    return value


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())  # merges `<<`
    return data


def _closeloop_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return {name: s for name, s in services.items() if s.get("image", "").startswith("closeloop")}


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("compose", ["compose.yaml", "broken"])
def test_compose_yaml_validates_against_the_compose_specification(
    compose: str, tmp_path: Path
) -> None:
    path = REPO / compose
    if compose == "broken":  # the check can fail: a condition Compose does not know
        path = tmp_path / "compose.yaml"
        text = (REPO / "compose.yaml").read_text()
        path.write_text(text.replace("service_completed_successfully", "service_done"))
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode == 0) == (compose == "compose.yaml"), result.stdout


def test_the_image_and_compose_run_real_closeloop_commands() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert _instruction("ENTRYPOINT") == ["closeloop"] and scripts["closeloop"] == (
        "closeloop.cli:main"
    )
    commands = {name: tuple(s["command"]) for name, s in _closeloop_services().items()}
    assert commands == {"migrate": ("db", "upgrade"), "hub": ("run",), "worker": ("worker",)}
    assert tuple(_instruction("CMD")) == commands["hub"]  # the image's default is the hub
    runner = CliRunner()
    for command in {*commands.values(), tuple(_instruction("CMD"))}:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
    assert runner.invoke(app, ["serve", "--help"]).exit_code != 0  # the check can fail
    assert re.findall(r"^EXPOSE\s+(\d+)$", _dockerfile(), re.M) == [str(HttpSettings().port)]


def test_the_hub_and_workers_start_after_the_one_migration_on_a_healthy_postgres() -> None:
    services = _compose()["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("hub", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["healthcheck"] == {"disable": True}  # no HTTP on 8400


def test_the_database_url_reaches_the_settings_as_a_compose_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose mounts each secret at /run/secrets/<name>, the image sets
    CLOSELOOP_SECRETS_DIR=/run/secrets: the secret's name is the setting's."""
    (secrets_dir,) = re.findall(r"CLOSELOOP_SECRETS_DIR=(\S+)", _dockerfile())
    assert secrets_dir == "/run/secrets"
    compose = _compose()
    run_secrets = tmp_path / "run-secrets"
    run_secrets.mkdir()
    for name, service in _closeloop_services().items():
        assert service["secrets"] == ["closeloop_database_url"], name
    url = "postgresql://closeloop:pw@postgres:5432/closeloop"
    assert "file" in compose["secrets"]["closeloop_database_url"]
    (run_secrets / "closeloop_database_url").write_text(url + "\n")
    monkeypatch.setenv("CLOSELOOP_SECRETS_DIR", str(run_secrets))
    monkeypatch.delenv("CLOSELOOP_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no closeloop.yaml here
    assert load_settings().database_url == url
    postgres = compose["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything out ...
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", _dockerfile(), re.M):
        copied |= {s.rstrip("/") for s in sources.split()}
    assert copied == allowed  # ... but what the image is built from
