"""The Bill time flow's decisions."""

from __future__ import annotations

from typing import Any

from closeloop.domain.commands import Applied
from closeloop.domain.records import CanonicalRecord, FlowState
from closeloop.flows.bill_time import BillTimeFlow

FLOW = BillTimeFlow()


def entry(**changes: Any) -> CanonicalRecord:
    data: dict[str, Any] = {
        "date": "2026-03-03",
        "hours": "7.5",
        "billable": True,
        "approval_state": "approved",
        "person": "101",
        "person_name": "Kim Allen",
        "project": "5000001",
        "project_code": "SF-0065g00000DEAL0AAA",
        "task": "20",
        "task_name": "Senior Consultant",
        "notes": "workshop",
    }
    data.update(changes)
    return CanonicalRecord("time_entry", "t-1", ("harvest", "time_entries", "1042"), "v1", data)


def test_an_approved_billable_entry_of_an_engagement_becomes_one_timesheet_line() -> None:
    step = FLOW.on_record(None, entry())
    assert step is not None and step.state == "recording"
    (command,) = step.commands
    assert (command.system, command.operation) == ("tryton", "add_timesheet_line")
    assert command.idempotency_key == "tryton:add_timesheet_line:harvest-1042"
    assert command.payload["task_key"] == "SF-0065g00000DEAL0AAA:Senior Consultant"
    assert command.payload["employee_name"] == "Kim Allen" and command.payload["hours"] == "7.5"
    assert command.entity == "harvest:time_entry:1042"  # an exception names the entry
    done = FLOW.on_result(
        FlowState("bill_time", "time_entry:t-1", step.state, step.data),
        "add_timesheet_line",
        command.entity,
        Applied({"line": 77}),
    )
    assert done is not None and done.state == "recorded" and done.data["erp_line_id"] == 77
    again = FlowState("bill_time", "time_entry:t-1", "recorded", done.data)
    assert FLOW.on_record(again, entry(notes="edited later")) is None  # never twice


def test_entries_that_are_not_to_be_billed_are_left_alone() -> None:
    for changes in (
        {"approval_state": "submitted"},
        {"billable": False},
        {"invoice": "13150403"},  # invoiced in the PSA already
        {"project_code": "INTERNAL"},  # not an engagement the hub mobilized
        {"task_name": None},
    ):
        assert FLOW.on_record(None, entry(**changes)) is None, changes
