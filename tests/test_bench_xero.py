"""``closeloop bench xero``, run tiny against a real sandbox (limits lifted): the figures'
structure, the client's count agreeing with the sandbox's, no 429, and never more calls than
the stated floor plus the reads the benchmark explains; and the floor's arithmetic at the
default size."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from closeloop.cli import app
from closeloop.devtools.bench.xero import OPERATIONS, floors, plan_entries

pytestmark = pytest.mark.timeout(120)


def test_the_floor_and_reads_at_the_default_size() -> None:
    """20 projects, 1,000 entries, batches of 50: every batch touches all 20 projects and 40
    task codes."""
    found = floors(20, plan_entries(20, 1000), 50)
    # customer write, tracking category, 1 items write, 1 anchors write, 20 options; reads:
    # the contact twice, the anchors, the tracking category and again for the new options
    assert (found["set-up"].floor, found["set-up"].reads) == (24, 5)
    # 20 batches: 1 PUT each; reads: the 40 task codes' items once (2 reads), then kept
    assert (found["time"].floor, found["time"].reads, found["time"].avoidable) == (20, 2, 0)
    # create + clean-up; (invoices, credit notes) for 12 and for 8 projects
    assert (found["invoicing"].floor, found["invoicing"].reads) == (2, 4)
    assert found["invoicing"].avoidable == 0
    assert (found["posting"].floor, found["posting"].reads) == (2, 0)


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    args = ["bench", "xero", "--projects", "2", "--entries", "60", "--runs", "1", "--roomy"]
    shown = CliRunner().invoke(app, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    return dict(json.loads(shown.output))


def test_a_tiny_run_stays_within_the_floor_and_the_explained_reads(tiny: dict[str, Any]) -> None:
    f = tiny
    assert (f["projects"], f["entries"], f["batch_size"], f["runs"]) == (2, 60, 50, 1)
    assert f["limits"]["roomy"] and not f["failures"]
    assert f["throttled_429"] == 0 and f["cross_check"]["agree"]
    assert f["cross_check"]["client"] == f["cross_check"]["sandbox"]
    assert list(f["operations"]) == [*OPERATIONS, "total"]
    for name, o in f["operations"].items():
        assert o["calls"] > 0, name
        assert o["floor"] <= o["calls"] <= o["floor"] + o["reads"], (name, o)
        assert o["above_floor_and_reads"] <= 0
        assert o["calls_per_1000"] == round(o["calls"] * 1000 / 60, 1)
        assert o["minutes_at_limit_per_1000"] == round(o["calls"] * 1000 / 60 / 60, 2)
        assert o["hub_cpu_s"] >= 0 and o["seconds"] >= 0
    assert f["operations"]["total"]["seconds"] > 0
    # invoicing reads each project's anchor and its two drafts of time (one per batch)
    assert f["operations"]["invoicing"]["drafts_read"] == 2 * (1 + 2)
    # 60 entries, batches of 50: 2 time batches, one PUT each; one invoicing batch
    assert f["calls_by_operation"]["time"]["PUT Invoices"] == 2
    assert f["calls_by_operation"]["invoicing"]["PUT Invoices"] == 1
    assert f["calls_by_operation"]["posting"] == {"GET Invoices": 1, "POST Invoices": 1}
    by_resource = f["calls_by_resource"]
    assert all(n["client"] == n["sandbox"] for n in by_resource.values()), by_resource
    assert sum(n["client"] for n in by_resource.values()) == f["operations"]["total"]["calls"]
    assert set(f["floor_from"]) == set(OPERATIONS) == set(f["reads_from"])


def test_the_table_says_what_the_floor_is() -> None:
    args = ["bench", "xero", "--projects", "2", "--entries", "60", "--runs", "1", "--roomy"]
    shown = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for text in (
        "API calls per 1,000 time entries, next to the floor",
        "calls by METHOD Resource (client / sandbox)",
        "GET Invoices",
        "429s: 0 (must be 0)",
        "agree",
        "1 PUT Invoices per batch of 50 entries",
        "create",
        "clean-up",
        "hub CPU s",
    ):
        assert text in shown.output, text
