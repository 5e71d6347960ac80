"""Recorded vendor contracts and payloads (../shared/realdata) through the shipped mappings.

Skipped, with the reason shown, when ../shared/realdata is not beside the checkout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from closeloop.config.files import load_mappers
from closeloop.mapping.engine import Mapper
from closeloop.mapping.spec import FieldRule

REALDATA = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
pytestmark = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"{REALDATA} is absent: recorded vendor payload tests skipped"
)
CASSETTES = REALDATA / "cumulusci-salesforce-cassettes"


class _JsonLikeLoader(yaml.SafeLoader):
    """YAML as the API's JSON would be: timestamps stay strings."""


_JsonLikeLoader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_JsonLikeLoader)


@pytest.fixture(scope="module")
def mappers() -> dict[str, Mapper]:
    return load_mappers()


def vendor_paths(rules: dict[str, FieldRule], whole: bool = False) -> set[str]:
    """First steps (or, with ``whole``, the whole paths) of the vendor paths a mapping reads
    (not literals, not root paths)."""
    paths: set[str] = set()
    for rule in rules.values():
        for path in [rule.path or "", *(rule.coalesce or []), *(rule.concat or [])]:
            if path and not path.startswith(("=", "$.")):
                paths.add(path if whole else path.split(".")[0].split("[")[0])
    return paths


# --- Salesforce ---------------------------------------------------------------------------
def describe(sobject: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (CASSETTES / "extracted_json" / f"GET_sobjects_{sobject}_describe.json").read_text()
    )
    return data


@pytest.mark.parametrize("sobject", ["Account", "Contact", "Opportunity"])
def test_salesforce_mapping_reads_only_fields_the_real_describe_has(
    mappers: dict[str, Mapper], sobject: str
) -> None:
    real = describe(sobject)["fields"]
    fields = {f["name"] for f in real}
    rules = mappers["salesforce"].spec.objects[sobject].fields
    standard = {p for p in vendor_paths(rules) if not p.endswith(("__c", "__r"))}
    parents = {
        f["relationshipName"]: f["referenceTo"][0]
        for f in real
        if f["relationshipName"] and f["referenceTo"]
    }
    relationships = {"OpportunityLineItems", "Product2", "CurrencyIsoCode"}  # child/multi-currency
    assert standard - relationships - set(parents) <= fields, standard - relationships - fields
    for path in vendor_paths(rules, whole=True):  # Account.BillingCountry: on the parent
        relationship, _, rest = path.partition(".")
        if relationship in parents and not rest.endswith("__c") and rest != "CurrencyIsoCode":
            parent_fields = {f["name"] for f in describe(parents[relationship])["fields"]}
            assert rest in parent_fields, path


def test_every_real_stage_maps_to_a_canonical_stage(mappers: dict[str, Mapper]) -> None:
    (stage,) = [f for f in describe("Opportunity")["fields"] if f["name"] == "StageName"]
    picklist = {p["value"] for p in stage["picklistValues"]}
    assert len(picklist) == 10
    assert picklist <= set(mappers["salesforce"].spec.value_maps["stages"])
    won = [p for p in stage["picklistValues"] if p["value"] == "Closed Won"]
    assert won and mappers["salesforce"].spec.value_maps["stages"]["Closed Won"] == "closed_won"


def recorded_request_records(sobject: str) -> list[dict[str, Any]]:
    cassette = load(CASSETTES / "TestUpsert.test_upsert__rest.yaml")
    records = []
    for interaction in cassette["interactions"]:
        body = (interaction.get("request") or {}).get("body")
        if body and "composite/sobjects" in interaction["request"]["uri"]:
            records += [
                r for r in json.loads(body)["records"] if r["attributes"]["type"] == sobject
            ]
    return records


def test_recorded_salesforce_contacts_map(mappers: dict[str, Mapper]) -> None:
    contacts = recorded_request_records("Contact")
    assert len(contacts) >= 2
    for record in contacts:
        result = mappers["salesforce"].map("Contact", record)
        assert result.ok, result.problems
        assert result.data is not None and result.data["email"] == record["Email"].lower()


