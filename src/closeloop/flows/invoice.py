"""Invoice: per project and billing period, the ERP invoices the project's billable timesheet
lines and posts the invoice, which references the engagement.

One instance per engagement project (business key ``billing:<project key>``, the project key
as :mod:`.mobilize` names it, e.g. ``SF-<deal id>``). The instance learns from signals:

- ``engagement`` (from :mod:`.mobilize`): the engagement is ``provisional`` (finance approval
  pending), ``mobilized`` or ``closed``, which ERP it was routed to, and its invoicing terms
  (:data:`INVOICE_TERMS`: each invoice is in the deal's currency, due after the deal's
  payment terms, and carries the mention its tax treatment needs). Until it is mobilized,
  the time entries logged against it are held: :mod:`.bill_time` keeps them back, and they are
  released when approval arrives, or refused (a business exception per entry) when the
  engagement was closed instead.
- ``time_logged`` (from :mod:`.bill_time`): an approved, billable entry wants recording; the
  answer is ``release``, ``hold`` or ``refuse``.
- ``recorded`` (from :mod:`.bill_time`): a timesheet line is in the ERP; its period now has
  something to invoice. The first one tells :mod:`.mobilize` that time was billed (after which
  a lost deal no longer closes the projects by itself).

Its timer invoices each period with new lines once the period has ended (plus
``grace_days``) and no line came for ``settle_s`` seconds: ``invoice_project`` (Tryton takes
the uninvoiced lines up to the period's last day) then ``post_invoice``, both to the
engagement's ERP. The invoice's
reference is ``<project key>/<period>`` (``SF-006.../2026-08``); a line recorded after its
period was invoiced makes a follow-up invoice ``<project key>/<period>/2``. Invoices are dated
the day they are made (Tryton numbers invoices in date order), so a period invoiced late is
still numbered after the invoices before it. A posted invoice is signalled to
:mod:`.status_back` with its period. States: ``held`` (not yet mobilized), ``open``,
``closed``.

By billing method (the ``engagement`` signal carries the terms, :mod:`.charges` decides):

- time and materials: the period's invoice bills its time and its expenses;
- fixed fee: time is recorded for cost and never billed; each milestone whose status is
  Accepted is invoiced at once, alone (``<project key>/milestone-<id>``), exactly once; a
  disputed one is held with a business exception, or credited if its invoice was posted;
- retainer: the fee is invoiced when each period starts (``<project key>/<period>/retainer``)
  and the hours beyond the included ones at the period's end with its expenses. Unused hours
  that roll over are always those the period's recorded time leaves: time recorded late in
  an invoiced period shrinks the next period's allowance, and a next period invoiced already
  bills the hours no longer covered on a follow-up invoice, so what is billed does not
  depend on when the time arrived.

``expense_logged`` (from :mod:`.bill_expense`): a billable expense joins its period's
invoice as a line at cost plus the deal's markup; a non-billable one is counted as cost
only. ``credit`` (a person, ``closeloop credit``, or a disputed milestone): the posted
invoice is credited (``credit_invoice``) and :mod:`.status_back` learns it. A rate changed
by a change order applies by date: time of a role is recorded against the task of the rate
in force on its day (:func:`.amend.rate_schedule`); time of a role removed from the deal
after the removal is refused.

This module answers time entries and invoices the periods; the other use cases have modules
of their own: :mod:`.invoice_charges` (expenses, retainer fees and overage, milestones, each
charge decided by :mod:`.charges`), :mod:`.credit_notes` (the ``credit`` signal and the
credit notes made) and :mod:`.invoice_posting` (the invoices' results and the signals of a
posted one), over the instance's data in :mod:`.invoice_state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from closeloop.domain.commands import Applied, Command
from closeloop.domain.operations import ChargeLine
from closeloop.domain.periods import PeriodKind
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.charges import task_on
from closeloop.flows.credit_notes import credit_asked, credited
from closeloop.flows.invoice_charges import (
    expense_logged,
    held_expenses_answered,
    milestone_commands,
    next_retainer,
    retainer_fees,
    retainer_overage,
)
from closeloop.flows.invoice_posting import invoice_applied
from closeloop.flows.invoice_state import (
    HELD_STATUSES,
    copy_data,
    dec,
    initial,
    invoice_commands,
    slot_of,
)

NAME = "invoice"
INVOICE_TERMS = ("currency", "legal_entity", "payment_terms_days", "mention", "customer_tax_id")
"""What the ``engagement`` signal tells of how the engagement is invoiced: the deal's
currency, its selling entity, the payment terms in days and the tax treatment's legal
mention with the customer's VAT number (reverse charge)."""
BILLING_TERMS = (
    "billing_method",
    "milestones",
    "retainer",
    "expense_markup_percent",
    "rates",
    "removed_roles",
    "start_date",
    "end_date",
)
"""What the ``engagement`` signal tells of how the engagement bills (:mod:`.mobilize`)."""


