"""Fixed-fee milestones, retainer terms and expense markup from Salesforce: the sandbox's
custom ``Milestone__c`` object (a master-detail child of the opportunity with roll-up
summaries on it), the connector reading a deal with its milestones in one query, and the
shipped mapping onto the canonical opportunity."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from closeloop.config.files import load_mappers
from closeloop.connectors.salesforce.connector import SalesforceConnector
from closeloop.domain.canonical import Opportunity
from closeloop.domain.canonical.sales import MilestoneStatus, UnusedHours
from closeloop.domain.changes import parse_instant
from closeloop.sandboxes.salesforce.org import Org
from closeloop.sandboxes.salesforce.schema import SHIPPED_SCHEMA, SchemaError, load_schema
from closeloop.sandboxes.salesforce.server import SalesforceServer
from tests.salesforce_support import Api, client_for, opportunity, running_salesforce, wait_past

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalesforceServer]:
    with running_salesforce(tmp_path_factory.mktemp("sf-milestones")) as started:
        yield started


@pytest.fixture
def api(server: SalesforceServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def created(api: Api, sobject: str, body: dict[str, Any]) -> str:
    answer = api.call("POST", f"sobjects/{sobject}", json=body)
    assert answer.status_code == 201, answer.text
    rid: str = answer.json()["id"]
    return rid


def deal(api: Api, name: str, **fields: Any) -> str:
    account = created(api, "Account", {"Name": f"{name} Ltd"})
    return created(api, "Opportunity", opportunity(name, account, **fields))


def read(api: Api, sobject: str, rid: str) -> dict[str, Any]:
    answer = api.call("GET", f"sobjects/{sobject}/{rid}")
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


def later(api: Api, sobject: str, rid: str, before: str) -> str:
    """The record's ``SystemModstamp``, after checking it moved past ``before``."""
    stamp: str = read(api, sobject, rid)["SystemModstamp"]
    assert parse_instant(stamp) > parse_instant(before), (stamp, before)
    return stamp


def tick() -> None:
    """Let the org's millisecond clock move on, so that a new stamp differs from the last."""
    time.sleep(0.01)


# --- the sandbox: a custom object described like a real org's --------------------------------
def test_milestone_is_described_like_a_custom_object_of_a_real_org(api: Api) -> None:
    described = api.call("GET", "sobjects/Milestone__c/describe").json()
    assert (described["name"], described["label"], described["labelPlural"]) == (
        "Milestone__c",
        "Milestone",
        "Milestones",
    )
    assert described["custom"] is True and described["customSetting"] is False
    prefix = described["keyPrefix"]
    assert len(prefix) == 3 and prefix.startswith("a") and prefix.isalnum()
    fields = {f["name"]: f for f in described["fields"]}
    assert "OwnerId" not in fields  # a detail's owner is its master's
    standard = ("Id", "Name", "IsDeleted", "CreatedDate", "SystemModstamp", "CurrencyIsoCode")
    assert all(fields[n]["custom"] is False for n in standard)
    name = fields["Name"]
    assert (name["type"], name["length"], name["nameField"], name["label"]) == (
        "string",
        80,
        True,
        "Milestone Name",
    )
    assert name["createable"] and name["defaultedOnCreate"]  # optional through the API
    master = fields["Opportunity__c"]
    assert master["type"] == "reference" and master["referenceTo"] == ["Opportunity"]
    assert master["relationshipName"] == "Opportunity__r" and master["cascadeDelete"] is True
    assert master["relationshipOrder"] == 0
    assert (master["nillable"], master["createable"], master["updateable"]) == (
        False,
        True,
        False,  # required, and not reparentable
    )
    kinds = {n: fields[n]["type"] for n in fields if n.endswith("__c")}
    assert kinds == {
        "Opportunity__c": "reference",
        "Amount__c": "currency",
        "Share__c": "percent",
        "Planned_Date__c": "date",
        "Status__c": "picklist",
        "Accepted_Date__c": "date",
    }
    status = fields["Status__c"]
    assert [p["value"] for p in status["picklistValues"]] == ["Planned", "Accepted", "Disputed"]
    assert [p["value"] for p in status["picklistValues"] if p["defaultValue"]] == ["Planned"]
    assert status["defaultValue"] == "Planned" and status["defaultedOnCreate"] is True

    parent = api.call("GET", "sobjects/Opportunity/describe").json()
    (relation,) = [r for r in parent["childRelationships"] if r["childSObject"] == "Milestone__c"]
    assert relation == {
        **relation,
        "field": "Opportunity__c",
        "relationshipName": "Milestones__r",
        "cascadeDelete": True,
    }
    opportunity_fields = {f["name"]: f for f in parent["fields"]}
    total, accepted = (
        opportunity_fields["Milestone_Total__c"],
        opportunity_fields["Milestones_Accepted__c"],
    )
    assert (total["type"], total["calculated"], total["createable"], total["updateable"]) == (
        "currency",
        True,
        False,
        False,
    )
    assert (accepted["type"], accepted["scale"], accepted["calculated"]) == ("double", 0, True)
    assert {n: opportunity_fields[n]["type"] for n in opportunity_fields if "Retainer" in n} == {
        "Retainer_Amount__c": "currency",
        "Retainer_Included_Hours__c": "double",
    }
    unused = opportunity_fields["Unused_Hours__c"]
    assert [p["value"] for p in unused["picklistValues"]] == ["Expire", "Roll Over"]
    assert opportunity_fields["Expense_Markup__c"]["type"] == "percent"

    listed = api.call("GET", "sobjects").json()["sobjects"]
    (entry,) = [s for s in listed if s["name"] == "Milestone__c"]
    assert entry["custom"] is True and entry["keyPrefix"] == prefix


