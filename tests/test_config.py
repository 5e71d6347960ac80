"""The example configuration in the repository stays valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from closeloop.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_the_example_configuration_loads() -> None:
    settings = load_settings(REPO / "closeloop.example.yaml")
    assert set(settings.systems) == {"crm", "erp"}
    assert settings.systems["erp"].requests_per_window == 100
    assert [(m.source, m.target) for m in settings.mirrors] == [("crm", "erp")]


def test_secret_files_provide_keys_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker and Kubernetes secrets: one file per key in ``CLOSELOOP_SECRETS_DIR``, named like
    the environment variable (nested keys with ``__``), over the YAML file, under the
    environment."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "closeloop_database_url").write_text("postgresql://hub:s3cret@db/closeloop\n")
    (secrets / "closeloop_http__webhook_secret").write_text("from-a-file")
    (secrets / "closeloop_systems__erp__password").write_text("erp-secret")
    config = tmp_path / "closeloop.yaml"
    config.write_text(
        "database_url: sqlite:///yaml.db\nhttp: {port: 8500}\nlog_format: json\n"
        "systems:\n  erp: {kind: tryton, url: 'http://127.0.0.1:8000', database: erp,"
        " user: hub, password: in-yaml}\n"
    )
    monkeypatch.setenv("CLOSELOOP_SECRETS_DIR", str(secrets))
    monkeypatch.delenv("CLOSELOOP_DATABASE_URL", raising=False)
    settings = load_settings(config)
    assert settings.database_url == "postgresql://hub:s3cret@db/closeloop"  # stripped
    assert settings.http.webhook_secret is not None
    assert settings.http.webhook_secret.get_secret_value() == "from-a-file"
    assert settings.http.port == 8500 and settings.log_format == "json"  # the rest from YAML
    erp = settings.systems["erp"].model_dump()  # a nested key merged into the YAML's entry
    assert erp["password"] == "erp-secret" and erp["database"] == "erp" and erp["user"] == "hub"
    monkeypatch.setenv("CLOSELOOP_DATABASE_URL", "sqlite:///env.db")
    assert load_settings(config).database_url == "sqlite:///env.db"
    monkeypatch.delenv("CLOSELOOP_SECRETS_DIR")
    monkeypatch.delenv("CLOSELOOP_DATABASE_URL")
    assert load_settings(config).database_url == "sqlite:///yaml.db"


def test_a_missing_secrets_folder_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOSELOOP_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"CLOSELOOP_SECRETS_DIR: .*absent: no such folder"):
        load_settings()
