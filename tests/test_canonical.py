"""Canonical records validate what finance relies on; schemas are versioned."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from closeloop.domain.canonical import (
    CANONICAL_TYPES,
    BillableItem,
    FixedFeePlan,
    Invoice,
    Opportunity,
    RateCard,
    TimeEntry,
    schema_fingerprint,
)
from closeloop.domain.money import Money

REPO = Path(__file__).resolve().parent.parent


def eur(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "EUR"}


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in exc.value.errors()}


def test_opportunity_stage_and_won_flag_agree() -> None:
    base: dict[str, Any] = {"name": "ERP rollout", "account": "001", "close_date": "2026-10-01"}
    assert Opportunity(**base, stage="closed_won", won=True).won
    with pytest.raises(ValidationError, match="won is False but the stage is closed_won"):
        Opportunity(**base, stage="closed_won", won=False)
    with pytest.raises(ValidationError, match="several currencies"):
        Opportunity(
            **base,
            stage="proposal",
            amount=eur("10"),
            line_items=[
                {
                    "service": "x",
                    "quantity_hours": "1",
                    "unit_price": {"amount": "1", "currency": "USD"},
                }
            ],
        )


def test_time_entry_hours_are_a_day_at_most_and_never_floats() -> None:
    entry = {"date": date(2026, 11, 2), "billable": True, "person": 7, "project": "p"}
    assert TimeEntry(**entry, hours="7.5").person == "7"
    with pytest.raises(ValidationError) as info:
        TimeEntry(**entry, hours="24.25")
    assert "hours must be more than 0 and at most 24" in errors(info)["hours"]
    with pytest.raises(ValidationError, match="floats are not accepted"):
        TimeEntry(**entry, hours=7.5)


def test_rate_card_and_fixed_fee_plan_rules() -> None:
    card = RateCard(
        name="2026",
        currency="EUR",
        rates=[
            {"role": "consultant", "hourly_rate": eur("120")},
            {"role": "manager", "hourly_rate": eur("160")},
        ],
    )
    assert card.rate_for("manager") == Money.of("160", "EUR")
    with pytest.raises(KeyError, match="no rate for role 'intern'"):
        card.rate_for("intern")
    with pytest.raises(ValidationError, match="rates in USD on a EUR rate card"):
        RateCard(
            name="x",
            currency="EUR",
            rates=[{"role": "a", "hourly_rate": {"amount": "1", "currency": "USD"}}],
        )
    with pytest.raises(
        ValidationError, match=r"milestones add up to 9000\.00, the fee is 10000\.00"
    ):
        FixedFeePlan(
            fee=eur("10000"),
            milestones=[
                {"name": "design", "amount": eur("4000")},
                {"name": "build", "amount": eur("5000")},
            ],
        )


def test_billable_item_amount_is_quantity_times_price() -> None:
    item = {
        "kind": "time",
        "source": "te-1",
        "project": "p",
        "quantity": "7.5",
        "unit_price": eur("133.33"),
    }
    assert BillableItem(**item, amount=eur("999.98")).amount == Money.of("999.98", "EUR")
    with pytest.raises(ValidationError, match=r"is not quantity x unit price = 999\.98 EUR"):
        BillableItem(**item, amount=eur("1000"))


def test_invoice_totals_must_agree_with_lines() -> None:
    line = {
        "description": "Consulting, October",
        "quantity": "10",
        "unit_price": eur("100"),
        "amount": eur("1000"),
        "taxes": [{"name": "VAT 19%", "rate": "0.19", "amount": eur("190")}],
    }
    good = {
        "account": "a",
        "currency": "EUR",
        "lines": [line],
        "untaxed_amount": eur("1000"),
        "tax_amount": eur("190"),
        "total": eur("1190"),
        "amount_paid": eur("500"),
    }
    invoice = Invoice(**good)
    assert invoice.outstanding == Money.of("690", "EUR")
    with pytest.raises(ValidationError) as info:
        Invoice(**{**good, "tax_amount": eur("100"), "total": eur("1100")})
    assert "line taxes add up to 190.00, tax amount is 100.00 EUR" in str(info.value)
    with pytest.raises(ValidationError, match=r"total 1200\.00 EUR is not untaxed"):
        Invoice(**{**good, "total": eur("1200")})
    with pytest.raises(ValidationError, match="exceeds the total"):
        Invoice(**{**good, "amount_paid": eur("2000")})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TimeEntry(
            date=date(2026, 1, 1), hours="1", billable=True, person="p", project="q", colour="red"
        )  # type: ignore[call-arg]


def test_schema_changes_come_with_a_version_bump() -> None:
    recorded = json.loads((REPO / "tests" / "schema_fingerprints.json").read_text())
    assert set(recorded) == set(CANONICAL_TYPES), "a canonical type was added or removed"
    for name, model in CANONICAL_TYPES.items():
        entry = recorded[name]
        if schema_fingerprint(name) != entry["sha256"]:
            assert entry["version"] < model.SCHEMA_VERSION, (
                f"the JSON Schema of {name} changed but SCHEMA_VERSION is still "
                f"{model.SCHEMA_VERSION}: bump it, then record the new fingerprint with "
                "`closeloop schema export DIR` and copy DIR/index.json to "
                "tests/schema_fingerprints.json"
            )
        else:
            assert entry["version"] == model.SCHEMA_VERSION


def test_schema_export_writes_versioned_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "closeloop.cli", "schema", "export", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "25 schemas written" in result.stdout
    schema = json.loads((tmp_path / "time_entry.v2.json").read_text())
    assert schema["$id"].endswith("/time_entry/v2.json") and "hours" in schema["properties"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["invoice"] == {"version": 2, "sha256": schema_fingerprint("invoice")}
