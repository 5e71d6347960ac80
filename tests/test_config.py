"""The example configuration in the repository stays valid."""

from __future__ import annotations

from pathlib import Path

from closeloop.config import load_settings

REPO = Path(__file__).resolve().parent.parent


def test_the_example_configuration_loads() -> None:
    settings = load_settings(REPO / "closeloop.example.yaml")
    assert set(settings.systems) == {"crm", "erp"}
    assert settings.systems["erp"].requests_per_window == 100
    assert [(m.source, m.target) for m in settings.mirrors] == [("crm", "erp")]
