"""The connector table: configuration validated by each connector's settings model, roles
inferred from the connectors, routing rules checked, and a third-party connector added
through an entry point."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from closeloop.config import ConfigError, load_settings
from closeloop.connectors import catalog
from closeloop.connectors.catalog import BuildContext, build_connector, plugins
from closeloop.devtools import sandboxctl
from closeloop.domain.operations import Role

SYSTEMS: dict[str, Any] = {
    "sf": {
        "kind": "salesforce",
        "url": "https://x",
        "client_id": "i",
        "client_secret": "s",
        "organization_id": "00D000000000001",
    },
    "hv": {"kind": "harvest", "url": "https://h", "token": "t", "account_id": "1"},
    "erp_de": {"kind": "tryton", "url": "http://t", "database": "de", "user": "u", "password": "p"},
}
FLOWS = {"mobilize": {}, "bill_time": {}, "invoice": {}, "status_back": {}}


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "closeloop.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_builtin_connector_is_one_row_with_its_own_settings_and_mappings() -> None:
    table = plugins()
    assert set(catalog.BUILTIN) <= set(table)
    assert {table[k].role for k in ("salesforce", "harvest", "tryton")} == set(Role)
    for kind in ("salesforce", "harvest", "tryton"):
        (folder,) = table[kind].mappings()
        assert (folder / f"{kind}.yaml").is_file()  # the connector ships its mapping


def test_roles_are_inferred_from_the_connectors_and_prefixes_from_the_crm(
    tmp_path: Path,
) -> None:
    settings = load_settings(write(tmp_path, {"systems": SYSTEMS, "flows": FLOWS}))
    roles = settings.engagement_roles()
    assert (roles.crm.systems, roles.psa.systems, roles.erp.systems) == (
        ("sf",),
        ("hv",),
        ("erp_de",),
    )
    assert roles.prefix("sf") == "SF"
    assert type(settings.systems["erp_de"]).__name__ == "TrytonSettings"


def test_two_erps_with_a_routing_rule(tmp_path: Path) -> None:
    systems = {**SYSTEMS, "erp_fr": {**SYSTEMS["erp_de"], "database": "fr"}}
    routing = {
        "erp": {
            "rules": [{"field": "customer.country", "values": ["FR"], "system": "erp_fr"}],
            "default": "erp_de",
        }
    }
    config = {"systems": systems, "flows": FLOWS, "roles": routing}
    roles = load_settings(write(tmp_path, config)).engagement_roles()
    assert roles.erp.systems == ("erp_de", "erp_fr")
    assert roles.erp.route({"customer": {"country": "FR"}}) == "erp_fr"
    routing["erp"]["default"] = "erp_xx"
    with pytest.raises(ConfigError, match="erp_xx"):
        load_settings(write(tmp_path, config))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"erp_de": {"kind": "sap", "url": "x"}}, "'sap'"),
        ({"erp_de": {"kind": "tryton", "url": "x"}}, "systems.erp_de.tryton.database"),
        ({"hv": {**SYSTEMS["hv"], "colour": "red"}}, "systems.hv.harvest.colour"),
    ],
)
def test_a_bad_system_is_refused_naming_the_key(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(write(tmp_path, {"systems": {**SYSTEMS, **change}}))


def test_flows_without_a_system_for_a_role_are_refused(tmp_path: Path) -> None:
    systems = {k: v for k, v in SYSTEMS.items() if k != "erp_de"}
    with pytest.raises(ConfigError, match="no system plays erp"):
        load_settings(write(tmp_path, {"systems": systems, "flows": FLOWS}))


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution (a ``.dist-info`` on the path) whose entry point adds a
    connector of kind ``ledger``."""
    (tmp_path / "ledger_connector.py").write_text(
        textwrap.dedent(
            """
            from typing import Literal
            from closeloop.connectors.catalog import ConnectorPlugin
            from closeloop.connectors.memory.client import MemoryConnector
            from closeloop.connectors.settings import SystemSettings
            from closeloop.domain.operations import Role

            class LedgerSettings(SystemSettings):
                kind: Literal["ledger"]
                ledger_book: str

            def build(name, settings, context):
                return MemoryConnector(settings.url, system=name)

            PLUGIN = ConnectorPlugin(
                kind="ledger", settings=LedgerSettings, factory=build, role=Role.ERP
            )
            """
        )
    )
    info = tmp_path / "ledger_connector-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ledger-connector\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[closeloop.connectors]\nledger = ledger_connector:PLUGIN\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.cache_clear()
    catalog.systems_adapter.cache_clear()
    yield
    plugins.cache_clear()
    catalog.systems_adapter.cache_clear()