def test_milestones_written_through_rest_and_collections_roll_up_onto_the_opportunity(
    api: Api,
) -> None:
    """Each write of a milestone recalculates the opportunity's roll-up summaries, and the
    opportunity goes through its own save: its SystemModstamp moves, even when no sum did."""
    opp = deal(api, "Fixed fee", Amount=10000, CurrencyIsoCode="EUR")
    fresh = read(api, "Opportunity", opp)
    assert (fresh["Milestone_Total__c"], fresh["Milestones_Accepted__c"]) == (0.0, 0.0)
    stamp = fresh["SystemModstamp"]
    tick()

    first = created(api, "Milestone__c", {"Opportunity__c": opp, "Amount__c": 3000})
    milestone = read(api, "Milestone__c", first)
    info = api.call("GET", "sobjects/Milestone__c").json()["objectDescribe"]
    assert first.startswith(info["keyPrefix"]) and info["custom"] is True
    assert milestone["Name"] == first  # created without a name: named by its id
    assert milestone["Status__c"] == "Planned" and milestone["CurrencyIsoCode"] == "EUR"
    stamp = later(api, "Opportunity", opp, stamp)
    tick()

    records = [
        {
            "attributes": {"type": "Milestone__c"},
            "Opportunity__c": opp,
            "Name": "Design signed off",
            "Amount__c": 2000,
            "Planned_Date__c": "2026-04-30",
            "Status__c": "Accepted",
            "Accepted_Date__c": "2026-05-02",
        },
        {
            "attributes": {"type": "Milestone__c"},
            "Opportunity__c": opp,
            "Name": "Go-live",
            "Share__c": 50,
            "Planned_Date__c": "2026-06-30",
        },
    ]
    answer = api.call("POST", "composite/sobjects", json={"allOrNone": True, "records": records})
    assert [r["success"] for r in answer.json()] == [True, True], answer.text
    totals = read(api, "Opportunity", opp)
    assert (totals["Milestone_Total__c"], totals["Milestones_Accepted__c"]) == (5000.0, 1.0)
    assert totals["Amount"] == 10000.0  # the fee stays the deal's Amount
    stamp = later(api, "Opportunity", opp, stamp)
    tick()

    renamed = api.call("PATCH", f"sobjects/Milestone__c/{first}", json={"Name": "Kick-off"})
    assert renamed.status_code == 204
    stamp = later(api, "Opportunity", opp, stamp)  # no sum changed, the master was saved
    tick()

    refusals = [
        ("PATCH", f"sobjects/Milestone__c/{first}", {"Opportunity__c": opp}),
        ("PATCH", f"sobjects/Opportunity/{opp}", {"Milestone_Total__c": 1}),
        ("POST", "sobjects/Milestone__c", {"Name": "Orphan"}),
        ("POST", "sobjects/Milestone__c", {"Opportunity__c": opp, "Amount__c": "a lot"}),
    ]
    codes = [
        api.call(method, path, json=body).json()[0]["errorCode"] for method, path, body in refusals
    ]
    assert codes == [
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "REQUIRED_FIELD_MISSING",
        "JSON_PARSER_ERROR",
    ]

    assert api.call("DELETE", f"sobjects/Milestone__c/{first}").status_code == 204
    after = read(api, "Opportunity", opp)
    assert after["Milestone_Total__c"] == 2000.0
    later(api, "Opportunity", opp, stamp)

    assert api.call("DELETE", f"sobjects/Opportunity/{opp}").status_code == 204
    query = f"SELECT Id, IsDeleted FROM Milestone__c WHERE Opportunity__c = '{opp}'"
    remaining = api.call("GET", "query", params={"q": query}).json()
    assert remaining["totalSize"] == 0  # cascade-deleted with their master
    binned = api.call("GET", "queryAll", params={"q": query}).json()["records"]
    assert len(binned) == 3 and all(r["IsDeleted"] for r in binned)


