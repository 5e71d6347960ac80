"""The Xero sandbox's tracking categories and items, over real HTTP to its own process:
Xero's limits (two active categories, four in all, 100 active options a category), unique
names and codes, archiving, the ``Tracking`` of invoice and credit note lines (unknown or
archived options failing their element alone), the defaults a line takes from its
``ItemCode``, and every kind of answer validating against Xero's Accounting OpenAPI
description. Each test gets a sandbox of its own: the limits are the organisation's."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from closeloop.sandboxes.xero.tracking import UNKNOWN_CATEGORY, UNKNOWN_OPTION
from tests.xero_support import ROOMY, Api, body, contact, line, load_openapi, running_xero, validate

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_xero(tmp_path / "xero", **ROOMY) as started:
        client = Api(started)
        yield client
        client.close()


@pytest.fixture(scope="module")
def openapi() -> Any:
    return load_openapi()


def errors_of(answer: Any) -> list[str]:
    """The validation messages of a 400's elements."""
    return [e["Message"] for el in answer.json()["Elements"] for e in el["ValidationErrors"]]


def category(api: Api, name: str, *options: str) -> dict[str, Any]:
    made = api.call("PUT", "TrackingCategories", json={"Name": name})
    assert made.status_code == 200, made.text
    found: dict[str, Any] = made.json()["TrackingCategories"][0]
    if options:
        path = f"TrackingCategories/{found['TrackingCategoryID']}/Options"
        added = api.call("PUT", path, json={"Options": [{"Name": o} for o in options]})
        assert added.status_code == 200, added.text
        found["Options"] = added.json()["Options"]
    return found


def test_tracking_categories_keep_xero_limits_and_names(api: Api, openapi: Any) -> None:
    region = api.call("PUT", "TrackingCategories", json={"Name": "Region"})
    validate(openapi, "PUT", "TrackingCategories", region)
    rid = region.json()["TrackingCategories"][0]["TrackingCategoryID"]
    department = category(api, "Department")
    third = api.call("PUT", "TrackingCategories", json={"Name": "Project"})
    assert third.status_code == 400 and third.json()["Type"] == "ValidationException"
    assert errors_of(third) == ["An organisation can have at most 2 active tracking categories"]
    validate(openapi, "PUT", "TrackingCategories", third)
    same = api.call("PUT", "TrackingCategories", json={"Name": " region "})
    assert "For each specified tracking category the name must be unique" in errors_of(same)
    long = api.call("PUT", "TrackingCategories", json={"Name": "R" * 101})
    assert "must not be longer than 100 characters" in errors_of(long)[0]

    options = f"TrackingCategories/{rid}/Options"
    added = api.call("PUT", options, json={"Options": [{"Name": n} for n in ("North", "East")]})
    validate(openapi, "PUT", options, added)
    north, east = added.json()["Options"]
    assert (north["Name"], north["Status"], north["IsActive"]) == ("North", "ACTIVE", True)
    assert api.call("PUT", options, json={"Name": "South"}).status_code == 200  # one object
    twice = api.call("PUT", options, json={"Options": [{"Name": "West"}, {"Name": "north"}]})
    assert errors_of(twice) == ["For each specified tracking option the name must be unique"]
    assert (
        "must not be longer than 100"
        in errors_of(api.call("PUT", options, json={"Name": "O" * 101}))[0]
    )
    archived = api.call(
        "POST", f"{options}/{east['TrackingOptionID']}", json={"Status": "ARCHIVED"}
    )
    validate(openapi, "POST", f"{options}/{east['TrackingOptionID']}", archived)
    assert archived.json()["Options"][0]["IsArchived"] is True
    renamed = api.call("POST", f"{options}/{north['TrackingOptionID']}", json={"Name": "Northern"})
    assert renamed.json()["Options"][0]["Name"] == "Northern"

    listed = api.call("GET", "TrackingCategories")
    validate(openapi, "GET", "TrackingCategories", listed)
    shown = {
        c["Name"]: [o["Name"] for o in c["Options"]] for c in listed.json()["TrackingCategories"]
    }
    assert shown == {"Department": [], "Region": ["Northern", "South"]}
    assert [c["Name"] for c in listed.json()["TrackingCategories"]] == ["Department", "Region"]
    every = api.call("GET", "TrackingCategories", params={"includeArchived": "true"}).json()
    region_all = next(c for c in every["TrackingCategories"] if c["Name"] == "Region")
    assert [o["Name"] for o in region_all["Options"]] == ["Northern", "East", "South"]
    one = api.call("GET", f"TrackingCategories/{rid}")
    validate(openapi, "GET", f"TrackingCategories/{rid}", one)
    assert len(one.json()["TrackingCategories"][0]["Options"]) == 3
    filtered = api.call(
        "GET", "TrackingCategories", params={"where": 'Name=="Region"', "order": "Name DESC"}
    )
    assert [c["TrackingCategoryID"] for c in filtered.json()["TrackingCategories"]] == [rid]

    did = department["TrackingCategoryID"]
    shelved = api.call("POST", f"TrackingCategories/{did}", json={"Status": "ARCHIVED"})
    validate(openapi, "POST", f"TrackingCategories/{did}", shelved)
    assert shelved.json()["TrackingCategories"][0]["Status"] == "ARCHIVED"
    project = category(api, "Project")  # two active again: Region and Project
    back = api.call("POST", f"TrackingCategories/{did}", json={"Status": "ACTIVE"})
    assert errors_of(back) == ["An organisation can have at most 2 active tracking categories"]
    api.call(
        "POST", f"TrackingCategories/{project['TrackingCategoryID']}", json={"Status": "ARCHIVED"}
    )
    category(api, "Fourth")  # four in all: Region, Department, Project, Fourth
    fifth = api.call("PUT", "TrackingCategories", json={"Name": "Fifth"})
    assert "An organisation can have at most 4 tracking categories" in errors_of(fifth)
    assert (
        api.call("GET", "TrackingCategories/00000000-0000-0000-0000-000000000000").status_code
        == 404
    )