@pytest.mark.usefixtures("third_party")
def test_a_third_party_connector_joins_through_an_entry_point(tmp_path: Path) -> None:
    systems = {
        **{k: v for k, v in SYSTEMS.items() if k != "erp_de"},
        "books": {"kind": "ledger", "url": "http://127.0.0.1:9", "ledger_book": "main"},
    }
    settings = load_settings(write(tmp_path, {"systems": systems, "flows": FLOWS}))
    assert settings.engagement_roles().erp.systems == ("books",)
    connector = build_connector("books", settings.systems["books"], BuildContext())
    try:
        assert connector.system == "books"
    finally:
        connector.close()  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="ledger_book"):
        load_settings(write(tmp_path, {"systems": {"books": {"kind": "ledger", "url": "x"}}}))


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"erp": {"systems": ["hv"]}}, "'hv', a harvest system, which plays psa"),
        ({"crm": {"default": "sf"}}, "roles.crm takes no rules or default"),
        (
            {
                "erp": {
                    "rules": [
                        {"field": "customer.country", "values": ["Atlantis"], "system": "erp_de"}
                    ]
                }
            },
            "Atlantis",
        ),
    ],
)
def test_roles_that_cannot_work_are_refused(
    tmp_path: Path, roles: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, {"systems": SYSTEMS, "flows": FLOWS, "roles": roles}))


def test_several_systems_need_a_rule_or_a_default_and_rule_countries_are_iso(
    tmp_path: Path,
) -> None:
    systems = {**SYSTEMS, "erp_fr": {**SYSTEMS["erp_de"], "database": "fr"}}
    with pytest.raises(ConfigError, match="neither rules nor a default"):
        load_settings(write(tmp_path, {"systems": systems, "flows": FLOWS}))
    rule = {"field": "customer.country", "values": ["France"], "system": "erp_fr"}
    config = {"systems": systems, "flows": FLOWS, "roles": {"erp": {"rules": [rule]}}}
    roles = load_settings(write(tmp_path, config)).engagement_roles()
    assert roles.erp.rules[0].values == ("FR",)  # as the deal's country is compared


def test_sandboxes_sharing_a_role_get_a_default_until_rules_route_to_the_others(
    tmp_path: Path,
) -> None:
    state = {
        "tryton": {"url": "http://127.0.0.1:1/", "database": "d", "user": "u", "password": "p"},
        "salesforce": {
            "instance_url": "https://127.0.0.1:2",
            "client_id": "c",
            "client_secret": "s",
            "username": "u",
            "password": "p",
            "organization_id": "00D000000000001AAA",
            "api_version": "62.0",
            "ca_bundle": None,
        },
        "harvest": {"base_url": "http://127.0.0.1:3/v2", "token": "t", "account_id": "1"},
        "xero": {
            "base_url": "http://127.0.0.1:4/api.xro/2.0",
            "token_url": "http://127.0.0.1:4/connect/token",
            "client_id": "c",
            "client_secret": "s",
            "tenant_id": "00000000-0000-0000-0000-000000000001",
        },
    }
    path = tmp_path / "closeloop.yaml"
    path.write_text(sandboxctl.hub_config(tmp_path, state))
    roles = load_settings(path).engagement_roles()
    assert roles.erp.systems == ("tryton", "xero") and roles.erp.default == "tryton"
    assert roles.erp.rules == () and roles.psa.systems == ("harvest",)