def test_a_recorded_account_without_country_is_refused_for_that_reason(
    mappers: dict[str, Mapper],
) -> None:
    (account, *_) = recorded_request_records("Account")
    result = mappers["salesforce"].map("Account", account)
    assert [str(p) for p in result.problems] == ["country (from BillingCountry): Field required"]


# --- Harvest ------------------------------------------------------------------------------
HARVEST_SCHEMAS = {
    "clients": "Client",
    "users": "User",
    "projects": "Project",
    "tasks": "Task",
    "time_entries": "TimeEntry",
    "expenses": "Expense",
    "contacts": "Contact",
}


@pytest.fixture(scope="module")
def harvest() -> dict[str, Any]:
    data: dict[str, Any] = load(REALDATA / "harvest-openapi" / "harvest-openapi.yaml")
    return data


@pytest.mark.parametrize("resource", sorted(HARVEST_SCHEMAS))
def test_harvest_mapping_reads_fields_of_the_openapi_schema(
    mappers: dict[str, Mapper], harvest: dict[str, Any], resource: str
) -> None:
    properties = set(harvest["components"]["schemas"][HARVEST_SCHEMAS[resource]]["properties"])
    rules = mappers["harvest"].spec.objects[resource].fields
    assert vendor_paths(rules) - {"country"} <= properties  # clients carry no country


@pytest.mark.parametrize(
    "resource", ["clients", "users", "projects", "tasks", "time_entries", "expenses"]
)
def test_harvest_examples_map(
    mappers: dict[str, Mapper], harvest: dict[str, Any], resource: str
) -> None:
    responses = harvest["paths"][f"/{resource}"]["get"]["responses"]
    (ok,) = [r for code, r in responses.items() if str(code).startswith("2")]
    records = ok["content"]["application/json"]["example"][resource]
    assert records
    for record in records:
        result = mappers["harvest"].map(resource, record)
        assert result.ok, (record.get("id"), [str(p) for p in result.problems])


def test_harvest_approved_time_is_recognised(
    mappers: dict[str, Mapper], harvest: dict[str, Any]
) -> None:
    example = harvest["paths"]["/time_entries"]["get"]["responses"]
    (ok,) = [r for code, r in example.items() if str(code).startswith("2")]
    for record in ok["content"]["application/json"]["example"]["time_entries"]:
        data = mappers["harvest"].map("time_entries", record).data or {}
        assert data["approval_state"] == ("approved" if record["is_closed"] else "submitted")
        assert str(record["hours"]) == data["hours"]


# --- Xero ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xero() -> dict[str, Any]:
    data: dict[str, Any] = load(REALDATA / "xero-openapi" / "xero_accounting.yaml")
    return data


def xero_examples(xero: dict[str, Any], resource: str) -> list[dict[str, Any]]:
    content = xero["paths"][f"/{resource}"]["get"]["responses"]["200"]["content"]
    records: list[dict[str, Any]] = content["application/json"]["example"][resource]
    return records


def test_xero_contacts_map_when_they_have_a_country(
    mappers: dict[str, Mapper], xero: dict[str, Any]
) -> None:
    for contact in xero_examples(xero, "Contacts"):
        countries = [a.get("Country") for a in contact.get("Addresses", []) if a.get("Country")]
        result = mappers["xero"].map("Contacts", contact)
        if countries:
            assert result.ok, [str(p) for p in result.problems]
        else:
            assert [p.path for p in result.problems] == ["country"]


@pytest.mark.parametrize("resource", ["Invoices", "Payments"])
def test_xero_invoices_and_payments_map(
    mappers: dict[str, Mapper], xero: dict[str, Any], resource: str
) -> None:
    records = xero_examples(xero, resource)
    assert records
    for record in records:
        result = mappers["xero"].map(resource, record)
        assert result.ok, [str(p) for p in result.problems]
        data = result.data or {}
        if resource == "Invoices":
            assert data["total"]["currency"] == record["CurrencyCode"]
            assert data["state"] in {"draft", "posted", "paid", "voided"}