def test_a_query_reads_milestones_and_line_items_in_child_subqueries(api: Api) -> None:
    opp = deal(api, "Subquery", CurrencyIsoCode="GBP")
    product = created(api, "Product2", {"Name": "Advisory"})
    line = {"OpportunityId": opp, "Product2Id": product, "Quantity": 8, "UnitPrice": "200.00"}
    created(api, "OpportunityLineItem", line)
    for name, planned, status in (
        ("Delivery", "2026-09-30", "Planned"),
        ("Discovery", "2026-07-31", "Accepted"),
        ("Unscheduled", None, "Disputed"),
    ):
        body = {"Opportunity__c": opp, "Name": name, "Share__c": 20, "Status__c": status}
        created(api, "Milestone__c", {**body, "Planned_Date__c": planned})
    query = (
        "SELECT Name, Milestones_Accepted__c, "
        "(SELECT Quantity, Product2.Name FROM OpportunityLineItems), "
        "(SELECT Name, Status__c, Planned_Date__c FROM milestones__r "
        "WHERE IsDeleted = false ORDER BY Planned_Date__c NULLS LAST, Id) "
        f"FROM Opportunity WHERE Id = '{opp}'"
    )
    answer = api.call("GET", "query", params={"q": query})
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["records"]
    assert row["Milestones_Accepted__c"] == 1.0
    assert row["OpportunityLineItems"]["records"][0]["Product2"]["Name"] == "Advisory"
    milestones = row["Milestones__r"]
    assert milestones["totalSize"] == 3 and milestones["done"] is True
    assert [(m["Name"], m["Planned_Date__c"]) for m in milestones["records"]] == [
        ("Discovery", "2026-07-31"),
        ("Delivery", "2026-09-30"),
        ("Unscheduled", None),
    ]
    assert milestones["records"][0]["attributes"]["type"] == "Milestone__c"
    upward = api.call(
        "GET",
        "query",
        params={
            "q": "SELECT Name, Opportunity__r.Name FROM Milestone__c "
            f"WHERE Opportunity__r.Id = '{opp}' AND Status__c = 'Accepted'"
        },
    ).json()
    assert [(r["Name"], r["Opportunity__r"]["Name"]) for r in upward["records"]] == [
        ("Discovery", "Subquery")
    ]
    unknown = api.call(
        "GET", "query", params={"q": "SELECT Id, (SELECT Id FROM Milestones) FROM Opportunity"}
    )
    assert unknown.json()[0]["errorCode"] == "INVALID_TYPE"


