"""Bill time: approved, billable PSA time entries of a mobilized engagement become ERP
timesheet lines on the matching project and task, exactly once.

One instance per time entry (business key ``time_entry:<canonical id>``); the ERP connector
sends the lines of a batch in one call. An entry is taken when it is approved, billable, not
already invoiced in the PSA, and logged on an engagement's project (code ``SF-...``, as
:mod:`.mobilize` names them). The ERP's employee is found (or created) from the PSA person,
the task by ``<project code>:<task name>``. An entry against a closed project, an unknown
task or a locked period is refused by the ERP: the command's business exception names the
entry. States: ``recorded`` (the line id is kept; a later version never records it again).
"""

from __future__ import annotations

from dataclasses import dataclass

from closeloop.domain.canonical.delivery import ApprovalState, TimeEntry
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep

ENGAGEMENT_PREFIX = "SF-"


@dataclass(frozen=True)
class BillTimeFlow:
    """The flow for time entries of ``psa`` recorded in ``erp``."""

    psa: str = "harvest"
    erp: str = "tryton"
    name: str = "bill_time"

    def business_key(self, record: CanonicalRecord) -> str | None:
        """One instance per time entry."""
        if record.canonical_type != "time_entry":
            return None
        return f"time_entry:{record.canonical_id}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """Record an approved, billable entry of an engagement once; ignore the rest."""
        if state is not None and state.state in ("recording", "recorded"):
            return None  # never twice (an approved entry is locked in the PSA anyway)
        entry = TimeEntry.model_validate(record.data)
        code = entry.project_code or ""
        if not (
            entry.approval_state is ApprovalState.APPROVED
            and entry.billable
            and entry.invoice is None
            and code.startswith(ENGAGEMENT_PREFIX)
            and entry.task_name
        ):
            return None
        entry_id = record.source[2]
        key = f"{self.psa}-{entry_id}"
        command = Command(
            system=self.erp,
            operation="add_timesheet_line",
            business_key=self.business_key(record) or "",
            idempotency_key=f"tryton:add_timesheet_line:{key}",
            payload={
                "key": key,
                "employee_key": f"{self.psa}-{entry.person}",
                "employee_name": entry.person_name or f"{self.psa} person {entry.person}",
                "task_key": f"{code}:{entry.task_name}",
                "date": entry.date.isoformat(),
                "hours": str(entry.hours),
                "description": entry.notes or "",
            },
            entity=f"{self.psa}:time_entry:{entry_id}",
            impact=Impact.REVENUE,
        )
        data = {"entry_id": entry_id, "project_code": code, "hours": str(entry.hours)}
        return FlowStep("recording", data, commands=(command,))

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Keep the ERP line's id."""
        if operation != "add_timesheet_line":
            return None
        return FlowStep("recorded", {**state.data, "erp_line_id": outcome.result.get("line")})
