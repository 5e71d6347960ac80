"""The Invoice and Status back flows' decisions, and billing periods (pure: each step is
called as the engine would)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.domain.commands import Applied
from closeloop.domain.periods import PeriodKind, period_of
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.invoice import InvoiceFlow
from closeloop.flows.status_back import (
    StatusBackFlow,
    account_totals,
    engagement_totals,
    next_check,
)
from tests.flow_roles import ROLES

INVOICE = InvoiceFlow(settle_s=60)
KEY = "billing:SF-006A"
NOW = datetime(2026, 9, 3, 9, tzinfo=UTC)


def at(step: FlowStep | None, flow: str = "invoice", key: str = KEY) -> FlowState:
    assert step is not None
    return FlowState(flow, key, step.state, step.data, step.wake_at)


def signal(name: str, **data: Any) -> Signal:
    return Signal("invoice", KEY, name, data)


def engagement(status: str) -> Signal:
    return signal("engagement", status=status, engagement="engagement:c-1", erp="tryton")


# --- billing periods ------------------------------------------------------------------------
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_a_period_contains_its_day_and_the_next_begins_the_day_after(day: date) -> None:
    for kind in PeriodKind:
        period = period_of(day, kind)
        assert period.start <= day <= period.end
        following = period_of(period.end + timedelta(days=1), kind)
        assert following.start == period.end + timedelta(days=1)
        assert following.label != period.label


def test_period_labels() -> None:
    assert period_of(date(2026, 12, 31), PeriodKind.MONTHLY).label == "2026-12"
    assert period_of(date(2026, 12, 31), PeriodKind.QUARTERLY).end == date(2026, 12, 31)
    assert period_of(date(2026, 8, 14), PeriodKind.QUARTERLY).label == "2026-Q3"
    assert period_of(date(2027, 1, 1), PeriodKind.WEEKLY).label == "2026-W53"  # ISO week


# --- invoice: holding and releasing time ----------------------------------------------------
def test_time_is_held_until_the_engagement_is_mobilized_then_released() -> None:
    first = INVOICE.on_signal(None, signal("time_logged", entry="time_entry:t-1"), NOW)
    assert first is not None and first.state == "held" and first.data["held"] == ["time_entry:t-1"]
    assert [(s.flow, s.business_key, s.name) for s in first.signals] == [
        ("bill_time", "time_entry:t-1", "hold")
    ]
    provisional = INVOICE.on_signal(at(first), engagement("provisional"), NOW)
    second = INVOICE.on_signal(at(provisional), signal("time_logged", entry="time_entry:t-2"), NOW)
    assert second is not None and second.data["held"] == ["time_entry:t-1", "time_entry:t-2"]
    approved = INVOICE.on_signal(at(second), engagement("mobilized"), NOW)
    assert approved is not None and approved.state == "open" and approved.data["held"] == []
    assert [(s.business_key, s.name) for s in approved.signals] == [
        ("time_entry:t-1", "release"),
        ("time_entry:t-2", "release"),
    ]
    later = INVOICE.on_signal(at(approved), signal("time_logged", entry="time_entry:t-3"), NOW)
    assert later is not None and [s.name for s in later.signals] == ["release"]


def test_time_of_a_closed_engagement_is_refused_with_the_reason() -> None:
    held = INVOICE.on_signal(None, signal("time_logged", entry="time_entry:t-1"), NOW)
    closed = INVOICE.on_signal(
        at(held),
        signal("engagement", status="closed", closed_because="the deal went back to Negotiation"),
        NOW,
    )
    assert closed is not None and closed.state == "closed"
    (refusal,) = closed.signals
    assert refusal.name == "refuse" and "went back to Negotiation" in refusal.data["reason"]


# --- invoice: periods, timer, invoices ------------------------------------------------------
def recorded(state: FlowState, day: str, hours: str, now: datetime = NOW) -> FlowStep:
    step = INVOICE.on_signal(state, signal("recorded", date=day, hours=hours), now)
    assert step is not None
    return step


def test_each_ended_period_is_invoiced_and_posted_once_it_settled() -> None:
    open_ = at(INVOICE.on_signal(None, engagement("mobilized"), NOW))
    step = recorded(open_, "2026-08-04", "7.5")
    (billed,) = step.signals  # the first recorded time: no more automatic closing
    assert (billed.flow, billed.business_key, billed.name) == (
        "mobilize",
        "engagement:c-1",
        "billed",
    )
    step = recorded(at(step), "2026-08-30", "2")
    step = recorded(at(step), "2026-09-01", "4")
    assert not step.signals  # billed is said once
    assert step.data["periods"]["2026-08"]["hours"] == "9.5"
    assert step.wake_at == NOW + timedelta(seconds=60)  # August ended: wait for quiet
    assert INVOICE.on_timer(at(step), NOW) is not None
    assert not INVOICE.on_timer(at(step), NOW).commands  # type: ignore[union-attr]

    fired = INVOICE.on_timer(at(step), NOW + timedelta(seconds=60))
    assert fired is not None
    assert [(c.operation, c.payload["reference"]) for c in fired.commands] == [
        ("invoice_project", "SF-006A/2026-08"),
        ("post_invoice", "SF-006A/2026-08"),
    ]
    invoice_project = fired.commands[0]
    assert invoice_project.payload["up_to"] == "2026-08-31"
    assert invoice_project.payload["invoice_date"] == "2026-09-03"  # issued today: in order
    assert invoice_project.business_key == KEY
    assert invoice_project.idempotency_key == "tryton:invoice_project:SF-006A/2026-08"
    assert fired.wake_at == datetime(2026, 10, 1, tzinfo=UTC)  # September, once it ended

    late = recorded(at(fired), "2026-08-31", "1", NOW + timedelta(hours=1))
    again = INVOICE.on_timer(at(late), NOW + timedelta(hours=2))
    assert again is not None
    assert [c.payload["reference"] for c in again.commands] == ["SF-006A/2026-08/2"] * 2


def test_a_held_engagement_invoices_nothing_and_results_are_kept() -> None:
    held = at(INVOICE.on_signal(None, engagement("provisional"), NOW))
    step = recorded(held, "2026-08-04", "7.5")
    assert step.wake_at is None
    assert not INVOICE.on_timer(at(step), NOW + timedelta(days=30)).commands  # type: ignore[union-attr]
    result = {
        "reference": "SF-006A/2026-08",
        "number": "INV/2026/0001",
        "state": "posted",
        "untaxed_amount": "1425.00",
        "tax_amount": "270.75",
        "total_amount": "1695.75",
    }
    step.data["periods"]["2026-08"]["references"] = ["SF-006A/2026-08"]
    kept = INVOICE.on_result(
        at(step), "post_invoice", "tryton:invoice:SF-006A/2026-08", Applied(result)
    )
    assert kept is not None
    assert kept.data["invoices"]["SF-006A/2026-08"]["number"] == "INV/2026/0001"
    posted, billed = kept.signals
    assert (posted.flow, posted.name) == ("status_back", "invoiced")
    assert posted.data == {
        "reference": "SF-006A/2026-08",
        "period_end": "2026-08-31",
        "last_line_date": "2026-08-04",
        "time": True,
        "expenses": False,
    }
    assert (billed.flow, billed.name) == ("mobilize", "billed")
    assert billed.data["through"] == "2026-08-04"  # what a change order must not re-price
    nothing = INVOICE.on_result(
        at(kept), "invoice_project", "tryton:invoice:SF-006A/2026-09", Applied({"invoice": None})
    )
    assert nothing is not None and nothing.data["invoices"]["SF-006A/2026-09"] is None


# --- status back ----------------------------------------------------------------------------
STATUS = StatusBackFlow(ROLES.prefixes)
ENGAGEMENT = {
    "deal_id": "006A",
    "account_id": "001A",
    "client": "Acme",
    "crm": "salesforce",
    "psa": "harvest",
}


def tryton_invoice(
    reference: str, number: str, total: str, paid: str, state: str, version: str
) -> CanonicalRecord:
    tax = (Decimal(total) * Decimal("0.19") / Decimal("1.19")).quantize(Decimal("0.01"))
    data = {
        "number": number,
        "account": "SF-001A",
        "reference": reference,
        "invoice_date": "2026-08-31",
        "currency": "EUR",
        "untaxed_amount": {"amount": str(Decimal(total) - tax), "currency": "EUR"},
        "tax_amount": {"amount": str(tax), "currency": "EUR"},
        "total": {"amount": total, "currency": "EUR"},
        "amount_paid": {"amount": paid, "currency": "EUR"},
        "state": state,
    }
    return CanonicalRecord("invoice", "i-1", ("tryton", "account.invoice", "7"), version, data)


def test_posted_then_paid_invoices_update_the_deal_the_account_and_the_psa() -> None:
    key = "status:SF-006A"
    known = STATUS.on_signal(
        None,
        Signal(
            "status_back",
            key,
            "engagement",
            {**ENGAGEMENT, "start_date": "2026-08-01"},
        ),
        NOW,
    )
    posted = tryton_invoice("SF-006A/2026-08", "INV/2026/0001", "1695.75", "0", "posted", "v1")
    assert STATUS.business_key(posted) == key
    step = STATUS.on_record(at(known, "status_back", key), posted)
    assert step is not None
    (update,) = step.commands
    assert (update.system, update.operation) == ("salesforce", "update_billing_totals")
    assert update.payload == {
        "record": "opportunity",
        "record_id": "006A",
        "invoiced": "1695.75",
        "paid": "0.00",
        "outstanding": "1695.75",
        "last_invoice_number": "INV/2026/0001",
        "payment_status": "Invoiced",
        "currency": "EUR",
        "overdue": "0",
        "days_past_due": 0,
        "by_currency": "",
    }
    (totals,) = step.signals
    assert (totals.business_key, totals.name) == ("account:001A", "engagement_totals")
    period = {
        "reference": "SF-006A/2026-08",
        "period_end": "2026-08-31",
        "last_line_date": "2026-08-28",
    }
    step = STATUS.on_signal(
        at(step, "status_back", key), Signal("status_back", key, "invoiced", period), NOW
    )
    assert step is not None
    (mark,) = step.commands  # posted and its period known: the PSA's time is billed
    assert (mark.system, mark.operation) == ("harvest", "mark_billed")
    assert mark.payload["number"] == "SF-006A/2026-08"  # unique across ERPs, unlike theirs
    assert "INV/2026/0001" in mark.payload["subject"] and mark.payload["project_keys"] == [
        "SF-006A"
    ]
    assert (mark.payload["period_start"], mark.payload["period_end"]) == (
        "2026-08-01",
        "2026-08-28",
    )

    paid = tryton_invoice("SF-006A/2026-08", "INV/2026/0001", "1695.75", "1000", "posted", "v2")
    step = STATUS.on_record(at(step, "status_back", key), paid)
    assert step is not None
    (update,) = step.commands  # marked billed once
    assert update.payload["payment_status"] == "Partially Paid"
    assert update.payload["outstanding"] == "695.75"
    assert update.idempotency_key == (
        "salesforce:update_billing_totals:opportunity:006A:invoicing:SF-006A/2026-08:v2"
    )

    account = STATUS.on_signal(None, step.signals[0], NOW)
    assert account is not None
    (account_update,) = account.commands
    assert account_update.payload["record"] == "account"
    assert account_update.payload["record_id"] == "001A"
    assert account_update.payload["paid"] == "1000.00"


def test_an_invoice_of_an_engagement_the_hub_did_not_mobilize_waits_for_it() -> None:
    key = "status:SF-006A"
    posted = tryton_invoice("SF-006A/2026-08", "INV/2026/0001", "1695.75", "0", "posted", "v1")
    waiting = STATUS.on_record(None, posted)
    assert waiting is not None and waiting.state == "waiting" and not waiting.commands
    info = {**ENGAGEMENT, "start_date": "2026-08-01"}
    known = STATUS.on_signal(
        at(waiting, "status_back", key), Signal("status_back", key, "engagement", info), NOW
    )
    assert known is not None and known.state == "reported"
    (update,) = known.commands
    assert update.payload["invoiced"] == "1695.75"


def test_drafts_and_foreign_invoices_are_not_reported() -> None:
    draft = tryton_invoice("SF-006A/2026-08", "", "100", "0", "draft", "v1")
    assert STATUS.on_record(None, draft) is None
    foreign = tryton_invoice("PO 4711", "INV/2026/0009", "100", "0", "posted", "v1")
    assert STATUS.business_key(foreign) is None


@pytest.mark.parametrize(
    ("paid", "status"),
    [(("0", "0"), "Invoiced"), (("0", "10"), "Partially Paid"), (("100", "200"), "Paid")],
)
def test_sums_over_invoices_and_engagements(paid: tuple[str, str], status: str) -> None:
    first_paid, second_paid = paid
    invoices = {
        "a": {
            "number": "INV/1",
            "date": "2026-08-31",
            "currency": "EUR",
            "total": "100",
            "paid": first_paid,
        },
        "b": {
            "number": "INV/2",
            "date": "2026-09-30",
            "currency": "EUR",
            "total": "200",
            "paid": second_paid,
        },
    }
    totals = engagement_totals(invoices, date(2026, 10, 1))
    assert totals["invoiced"] == "300" and totals["last_invoice_number"] == "INV/2"
    assert totals["payment_status"] == status
    other = {**totals, "currency": "USD"}
    summed = account_totals([totals, {**totals, "invoiced": "50", "paid": "0"}, other], "EUR")
    assert Decimal(summed["invoiced"]) == 350  # EUR only: never summed across currencies
    assert summed["by_currency"].splitlines()[1].startswith("USD: invoiced 300,")


def _invoice(total: str, paid: str, due: str | None, on: str = "2026-09-01") -> dict[str, Any]:
    return {
        "number": f"INV/{on}",
        "date": on,
        "currency": "EUR",
        "total": total,
        "paid": paid,
        "due_date": due,
    }


def test_an_unpaid_invoice_is_overdue_from_the_day_after_its_due_date() -> None:
    invoices = {"a": _invoice("100.00", "40.00", "2026-10-01")}
    on_due_date = engagement_totals(invoices, date(2026, 10, 1))
    assert (on_due_date["overdue"], on_due_date["payment_status"]) == ("0", "Partially Paid")
    later = engagement_totals(invoices, date(2026, 10, 11))
    assert (later["overdue"], later["days_past_due"], later["payment_status"]) == (
        "60.00",
        10,
        "Overdue",
    )
    invoices["b"] = _invoice("50.00", "0", "2026-10-05")
    both = engagement_totals(invoices, date(2026, 10, 11))
    assert both["overdue"] == "110.00" and both["days_past_due"] == 10  # the oldest
    invoices["a"] = _invoice("100.00", "100.00", "2026-10-01")  # paid late: no longer overdue
    assert engagement_totals(invoices, date(2026, 10, 11))["days_past_due"] == 6


def test_the_timer_wakes_after_the_due_date_and_daily_while_overdue() -> None:
    invoices = {"a": _invoice("100.00", "0", "2026-10-01"), "b": _invoice("5", "5", "2026-09-02")}
    assert next_check(invoices, date(2026, 9, 15)) == datetime(2026, 10, 2, tzinfo=UTC)
    assert next_check(invoices, date(2026, 10, 3)) == datetime(2026, 10, 4, tzinfo=UTC)
    invoices["a"] = _invoice("100.00", "100.00", "2026-10-01")
    assert next_check(invoices, date(2026, 10, 3)) is None


def test_overdue_is_reported_when_days_pass_and_only_when_it_changes() -> None:
    key = "status:SF-006A"
    info = {**ENGAGEMENT, "start_date": "2026-08-01", "currency": "EUR"}
    known = STATUS.on_signal(None, Signal("status_back", key, "engagement", info), NOW)
    posted = tryton_invoice("SF-006A/2026-08", "INV/2026/0001", "1695.75", "0", "posted", "v1")
    posted.data["due_date"] = "2026-09-30"
    step = STATUS.on_record(at(known, "status_back", key), posted)
    assert step is not None and step.wake_at == datetime(2026, 10, 1, tzinfo=UTC)
    assert step.commands[0].payload["payment_status"] == "Invoiced"
    quiet = STATUS.on_timer(at(step, "status_back", key), datetime(2026, 9, 20, tzinfo=UTC))
    assert quiet is not None and not quiet.commands  # nothing changed yet
    late = STATUS.on_timer(at(step, "status_back", key), datetime(2026, 10, 4, 8, tzinfo=UTC))
    assert late is not None
    update = late.commands[0]
    assert update.payload["payment_status"] == "Overdue"
    assert (update.payload["overdue"], update.payload["days_past_due"]) == ("1695.75", 4)
    assert update.idempotency_key.endswith(":as-of:2026-10-04")
    assert late.wake_at == datetime(2026, 10, 5, tzinfo=UTC)
    (account_signal,) = late.signals
    account = STATUS.on_signal(None, account_signal, NOW)
    assert account is not None and account.commands[0].payload["payment_status"] == "Overdue"


def test_a_voided_invoice_leaves_the_totals_and_the_timer() -> None:
    key = "status:SF-006A"
    info = {**ENGAGEMENT, "start_date": "2026-08-01", "currency": "EUR"}
    known = STATUS.on_signal(None, Signal("status_back", key, "engagement", info), NOW)
    posted = tryton_invoice("SF-006A/2026-08", "INV/2026/0001", "1695.75", "0", "posted", "v1")
    posted.data["due_date"] = "2026-09-30"
    step = STATUS.on_record(at(known, "status_back", key), posted)
    assert step is not None and step.wake_at is not None
    voided = tryton_invoice("SF-006A/2026-08", "INV/2026/0001", "1695.75", "0", "voided", "v2")
    gone = STATUS.on_record(at(step, "status_back", key), voided)
    assert gone is not None and gone.data["invoices"] == {}
    assert gone.commands[0].payload["invoiced"] == "0" and gone.wake_at is None
    assert gone.commands[0].payload["payment_status"] == "Not Invoiced"
    never = tryton_invoice("SF-006A/2026-09", "", "10", "0", "voided", "v1")
    assert STATUS.on_record(at(gone, "status_back", key), never) is None  # never counted


@pytest.mark.parametrize(
    ("eur", "usd", "status"),
    [
        (("100", "100", "0"), ("50", "0", "0"), "Partially Paid"),  # USD unpaid, not yet due
        (("100", "100", "0"), ("50", "50", "0"), "Paid"),
        ((None), ("50", "50", "0"), "Paid"),  # other currencies only, all paid
        ((None), ("50", "0", "0"), "Invoiced"),
        (("100", "0", "0"), ("50", "0", "20"), "Overdue"),
    ],
)
def test_the_accounts_payment_status_is_over_every_currency(
    eur: tuple[str, str, str] | None, usd: tuple[str, str, str], status: str
) -> None:
    def engagement(currency: str, sums: tuple[str, str, str]) -> dict[str, Any]:
        invoiced, paid, overdue = sums
        return {
            "currency": currency,
            "invoiced": invoiced,
            "paid": paid,
            "outstanding": str(Decimal(invoiced) - Decimal(paid)),
            "overdue": overdue,
            "days_past_due": 0,
            "last_invoice_number": f"INV/{currency}",
            "last_invoice_date": "2026-09-30",
        }

    engagements = [engagement("USD", usd)] + ([engagement("EUR", eur)] if eur else [])
    totals = account_totals(engagements, "EUR")
    assert totals["payment_status"] == status
    assert Decimal(totals["invoiced"]) == (Decimal(eur[0]) if eur else 0)  # EUR only