def test_a_category_has_at_most_100_active_options(api: Api) -> None:
    made = category(api, "Client", *(f"Client {n:03d}" for n in range(100)))
    path = f"TrackingCategories/{made['TrackingCategoryID']}/Options"
    over = api.call("PUT", path, json={"Name": "Client 100"})
    assert errors_of(over) == ["A tracking category can have at most 100 active tracking options"]
    first = made["Options"][0]["TrackingOptionID"]
    assert api.call("POST", f"{path}/{first}", json={"Status": "ARCHIVED"}).status_code == 200
    assert api.call("PUT", path, json={"Name": "Client 100"}).status_code == 200
    again = api.call("POST", f"{path}/{first}", json={"Status": "ACTIVE"})
    assert errors_of(again) == ["A tracking category can have at most 100 active tracking options"]


def tracked_line(amount: str, *tracking: dict[str, str]) -> dict[str, Any]:
    return line(amount) | {"Tracking": list(tracking)}


def test_line_tracking_is_checked_per_element_and_stored_whole(api: Api, openapi: Any) -> None:
    region = category(api, "Region", "North", "South")
    department = category(api, "Department", "Sales")
    south = region["Options"][1]
    path = f"TrackingCategories/{region['TrackingCategoryID']}/Options/{south['TrackingOptionID']}"
    api.call("POST", path, json={"Status": "ARCHIVED"})
    cid = contact(api, "Tracked Buyer Ltd")
    by_id = {
        "TrackingCategoryID": department["TrackingCategoryID"],
        "TrackingOptionID": department["Options"][0]["TrackingOptionID"],
    }
    lines = {
        "good": tracked_line("100.00", {"Name": "region", "Option": "NORTH"}, by_id),
        "category": tracked_line("1.00", {"Name": "Colour", "Option": "Red"}),
        "option": tracked_line("1.00", {"Name": "Region", "Option": "West"}),
        "archived": tracked_line("1.00", {"Name": "Region", "Option": "South"}),
    }
    elements = [
        {"Type": "ACCREC", "Contact": {"ContactID": cid}, "LineItems": [li]}
        for li in lines.values()
    ]
    answer = api.call(
        "PUT", "Invoices", params={"summarizeErrors": "false"}, json={"Invoices": elements}
    )
    assert answer.status_code == 200, answer.text
    validate(openapi, "PUT", "Invoices", answer)
    rows = answer.json()["Invoices"]
    assert [r["StatusAttributeString"] for r in rows] == ["OK", "ERROR", "ERROR", "ERROR"]
    assert [r["ValidationErrors"][0]["Message"] for r in rows[1:]] == [
        UNKNOWN_CATEGORY,
        UNKNOWN_OPTION,
        UNKNOWN_OPTION,
    ]
    stored = rows[0]["LineItems"][0]["Tracking"]
    assert stored == [
        {
            "TrackingCategoryID": region["TrackingCategoryID"],
            "TrackingOptionID": region["Options"][0]["TrackingOptionID"],
            "Name": "Region",
            "Option": "North",
        },
        by_id | {"Name": "Department", "Option": "Sales"},
    ]
    same_twice = tracked_line(
        "1.00", {"Name": "Region", "Option": "North"}, {"Name": "Region", "Option": "North"}
    )
    twice = api.call(
        "PUT",
        "Invoices",
        json={"Type": "ACCREC", "Contact": {"ContactID": cid}, "LineItems": [same_twice]},
    )
    assert errors_of(twice) == ["A line item can have one option of each tracking category"]

    note = {
        "Type": "ACCRECCREDIT",
        "Contact": {"ContactID": cid},
        "LineItems": [tracked_line("10.00", {"Name": "Region", "Option": "North"})],
    }
    credited = api.call("PUT", "CreditNotes", json={"CreditNotes": [note]})
    assert credited.status_code == 200, credited.text
    validate(openapi, "PUT", "CreditNotes", credited)
    assert credited.json()["CreditNotes"][0]["LineItems"][0]["Tracking"][0]["Option"] == "North"
    refused = api.call(
        "PUT",
        "CreditNotes",
        json=note | {"LineItems": [tracked_line("1.00", {"Name": "Region", "Option": "South"})]},
    )
    assert refused.status_code == 400 and errors_of(refused) == [UNKNOWN_OPTION]

    north = region["Options"][0]["TrackingOptionID"]
    options = f"TrackingCategories/{region['TrackingCategoryID']}/Options"
    api.call("POST", f"{options}/{north}", json={"Name": "Northern"})
    api.call("POST", f"TrackingCategories/{region['TrackingCategoryID']}", json={"Name": "Area"})
    again = api.call("GET", f"Invoices/{rows[0]['InvoiceID']}").json()["Invoices"][0]
    assert again["LineItems"][0]["Tracking"][0] | {} == stored[0] | {
        "Name": "Area",
        "Option": "Northern",
    }


