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
- ``account:<CRM account id>``, one per account: the engagements' totals (signal
  ``engagement_totals``) add up to the same fields on the account.

Amounts are the ERP's, in the invoice currency (an account whose engagements bill in several
currencies gets the sums per currency of its first one; the others are left out and counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from closeloop.domain.canonical.billing import Invoice
from closeloop.domain.commands import Applied, Command, Impact
from closeloop.domain.keys import deal_of
from closeloop.domain.lifecycle import InvoiceState
from closeloop.domain.operations import MarkBilled, UpdateBillingTotals, role_command
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal

NAME = "status_back"
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
        """A new version of an engagement's invoice: report it."""
        invoice = Invoice.model_validate(record.data)
        key = self.business_key(record)
        assert key is not None and invoice.reference
        data = _engagement_data(state, key)
        if invoice.state.value not in COUNTED:
            return None
        paid = invoice.amount_paid.amount if invoice.amount_paid else Decimal(0)
        data["invoices"] = {
            **data["invoices"],
            invoice.reference: {
                "number": invoice.number,
                "date": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
                "currency": invoice.currency,
                "total": str(invoice.total.amount),
                "paid": str(paid),
            },
        }
        if not data.get("client"):  # an engagement the hub did not mobilize: keep, wait
            return FlowStep("waiting", data)
        return self._report(data, key, f"{invoice.reference}:{record.version}")

    def _report(self, data: dict[str, Any], key: str, version: str) -> FlowStep:
        """The opportunity's update, the PSA marks due and the account's new totals."""
        totals = engagement_totals(data["invoices"])
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
                    {"project_key": data["project_key"], "crm": data["crm"], **totals},
                ),
            )
        return FlowStep("reported", data, commands=tuple(commands), signals=signals)

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """``engagement`` (who the engagement is), ``invoiced`` (an invoice's period, from
        :mod:`.invoice`) or ``engagement_totals`` (for an account)."""
        if signal.name in ("engagement", "invoiced"):
            data = _engagement_data(state, signal.business_key)
            if signal.name == "engagement":
                fields = ("deal_id", "account_id", "client", "start_date", "currency", "crm", "psa")
                for field in fields:
                    data[field] = signal.data.get(field) or data.get(field)
            else:
                periods = dict(data.get("periods", {}))
                periods[signal.data["reference"]] = {
                    "end": signal.data["period_end"],
                    "last_line_date": signal.data["last_line_date"],
                }
                data["periods"] = periods
            if signal.name == "engagement" and state is not None and state.state == "waiting":
                return self._report(data, signal.business_key, "mobilized")
            commands = self._marks(data, signal.business_key)
            return FlowStep(state.state if state else "tracking", data, commands=tuple(commands))
        if signal.name != "engagement_totals":
            raise ValueError(f"flow {self.name} has no signal {signal.name!r}")
        data = dict(state.data) if state else {"account_id": signal.business_key.split(":", 1)[1]}
        data["crm"] = signal.data.get("crm") or data.get("crm")
        engagements = {**data.get("engagements", {}), signal.data["project_key"]: signal.data}
        data["engagements"] = engagements
        data["revision"] = int(data.get("revision", 0)) + 1
        totals = account_totals(list(engagements.values()))
        command = self._crm_update(
            data, "account", data["account_id"], signal.business_key, str(data["revision"]), totals
        )
        return FlowStep("reported", data, commands=(command,))

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """No timers."""
        return None

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Remember which invoices the PSA shows as billed."""
        if operation != "mark_billed":
            return None
        number = entity.rsplit(":", 1)[1]
        marked = sorted({*state.data.get("marked", []), number})
        return FlowStep(state.state, {**state.data, "marked": marked})

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
            if period is None or reference in marked:
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


def engagement_totals(invoices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Invoiced, paid and outstanding sums (as strings), the last invoice's number (by date,
    then number) and the CRM's payment status, over an engagement's posted invoices."""
    invoiced = sum((Decimal(i["total"]) for i in invoices.values()), Decimal(0))
    paid = sum((Decimal(i["paid"]) for i in invoices.values()), Decimal(0))
    last = max(invoices.values(), key=lambda i: (i["date"] or "", i["number"] or ""), default=None)
    return {
        "invoiced": str(invoiced),
        "paid": str(paid),
        "outstanding": str(invoiced - paid),
        "last_invoice_number": last["number"] if last else None,
        "last_invoice_date": last["date"] if last else None,
        "currency": last["currency"] if last else None,
        "payment_status": payment_status(invoiced, paid),
    }


def account_totals(engagements: list[dict[str, Any]]) -> dict[str, Any]:
    """The account's sums over its engagements' totals (in the first engagement's currency)."""
    currency = engagements[0].get("currency")
    same = [e for e in engagements if e.get("currency") == currency]
    invoiced = sum((Decimal(e["invoiced"]) for e in same), Decimal(0))
    paid = sum((Decimal(e["paid"]) for e in same), Decimal(0))
    last = max(
        same, key=lambda e: (e.get("last_invoice_date") or "", e["last_invoice_number"] or "")
    )
    return {
        "invoiced": str(invoiced),
        "paid": str(paid),
        "outstanding": str(invoiced - paid),
        "last_invoice_number": last["last_invoice_number"],
        "payment_status": payment_status(invoiced, paid),
        "other_currencies": len(engagements) - len(same),
    }


def payment_status(invoiced: Decimal, paid: Decimal) -> str:
    """The CRM's picklist value: Not Invoiced, Invoiced, Partially Paid or Paid."""
    if invoiced <= 0:
        return "Not Invoiced"
    if paid >= invoiced:
        return "Paid"
    return "Partially Paid" if paid > 0 else "Invoiced"
