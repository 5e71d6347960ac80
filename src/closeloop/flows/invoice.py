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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.operations import InvoiceProject, Operation, PostInvoice, role_command
from closeloop.domain.periods import PeriodKind, period_of
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal

NAME = "invoice"
HELD_STATUSES = ("pending", "provisional")
INVOICE_TERMS = ("currency", "legal_entity", "payment_terms_days", "mention", "customer_tax_id")
"""What the ``engagement`` signal tells of how the engagement is invoiced: the deal's
currency, its selling entity, the payment terms in days and the tax treatment's legal
mention with the customer's VAT number (reverse charge)."""


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
        data = _initial(signal.business_key) if state is None else _copy(state.data)
        if signal.name == "engagement":
            return self._engagement(data, signal.data, now)
        if signal.name == "time_logged":
            return self._time_logged(data, str(signal.data["entry"]), now)
        if signal.name == "recorded":
            return self._recorded(data, signal.data, now)
        raise ValueError(f"flow {self.name} has no signal {signal.name!r}")

    def _engagement(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        data["status"] = info["status"]
        data["engagement"] = info.get("engagement") or data.get("engagement")
        data["closed_because"] = info.get("closed_because")
        data["erp"] = info.get("erp") or data.get("erp")
        for name in INVOICE_TERMS:
            if name in info:
                data[name] = info[name]
        signals: list[Signal] = []
        if data["status"] not in HELD_STATUSES:
            answer = "release" if data["status"] == "mobilized" else "refuse"
            signals = [self._answer(e, answer, data) for e in data["held"]]
            data["held"] = []
        return self._step(data, now, signals)

    def _time_logged(self, data: dict[str, Any], entry: str, now: datetime) -> FlowStep:
        status = data["status"]
        if status in HELD_STATUSES:
            if entry not in data["held"]:
                data["held"].append(entry)
            answer = "hold"
        else:
            answer = "release" if status == "mobilized" else "refuse"
        return self._step(data, now, [self._answer(entry, answer, data)])

    def _recorded(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        period = period_of(date.fromisoformat(info["date"]), self.period)
        slot = data["periods"].setdefault(
            period.label,
            {"start": period.start.isoformat(), "end": period.end.isoformat(), "lines": 0},
        )
        slot["lines"] += 1
        slot["last_date"] = max(slot.get("last_date") or "", info["date"])
        slot["hours"] = str(_dec(slot.get("hours")) + _dec(info.get("hours")))
        slot["dirty"] = True
        data["last_recorded_at"] = now.isoformat()
        signals = []
        if not data["billed"] and data.get("engagement"):
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
        """Invoice and post every period that is due."""
        data = _copy(state.data)
        if data["status"] in HELD_STATUSES:
            return self._step(data, now, [])
        commands = []
        for label, slot in sorted(data["periods"].items()):
            if not slot.get("dirty") or self._due(slot, data, now) > now:
                continue
            slot["dirty"] = False
            slot["sequence"] = slot.get("sequence", 0) + 1
            reference = f"{data['project_key']}/{label}"
            if slot["sequence"] > 1:
                reference += f"/{slot['sequence']}"
            slot.setdefault("references", []).append(reference)
            end = date.fromisoformat(slot["end"])
            commands += self._invoice_commands(data, reference, end, now.date())
        return self._step(data, now, [], commands)

    def _invoice_commands(
        self, data: dict[str, Any], reference: str, end: date, issued: date
    ) -> list[Command]:
        erp = data["erp"]
        invoice = InvoiceProject(
            project_key=data["project_key"],
            up_to=end,
            reference=reference,
            invoice_date=issued,
            currency=data.get("currency"),
            payment_terms_days=(
                data["payment_terms_days"]
                if data.get("payment_terms_days") is not None
                else self.payment_terms_days
            ),
            mention=data.get("mention") or "",
            customer_tax_id=data.get("customer_tax_id"),
        )
        operations: tuple[Operation, ...] = (invoice, PostInvoice(reference=reference))
        return [
            role_command(
                erp,
                operation,
                business_key=data["business_key"],
                key=reference,
                entity=f"{erp}:invoice:{reference}",
                impact=Impact.REVENUE,
            )
            for operation in operations
        ]

    def _due(self, slot: dict[str, Any], data: dict[str, Any], now: datetime) -> datetime:
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
    ) -> FlowStep:
        state = {"mobilized": "open", "closed": "closed"}.get(data["status"], "held")
        wake = None
        if state != "held":
            due = [self._due(s, data, now) for s in data["periods"].values() if s.get("dirty")]
            wake = min(due, default=None)
        return FlowStep(
            state, data, commands=tuple(commands or ()), signals=tuple(signals), wake_at=wake
        )

    # --- results ------------------------------------------------------------------------
    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Keep each invoice's number, state and amounts (``None`` when there was nothing
        to invoice)."""
        if operation not in ("invoice_project", "post_invoice"):
            return None
        data = _copy(state.data)
        reference = entity.split(":", 2)[2]
        result = outcome.result
        signals = []
        if result.get("reference"):
            data["invoices"][reference] = {
                k: result.get(k)
                for k in ("number", "state", "untaxed_amount", "tax_amount", "total_amount")
            }
            if operation == "post_invoice":
                period = next(
                    p for p in data["periods"].values() if reference in p.get("references", [])
                )
                signals.append(
                    Signal(
                        "status_back",
                        f"status:{data['project_key']}",
                        "invoiced",
                        {
                            "reference": reference,
                            "period_end": period["end"],
                            "last_line_date": period.get("last_date") or period["end"],
                        },
                    )
                )
        else:
            data["invoices"].setdefault(reference, None)
        return FlowStep(state.state, data, signals=tuple(signals), wake_at=state.wake_at)


def _initial(business_key: str) -> dict[str, Any]:
    return {
        "business_key": business_key,
        "project_key": business_key.split(":", 1)[1],
        "engagement": None,
        "erp": None,
        "status": "pending",
        "held": [],
        "billed": False,
        "periods": {},
        "invoices": {},
    }


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    """A copy deep enough that a step never changes the state it was given."""
    copied = dict(data)
    copied["held"] = list(data.get("held", []))
    copied["periods"] = {
        k: {**v, "references": list(v.get("references", []))}
        for k, v in data.get("periods", {}).items()
    }
    copied["invoices"] = dict(data.get("invoices", {}))
    return copied


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)
