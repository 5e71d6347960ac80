"""Bill expenses: approved PSA expenses of an engagement's project go to its invoicing, once;
billable ones are re-billed on the period's invoice, the others counted as cost only.

One instance per expense (business key ``expense:<canonical id>``). An expense is taken when
it is approved, not already invoiced in the PSA, and logged on an engagement's project (a code
:func:`closeloop.domain.keys.engagement_code` made). The engagement's invoicing
(:mod:`.invoice`) answers: ``accepted`` (a line of the period's invoice at cost plus the deal's
markup, with the entity's taxes, the category's product and the receipt's link), ``costed``
(not billable: counted as the engagement's cost, never billed), ``hold`` (finance approval
pending; asked again when it arrives) or ``refuse`` (the engagement was closed). After the
invoice is posted, the PSA marks the period's expenses billed (:mod:`.status_back`).

An expense with a negative amount (a refund booked as an expense) is not billed: a business
exception asks a person to book it as a credit instead; an expense of zero is ignored.

States: ``logged`` (asked the engagement), ``held``, ``accepted``, ``costed``, ``refused``,
``withdrawn`` (no longer approved before it was accepted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from closeloop.domain.canonical.delivery import ApprovalState, Expense
from closeloop.domain.commands import Applied, ExceptionClass, Impact
from closeloop.domain.keys import deal_of
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.invoice import billing_key

DONE = ("accepted", "costed")


@dataclass(frozen=True)
class BillExpenseFlow:
    """The flow for the PSAs' expenses on projects whose code starts with one of
    ``key_prefixes`` (the CRMs' key prefixes)."""

    key_prefixes: tuple[str, ...]
    name: str = "bill_expense"

    def business_key(self, record: CanonicalRecord) -> str | None:
        """One instance per expense."""
        if record.canonical_type != "expense":
            return None
        return f"expense:{record.canonical_id}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """Ask the engagement about an approved expense once; refuse a negative one."""
        if state is not None and state.state in DONE:
            return None  # never twice (an approved expense is locked in the PSA anyway)
        expense = Expense.model_validate(record.data)
        code = expense.project_code or ""
        if not (
            expense.approval_state is ApprovalState.APPROVED
            and expense.invoice is None
            and deal_of(code, self.key_prefixes) is not None
            and expense.amount.amount != 0
        ):
            if state is not None and state.state in ("logged", "held"):
                return FlowStep("withdrawn", dict(state.data))
            return None
        psa, expense_id = record.source[0], record.source[2]
        entity = f"{psa}:expense:{expense_id}"
        business_key = self.business_key(record) or ""
        data: dict[str, Any] = {
            "expense_id": expense_id,
            "entity": entity,
            "project_code": code,
            "info": {
                "expense": business_key,
                "key": f"{psa}-{expense_id}",
                "date": expense.date.isoformat(),
                "amount": str(expense.amount.amount),
                "category": expense.category,
                "billable": expense.billable,
                "receipt": expense.receipt_url,
                "notes": expense.notes or "",
            },
        }
        if expense.amount.amount < 0:
            if state is not None and state.state == "refused":
                return None
            message = (
                f"expense {expense_id} of {expense.date.isoformat()} ({expense.category}) has a "
                f"negative amount {expense.amount.amount}: an expense cannot be billed below "
                "zero; book the refund as a credit note (closeloop credit) or correct the "
                "expense in the PSA"
            )
            issue = BusinessIssue(ExceptionClass.VALIDATION, Impact.REVENUE, entity, message)
            return FlowStep("refused", data, issues=(issue,))
        resolves = (entity,) if state is not None and state.state == "refused" else ()
        ask = Signal("invoice", billing_key(code), "expense_logged", data["info"])
        return FlowStep("logged", data, signals=(ask,), resolves=resolves)

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """The engagement's answer: ``accepted``, ``costed``, ``hold`` or ``refuse``."""
        if state is None or state.state not in ("logged", "held"):
            return None
        data = dict(state.data)
        if signal.name == "hold":
            return FlowStep("held", data)
        if signal.name in DONE:
            return FlowStep(signal.name, {**data, **signal.data})
        if signal.name != "refuse":
            raise ValueError(f"flow {self.name} has no signal {signal.name!r}")
        info = data["info"]
        message = (
            f"expense {data['expense_id']} ({info['amount']} on {info['date']}, "
            f"{info['category']}) cannot be billed: "
            f"{signal.data.get('reason') or 'its engagement refused it'}"
        )
        issue = BusinessIssue(ExceptionClass.VALIDATION, Impact.REVENUE, data["entity"], message)
        return FlowStep("refused", data, issues=(issue,))

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """No timers."""
        return None

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """No commands of its own."""
        return None
