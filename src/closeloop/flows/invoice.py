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
  and the hours beyond the included ones at the period's end with its expenses.

``expense_logged`` (from :mod:`.bill_expense`): a billable expense joins its period's
invoice as a line at cost plus the deal's markup; a non-billable one is counted as cost
only. ``credit`` (a person, ``closeloop credit``, or a disputed milestone): the posted
invoice is credited (``credit_invoice``) and :mod:`.status_back` learns it. A rate changed
by a change order applies by date: time of a role is recorded against the task of the rate
in force on its day (:func:`.amend.rate_schedule`); time of a role removed from the deal
after the removal is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.operations import (
    ChargeLine,
    CreditInvoice,
    InvoiceProject,
    Operation,
    PostInvoice,
    role_command,
)
from closeloop.domain.periods import BillingPeriod, PeriodKind, period_of
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.charges import (
    decide_milestones,
    expense_charge,
    overage,
    retainer_fee,
    task_on,
)

NAME = "invoice"
HELD_STATUSES = ("pending", "provisional")
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
        data = _initial(signal.business_key) if state is None else _copy(state.data)
        if signal.name == "engagement":
            return self._engagement(data, signal.data, now)
        if signal.name == "time_logged":
            return self._time_logged(data, signal.data, now)
        if signal.name == "recorded":
            return self._recorded(data, signal.data, now)
        if signal.name == "expense_logged":
            return self._expense_logged(data, signal.data, now)
        if signal.name == "credit":
            return self._credit(data, signal.data, now)
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
            held_expenses, data["held_expenses"] = data.get("held_expenses") or {}, {}
            for info in held_expenses.values():
                if answer == "release":
                    signals += self._take_expense(data, info, now)
                else:
                    reason = f"engagement {data['project_key']} was closed"
                    signals.append(
                        Signal("bill_expense", info["expense"], "refuse", {"reason": reason})
                    )
        if data["status"] != "mobilized":
            return self._step(data, now, signals)
        decision = decide_milestones(data)
        commands: list[Command] = []
        for reference, charge in decision.invoices:
            commands += self._invoice_commands(data, reference, None, now.date(), (charge,))
        for reference, key, name in decision.credits:
            reason = f"milestone {name!r} disputed by the client after its invoice"
            commands.append(self._credit_command(data, reference, reason, (key,), now.date()))
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

    def _expense_logged(
        self, data: dict[str, Any], info: dict[str, Any], now: datetime
    ) -> FlowStep:
        """A billable expense joins its period's invoice (at cost plus markup); one that is
        not billable is counted as cost; held until mobilized, refused once closed."""
        expense = str(info["expense"])
        status = data["status"]
        if status in HELD_STATUSES:
            held = data.setdefault("held_expenses", {})
            held[expense] = dict(info)
            return self._step(data, now, [Signal("bill_expense", expense, "hold", {})])
        if status != "mobilized":
            reason = f"engagement {data['project_key']} was closed"
            return self._step(
                data, now, [Signal("bill_expense", expense, "refuse", {"reason": reason})]
            )
        return self._step(data, now, self._take_expense(data, info, now))

    def _take_expense(
        self, data: dict[str, Any], info: dict[str, Any], now: datetime
    ) -> list[Signal]:
        """Count a non-billable expense as cost, or add a billable one to its period's
        charges (at cost plus markup); the answers to the expense's instance."""
        expense = str(info["expense"])
        if not info.get("billable"):
            costs = data.setdefault("costs", {})
            category = str(info.get("category") or "other")
            costs[category] = str(_dec(costs.get(category)) + _dec(info["amount"]))
            return [Signal("bill_expense", expense, "costed", {})]
        currency = data.get("currency") or "EUR"
        markup = (data.get("terms") or {}).get("expense_markup_percent")
        charge = expense_charge(info, markup, currency)
        slot = self._slot(data, date.fromisoformat(info["date"]))
        charges = slot.setdefault("charges", [])
        if all(c["key"] != charge.key for c in charges):
            charges.append(charge.model_dump(mode="json"))
            slot["dirty"] = True
            slot["expenses"] = True
            data["last_recorded_at"] = now.isoformat()
        return [Signal("bill_expense", expense, "accepted", {"charge": charge.key})]

    def _credit(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        """A person (or a disputed milestone) asks to credit a posted invoice."""
        command = self._credit_command(
            data,
            str(info["reference"]),
            str(info["reason"]),
            tuple(info.get("line_keys") or ()),
            now.date(),
        )
        data.setdefault("rebill", {})[str(info["reference"])] = bool(info.get("rebill"))
        return self._step(data, now, [], [command])

    def _credit_command(
        self, data: dict[str, Any], reference: str, reason: str, keys: tuple[str, ...], day: date
    ) -> Command:
        counts = data.setdefault("credit_counts", {})
        counts[reference] = counts.get(reference, 0) + 1
        credit = CreditInvoice(
            reference=reference,
            credit_reference=f"{reference}/credit-{counts[reference]}",
            reason=reason,
            line_keys=keys,
            credit_date=day,
        )
        erp = data["erp"]
        return role_command(
            erp,
            credit,
            business_key=data["business_key"],
            key=credit.credit_reference,
            entity=f"{erp}:invoice:{credit.credit_reference}",
            impact=Impact.REVENUE,
        )

    def _slot(self, data: dict[str, Any], day: date) -> dict[str, Any]:
        period = period_of(day, self.period)
        return _new_slot(data, period)

    def _recorded(self, data: dict[str, Any], info: dict[str, Any], now: datetime) -> FlowStep:
        slot = self._slot(data, date.fromisoformat(info["date"]))
        slot["lines"] += 1
        slot["last_date"] = max(slot.get("last_date") or "", info["date"])
        slot["hours"] = str(_dec(slot.get("hours")) + _dec(info.get("hours")))
        method = (data.get("terms") or {}).get("billing_method") or "time_and_materials"
        if method == "retainer":
            role = str(info.get("task") or "")
            slot.setdefault("entries", []).append([info["date"], role, str(info.get("hours"))])
        if method != "fixed_fee":  # fixed fee: time for cost and margin, never billed
            slot["dirty"] = True
            slot["time"] = method == "time_and_materials"
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
        """Invoice and post every period that is due, and each retainer period's fee when
        the period starts."""
        data = _copy(state.data)
        if data["status"] in HELD_STATUSES:
            return self._step(data, now, [])
        commands = []
        if data["status"] == "mobilized":
            commands += self._retainer_fees(data, now)
        terms = data.get("terms") or {}
        carried = Decimal(0)
        for label, slot in sorted(data["periods"].items()):
            slot.setdefault("label", label)
            unused = Decimal(0)
            charges = [ChargeLine.model_validate(c) for c in slot.get("charges") or []]
            if terms.get("retainer"):
                lines, unused = overage(slot, terms["retainer"], terms.get("rates") or {}, carried)
                if self._due(slot, data, now) > now or not slot.get("dirty"):
                    slot["overage_billed"] = _without(slot, lines)
                    lines = []
                charges += lines
            if terms.get("retainer") and terms["retainer"].get("unused_hours") == "roll_over":
                carried = unused
            if not slot.get("dirty") or self._due(slot, data, now) > now:
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
            commands += self._invoice_commands(
                data, reference, end if timed else None, now.date(), tuple(charges)
            )
        return self._step(data, now, [], commands)

    def _retainer_fees(self, data: dict[str, Any], now: datetime) -> list[Command]:
        """The fee of every retainer period that has started (from the engagement's start
        to its end date) and is not invoiced yet."""
        terms = data.get("terms") or {}
        if not terms.get("retainer") or not terms.get("start_date"):
            return []
        commands = []
        for period in self._retainer_periods(terms, now.date()):
            slot = _new_slot(data, period)
            if slot.get("retainer_invoiced"):
                continue
            reference = f"{data['project_key']}/{period.label}/retainer"
            slot["retainer_invoiced"] = reference
            fee = retainer_fee(period.label, terms["retainer"])
            commands += self._invoice_commands(data, reference, None, now.date(), (fee,))
        return commands

    def _retainer_periods(self, terms: dict[str, Any], today: date) -> list[BillingPeriod]:
        day = date.fromisoformat(terms["start_date"])
        last = date.fromisoformat(terms["end_date"]) if terms.get("end_date") else None
        periods = []
        while day <= today and (last is None or day <= last):
            period = period_of(day, self.period)
            periods.append(period)
            day = period.end + timedelta(days=1)
        return periods

    def _invoice_commands(
        self,
        data: dict[str, Any],
        reference: str,
        end: date | None,
        issued: date,
        charges: tuple[ChargeLine, ...] = (),
    ) -> list[Command]:
        """Invoice ``reference``: the time up to ``end`` (``None``: no time) and ``charges``,
        then post it."""
        erp = data["erp"]
        invoice = InvoiceProject(
            project_key=data["project_key"],
            up_to=end or issued,
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
            charges=charges,
            include_time=end is not None,
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
        issues: list[BusinessIssue] | None = None,
        resolves: list[str] | None = None,
    ) -> FlowStep:
        state = {"mobilized": "open", "closed": "closed"}.get(data["status"], "held")
        wake = None
        if state != "held":
            due = [self._due(s, data, now) for s in data["periods"].values() if s.get("dirty")]
            if state == "open":
                due += self._next_retainer(data, now)
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

    def _next_retainer(self, data: dict[str, Any], now: datetime) -> list[datetime]:
        """When the first retainer period whose fee is not invoiced starts (in the past when
        one is due now), unless the engagement has ended by then."""
        terms = data.get("terms") or {}
        if not terms.get("retainer") or not terms.get("start_date"):
            return []
        day = date.fromisoformat(terms["start_date"])
        last = date.fromisoformat(terms["end_date"]) if terms.get("end_date") else None
        while last is None or day <= last:
            period = period_of(day, self.period)
            if not (data["periods"].get(period.label) or {}).get("retainer_invoiced"):
                return [datetime.combine(day, time(), UTC)]
            day = period.end + timedelta(days=1)
        return []

    # --- results ------------------------------------------------------------------------
    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Keep each invoice's number, state and amounts (``None`` when there was nothing
        to invoice); a posted one is told to :mod:`.status_back` (with what the PSA should
        mark billed) and to :mod:`.mobilize` (what is billed now, for change orders); a
        credit note to :mod:`.status_back`."""
        if operation == "credit_invoice":
            return self._credited(state, entity, outcome)
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
            if operation == "invoice_project" and result.get("charges") is not None:
                data.setdefault("charged", {})[reference] = list(result["charges"])
            if operation == "post_invoice":
                signals += self._posted(data, reference)
        else:
            data["invoices"].setdefault(reference, None)
        return FlowStep(state.state, data, signals=tuple(signals), wake_at=state.wake_at)

    def _posted(self, data: dict[str, Any], reference: str) -> list[Signal]:
        signals = []
        period = next(
            (p for p in data["periods"].values() if reference in p.get("references", [])), None
        )
        method = (data.get("terms") or {}).get("billing_method") or "time_and_materials"
        timed = period is not None and period.get("time", method == "time_and_materials")
        if period is not None and (timed or period.get("expenses")):
            signals.append(
                Signal(
                    "status_back",
                    f"status:{data['project_key']}",
                    "invoiced",
                    {
                        "reference": reference,
                        "period_end": period["end"],
                        "last_line_date": period.get("last_date") or period["end"],
                        "time": bool(timed),
                        "expenses": bool(period.get("expenses")),
                    },
                )
            )
        if data.get("engagement"):
            billed: dict[str, Any] = {}
            if period is not None and timed:
                billed["through"] = period.get("last_date") or period["end"]
                billed["invoiced_roles"] = sorted(
                    {e[1] for e in period.get("entries") or []} | set(data.get("roles_seen") or [])
                )
            milestones = [
                k
                for k, m in (data.get("milestones") or {}).items()
                if m.get("invoiced") == reference
            ]
            if milestones:
                billed["invoiced_milestones"] = milestones
            if billed:
                signals.append(Signal("mobilize", data["engagement"], "billed", billed))
        return signals

    def _credited(self, state: FlowState, entity: str, outcome: Applied) -> FlowStep:
        data = _copy(state.data)
        result = outcome.result
        credit_reference = entity.split(":", 2)[2]
        credited = str(result.get("credited") or credit_reference.rsplit("/credit-", 1)[0])
        data.setdefault("credits", {})[credit_reference] = {
            k: result.get(k) for k in ("number", "state", "total_amount")
        } | {"credited": credited}
        signal = Signal(
            "status_back",
            f"status:{data['project_key']}",
            "credited",
            {
                "reference": credited,
                "credit_reference": credit_reference,
                "rebill": bool((data.get("rebill") or {}).get(credited)),
            },
        )
        return FlowStep(state.state, data, signals=(signal,), wake_at=state.wake_at)


def _new_slot(data: dict[str, Any], period: BillingPeriod) -> dict[str, Any]:
    """The invoicing slot of ``period`` (made when missing)."""
    slot: dict[str, Any] = data["periods"].setdefault(
        period.label,
        {"start": period.start.isoformat(), "end": period.end.isoformat(), "lines": 0},
    )
    slot.setdefault("label", period.label)
    return slot


def _without(slot: dict[str, Any], lines: list[ChargeLine]) -> dict[str, Any]:
    """The slot's billed overage as it was before ``lines`` (computed but not due yet)."""
    billed = dict(slot.get("overage_billed") or {})
    for line in lines:
        task = str(line.task)
        before = billed[task]
        hours = Decimal(before["hours"]) - line.quantity
        if before["lines"] <= 1 and hours <= 0:
            billed.pop(task)
        else:
            billed[task] = {"hours": str(hours), "lines": before["lines"] - 1}
    return billed


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
        k: {
            **v,
            "references": list(v.get("references", [])),
            "charges": list(v.get("charges", [])),
            "entries": list(v.get("entries", [])),
            "overage_billed": dict(v.get("overage_billed", {})),
        }
        for k, v in data.get("periods", {}).items()
    }
    copied["invoices"] = dict(data.get("invoices", {}))
    copied["milestones"] = {k: dict(v) for k, v in (data.get("milestones") or {}).items()}
    for name in ("held_expenses", "costs", "credits", "credit_counts", "rebill", "charged"):
        copied[name] = dict(data.get(name) or {})
    return copied


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)