# --- the connector: a deal read whole, and brought back by a changed milestone -----------------
def test_a_changed_milestone_brings_its_deal_back_with_every_milestone(
    server: SalesforceServer, api: Api
) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    account, opp = "0015g00000MILE0AAA", "0065g00000MILE0AAA"
    seeded = {
        "Account": [{"Id": account, "Name": "Milestone Seed GmbH", "SystemModstamp": old}],
        "Opportunity": [
            opportunity(
                "Fixed fee rollout",
                account,
                Id=opp,
                StageName="Closed Won",
                Amount=12000,
                CurrencyIsoCode="EUR",
                Billing_Method__c="Fixed Fee",
                Expense_Markup__c=12.5,
                SystemModstamp=old,
            )
        ],
        "Milestone__c": [
            {
                "Opportunity__c": opp,
                "Name": name,
                "Amount__c": amount,
                "Planned_Date__c": planned,
                "SystemModstamp": old,
            }
            for name, amount, planned in (
                ("Go-live", 8000, "2026-09-30"),
                ("Blueprint", 4000, "2026-06-30"),
            )
        ],
    }
    loaded = api.admin("POST", "seed", json=seeded)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loaded"]["Milestone__c"] == 2
    assert read(api, "Opportunity", opp)["SystemModstamp"] == old  # a seed keeps its stamps

    client = client_for(server)
    connector = SalesforceConnector(client, objects=("Opportunity",))
    try:
        select = connector.select_list("Opportunity")
        assert "FROM OpportunityLineItems WHERE IsDeleted = false)" in select
        assert "FROM Milestones__r WHERE IsDeleted = false ORDER BY Planned_Date__c" in select
        assert client.calls["sobjects"] == 4  # Opportunity, Account and both children: once
        since = datetime.now(UTC) - timedelta(minutes=1)  # after the seeded stamps

        def polled() -> list[Any]:  # the deal's changes (the module's other tests add deals)
            pages = connector.read_changes("Opportunity", since)
            return [c for page in pages for c in page if c.external_id == opp]

        assert polled() == []
        query = f"SELECT Id FROM Milestone__c WHERE Opportunity__c = '{opp}' AND Name = 'Blueprint'"
        (found,) = api.call("GET", "query", params={"q": query}).json()["records"]
        blueprint = found["Id"]
        accepted = {"Status__c": "Accepted", "Accepted_Date__c": "2026-07-02"}
        changed = api.call("PATCH", f"sobjects/Milestone__c/{blueprint}", json=accepted)
        assert changed.status_code == 204  # only the milestone was written
        wait_past(client, read(api, "Opportunity", opp)["SystemModstamp"])

        changes = polled()
        assert len(changes) == 1
        payload = changes[0].payload
        milestones = payload["Milestones__r"]["records"]
        assert [(m["Name"], m["Status__c"]) for m in milestones] == [
            ("Blueprint", "Accepted"),  # in planned order
            ("Go-live", "Planned"),
        ]
        assert payload["Milestones_Accepted__c"] == "1.0"
        assert client.calls["sobjects"] == 4 and client.calls["queryAll"] == 2  # one per poll
    finally:
        connector.close()

    result = load_mappers()["salesforce"].map("Opportunity", payload)
    assert result.ok, result.problems
    deal_record = Opportunity.model_validate(result.data)
    assert deal_record.amount is not None and deal_record.amount.amount == Decimal(12000)
    assert [(m.name, m.status, m.amount) for m in deal_record.milestones] == [
        ("Blueprint", MilestoneStatus.ACCEPTED, Decimal(4000)),
        ("Go-live", MilestoneStatus.PLANNED, Decimal(8000)),
    ]
    assert deal_record.milestones[0].crm_id == blueprint
    assert deal_record.retainer is None and deal_record.expense_markup_percent == Decimal("12.5")


class _Describer:
    """Answers describe() from a schema, as an org with that schema would."""

    def __init__(self, schema_file: Path) -> None:
        self.schema = load_schema(schema_file)
        self.described: list[str] = []

    def describe(self, sobject: str) -> dict[str, Any]:
        self.described.append(sobject)
        return self.schema[sobject].describe("62.0")