def item(code: str, **fields: Any) -> dict[str, Any]:
    return {"Code": code, **fields}


DAY = item(
    "CONSULT-DAY",
    Name="Consulting day",
    Description="One consultant for one day",
    SalesDetails={"UnitPrice": "950.00", "AccountCode": "200", "TaxType": "OUTPUT2"},
)


def test_items_are_created_updated_and_read_by_id_or_code(api: Api, openapi: Any) -> None:
    batch = [
        DAY,
        item("consult-day", Name="Twice"),
        item("TRAVEL", SalesDetails={"AccountCode": "999"}),
    ]
    made = api.call("PUT", "Items", params={"summarizeErrors": "false"}, json={"Items": batch})
    assert made.status_code == 200, made.text
    validate(openapi, "PUT", "Items", made)
    rows = body(made)["Items"]
    assert [r["StatusAttributeString"] for r in rows] == ["OK", "ERROR", "ERROR"]
    assert [r["ValidationErrors"][0]["Message"] for r in rows[1:]] == [
        "Price List Item with Code 'consult-day' already exists",
        "Account code '999' is not a valid code",
    ]
    # Refused elements are echoed as sent, so these answers break the schema's maxLength.
    too_long = [
        item("C" * 31),
        item("LONG-NAME", Name="N" * 51),
        item("LONG-TEXT", Description="D" * 4001),
        {"Name": "No code"},
    ]
    refused = api.call(
        "PUT", "Items", params={"summarizeErrors": "false"}, json={"Items": too_long}
    ).json()["Items"]
    assert [r["ValidationErrors"][0]["Message"] for r in refused] == [
        "Code must not be longer than 30 characters",
        "Name must not be longer than 50 characters",
        "Description must not be longer than 4000 characters",
        "Item code must be specified",
    ]
    day = rows[0]
    assert day["SalesDetails"] == {
        "UnitPrice": Decimal("950.00"),
        "AccountCode": "200",
        "TaxType": "OUTPUT2",
    }
    assert (day["IsSold"], day["IsPurchased"]) == (True, True)
    assert day["UpdatedDateUTC"].startswith("/Date(")
    again = api.call("PUT", "Items", json={"Items": [item("CONSULT-DAY")]})
    assert errors_of(again) == ["Price List Item with Code 'CONSULT-DAY' already exists"]
    validate(openapi, "PUT", "Items", again)

    changed = api.call(
        "POST",
        "Items",
        params={"unitdp": "4"},
        json={
            "Items": [
                item("CONSULT-DAY", SalesDetails={"UnitPrice": "975.1234", "AccountCode": "200"}),
                item("HALF-DAY", Name="Half day"),
            ]
        },
    )
    validate(openapi, "POST", "Items", changed)
    updated, created = body(changed)["Items"]
    assert updated["ItemID"] == day["ItemID"] and updated["SalesDetails"]["UnitPrice"] == Decimal(
        "975.1234"
    )
    renamed = api.call("POST", f"Items/{created['ItemID']}", json={"Description": "Four hours"})
    validate(openapi, "POST", f"Items/{created['ItemID']}", renamed)
    by_id = api.call("GET", f"Items/{day['ItemID']}")
    validate(openapi, "GET", f"Items/{day['ItemID']}", by_id)
    assert api.call("GET", "Items/consult-day").json() | {
        "Id": None,
        "DateTimeUTC": None,
    } == by_id.json() | {"Id": None, "DateTimeUTC": None}
    assert api.call("GET", "Items/NOPE").status_code == 404

    listed = api.call("GET", "Items", params={"order": "Code DESC"})
    validate(openapi, "GET", "Items", listed)
    assert [i["Code"] for i in listed.json()["Items"]] == ["HALF-DAY", "CONSULT-DAY"]
    assert [
        i["Code"]
        for i in api.call("GET", "Items", params={"where": 'Code=="HALF-DAY"'}).json()["Items"]
    ] == ["HALF-DAY"]
    since = {"If-Modified-Since": "2000-01-01T00:00:00"}
    assert len(api.call("GET", "Items", headers=since).json()["Items"]) == 2
    unsold = api.call("POST", "Items", json={"Items": [item("CONSULT-DAY", IsSold=False)]})
    shown = unsold.json()["Items"][0]
    assert shown["IsSold"] is False and shown["SalesDetails"] == {} and "Description" not in shown


