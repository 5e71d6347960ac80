"""The Bill time flow's decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from closeloop.domain.commands import Applied
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.bill_time import BillTimeFlow
from tests.flow_roles import ROLES

FLOW = BillTimeFlow(ROLES.prefixes)
NOW = datetime(2026, 3, 10, tzinfo=UTC)


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


def logged(step: FlowStep | None) -> FlowState:
    assert step is not None
    return FlowState("bill_time", "time_entry:t-1", step.state, step.data)


def test_an_approved_billable_entry_of_an_engagement_becomes_one_timesheet_line() -> None:
    step = FLOW.on_record(None, entry())
    assert step is not None and step.state == "logged" and not step.commands
    (ask,) = step.signals  # the engagement decides: it may be waiting for finance approval
    assert (ask.flow, ask.business_key, ask.name) == (
        "invoice",
        "billing:SF-0065g00000DEAL0AAA",
        "time_logged",
    )
    assert ask.data == {
        "entry": "time_entry:t-1",
        "date": "2026-03-03",
        "task": "Senior Consultant",
    }
    release = Signal("bill_time", "time_entry:t-1", "release", {"erp": "tryton"})
    released = FLOW.on_signal(logged(step), release, NOW)
    assert released is not None and released.state == "recording"
    (command,) = released.commands
    assert (command.system, command.operation) == ("tryton", "add_timesheet_line")
    assert command.idempotency_key == "tryton:add_timesheet_line:harvest-1042"
    assert command.business_key == "time_entry:t-1"
    assert command.payload["task_key"] == "SF-0065g00000DEAL0AAA:Senior Consultant"
    assert command.payload["employee_name"] == "Kim Allen" and command.payload["hours"] == "7.5"
    assert command.entity == "harvest:time_entry:1042"  # an exception names the entry
    done = FLOW.on_result(
        logged(released), "add_timesheet_line", command.entity, Applied({"line": 77})
    )
    assert done is not None and done.state == "recorded" and done.data["erp_line_id"] == 77
    (recorded,) = done.signals
    assert recorded.name == "recorded"
    assert recorded.data == {"date": "2026-03-03", "hours": "7.5", "task": "Senior Consultant"}
    assert FLOW.on_record(logged(done), entry(notes="edited later")) is None  # never twice
    assert FLOW.on_signal(logged(done), release, NOW) is None


def test_after_a_rate_change_the_release_names_the_task_of_the_rate_in_force() -> None:
    step = FLOW.on_record(None, entry())
    assert step is not None
    task = "Senior Consultant (from 2026-03-01)"
    release = Signal("bill_time", "time_entry:t-1", "release", {"erp": "tryton", "task": task})
    released = FLOW.on_signal(logged(step), release, NOW)
    assert released is not None
    (command,) = released.commands
    assert command.payload["task_key"] == f"SF-0065g00000DEAL0AAA:{task}"


def test_held_entries_wait_and_refused_ones_name_the_entry_and_the_reason() -> None:
    held = FLOW.on_signal(
        logged(FLOW.on_record(None, entry())), Signal("bill_time", "time_entry:t-1", "hold"), NOW
    )
    assert held is not None and held.state == "held" and not held.commands
    refusal = Signal("bill_time", "time_entry:t-1", "refuse", {"reason": "engagement closed"})
    refused = FLOW.on_signal(logged(held), refusal, NOW)
    assert refused is not None and refused.state == "refused" and not refused.commands
    (issue,) = refused.issues
    assert issue.entity == "harvest:time_entry:1042"
    assert "time entry 1042 (7.5 h on 2026-03-03)" in issue.message
    assert "engagement closed" in issue.message


def test_an_entry_unapproved_while_held_is_withdrawn_and_never_recorded() -> None:
    held = FLOW.on_signal(
        logged(FLOW.on_record(None, entry())), Signal("bill_time", "time_entry:t-1", "hold"), NOW
    )
    withdrawn = FLOW.on_record(logged(held), entry(approval_state="submitted"))
    assert withdrawn is not None and withdrawn.state == "withdrawn"
    release = Signal("bill_time", "time_entry:t-1", "release", {"erp": "tryton"})
    assert FLOW.on_signal(logged(withdrawn), release, NOW) is None


def test_entries_that_are_not_to_be_billed_are_left_alone() -> None:
    for changes in (
        {"approval_state": "submitted"},
        {"billable": False},
        {"invoice": "13150403"},  # invoiced in the PSA already
        {"project_code": "INTERNAL"},  # not an engagement the hub mobilized
        {"task_name": None},
    ):
        assert FLOW.on_record(None, entry(**changes)) is None, changes