def test_an_org_without_the_milestone_object_still_gives_its_deals(tmp_path: Path) -> None:
    shipped = yaml.safe_load(SHIPPED_SCHEMA.read_text())
    del shipped["custom_objects"], shipped["objects"]["Milestone__c"]
    for name in ("Milestone_Total__c", "Milestones_Accepted__c"):
        del shipped["objects"]["Opportunity"][name]
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(yaml.safe_dump(shipped))
    describer = _Describer(schema_file)
    connector = SalesforceConnector(describer, objects=("Opportunity",))  # type: ignore[arg-type]
    select = connector.select_list("Opportunity")
    assert "FROM OpportunityLineItems" in select and "Milestones__r" not in select
    assert describer.described == ["Opportunity", "Account", "OpportunityLineItem"]
    connector.select_list("Opportunity")
    assert len(describer.described) == 3  # cached


# --- the schema file: custom objects, master-detail and roll-ups that fit ----------------------
def _schema_with(tmp_path: Path, change: dict[str, Any]) -> Path:
    data = yaml.safe_load(SHIPPED_SCHEMA.read_text())
    for section, entries in change.items():
        for name, value in entries.items():
            if isinstance(value, dict) and isinstance(data[section].get(name), dict):
                data[section][name] = {**data[section][name], **value}
            else:
                data[section][name] = value
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"custom_objects": {"Milestone__c": {"key_prefix": "006"}}}, "key_prefix is like a0M"),
        ({"custom_objects": {"Phase": {"key_prefix": "a0P"}}}, "names end in __c"),
        (
            {
                "objects": {
                    "Account": {"Owner__c": {"type": "master_detail", "reference_to": "User"}}
                }
            },
            "only a custom object can be the detail",
        ),
        (
            {
                "objects": {
                    "Account": {
                        "Sum__c": {
                            "type": "summary",
                            "operation": "sum",
                            "summarized": "Milestone__c.Amount__c",
                        }
                    }
                }
            },
            "is not a detail of Account",
        ),
        (
            {
                "objects": {
                    "Opportunity": {
                        "Bad__c": {
                            "type": "summary",
                            "operation": "sum",
                            "summarized": "Milestone__c.Name",
                        }
                    }
                }
            },
            "sum needs a number field",
        ),
        (
            {
                "objects": {
                    "Opportunity": {
                        "Bad__c": {
                            "type": "summary",
                            "operation": "count",
                            "summarized": "Milestone__c",
                            "filter": "Stage__c = 'x'",
                        }
                    }
                }
            },
            "Milestone__c has no field 'Stage__c'",
        ),
        (
            {
                "objects": {
                    "Milestone__c": {
                        "Kind__c": {"type": "picklist", "values": ["A"], "default": "B"}
                    }
                }
            },
            "the default 'B' is not among the values",
        ),
    ],
)
def test_schema_files_with_custom_objects_that_do_not_fit_are_refused(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(SchemaError, match=message):
        load_schema(_schema_with(tmp_path, change))


def test_roll_ups_of_a_seed_keep_the_seeded_stamp_and_min_max_follow_the_children(
    tmp_path: Path,
) -> None:
    path = _schema_with(
        tmp_path,
        {
            "objects": {
                "Opportunity": {
                    "First_Milestone__c": {
                        "type": "summary",
                        "operation": "min",
                        "summarized": "Milestone__c.Planned_Date__c",
                    }
                }
            }
        },
    )
    org = Org(tmp_path / "org.db", load_schema(path))
    stamp = "2026-01-05T10:00:00.000+0000"
    org.seed(
        {
            "Account": [{"Id": "0015g00000ABCDEAAA", "Name": "Seeded"}],
            "Opportunity": [
                opportunity(
                    "Seeded", "0015g00000ABCDEAAA", Id="0065g00000ABCDEAAA", SystemModstamp=stamp
                )
            ],
            "Milestone__c": [
                {"Opportunity__c": "0065g00000ABCDEAAA", "Planned_Date__c": day, "Amount__c": 1}
                for day in ("2026-05-01", "2026-03-01", None)
            ],
        }
    )
    seeded = org.live["Opportunity"]["0065g00000ABCDEAAA"]
    assert seeded["SystemModstamp"] == stamp
    assert (seeded["First_Milestone__c"], seeded["Milestone_Total__c"]) == ("2026-03-01", 3.0)
    described = org.schema["Opportunity"].fields["First_Milestone__c"].describe()
    assert (described["type"], described["calculated"]) == ("date", True)


# --- the mapping ---------------------------------------------------------------------------
def salesforce_deal(**fields: Any) -> dict[str, Any]:
    """An opportunity as the connector delivers it (numbers as exact text)."""
    return {
        "Id": "0065g00000DEAL0AAA",
        "Name": "Managed service",
        "AccountId": "0015g00000ACCT0AAA",
        "StageName": "Closed Won",
        "IsWon": True,
        "CloseDate": "2026-06-30",
        "Amount": "24000.0",
        "CurrencyIsoCode": "CHF",
        "OpportunityLineItems": None,
        "Milestones__r": None,
        "Retainer_Amount__c": None,
        "Retainer_Included_Hours__c": None,
        "Unused_Hours__c": None,
        "Expense_Markup__c": None,
        **fields,
    }


def test_a_retainer_deal_maps_its_terms_and_markup() -> None:
    mapper = load_mappers()["salesforce"]
    result = mapper.map(
        "Opportunity",
        salesforce_deal(
            Billing_Method__c="Retainer",
            Retainer_Amount__c="8000.0",
            Retainer_Included_Hours__c="40.0",
            Unused_Hours__c="Roll Over",
            Expense_Markup__c="7.5",
        ),
    )
    assert result.ok, result.problems
    record = Opportunity.model_validate(result.data)
    assert record.retainer is not None
    assert (record.retainer.amount_per_period, record.retainer.included_hours) == (
        Decimal(8000),
        Decimal(40),
    )
    assert record.retainer.unused_hours is UnusedHours.ROLL_OVER
    assert record.expense_markup_percent == Decimal("7.5") and record.milestones == ()

    bare = mapper.map("Opportunity", salesforce_deal(Retainer_Amount__c="8000.0"))
    assert bare.ok, bare.problems
    terms = Opportunity.model_validate(bare.data).retainer
    assert terms is not None and terms.included_hours == 0  # defaults: none, and they expire
    assert terms.unused_hours is UnusedHours.EXPIRE

    plain = mapper.map("Opportunity", salesforce_deal(Unused_Hours__c="Expire"))
    assert plain.ok and plain.data is not None
    assert plain.data["retainer"] is None and plain.data["expense_markup_percent"] is None


def test_a_fixed_fee_deal_maps_its_milestones_and_names_a_bad_status() -> None:
    mapper = load_mappers()["salesforce"]
    plan = {
        "totalSize": 2,
        "done": True,
        "records": [
            {
                "Id": "a0M5g00000MILE1AAA",
                "Name": "Blueprint",
                "Amount__c": None,
                "Share__c": "40.0",
                "Planned_Date__c": "2026-07-31",
                "Status__c": "Disputed",
            },
            {
                "Id": "a0M5g00000MILE2AAA",
                "Name": "Go-live",
                "Amount__c": "14400.0",
                "Share__c": None,
                "Planned_Date__c": None,
                "Status__c": None,
            },
        ],
    }
    result = mapper.map(
        "Opportunity", salesforce_deal(Billing_Method__c="Fixed Fee", Milestones__r=plan)
    )
    assert result.ok, result.problems
    record = Opportunity.model_validate(result.data)
    first, second = record.milestones
    assert (first.crm_id, first.share_percent, first.amount, first.status) == (
        "a0M5g00000MILE1AAA",
        Decimal(40),
        None,
        MilestoneStatus.DISPUTED,
    )
    assert str(first.planned_date) == "2026-07-31"
    assert (second.amount, second.planned_date, second.status) == (
        Decimal(14400),
        None,
        MilestoneStatus.PLANNED,  # no status: planned, the picklist's default
    )
    plan["records"][1]["Status__c"] = "Invoiced"
    refused = mapper.map("Opportunity", salesforce_deal(Milestones__r=plan))
    assert [str(p) for p in refused.problems] == [
        "milestones.1.status (from Status__c): 'Invoiced' is not in value map milestone_statuses"
    ]
