"""Where each engagement stands: one view over the states of the project-to-cash flows
(Mobilize, Bill time, Invoice, Status back) for ``closeloop status`` and the operations API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from closeloop.domain.keys import split_engagement_code
from closeloop.domain.records import FlowState
from closeloop.flows.status_back import engagement_totals


@dataclass
class EngagementStatus:
    """One engagement: the deal, its lifecycle ``stage`` (the Mobilize state), what blocks it,
    its time (entries by Bill time state and hours recorded), its invoices and money."""

    deal_id: str
    name: str = ""
    stage: str = "unknown"
    customer: str = ""
    customer_match: str = ""
    project_key: str = ""
    blockers: list[str] = field(default_factory=list)
    time_entries: dict[str, int] = field(default_factory=dict)
    hours_recorded: Decimal = Decimal(0)
    hours_held: Decimal = Decimal(0)
    invoices_posted: int = 0
    invoiced: Decimal = Decimal(0)
    paid: Decimal = Decimal(0)
    outstanding: Decimal = Decimal(0)
    payment_status: str = "Not Invoiced"
    next_invoicing: str | None = None


def engagements(states: Iterable[FlowState]) -> list[EngagementStatus]:
    """The engagements the flow states describe, by deal id."""
    views: dict[str, EngagementStatus] = {}

    def view(project_key: str, deal_id: str | None = None) -> EngagementStatus:
        parts = split_engagement_code(project_key)
        deal_id = deal_id or (parts[1] if parts else project_key)
        current = views.setdefault(deal_id, EngagementStatus(deal_id))
        current.project_key = current.project_key or project_key
        return current

    for state in states:
        data = state.data
        if state.flow == "mobilize":
            current = view(str(data.get("project_key") or ""), str(data["deal_id"]))
            current.name = str(data.get("name") or "")
            current.stage = state.state
            current.customer = str((data.get("customer") or {}).get("legal_name") or "")
            current.customer_match = str(data.get("customer_match") or "")
            current.blockers += _blockers(state)
        elif state.flow == "bill_time":
            current = view(str(data.get("project_code") or ""))
            current.time_entries[state.state] = current.time_entries.get(state.state, 0) + 1
            hours = Decimal(str(data.get("hours") or 0))
            if state.state == "recorded":
                current.hours_recorded += hours
            elif state.state == "held":
                current.hours_held += hours
        elif state.flow == "invoice":
            current = view(str(data["project_key"]))
            current.invoices_posted = sum(
                1 for i in (data.get("invoices") or {}).values() if i and i.get("number")
            )
            if state.wake_at is not None:
                current.next_invoicing = state.wake_at.isoformat()
        elif state.flow == "status_back" and state.business_key.startswith("status:"):
            current = view(str(data["project_key"]))
            as_of = date.fromisoformat(str(data.get("as_of") or "2000-01-01"))  # as reported
            totals = engagement_totals(data.get("invoices") or {}, as_of)
            current.invoiced = Decimal(totals["invoiced"])
            current.paid = Decimal(totals["paid"])
            current.outstanding = Decimal(totals["outstanding"])
            current.payment_status = totals["payment_status"]
    for current in views.values():
        if current.time_entries.get("held"):
            current.blockers.append(
                f"{current.time_entries['held']} time entries held until finance approves"
            )
        if current.time_entries.get("refused"):
            current.blockers.append(f"{current.time_entries['refused']} time entries refused")
    return sorted(views.values(), key=lambda v: v.deal_id)


def _blockers(state: FlowState) -> list[str]:
    data = state.data
    if state.state == "blocked":
        return list(data.get("problems") or []) or ["a person must pick the ERP customer"]
    if state.state == "provisional":
        return ["finance approval pending"]
    if state.state == "closed":
        return [str(data.get("closed_because") or "closed")]
    if data.get("lost_after_billing"):
        return [f"the deal went back to {data['lost_after_billing']} after time was billed"]
    return []
