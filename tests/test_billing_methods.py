"""Every way services are sold, as the flows decide it (pure: each step called as the engine
would): fixed fee with milestones, retainers, expenses, change orders and credit notes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.domain.canonical.sales import Opportunity
from closeloop.domain.commands import Applied
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.bill_expense import BillExpenseFlow
from closeloop.flows.deal_terms import commercial_problems
from closeloop.flows.invoice import InvoiceFlow
from closeloop.flows.status_back import engagement_totals
from tests.flow_roles import ROLES
from tests.test_mobilize import DEAL, FLOW, deal, finish, provision, state

KEY = f"SF-{DEAL}"
BILLING = f"billing:{KEY}"
INVOICE = InvoiceFlow(settle_s=60)
NOW = datetime(2026, 3, 10, 9, tzinfo=UTC)

PLAN = [
    {"crm_id": "a0M1", "name": "Design", "share_percent": "30", "planned_date": "2026-03-31"},
    {"crm_id": "a0M2", "name": "Build", "amount": "42000", "planned_date": "2026-05-31"},
]


def fixed_fee(plan: list[dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    return {
        "billing_method": "fixed_fee",
        "amount": {"amount": "60000", "currency": "EUR"},
        "milestones": PLAN if plan is None else plan,
        **changes,
    }


def at(step: FlowStep | None, flow: str = "invoice", key: str = BILLING) -> FlowState:
    assert step is not None
    return FlowState(flow, key, step.state, step.data, step.wake_at)


def mobilized(**changes: Any) -> FlowStep:
    done = finish(provision({"kind": "none"}, **changes))
    assert done.state == "mobilized"
    return done


def invoicing(done: FlowStep) -> FlowStep:
    """The engagement signal of ``done`` delivered to a new invoicing instance."""
    (signal,) = [s for s in done.signals if s.flow == "invoice"]
    step = INVOICE.on_signal(None, signal, NOW)
    assert step is not None
    return step


# --- fixed fee and milestones ---------------------------------------------------------------
def test_a_plan_that_does_not_add_up_blocks_the_deal_naming_the_difference() -> None:
    short = [{**PLAN[0]}, {**PLAN[1], "amount": "41000"}]
    problems = commercial_problems(Opportunity.model_validate(deal(**fixed_fee(short)).data))
    assert problems == [
        "the milestone plan adds up to 59000.00 EUR but the fee is 60000.00 EUR: a difference "
        "of +1000.00 EUR; correct the milestones"
    ]
    both = [{**PLAN[0], "amount": "18000"}, PLAN[1]]
    problems = commercial_problems(Opportunity.model_validate(deal(**fixed_fee(both)).data))
    assert problems == ["milestone 'Design' needs an amount or a share of the fee (one of them)"]
    assert commercial_problems(Opportunity.model_validate(deal(**fixed_fee()).data)) == []


@given(st.lists(st.integers(min_value=1, max_value=100_000), min_size=1, max_size=8))
def test_a_plan_of_amounts_that_add_up_is_sound_and_any_other_fee_is_not(cents: list[int]) -> None:
    plan = [
        {"crm_id": f"m{i}", "name": f"M{i}", "amount": str(Decimal(c) / 100)}
        for i, c in enumerate(cents)
    ]
    fee = Decimal(sum(cents)) / 100
    sound = deal(**fixed_fee(plan, amount={"amount": str(fee), "currency": "EUR"}))
    assert commercial_problems(Opportunity.model_validate(sound.data)) == []
    off = deal(**fixed_fee(plan, amount={"amount": str(fee + 1), "currency": "EUR"}))
    (problem,) = commercial_problems(Opportunity.model_validate(off.data))
    assert "a difference of +1.00 EUR" in problem


def test_a_fixed_fee_deal_sets_up_a_fixed_fee_project_with_its_milestones() -> None:
    step = provision({"kind": "none"}, **fixed_fee())
    _, psa, erp = step.commands
    assert psa.payload["billing_method"] == erp.payload["billing_method"] == "fixed_fee"
    assert psa.payload["fee"] == "60000.00"
    assert [(m["key"], m["amount"]) for m in erp.payload["milestones"]] == [
        ("a0M1", "18000.00"),
        ("a0M2", "42000.00"),
    ]


def accepted(*statuses: str, version: str = "2026-03-20T00:00:00+00:00") -> CanonicalRecord:
    plan = [{**m, "status": s} for m, s in zip(PLAN, statuses, strict=True)]
    return deal(version=version, **fixed_fee(plan))


def test_an_accepted_milestone_is_invoiced_once_alone_and_time_is_never_billed() -> None:
    done = mobilized(**fixed_fee())
    billing = invoicing(done)
    assert not billing.commands  # nothing accepted yet
    recorded = INVOICE.on_signal(
        at(billing),
        Signal("invoice", BILLING, "recorded", {"date": "2026-03-11", "hours": "8"}),
        NOW,
    )
    assert recorded is not None and not recorded.data["periods"]["2026-03"].get("dirty")
    later = NOW + timedelta(days=40)
    assert not INVOICE.on_timer(at(recorded), later).commands  # type: ignore[union-attr]
    amended = FLOW.on_record(state(done), accepted("accepted", "planned"))
    assert amended is not None and not amended.commands  # a status is not a change order
    (signal,) = [s for s in amended.signals if s.flow == "invoice"]
    billed = INVOICE.on_signal(at(recorded), signal, NOW)
    assert billed is not None
    invoice, post = billed.commands
    assert (invoice.operation, post.operation) == ("invoice_project", "post_invoice")
    assert invoice.payload["reference"] == f"{KEY}/milestone-a0M1"
    assert invoice.payload["include_time"] is False
    (charge,) = invoice.payload["charges"]
    assert (charge["key"], charge["unit_price"], charge["kind"]) == (
        f"milestone:{KEY}:a0M1",
        "18000.00",
        "milestone",
    )
    again = INVOICE.on_signal(at(billed), signal, NOW)  # the same version again, or a later one
    assert again is not None and not again.commands


def test_a_disputed_milestone_is_held_then_invoiced_when_accepted() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    disputed = INVOICE.on_signal(at(billing), terms_signal(("disputed", "planned")), NOW)
    assert disputed is not None and not disputed.commands
    (issue,) = disputed.issues
    assert "disputed by the client: held" in issue.message and issue.impact == "revenue"
    assert issue.entity == f"{KEY}:milestone:a0M1"
    again = INVOICE.on_signal(at(disputed), terms_signal(("disputed", "planned")), NOW)
    assert again is not None and not again.issues  # reported once
    resolved = INVOICE.on_signal(at(again), terms_signal(("accepted", "planned")), NOW)
    assert resolved is not None and resolved.resolves == (f"{KEY}:milestone:a0M1",)
    assert resolved.commands[0].payload["charges"][0]["key"] == f"milestone:{KEY}:a0M1"


def terms_signal(statuses: tuple[str, ...]) -> Signal:
    plan = [
        {"key": "a0M1", "name": "Design", "amount": "18000.00", "planned_date": None},
        {"key": "a0M2", "name": "Build", "amount": "42000.00", "planned_date": None},
    ]
    milestones = [{**m, "status": s} for m, s in zip(plan, statuses, strict=True)]
    return Signal(
        "invoice",
        BILLING,
        "engagement",
        {
            "status": "mobilized",
            "engagement": "engagement:c-1",
            "erp": "tryton",
            "currency": "EUR",
            "billing_method": "fixed_fee",
            "milestones": milestones,
        },
    )


def test_a_milestone_disputed_after_posting_is_credited_and_invoiced_again_once_accepted() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    billed = INVOICE.on_signal(at(billing), terms_signal(("accepted", "planned")), NOW)
    assert billed is not None
    posted = post(billed, f"{KEY}/milestone-a0M1")
    disputed = INVOICE.on_signal(at(posted), terms_signal(("disputed", "planned")), NOW)
    assert disputed is not None
    (credit,) = disputed.commands
    assert credit.operation == "credit_invoice"
    assert credit.payload["reference"] == f"{KEY}/milestone-a0M1"
    assert credit.payload["credit_reference"] == f"{KEY}/milestone-a0M1/credit-1"
    assert credit.payload["line_keys"] == [f"milestone:{KEY}:a0M1"]
    assert "credited in full" in disputed.issues[0].message
    accepted_again = INVOICE.on_signal(at(disputed), terms_signal(("accepted", "planned")), NOW)
    assert accepted_again is not None
    invoice = accepted_again.commands[0]
    assert invoice.payload["reference"] == f"{KEY}/milestone-a0M1/2"
    assert (
        invoice.payload["charges"][0]["key"] == f"milestone:{KEY}:a0M1:2"
    )  # a new key: billed anew


def test_an_invoiced_milestone_back_to_planned_is_a_question_for_a_person() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    billed = INVOICE.on_signal(at(billing), terms_signal(("accepted", "planned")), NOW)
    back = INVOICE.on_signal(at(billed), terms_signal(("planned", "planned")), NOW)
    assert back is not None and not back.commands
    assert "back to Planned" in back.issues[0].message
    assert f"closeloop credit {KEY}/milestone-a0M1" in back.issues[0].message
    twice = INVOICE.on_signal(at(back), terms_signal(("accepted", "planned")), NOW)
    assert twice is not None and not twice.commands  # accepted twice: invoiced once


def post(step: FlowStep, reference: str, total: str = "21420.00") -> FlowStep:
    result = {"reference": reference, "number": "INV/1", "state": "posted", "total_amount": total}
    posted = INVOICE.on_result(
        at(step), "post_invoice", f"tryton:invoice:{reference}", Applied(result)
    )
    assert posted is not None
    return posted


# --- retainers ----------------------------------------------------------------------------
RETAINER = {"amount_per_period": "8000", "included_hours": "40", "unused_hours": "roll_over"}


def retainer_billing(unused: str = "roll_over") -> FlowStep:
    done = mobilized(billing_method="retainer", retainer={**RETAINER, "unused_hours": unused})
    return invoicing(done)


def recorded(
    step: FlowStep, day: str, hours: str, role: str = "Senior Consultant", now: datetime = NOW
) -> FlowStep:
    info = {"date": day, "hours": hours, "task": role}
    following = INVOICE.on_signal(at(step), Signal("invoice", BILLING, "recorded", info), now)
    assert following is not None
    return following


def test_a_retainer_bills_its_fee_when_each_period_starts() -> None:
    billing = retainer_billing()
    assert billing.wake_at == datetime(2026, 3, 2, tzinfo=UTC)  # the engagement's start
    fees = INVOICE.on_timer(at(billing), datetime(2026, 4, 1, 8, tzinfo=UTC))
    assert fees is not None
    references = [c.payload["reference"] for c in fees.commands if c.operation == "invoice_project"]
    assert references == [f"{KEY}/2026-03/retainer", f"{KEY}/2026-04/retainer"]
    charge = fees.commands[0].payload["charges"][0]
    assert (charge["key"], charge["unit_price"]) == (f"retainer:{KEY}:2026-03", "8000.00")
    assert fees.wake_at == datetime(2026, 5, 1, tzinfo=UTC)
    again = INVOICE.on_timer(at(fees), datetime(2026, 4, 2, tzinfo=UTC))
    assert again is not None and not again.commands  # each fee once


@pytest.mark.parametrize(("unused", "april_overage"), [("roll_over", "5"), ("expire", "15")])
def test_hours_beyond_the_included_ones_are_billed_at_the_period_end(
    unused: str, april_overage: str
) -> None:
    step = retainer_billing(unused)
    step = recorded(step, "2026-03-05", "30")  # 10 h unused in March
    step = recorded(step, "2026-04-03", "40", "Analyst")
    step = recorded(step, "2026-04-20", "15")  # April: 55 h against 40 (+10 rolled over)
    end = INVOICE.on_timer(at(step), datetime(2026, 5, 2, tzinfo=UTC))
    assert end is not None
    periods = {
        c.payload["reference"]: c.payload for c in end.commands if c.operation == "invoice_project"
    }
    assert periods[f"{KEY}/2026-03"]["charges"] == []  # within the included hours
    (over,) = periods[f"{KEY}/2026-04"]["charges"]
    assert over["kind"] == "overage" and over["quantity"] == april_overage
    assert over["unit_price"] == "180.00"  # the Senior Consultant's hours were the last ones
    assert periods[f"{KEY}/2026-04"]["include_time"] is False


# --- expenses --------------------------------------------------------------------------------
def expense(amount: str = "120.00", billable: bool = True, **changes: Any) -> CanonicalRecord:
    data = {
        "date": "2026-03-12",
        "amount": {"amount": amount, "currency": "EUR"},
        "category": "Travel",
        "billable": billable,
        "approval_state": "approved",
        "project": "5000001",
        "project_code": KEY,
        "receipt_url": "https://harvest.example/receipts/9.pdf",
        **changes,
    }
    return CanonicalRecord("expense", "x-9", ("harvest", "expenses", "9"), "v1", data)


EXPENSES = BillExpenseFlow(ROLES.prefixes)


def test_a_billable_expense_joins_the_period_invoice_with_the_deals_markup() -> None:
    billing = invoicing(mobilized(expense_markup_percent="10"))
    asked = EXPENSES.on_record(None, expense())
    assert asked is not None and asked.state == "logged"
    (ask,) = asked.signals
    taken = INVOICE.on_signal(at(billing), ask, NOW)
    assert taken is not None
    (answer,) = taken.signals
    assert (answer.flow, answer.name) == ("bill_expense", "accepted")
    done = EXPENSES.on_signal(at(asked, "bill_expense", "expense:x-9"), answer, NOW)
    assert done is not None and done.state == "accepted"
    due = INVOICE.on_timer(at(taken), datetime(2026, 4, 2, tzinfo=UTC))
    assert due is not None
    invoice = due.commands[0].payload
    (charge,) = invoice["charges"]
    assert charge["unit_price"] == "132.00" and charge["key"] == f"expense:{KEY}:harvest-9"
    assert charge["receipt"] == "https://harvest.example/receipts/9.pdf"
    assert invoice["include_time"] is True  # with the period's time
    assert EXPENSES.on_record(at(done, "bill_expense", "expense:x-9"), expense()) is None


def test_a_non_billable_expense_is_cost_only_and_a_negative_one_an_exception() -> None:
    billing = invoicing(mobilized())
    asked = EXPENSES.on_record(None, expense(billable=False))
    assert asked is not None
    costed = INVOICE.on_signal(at(billing), asked.signals[0], NOW)
    assert costed is not None and costed.signals[0].name == "costed"
    assert costed.data["costs"] == {"Travel": "120.00"} and not costed.wake_at
    refused = EXPENSES.on_record(None, expense("-40.00"))
    assert refused is not None and refused.state == "refused" and not refused.signals
    assert "negative amount -40.00" in refused.issues[0].message
    fixed = EXPENSES.on_record(at(refused, "bill_expense", "expense:x-9"), expense("40.00"))
    assert fixed is not None and fixed.resolves == ("harvest:expense:9",)


def test_expenses_wait_while_finance_approval_is_pending() -> None:
    done = finish(provision({"kind": "none"}, finance_approval="pending"))
    billing = invoicing(done)
    asked = EXPENSES.on_record(None, expense())
    assert asked is not None
    held = INVOICE.on_signal(at(billing), asked.signals[0], NOW)
    assert held is not None and held.signals[0].name == "hold"
    approved = FLOW.on_record(
        state(done), deal(version="2026-03-15T00:00:00+00:00", finance_approval="approved")
    )
    assert approved is not None
    (release,) = [s for s in approved.signals if s.flow == "invoice"]
    released = INVOICE.on_signal(at(held), release, NOW)
    assert released is not None and [s.name for s in released.signals] == ["accepted"]


# --- change orders -------------------------------------------------------------------------
def test_a_rate_change_adds_a_task_from_its_date_and_earlier_time_keeps_the_old_rate() -> None:
    done = mobilized()
    raised = [
        {**item, "unit_price": {"amount": "200.00", "currency": "EUR"}}
        if item["role"] == "Senior Consultant"
        else item
        for item in deal().data["line_items"]
    ]
    amended = FLOW.on_record(
        state(done),
        deal(
            version="2026-05-02T00:00:00+00:00",
            line_items=raised,
            amendment_effective_date="2026-05-15",
        ),
    )
    assert amended is not None and amended.state == "mobilized"
    psa, erp = amended.commands
    assert psa.idempotency_key.endswith(":change:rate_changed:Senior Consultant:200.00:2026-05-15")
    tasks = {t["name"]: t["hourly_rate"] for t in erp.payload["tasks"]}
    assert tasks["Senior Consultant"] == "180.00"  # time before the change keeps its price
    assert tasks["Senior Consultant (from 2026-05-15)"] == "200.00"
    assert {t["name"]: t["hourly_rate"] for t in psa.payload["tasks"]}[
        "Senior Consultant"
    ] == "200.00"
    (note,) = amended.audit
    assert note.action == "change_order" and note.detail["kind"] == "rate_changed"
    (signal,) = [s for s in amended.signals if s.flow == "invoice"]
    billing = INVOICE.on_signal(None, signal, NOW)
    assert billing is not None
    for day, task in (("2026-05-14", None), ("2026-05-15", "Senior Consultant (from 2026-05-15)")):
        logged = Signal(
            "invoice",
            BILLING,
            "time_logged",
            {"entry": "time_entry:t", "date": day, "task": "Senior Consultant"},
        )
        answer = INVOICE.on_signal(at(billing), logged, NOW)
        assert answer is not None
        assert answer.signals[0].name == "release" and answer.signals[0].data.get("task") == task


def test_a_rate_cut_on_invoiced_time_is_a_conflict_and_nothing_is_applied() -> None:
    done = mobilized()
    billed_signal = Signal("mobilize", "engagement:c-1", "billed", {"through": "2026-04-30"})
    billed = FLOW.on_signal(state(done), billed_signal, NOW)
    assert billed is not None
    cut = [
        {**item, "unit_price": {"amount": "150.00", "currency": "EUR"}}
        for item in deal().data["line_items"]
    ]
    extra = {
        "service": "Consulting",
        "role": "Architect",
        "quantity_hours": "10",
        "unit_price": {"amount": "150.00", "currency": "EUR"},
    }
    amended = FLOW.on_record(
        state(billed),
        deal(
            version="2026-05-02T00:00:00+00:00",
            line_items=[*cut, extra],
            amendment_effective_date="2026-04-01",
        ),
    )
    assert amended is not None and not amended.commands  # not even the new role
    (issue,) = amended.issues
    assert issue.error_class == "conflict" and "is cut from 180.00 to 150.00" in issue.message
    assert "nothing of this version was applied" in issue.message
    assert amended.data["roles"] == done.data["roles"]


def test_an_amended_deal_that_fails_the_checks_and_a_closed_one_are_exceptions() -> None:
    done = mobilized()
    broken = FLOW.on_record(state(done), deal(version="2026-05-02T00:00:00+00:00", start_date=None))
    assert broken is not None and not broken.commands
    assert "change order not applied" in broken.issues[0].message
    assert "start date is missing" in broken.issues[0].message
    lost = FLOW.on_record(
        state(done), deal(version="2026-03-09T00:00:00+00:00", stage="closed_lost", won=False)
    )
    assert lost is not None and lost.state == "closed"
    rewon = FLOW.on_record(state(lost), deal(version="2026-06-01T00:00:00+00:00"))
    assert rewon is not None and rewon.state == "closed" and not rewon.commands
    assert "stay closed" in rewon.issues[0].message
    assert FLOW.on_record(state(rewon), deal(version="2026-06-01T00:00:00+00:00")) is None


def test_a_version_arriving_while_provisioning_is_applied_once_mobilized() -> None:
    provisioning = provision({"kind": "none"})
    later = deal(version="2026-03-03T00:00:00+00:00", end_date="2026-12-31")
    kept = FLOW.on_record(state(provisioning), later)
    assert kept is not None and kept.state == "provisioning" and not kept.commands
    done = finish(kept)
    assert done.state == "mobilized"
    operations = [(c.system, c.operation) for c in done.commands]
    assert operations == [
        ("salesforce", "update_engagement"),
        ("harvest", "upsert_project"),
        ("tryton", "upsert_project"),
    ]
    assert done.commands[1].payload["ends_on"] == "2026-12-31"
    assert done.data["version"] == "2026-03-03T00:00:00+00:00"


# --- credit notes ---------------------------------------------------------------------------
def test_a_credit_asked_for_makes_a_credit_note_and_tells_status_back() -> None:
    billing = invoicing(mobilized())
    ask = Signal(
        "invoice",
        BILLING,
        "credit",
        {
            "reference": f"{KEY}/2026-03",
            "reason": "wrong hours",
            "line_keys": ["time"],
            "rebill": True,
        },
    )
    asked = INVOICE.on_signal(at(billing), ask, NOW)
    assert asked is not None
    (credit,) = asked.commands
    assert credit.payload["credit_reference"] == f"{KEY}/2026-03/credit-1"
    assert credit.idempotency_key == f"tryton:credit_invoice:{KEY}/2026-03/credit-1"
    result = {
        "reference": f"{KEY}/2026-03/credit-1",
        "number": "CN/1",
        "state": "posted",
        "total_amount": "-500.00",
        "credited": f"{KEY}/2026-03",
    }
    done = INVOICE.on_result(at(asked), "credit_invoice", credit.entity, Applied(result))
    assert done is not None
    told, mobilize = done.signals
    assert (mobilize.flow, mobilize.data) == ("mobilize", {"invoiced_milestones": []})
    assert (told.flow, told.name) == ("status_back", "credited")
    assert told.data == {
        "reference": f"{KEY}/2026-03",
        "credit_reference": f"{KEY}/2026-03/credit-1",
        "rebill": True,
    }


def test_totals_are_net_of_credit_notes_and_a_credited_invoice_is_not_overdue() -> None:
    invoices = {
        f"{KEY}/2026-03": {
            "number": "INV/1",
            "date": "2026-04-01",
            "currency": "EUR",
            "total": "1000.00",
            "paid": "0",
            "due_date": "2026-05-01",
        },
        f"{KEY}/2026-03/credit-1": {
            "number": "CN/1",
            "date": "2026-04-10",
            "currency": "EUR",
            "total": "-1000.00",
            "paid": "0",
            "due_date": "2026-05-10",
            "credit_of": f"{KEY}/2026-03",
        },
    }
    totals = engagement_totals(invoices, datetime(2026, 6, 1).date())
    assert (totals["invoiced"], totals["outstanding"], totals["overdue"]) == ("0.00", "0.00", "0")
    assert totals["last_invoice_number"] == "INV/1"
    partly = {
        **invoices,
        f"{KEY}/2026-03/credit-1": {**invoices[f"{KEY}/2026-03/credit-1"], "total": "-400.00"},
    }
    totals = engagement_totals(partly, datetime(2026, 6, 1).date())
    assert (totals["invoiced"], totals["overdue"]) == ("600.00", "600.00")


def test_a_role_whose_time_was_invoiced_cannot_be_removed_by_a_change_order() -> None:
    done = mobilized()
    billing = invoicing(done)
    step = recorded(billing, "2026-03-05", "8", "Analyst")
    due = INVOICE.on_timer(at(step), datetime(2026, 4, 2, tzinfo=UTC))
    assert due is not None
    reference = due.commands[0].payload["reference"]
    posted = post(due, reference)
    (billed,) = [s for s in posted.signals if s.flow == "mobilize"]
    assert billed.data["invoiced_roles"] == ["Analyst"]
    assert billed.data["through"] == "2026-03-05"
    told = FLOW.on_signal(state(done), billed, NOW)
    assert told is not None
    without = [i for i in deal().data["line_items"] if i["role"] != "Analyst"]
    amended = FLOW.on_record(
        state(told), deal(version="2026-04-03T00:00:00+00:00", line_items=without)
    )
    assert amended is not None and not amended.commands
    assert (
        "Analyst was removed from the deal, but its time is already invoiced"
        in amended.issues[0].message
    )


# --- what a review found ------------------------------------------------------------------
def without_analyst(version: str, **changes: Any) -> CanonicalRecord:
    items = [i for i in deal().data["line_items"] if i["role"] != "Analyst"]
    return deal(version=version, line_items=items, **changes)


def test_a_removed_role_is_removed_once_and_can_come_back() -> None:
    done = mobilized()
    removed = FLOW.on_record(
        state(done),
        without_analyst("2026-03-15T00:00:00+00:00", amendment_effective_date="2026-03-15"),
    )
    assert removed is not None and removed.data["removed_roles"] == {"Analyst": "2026-03-15"}
    later = FLOW.on_record(
        state(removed), without_analyst("2026-04-02T00:00:00+00:00", end_date="2026-12-31")
    )
    assert later is not None and not later.issues
    assert [n.detail["kind"] for n in later.audit if n.action == "change_order"] == [
        "end_date_changed"
    ]
    assert later.data["removed_roles"] == {"Analyst": "2026-03-15"}  # not moved on
    back = FLOW.on_record(
        state(later), deal(version="2026-05-02T00:00:00+00:00", end_date="2026-12-31")
    )
    assert back is not None and not back.issues
    assert [n.detail["kind"] for n in back.audit if n.action == "change_order"] == ["role_added"]
    assert back.data["removed_roles"] == {}


def test_a_retroactive_rate_change_after_time_was_recorded_is_a_conflict() -> None:
    done = mobilized()
    recorded_time = FLOW.on_signal(
        state(done), Signal("mobilize", "engagement:c-1", "billed", {}), NOW
    )
    assert recorded_time is not None
    raised = [
        {**i, "unit_price": {"amount": "200.00", "currency": "EUR"}}
        if i["role"] == "Analyst"
        else i
        for i in deal().data["line_items"]
    ]
    amended = FLOW.on_record(
        state(recorded_time),
        deal(
            version="2026-05-10T00:00:00+00:00",
            line_items=raised,
            amendment_effective_date="2026-05-01",
        ),
    )
    assert amended is not None and not amended.commands
    assert "before the day it was made" in amended.issues[0].message


def test_retainer_and_markup_changes_are_applied_and_audited() -> None:
    done = mobilized(billing_method="retainer", retainer=RETAINER)
    amended = FLOW.on_record(
        state(done),
        deal(
            version="2026-04-02T00:00:00+00:00",
            billing_method="retainer",
            retainer={**RETAINER, "amount_per_period": "9000"},
            expense_markup_percent="25",
        ),
    )
    assert amended is not None and not amended.commands and not amended.issues
    kinds = sorted(n.detail["role"] for n in amended.audit if n.action == "change_order")
    assert kinds == ["expense_markup_percent", "retainer"]
    (signal,) = [s for s in amended.signals if s.flow == "invoice"]
    assert signal.data["retainer"]["amount_per_period"] == "9000.00"
    assert signal.data["expense_markup_percent"] == "25"


def test_a_credited_milestone_is_billed_again_once_accepted_and_may_be_revalued() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    billed = INVOICE.on_signal(at(billing), terms_signal(("accepted", "planned")), NOW)
    assert billed is not None
    posted = post(billed, f"{KEY}/milestone-a0M1")
    (told,) = [s for s in posted.signals if s.flow == "mobilize"]
    assert told.data["invoiced_milestones"] == ["a0M1"]
    ask = Signal(
        "invoice", BILLING, "credit", {"reference": f"{KEY}/milestone-a0M1", "reason": "wrong"}
    )
    asked = INVOICE.on_signal(at(posted), ask, NOW)
    assert asked is not None
    result = {
        "reference": f"{KEY}/milestone-a0M1/credit-1",
        "number": "CN/1",
        "state": "posted",
        "total_amount": "-21420.00",
        "credited": f"{KEY}/milestone-a0M1",
    }
    credited = INVOICE.on_result(
        at(asked), "credit_invoice", asked.commands[0].entity, Applied(result)
    )
    assert credited is not None
    (mobilize,) = [s for s in credited.signals if s.flow == "mobilize"]
    assert mobilize.data["invoiced_milestones"] == []  # re-valuing it is a change again
    again = INVOICE.on_signal(at(credited), terms_signal(("accepted", "planned")), NOW)
    assert again is not None
    assert again.commands[0].payload["charges"][0]["key"] == f"milestone:{KEY}:a0M1:2"


def test_a_milestone_accepted_again_after_its_invoice_is_reported_not_billed() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    billed = INVOICE.on_signal(at(billing), terms_signal(("accepted", "planned")), NOW)
    back = INVOICE.on_signal(at(billed), terms_signal(("planned", "planned")), NOW)
    again = INVOICE.on_signal(at(back), terms_signal(("accepted", "planned")), NOW)
    assert again is not None and not again.commands
    (issue,) = again.issues
    assert "accepted again" in issue.message and "not invoiced twice" in issue.message


def test_a_milestone_disputed_before_its_invoice_is_posted_is_credited_once_posted() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    billed = INVOICE.on_signal(at(billing), terms_signal(("accepted", "planned")), NOW)
    disputed = INVOICE.on_signal(at(billed), terms_signal(("disputed", "planned")), NOW)
    assert disputed is not None and not disputed.commands  # not posted yet: nothing to credit
    posted = post(disputed, f"{KEY}/milestone-a0M1")
    (credit,) = posted.commands
    assert credit.operation == "credit_invoice" and credit.payload["line_keys"] == [
        f"milestone:{KEY}:a0M1"
    ]


def test_billed_means_invoiced_and_a_fixed_fees_time_is_not() -> None:
    billing = invoicing(mobilized(**fixed_fee()))
    cost = INVOICE.on_signal(
        at(billing),
        Signal("invoice", BILLING, "recorded", {"date": "2026-03-11", "hours": "8"}),
        NOW,
    )
    assert cost is not None and not cost.signals  # recorded for cost: the deal may still close
    fee = retainer_billing()
    fees = INVOICE.on_timer(at(fee), datetime(2026, 3, 3, tzinfo=UTC))
    assert fees is not None
    posted = post(fees, f"{KEY}/2026-03/retainer")
    assert [s.name for s in posted.signals if s.flow == "mobilize"] == ["billed"]


def test_an_expense_after_the_months_last_time_is_marked_billed_with_it() -> None:
    billing = invoicing(mobilized())
    step = recorded(billing, "2026-03-05", "8")
    asked = EXPENSES.on_record(None, expense(date="2026-03-28"))
    assert asked is not None
    taken = INVOICE.on_signal(at(step), asked.signals[0], NOW)
    due = INVOICE.on_timer(at(taken), datetime(2026, 4, 2, tzinfo=UTC))
    assert due is not None
    posted = post(due, f"{KEY}/2026-03")
    (told,) = [s for s in posted.signals if s.flow == "status_back"]
    assert told.data["last_line_date"] == "2026-03-28" and told.data["expenses"] is True


def invoiced_charges(step: FlowStep | None) -> dict[str, list[dict[str, Any]]]:
    assert step is not None
    return {
        c.payload["reference"]: c.payload["charges"]
        for c in step.commands
        if c.operation == "invoice_project"
    }


def test_late_time_of_an_invoiced_month_shrinks_the_next_months_allowance() -> None:
    step = retainer_billing()
    step = recorded(step, "2026-03-05", "30")  # 10 h rolled over into April
    step = recorded(step, "2026-04-03", "45")  # within April's 50 h
    first = INVOICE.on_timer(at(step), datetime(2026, 5, 2, tzinfo=UTC))
    assert first is not None
    months = invoiced_charges(first)
    assert months[f"{KEY}/2026-03"] == months[f"{KEY}/2026-04"] == []  # the fees apart
    step = recorded(first, "2026-03-20", "8")  # late March time: 2 h roll over, not 10
    step = recorded(step, "2026-04-20", "1")  # April: 46 h against 42
    late = invoiced_charges(INVOICE.on_timer(at(step), datetime(2026, 5, 9, tzinfo=UTC)))
    assert late[f"{KEY}/2026-03/2"] == []  # within March's own 40 h
    (over,) = late[f"{KEY}/2026-04/2"]
    assert (over["kind"], over["quantity"], over["unit_price"]) == ("overage", "4", "180.00")


def test_an_invoiced_month_bills_what_late_time_before_it_uncovered_once_it_settled() -> None:
    step = retainer_billing()
    step = recorded(step, "2026-03-05", "30")
    step = recorded(step, "2026-04-03", "45")
    first = INVOICE.on_timer(at(step), datetime(2026, 5, 2, tzinfo=UTC))
    assert first is not None
    arrives = datetime(2026, 5, 3, 12, tzinfo=UTC)
    step = recorded(first, "2026-03-20", "8", now=arrives)  # only March has new time
    settling = INVOICE.on_timer(at(step), arrives + timedelta(seconds=30))
    assert settling is not None and not settling.commands  # March's time may still come
    settled = INVOICE.on_timer(at(settling), arrives + timedelta(seconds=61))
    late = invoiced_charges(settled)
    assert set(late) == {f"{KEY}/2026-03/2", f"{KEY}/2026-04/2"}
    (over,) = late[f"{KEY}/2026-04/2"]
    assert (over["quantity"], over["key"]) == ("3", f"overage:{KEY}:2026-04:Senior Consultant")
    again = INVOICE.on_timer(at(settled), arrives + timedelta(days=1))
    assert again is not None and not again.commands  # the 3 h are billed once