def test_a_line_with_an_item_code_takes_the_item_s_defaults(api: Api, openapi: Any) -> None:
    assert api.call("PUT", "Items", json={"Items": [DAY]}).status_code == 200
    cid = contact(api, "Item Buyer Ltd")
    lines = [
        {"ItemCode": "CONSULT-DAY", "Quantity": "2"},
        {
            "ItemCode": "consult-day",
            "Quantity": "1",
            "UnitAmount": "800.00",
            "Description": "Discounted day",
            "TaxType": "ZERORATEDOUTPUT",
        },
    ]
    good = {
        "Type": "ACCREC",
        "Contact": {"ContactID": cid},
        "LineItems": lines,
        "Status": "AUTHORISED",
    }
    bad = good | {"LineItems": [{"ItemCode": "NOPE", "Quantity": "1"}]}
    answer = api.call(
        "PUT", "Invoices", params={"summarizeErrors": "false"}, json={"Invoices": [good, bad]}
    )
    validate(openapi, "PUT", "Invoices", answer)
    made, refused = body(answer)["Invoices"]
    assert refused["ValidationErrors"][0] == {"Message": "Item code 'NOPE' is not valid."}
    first, second = made["LineItems"]
    assert (first["Description"], first["UnitAmount"], first["AccountCode"], first["TaxType"]) == (
        "One consultant for one day",
        Decimal("950.00"),
        "200",
        "OUTPUT2",
    )
    assert first["ItemCode"] == "CONSULT-DAY" and first["Item"]["Code"] == "CONSULT-DAY"
    assert (first["LineAmount"], first["TaxAmount"]) == (Decimal("1900.00"), Decimal("380.00"))
    assert (
        second["Description"],
        second["UnitAmount"],
        second["TaxType"],
        second["AccountCode"],
    ) == (
        "Discounted day",
        Decimal("800.00"),
        "ZERORATEDOUTPUT",
        "200",
    )
    assert made["Total"] == Decimal("3080.00")
    note = {
        "Type": "ACCRECCREDIT",
        "Contact": {"ContactID": cid},
        "LineItems": [{"ItemCode": "CONSULT-DAY"}],
    }
    credited = api.call("PUT", "CreditNotes", json=note)
    validate(openapi, "PUT", "CreditNotes", credited)
    assert body(credited)["CreditNotes"][0]["Total"] == Decimal("1140.00")
