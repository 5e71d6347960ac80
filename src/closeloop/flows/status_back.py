"""Status back: posted and paid ERP invoices update the CRM's opportunity and account and mark
the PSA's time billed.

Two kinds of instance of one flow:

- ``status:<project key>``, one per engagement, driven by the ERP's invoices whose reference is
  ``<project key>/...`` (as :mod:`.invoice` writes them) and by the ``engagement`` signal of
  :mod:`.mobilize` (deal, account, PSA client, start date). Invoices of an engagement the hub
  did not mobilize are kept (state ``waiting``) and reported only once it is. Each posted or
  paid invoice version updates the opportunity's invoiced, paid and outstanding amounts, last
  invoice number and payment status (:class:`~closeloop.domain.operations.
  UpdateBillingTotals`, to the engagement's CRM). Once an invoice is posted and its period
  known (signal ``invoiced`` of :mod:`.invoice`), the engagement's approved time up to the
  invoice's last line is marked billed in the PSA (``mark_billed`` to the engagement's PSA: a
  PSA invoice numbered with the hub's invoice reference, ``<project key>/<period>``, which is
  unique across ERPs where their own numbers are not (two ERPs both have an ``INV/2026/0001``),
  and naming the ERP's number in its subject, importing that time once; a PSA that imports by
  date range flags an entry the ERP refused inside that range too, and its open business
  exception says it was not billed).
- Credit notes (reference ``<invoice reference>/credit-<n>``) count with their negative
  amounts, so the figures are net of credits; a credited invoice is overdue only for what its
  credit notes leave. A credit note whose time and expenses are to be billed again removes
  the PSA invoice that marked them (``unmark_billed``).
- ``account:<CRM account id>``, one per account: the engagements' totals (signal
  ``engagement_totals``) add up to the same fields on the account.

Amounts are the ERP's, in the invoice currency, never summed across currencies: the
opportunity's in its deal's currency; the account's amount fields in the account's own
currency (its engagements in that currency), with every currency's sums listed beside them
(``by_currency``). Converting at exchange rates would give a figure no invoice carries and
that moves with the rates; finance chases receivables per currency.

Due dates come from the ERP (the deal's payment terms). An invoice unpaid after its due date
is overdue: the update carries the overdue amount and the oldest overdue invoice's days past
due, and the payment status becomes ``Overdue``. The instance's timer wakes the day after the
next due date, and daily while something is overdue, and reports again when the figures
changed (the days an instance has seen are its ``as_of``: the latest of its signals' and
invoices' dates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from closeloop.domain.canonical.billing import Invoice
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.keys import deal_of
from closeloop.domain.lifecycle import InvoiceState
from closeloop.domain.operations import (
    MarkBilled,
    UnmarkBilled,
    UpdateBillingTotals,
    role_command,
)
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal

NAME = "status_back"
ENGAGEMENT_FIELDS = (
    "deal_id",
    "account_id",
    "client",
    "start_date",
    "currency",
    "account_currency",
    "legal_entity",
    "crm",
    "psa",
)
"""What the ``engagement`` signal of :mod:`.mobilize` tells about an engagement."""
COUNTED = (InvoiceState.POSTED.value, InvoiceState.PARTIALLY_PAID.value, InvoiceState.PAID.value)


@dataclass(frozen=True)
class StatusBackFlow:
    """The flow for the ERPs' invoices of engagements (project keys starting with one of
    ``key_prefixes``), reported to each engagement's CRM and marked billed in its PSA."""

    key_prefixes: tuple[str, ...]
    name: str = NAME

    def business_key(self, record: CanonicalRecord) -> str | None:
        """One instance per engagement, from the invoice's reference."""
        if record.canonical_type != "invoice":
            return None
        reference = str(record.data.get("reference") or "")
        project_key = reference.split("/", 1)[0]
        if deal_of(project_key, self.key_prefixes) is None or "/" not in reference:
            return None
        return f"status:{project_key}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """A new version of an engagement's invoice: report it. One that was counted and is
        no longer (voided, cancelled) leaves the totals, and its due date the timer."""
        invoice = Invoice.model_validate(record.data)
        key = self.business_key(record)
        assert key is not None and invoice.reference
        data = _engagement_data(state, key)
        if invoice.state.value not in COUNTED:
            if invoice.reference not in data["invoices"]:
                return None
            data["invoices"] = {k: v for k, v in data["invoices"].items() if k != invoice.reference}
            if not data.get("client"):
                return FlowStep("waiting", data)
            return self._report(data, key, f"{invoice.reference}:{record.version}")
        paid = invoice.amount_paid.amount if invoice.amount_paid else Decimal(0)
        data["invoices"] = {
            **data["invoices"],
            invoice.reference: {
                "number": invoice.number,
                "date": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
                "currency": invoice.currency,
                "total": str(invoice.total.amount),
                "paid": str(paid),
                "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
                "credit_of": invoice.credited_reference if invoice.is_credit_note else None,
            },
        }
        if invoice.invoice_date:  # time only moves forward: an invoice is dated today or before
            data["as_of"] = max(data.get("as_of") or "", invoice.invoice_date.isoformat())
        if not data.get("client"):  # an engagement the hub did not mobilize: keep, wait
            return FlowStep("waiting", data)
        return self._report(data, key, f"{invoice.reference}:{record.version}")

    def _report(self, data: dict[str, Any], key: str, version: str) -> FlowStep:
        """The opportunity's update, the PSA marks due and the account's new totals, as of
        the latest day the instance has seen (``as_of``); the timer wakes it when a due
        date passes, and daily while something is overdue."""
        today = date.fromisoformat(data.get("as_of") or "2000-01-01")
        totals = engagement_totals(data["invoices"], today)
        data["reported"] = _reported(totals)
        commands = [self._crm_update(data, "opportunity", data["deal_id"], key, version, totals)]
        commands += self._marks(data, key)
        signals: tuple[Signal, ...] = ()
        if data.get("account_id"):
            account_key = f"account:{data['account_id']}"
            signals = (
                Signal(
                    self.name,
                    account_key,
                    "engagement_totals",
                    {
                        "project_key": data["project_key"],
                        "crm": data["crm"],
                        "account_currency": data.get("account_currency"),
                        **totals,
                    },
                ),
            )
        return FlowStep(
            "reported",
            data,
            commands=tuple(commands),
            signals=signals,
            wake_at=next_check(data["invoices"], today),
        )

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """``engagement`` (who the engagement is), ``invoiced`` (an invoice's period, from
        :mod:`.invoice`), ``engagement_totals`` (for an account), ``credited`` (a credit
        note), or ``reassert`` (reconciliation found the CRM's figures drifted from the
        ERP's: they are sent again, keyed by ``data["tag"]``, with the account's)."""
        if signal.name == "credited":
            return self._credited(state, signal)
        if signal.name == "reassert":  # reconciliation: the CRM drifted from the ERP's figures
            if state is None or not state.data.get("client") or "invoices" not in state.data:
                return None
            return self._report(dict(state.data), signal.business_key, str(signal.data["tag"]))
        if signal.name in ("engagement", "invoiced"):
            data = _engagement_data(state, signal.business_key)
            data["as_of"] = max(data.get("as_of") or "", now.date().isoformat())
            if signal.name == "engagement":
                for field in ENGAGEMENT_FIELDS:
                    data[field] = signal.data.get(field) or data.get(field)
            else:
                periods = dict(data.get("periods", {}))
                periods[signal.data["reference"]] = {
                    "end": signal.data["period_end"],
                    "last_line_date": signal.data["last_line_date"],
                    "time": signal.data.get("time", True),
                    "expenses": signal.data.get("expenses", False),
                }
                data["periods"] = periods
            if signal.name == "engagement" and state is not None and state.state == "waiting":
                return self._report(data, signal.business_key, "mobilized")
            commands = self._marks(data, signal.business_key)
            return FlowStep(
                state.state if state else "tracking",
                data,
                commands=tuple(commands),
                wake_at=state.wake_at if state else None,
            )
        if signal.name != "engagement_totals":
            raise ValueError(f"flow {self.name} has no signal {signal.name!r}")
        data = dict(state.data) if state else {"account_id": signal.business_key.split(":", 1)[1]}
        data["crm"] = signal.data.get("crm") or data.get("crm")
        data["currency"] = signal.data.get("account_currency") or data.get("currency")
        engagements = {**data.get("engagements", {}), signal.data["project_key"]: signal.data}
        data["engagements"] = engagements
        data["revision"] = int(data.get("revision", 0)) + 1
        totals = account_totals(list(engagements.values()), data.get("currency"))
        command = self._crm_update(
            data, "account", data["account_id"], signal.business_key, str(data["revision"]), totals
        )
        return FlowStep("reported", data, commands=(command,))

    def _credited(self, state: FlowState | None, signal: Signal) -> FlowStep | None:
        """A credit note of the engagement's invoice: when its time and expenses are to be
        billed again, the PSA invoice that marked them billed is removed (``unmark_billed``);
        the credit note's amounts reach the totals with its own record."""
        if state is None or not signal.data.get("rebill"):
            return None
        reference = str(signal.data["reference"])
        data = dict(state.data)
        if reference not in (data.get("marking") or []) or not data.get("psa"):
            return None
        data["marking"] = [r for r in data["marking"] if r != reference]
        data["marked"] = [r for r in data.get("marked") or [] if r != reference]
        psa = data["psa"]
        command = role_command(
            psa,
            UnmarkBilled(number=reference),
            business_key=state.business_key,
            key=f"{reference}:{signal.data['credit_reference']}",
            entity=f"{psa}:invoice:{reference}",
            impact=Impact.REPORTING,
        )
        return FlowStep(state.state, data, commands=(command,), wake_at=state.wake_at)

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """A due date passed, or a day went by with something overdue: report the
        engagement's overdue amount and days past due again when they changed."""
        if not state.data.get("client") or "invoices" not in state.data:
            return None
        data = dict(state.data)
        data["as_of"] = max(data.get("as_of") or "", now.date().isoformat())
        today = date.fromisoformat(data["as_of"])
        totals = engagement_totals(data["invoices"], today)
        if _reported(totals) == data.get("reported"):
            return FlowStep(state.state, data, wake_at=next_check(data["invoices"], today))
        return self._report(data, state.business_key, f"as-of:{today.isoformat()}")

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Remember which invoices the PSA shows as billed."""
        if operation != "mark_billed":
            return None
        number = entity.rsplit(":", 1)[1]
        marked = sorted({*state.data.get("marked", []), number})
        return FlowStep(state.state, {**state.data, "marked": marked}, wake_at=state.wake_at)

    def _crm_update(
        self,
        data: dict[str, Any],
        record: str,
        record_id: str,
        key: str,
        version: str,
        totals: dict[str, Any],
    ) -> Command:
        update = UpdateBillingTotals.model_validate(
            {
                "record": record,
                "record_id": record_id,
                "invoiced": totals["invoiced"],
                "paid": totals["paid"],
                "outstanding": totals["outstanding"],
                "last_invoice_number": totals["last_invoice_number"],
                "payment_status": totals["payment_status"],
                "currency": totals.get("currency"),
                "overdue": totals["overdue"],
                "days_past_due": totals["days_past_due"],
                "by_currency": totals.get("by_currency") or "",
            }
        )
        crm = data["crm"]
        return role_command(
            crm,
            update,
            business_key=key,
            key=f"{record}:{record_id}:invoicing:{version}",
            entity=f"{crm}:{record}:{record_id}",
            impact=Impact.CLIENT,
        )

    def _marks(self, data: dict[str, Any], key: str) -> list[Command]:
        """``mark_billed`` for each posted invoice whose period is known and that was not
        marked yet (the invoice and its period arrive in either order)."""
        if not data.get("client"):
            return []
        commands = []
        marked = set(data.get("marking", []))
        for reference, invoice in sorted(data["invoices"].items()):
            period = data.get("periods", {}).get(reference)
            if period is None or reference in marked or invoice.get("credit_of"):
                continue
            number = str(invoice["number"])  # the ERP's; the PSA invoice is the reference
            marked.add(reference)
            mark = MarkBilled.model_validate(
                {
                    "number": reference,
                    "customer_name": data["client"],
                    "project_keys": [data["project_key"]],
                    "period_start": data.get("start_date") or "2000-01-01",
                    "period_end": period["last_line_date"],
                    "subject": f"Billed in the ERP as {number} ({reference})",
                    "time": period.get("time", True),
                    "expenses": period.get("expenses", False),
                }
            )
            psa = data["psa"]
            commands.append(
                role_command(
                    psa,
                    mark,
                    business_key=key,
                    key=reference,
                    entity=f"{psa}:invoice:{reference}",
                    impact=Impact.REPORTING,
                )
            )
        data["marking"] = sorted(marked)
        return commands


def _engagement_data(state: FlowState | None, key: str) -> dict[str, Any]:
    if state is not None:
        return dict(state.data)
    project_key = key.split(":", 1)[1]
    return {"project_key": project_key, "deal_id": None, "invoices": {}}


def engagement_totals(invoices: dict[str, dict[str, Any]], today: date) -> dict[str, Any]:
    """Invoiced, paid, outstanding and overdue sums (as strings), the days past due of the
    oldest overdue invoice, the last invoice's number (by date, then number) and the CRM's
    payment status, over an engagement's posted invoices (all in the deal's currency) as of
    ``today``. An invoice is overdue from the day after its due date while it is not fully
    paid."""
    invoiced = sum((Decimal(i["total"]) for i in invoices.values()), Decimal(0))
    paid = sum((Decimal(i["paid"]) for i in invoices.values()), Decimal(0))
    overdue, days = Decimal(0), 0
    for invoice in invoices.values():
        left = net_left(invoice, invoices)
        due = invoice.get("due_date")
        if left > 0 and due and date.fromisoformat(due) < today:
            overdue += left
            days = max(days, (today - date.fromisoformat(due)).days)
    last = max(
        (i for i in invoices.values() if not i.get("credit_of")),
        key=lambda i: (i["date"] or "", i["number"] or ""),
        default=None,
    )
    return {
        "invoiced": str(invoiced),
        "paid": str(paid),
        "outstanding": str(invoiced - paid),
        "overdue": str(overdue),
        "days_past_due": days,
        "last_invoice_number": last["number"] if last else None,
        "last_invoice_date": last["date"] if last else None,
        "currency": last["currency"] if last else None,
        "payment_status": payment_status(invoiced, paid, overdue),
    }


def account_totals(
    engagements: list[dict[str, Any]], currency: str | None = None
) -> dict[str, Any]:
    """The account's totals over its engagements' (:func:`engagement_totals`), never summed
    across currencies: the amounts are those of its engagements in ``currency`` (the
    account's; default the first engagement's), ``by_currency`` lists every currency's sums
    (one line each, by currency code), and the payment status and days past due are over
    all of them (an overdue invoice in any currency makes the account Overdue)."""
    currency = currency or engagements[0].get("currency")
    sums: dict[str, dict[str, Decimal]] = {}
    for engagement in engagements:
        row = sums.setdefault(str(engagement.get("currency")), {})
        for name in ("invoiced", "paid", "outstanding", "overdue"):
            row[name] = row.get(name, Decimal(0)) + Decimal(engagement.get(name) or 0)
    mine = sums.get(str(currency), {})
    last = max(
        engagements,
        key=lambda e: (e.get("last_invoice_date") or "", e["last_invoice_number"] or ""),
    )
    invoiced, paid = mine.get("invoiced", Decimal(0)), mine.get("paid", Decimal(0))
    return {
        "invoiced": str(invoiced),
        "paid": str(paid),
        "outstanding": str(invoiced - paid),
        "overdue": str(mine.get("overdue", Decimal(0))),
        "days_past_due": max(int(e.get("days_past_due") or 0) for e in engagements),
        "last_invoice_number": last["last_invoice_number"],
        "payment_status": _overall_status(list(sums.values())),
        "currency": currency,
        "by_currency": "\n".join(
            f"{code}: invoiced {row['invoiced']}, paid {row['paid']}, outstanding "
            f"{row['outstanding']}, overdue {row['overdue']}"
            for code, row in sorted(sums.items())
        ),
    }


def _overall_status(rows: list[dict[str, Decimal]]) -> str:
    """The payment status over every currency's sums (each compared in its own currency):
    Overdue when any is, Paid when all are, Partially Paid when something is paid, else
    Invoiced (Not Invoiced without any invoice)."""
    statuses = {
        payment_status(r.get("invoiced", Decimal(0)), r.get("paid", Decimal(0)), r["overdue"])
        for r in rows
    } - {"Not Invoiced"}
    if not statuses:
        return "Not Invoiced"
    for status in ("Overdue", "Partially Paid"):
        if status in statuses:
            return status
    if statuses == {"Paid"}:
        return "Paid"
    return "Partially Paid" if "Paid" in statuses else "Invoiced"


def payment_status(invoiced: Decimal, paid: Decimal, overdue: Decimal = Decimal(0)) -> str:
    """The CRM's picklist value: Not Invoiced, Invoiced, Partially Paid, Paid or Overdue
    (something is past its due date and not paid)."""
    if invoiced <= 0:
        return "Not Invoiced"
    if paid >= invoiced:
        return "Paid"
    if overdue > 0:
        return "Overdue"
    return "Partially Paid" if paid > 0 else "Invoiced"


def next_check(invoices: dict[str, dict[str, Any]], today: date) -> datetime | None:
    """When the engagement's overdue figures next change by themselves: tomorrow while an
    unpaid invoice is overdue (its days past due grow), else the day after the earliest due
    date of an unpaid invoice; ``None`` when nothing is unpaid."""
    dues = [
        date.fromisoformat(i["due_date"])
        for i in invoices.values()
        if i.get("due_date") and net_left(i, invoices) > 0
    ]
    if not dues:
        return None
    day = today + timedelta(days=1) if min(dues) < today else min(dues) + timedelta(days=1)
    return datetime.combine(day, time(), UTC)


def net_left(invoice: dict[str, Any], invoices: dict[str, dict[str, Any]]) -> Decimal:
    """What is still due on ``invoice`` net of the credit notes that credit it (and nothing
    for a credit note itself): a credited invoice is not chased, even while Tryton leaves it
    and its credit note open side by side."""
    if invoice.get("credit_of"):
        return Decimal(0)
    left = Decimal(invoice["total"]) - Decimal(invoice["paid"])
    reference = next((r for r, i in invoices.items() if i is invoice), None)
    for other in invoices.values():
        if reference is not None and other.get("credit_of") == reference:
            left += Decimal(other["total"]) - Decimal(other["paid"])
    return max(Decimal(0), left)


def _reported(totals: dict[str, Any]) -> list[Any]:
    """What of the totals changes as days pass (compared before reporting again)."""
    return [totals["overdue"], totals["days_past_due"], totals["payment_status"]]
