"""``closeloop check`` and ``closeloop map``: the tools of an engineer writing a mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

BAD_MAPPING = """\
version: 1
connection: salesforce
value_maps:
  stages: {Closed Won: closed_won}
objects:
  Opportunity:
    canonical: opportunity
    fields:
      name: Name
      stage: {path: StageName, value_map: stagez}
      amount.amout: Amount
      close_date: {path: CloseDate, input_format: "%d.%m.%Y"}
  Lead:
    canonical: lead
    fields: {name: Name}
ownership:
  account: {legal_nam: tryton}
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "closeloop.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    mapping = tmp_path / "mappings" / "salesforce.yaml"
    mapping.write_text(BAD_MAPPING)
    config = tmp_path / "closeloop.yaml"
    config.write_text("mappings:\n  - mappings/salesforce.yaml\nworker:\n  threads: 0\n")
    result = run("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{config}:4: worker.threads: Input should be greater than or equal to 1" in lines
    # the configuration is broken, so its mapping list is unknown: fix it and check again
    config.write_text(yaml.safe_dump({"mappings": ["mappings/salesforce.yaml"]}))
    result = run("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        f"{mapping}:12: objects.Opportunity.fields.close_date: "
        "input_format goes with format: date or datetime" in lines
    )


def test_check_reports_semantic_problems_with_lines(tmp_path: Path) -> None:
    fixed = BAD_MAPPING.replace(
        'input_format: "%d.%m.%Y"', 'format: date, input_format: "%d.%m.%Y"'
    )
    mapping = tmp_path / "salesforce.yaml"
    mapping.write_text(fixed)
    config = tmp_path / "closeloop.yaml"
    config.write_text(yaml.safe_dump({"mappings": [str(mapping)]}))
    result = run("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert f"{mapping}:10: stage: no value map named 'stagez' (defined: stages)" in lines
    assert any(
        line.startswith(f"{mapping}:11: amount.amout: amount has no field 'amout'")
        for line in lines
    ), lines
    assert any(line.startswith(f"{mapping}:14: unknown canonical type 'lead'") for line in lines)
    assert f"{mapping}:17: account has no field 'legal_nam'" in lines
    assert len(lines) == 4


def test_check_passes_on_the_shipped_mappings_and_example_config(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "closeloop.example.yaml"
    result = run("check", "-c", str(example), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok:" in result.stdout and "4 mapping files" in result.stdout


def test_map_prints_the_canonical_record_or_the_problems(tmp_path: Path) -> None:
    payload = tmp_path / "opportunity.json"
    payload.write_text(
        json.dumps(
            {
                "attributes": {"type": "Opportunity"},
                "Id": "006A",
                "Name": "SAP rollout",
                "AccountId": "001A",
                "StageName": "Closed Won",
                "IsWon": True,
                "CloseDate": "2026-11-20",
                "Amount": 120000.0,
                "CurrencyIsoCode": "EUR",
                "Billing_Method__c": "Time and Materials",
                "Finance_Approval__c": "Pending",
                "OpportunityLineItems": {
                    "records": [
                        {
                            "Product2": {"Name": "SAP consulting"},
                            "Role__c": "consultant",
                            "Quantity": 400,
                            "UnitPrice": 150.0,
                        },
                    ]
                },
            }
        )
    )
    ok = run(
        "map", "--connection", "salesforce", "--object", "Opportunity", str(payload), cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    record = json.loads(ok.stdout)["record"]
    assert record["stage"] == "closed_won" and record["finance_approval"] == "pending"
    assert record["amount"] == {"amount": "120000.00", "currency": "EUR"}
    assert record["line_items"][0]["unit_price"] == {"amount": "150.00", "currency": "EUR"}

    payload.write_text(json.dumps({"Name": "", "StageName": "Won!", "CloseDate": "20.11.2026"}))
    bad = run(
        "map", "--connection", "salesforce", "--object", "Opportunity", str(payload), cwd=tmp_path
    )
    assert bad.returncode == 1
    assert sorted(bad.stdout.splitlines()) == [
        "account (from AccountId): Field required",
        "close_date (from CloseDate): '20.11.2026' is not a date in ISO 8601",
        "name (from Name): Field required",
        "stage (from StageName): 'Won!' is not in value map stages",
    ]
    unknown = run("map", "--connection", "hubspot", "--object", "Deal", str(payload), cwd=tmp_path)
    assert unknown.returncode == 2 and "no mapping for connection 'hubspot'" in unknown.stderr