def billing_key(project_key: str) -> str:
    """The business key of a project's invoicing instance."""
    return f"billing:{project_key}"


@dataclass(frozen=True)
class InvoiceFlow:
    """The flow for projects invoiced in their engagement's ERP. ``period``: the billing period;
    ``grace_days``: days after a period's end before it is invoiced (late time still counts);
    ``settle_s``: quiet seconds after the last recorded line before invoicing;
    ``payment_terms_days``: the terms of a deal whose account has none (an invoice without
    terms would be due, and overdue the next day, in Tryton)."""

    period: PeriodKind = PeriodKind.MONTHLY
    grace_days: int = 0
    settle_s: float = 60.0
    name: str = NAME
    payment_terms_days: int = 30

    def business_key(self, record: CanonicalRecord) -> str | None:
        """Records do not drive this flow; signals do."""
        return None

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """Never called (no record has a business key here)."""
        return None

    # --- signals ------------------------------------------------------------------------
    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """Track the engagement's status, answer time entries, count recorded lines."""
        data = initial(signal.business_key) if state is None else copy_data(state.data)
        if signal.name == "engagement":
            return self._engagement(data, signal.data, now)
        if signal.name == "time_logged":
            return self._time_logged(data, signal.data, now)
        if signal.name == "recorded":
            return self._recorded(data, signal.data, now)
        if signal.name == "expense_logged":
            return self._step(data, now, expense_logged(data, signal.data, now, self.period))
        if signal.name == "credit":
            return self._step(data, now, [], [credit_asked(data, signal.data, now.date())])
        raise ValueError(f"flow {self.name} has no signal {signal.name!r}")

    def _engagement(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        data["status"] = info["status"]
        data["engagement"] = info.get("engagement") or data.get("engagement")
        data["closed_because"] = info.get("closed_because")
        data["erp"] = info.get("erp") or data.get("erp")
        for name in INVOICE_TERMS:
            if name in info:
                data[name] = info[name]
        terms = dict(data.get("terms") or {})
        terms.update({name: info[name] for name in BILLING_TERMS if name in info})
        data["terms"] = terms
        signals: list[Signal] = []
        if data["status"] not in HELD_STATUSES:
            answer = "release" if data["status"] == "mobilized" else "refuse"
            signals = [self._answer(e, answer, data) for e in data["held"]]
            data["held"] = []
            signals += held_expenses_answered(data, answer == "release", now, self.period)
        if data["status"] != "mobilized":
            return self._step(data, now, signals)
        commands, decision = milestone_commands(data, now.date(), self.payment_terms_days)
        return self._step(
            data,
            now,
            signals,
            commands,
            issues=decision.issues,
            resolves=decision.resolves,
        )

    def _time_logged(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        entry = str(info["entry"])
        status = data["status"]
        if status in HELD_STATUSES:
            if entry not in data["held"]:
                data["held"].append(entry)
            answer = "hold"
        else:
            answer = "release" if status == "mobilized" else "refuse"
        removed = (data.get("terms") or {}).get("removed_roles") or {}
        role, day = info.get("task"), info.get("date")
        if answer == "release" and role in removed and day and day >= removed[role]:
            reason = f"{role} was removed from the deal by a change order from {removed[role]}"
            return self._step(data, now, [Signal("bill_time", entry, "refuse", {"reason": reason})])
        signal = self._answer(entry, answer, data)
        schedule = (data.get("terms") or {}).get("rates") or {}
        if answer == "release" and role and role in schedule and day:
            task = task_on(schedule, str(role), date.fromisoformat(day))["task"]
            if task != role:
                signal = Signal(signal.flow, entry, "release", {**signal.data, "task": task})
        return self._step(data, now, [signal])

    def _recorded(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        slot = slot_of(data, date.fromisoformat(info["date"]), self.period)
        slot["lines"] += 1
        slot["last_date"] = max(slot.get("last_date") or "", info["date"])
        slot["hours"] = str(dec(slot.get("hours")) + dec(info.get("hours")))
        method = (data.get("terms") or {}).get("billing_method") or "time_and_materials"
        role = str(info.get("task") or "")
        if role and role not in slot.setdefault("roles", []):
            slot["roles"] = [*slot["roles"], role]  # whose time the period's invoice bills
        if method == "retainer":
            slot.setdefault("entries", []).append([info["date"], role, str(info.get("hours"))])
        if method != "fixed_fee":  # fixed fee: time for cost and margin, never billed
            slot["dirty"] = True
            slot["time"] = method == "time_and_materials"
            data["last_recorded_at"] = now.isoformat()
        signals = []
        if not data["billed"] and data.get("engagement") and method == "time_and_materials":
            data["billed"] = True
            signals.append(Signal("mobilize", data["engagement"], "billed", {}))
        return self._step(data, now, signals)

    def _answer(self, entry: str, answer: str, data: dict[str, Any]) -> Signal:
        reason = ""
        if answer == "refuse":
            reason = f"engagement {data['project_key']} was closed"
            if data.get("closed_because"):
                reason += f" ({data['closed_because']})"
        details = {"reason": reason} if reason else {}
        if answer == "release":
            details["erp"] = data["erp"]
        return Signal("bill_time", entry, answer, details)

    # --- the timer: invoice what is due -------------------------------------------------
    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """Invoice and post every period that is due, and each retainer period's fee when
        the period starts."""
        data = copy_data(state.data)
        if data["status"] in HELD_STATUSES:
            return self._step(data, now, [])
        commands = []
        if data["status"] == "mobilized":
            commands += retainer_fees(data, now.date(), self.period, self.payment_terms_days)
        terms = data.get("terms") or {}
        carried = Decimal(0)
        settling = False  # an earlier period's time is still coming in: its carry may change
        for label, slot in sorted(data["periods"].items()):
            slot.setdefault("label", label)
            dirty = bool(slot.get("dirty"))
            due = dirty and self._due(slot, data, now) <= now
            # an invoiced retainer period whose allowance shrank (late time before it) bills
            # the hours no longer covered now, on a follow-up invoice
            again = not dirty and bool(slot.get("references")) and not settling
            charges = [ChargeLine.model_validate(c) for c in slot.get("charges") or []]
            lines, carried = retainer_overage(
                slot, terms, carried, data["project_key"], due=due or again
            )
            charges += lines
            settling = settling or (dirty and not due)
            due = due or bool(again and lines)
            if not due:
                continue
            slot["dirty"] = False
            slot["charges"] = []
            slot["sequence"] = slot.get("sequence", 0) + 1
            reference = f"{data['project_key']}/{label}"
            if slot["sequence"] > 1:
                reference += f"/{slot['sequence']}"
            slot.setdefault("references", []).append(reference)
            end = date.fromisoformat(slot["end"])
            timed = (terms.get("billing_method") or "time_and_materials") == "time_and_materials"
            commands += invoice_commands(
                data,
                reference,
                end if timed else None,
                now.date(),
                tuple(charges),
                self.payment_terms_days,
            )
        return self._step(data, now, [], commands)

    def _due(self, slot: dict[str, Any], data: dict[str, Any], now: datetime) -> datetime:
        """When the period of ``slot`` may be invoiced: ``grace_days`` after it ended and
        ``settle_s`` after the last line recorded."""
        ends = datetime.combine(date.fromisoformat(slot["end"]), time(), UTC)
        after_period = ends + timedelta(days=1 + self.grace_days)
        last = data.get("last_recorded_at")
        settled = (datetime.fromisoformat(last) if last else now) + timedelta(seconds=self.settle_s)
        return max(after_period, settled)

    def _step(
        self,
        data: dict[str, Any],
        now: datetime,
        signals: list[Signal],
        commands: list[Command] | None = None,
        issues: list[BusinessIssue] | None = None,
        resolves: list[str] | None = None,
    ) -> FlowStep:
        """The step to state ``held``, ``open`` or ``closed`` by the engagement's status,
        waking when the next period or retainer fee is due."""
        state = {"mobilized": "open", "closed": "closed"}.get(data["status"], "held")
        wake = None
        if state != "held":
            due = [self._due(s, data, now) for s in data["periods"].values() if s.get("dirty")]
            if state == "open":
                due += next_retainer(data, self.period)
            wake = min(due, default=None)
        return FlowStep(
            state,
            data,
            commands=tuple(commands or ()),
            signals=tuple(signals),
            wake_at=wake,
            issues=tuple(issues or ()),
            resolves=tuple(resolves or ()),
        )

    # --- results ------------------------------------------------------------------------
    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Keep each invoice's number, state and amounts (``None`` when there was nothing
        to invoice); a posted one is told to :mod:`.status_back` (with what the PSA should
        mark billed) and to :mod:`.mobilize` (what is billed now, for change orders); a
        credit note to :mod:`.status_back`."""
        if operation == "credit_invoice":
            return credited(state, entity, outcome)
        if operation not in ("invoice_project", "post_invoice"):
            return None
        return invoice_applied(state, operation, entity, outcome)
