"""Bill time: approved, billable PSA time entries of a mobilized engagement become ERP
timesheet lines on the matching project and task, exactly once.

One instance per time entry (business key ``time_entry:<canonical id>``); the ERP connector
sends the lines of a batch in one call. An entry is taken when it is approved, billable, not
already invoiced in the PSA, and logged on an engagement's project (a code
:func:`closeloop.domain.keys.engagement_code` made, as :mod:`.mobilize` names them). The
engagement's invoicing instance (:mod:`.invoice`) decides whether it goes ahead: released at
once for a mobilized engagement, held while finance approval is pending (released when it
arrives), refused for a closed engagement (or a role a change order removed). A release names
the ERP the engagement was routed to (and, after a rate change, the task of the rate in force
on the entry's day), which records the line
(:class:`~closeloop.domain.operations.AddTimesheetLine`): the ERP's employee is found (or
created) from the PSA person, the task by project and task name. An entry against a closed
project, an unknown task or a locked period is refused by the ERP: the
command's business exception names the entry.

States: ``logged`` (asked the engagement), ``held``, ``recording``, ``recorded`` (the line id
is kept; a later version never records it again), ``refused``, ``withdrawn`` (no longer
approved or billable before it was recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from closeloop.domain.canonical.delivery import ApprovalState, TimeEntry
from closeloop.domain.commands import Applied, ExceptionClass, Impact
from closeloop.domain.keys import deal_of, task_key
from closeloop.domain.operations import AddTimesheetLine, role_command
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.invoice import billing_key

DONE = ("recording", "recorded")


@dataclass(frozen=True)
class BillTimeFlow:
    """The flow for time entries of the PSAs, on projects whose code starts with one of
    ``key_prefixes`` (the CRMs' key prefixes)."""

    key_prefixes: tuple[str, ...]
    name: str = "bill_time"

    def business_key(self, record: CanonicalRecord) -> str | None:
        """One instance per time entry."""
        if record.canonical_type != "time_entry":
            return None
        return f"time_entry:{record.canonical_id}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """Ask the engagement about an approved, billable entry once; ignore the rest."""
        if state is not None and state.state in DONE:
            return None  # never twice (an approved entry is locked in the PSA anyway)
        entry = TimeEntry.model_validate(record.data)
        code = entry.project_code or ""
        if not (
            entry.approval_state is ApprovalState.APPROVED
            and entry.billable
            and entry.invoice is None
            and deal_of(code, self.key_prefixes) is not None
            and entry.task_name
        ):
            if state is not None and state.state in ("logged", "held"):
                return FlowStep("withdrawn", dict(state.data))
            return None
        if state is not None and state.state == "refused":
            return None  # waits for a person: replay the exception's command
        psa, entry_id = record.source[0], record.source[2]
        key = f"{psa}-{entry_id}"
        business_key = self.business_key(record) or ""
        data = {
            "entry_id": entry_id,
            "entity": f"{psa}:time_entry:{entry_id}",
            "project_code": code,
            "task": entry.task_name,
            "hours": str(entry.hours),
            "date": entry.date.isoformat(),
            "line": {
                "key": key,
                "employee_key": f"{psa}-{entry.person}",
                "employee_name": entry.person_name or f"{psa} person {entry.person}",
                "task_key": task_key(code, entry.task_name),
                "date": entry.date.isoformat(),
                "hours": str(entry.hours),
                "description": entry.notes or "",
            },
        }
        ask = Signal(
            "invoice",
            billing_key(code),
            "time_logged",
            {"entry": business_key, "date": entry.date.isoformat(), "task": entry.task_name},
        )
        return FlowStep("logged", data, signals=(ask,))

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """The engagement's answer: ``release`` (record the line in the ERP the signal
        names), ``hold``, ``refuse``."""
        if state is None or state.state not in ("logged", "held"):
            return None  # withdrawn meanwhile, or answered already
        data = dict(state.data)
        if signal.name == "hold":
            return FlowStep("held", data)
        entity = data["entity"]
        if signal.name == "refuse":
            message = (
                f"time entry {data['entry_id']} ({data['hours']} h on {data['date']}) cannot be "
                f"billed: {signal.data.get('reason') or 'its engagement refused it'}"
            )
            issue = BusinessIssue(ExceptionClass.VALIDATION, Impact.REVENUE, entity, message)
            return FlowStep("refused", data, issues=(issue,))
        if signal.name != "release":
            raise ValueError(f"flow {self.name} has no signal {signal.name!r}")
        line = AddTimesheetLine.model_validate(data["line"])
        if signal.data.get("task"):  # a rate changed: the task of the rate in force that day
            line = line.model_copy(
                update={"task_key": task_key(data["project_code"], str(signal.data["task"]))}
            )
            data["line"] = line.model_dump(mode="json")
        command = role_command(
            signal.data["erp"],
            line,
            business_key=signal.business_key,
            key=line.key,
            entity=entity,
            impact=Impact.REVENUE,
        )
        return FlowStep("recording", data, commands=(command,))

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """No timers."""
        return None

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Keep the ERP line's id and tell the engagement's invoicing."""
        if operation != "add_timesheet_line":
            return None
        data: dict[str, Any] = {**state.data, "erp_line_id": outcome.result.get("line")}
        recorded = Signal(
            "invoice",
            billing_key(data["project_code"]),
            "recorded",
            {"date": data["date"], "hours": data["hours"], "task": data.get("task")},
        )
        return FlowStep("recorded", data, signals=(recorded,))
