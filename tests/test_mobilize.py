"""The Mobilize flow's decisions (a pure state machine: each step is called as the engine
would, with the canonical record or the applied command's result)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from closeloop.domain.canonical.sales import Opportunity
from closeloop.domain.commands import Applied, Command
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.mobilize import BLOCKED, MobilizeFlow, commercial_problems
from tests.flow_roles import ROLES

FLOW = MobilizeFlow(ROLES)
NOW = datetime(2026, 3, 10, tzinfo=UTC)
DEAL = "0065g0000000001AAA"


def deal(version: str = "2026-03-01T10:00:00+00:00", **changes: Any) -> CanonicalRecord:
    customer = {
        "crm_id": "0015g0000000001AAA",
        "legal_name": "Acme Consulting GmbH",
        "country": "Germany",
        "tax_id": "DE136695976",
        "street": "Hauptstr. 5",
        "city": "Berlin",
        "postal_code": "10115",
        "currency": "EUR",
    }
    customer.update(changes.pop("customer", {}))
    data: dict[str, Any] = {
        "name": "ERP rollout",
        "account": "0015g0000000001AAA",
        "stage": "closed_won",
        "won": True,
        "close_date": "2026-02-27",
        "billing_method": "time_and_materials",
        "finance_approval": "not_required",
        "start_date": "2026-03-02",
        "customer": customer,
        "line_items": [
            {
                "service": "Consulting",
                "role": "Senior Consultant",
                "quantity_hours": "80",
                "unit_price": {"amount": "180.00", "currency": "EUR"},
            },
            {
                "service": "Consulting",
                "role": "Analyst",
                "quantity_hours": "40",
                "unit_price": {"amount": "95.00", "currency": "EUR"},
            },
        ],
    }
    data.update(changes)
    return CanonicalRecord("opportunity", "c-1", ("salesforce", "Opportunity", DEAL), version, data)


def state(step: FlowStep) -> FlowState:
    return FlowState("mobilize", "engagement:c-1", step.state, step.data)


def test_missing_and_invalid_commercial_data_blocks_the_deal_with_every_reason() -> None:
    record = deal(
        customer={"tax_id": "DE123", "country": "", "legal_name": " "},
        billing_method=None,
        start_date=None,
        line_items=[],
    )
    step = FLOW.on_record(None, record)
    assert step is not None and step.state == "blocked"
    (issue,) = step.issues
    assert issue.impact == "revenue" and issue.error_class == "validation"
    assert issue.message.startswith(BLOCKED)
    for reason in (
        "legal name is missing",
        "billing country is missing",
        "billing method is missing",
        "no line items",
        "start date is missing",
    ):
        assert reason in issue.message
    (status,) = step.commands  # the account manager sees why in Salesforce
    assert (status.system, status.operation) == ("salesforce", "update_engagement")
    assert status.payload["status"] == "Blocked" and status.payload["deal_id"] == DEAL


def test_an_invalid_tax_id_names_the_rule() -> None:
    problems = commercial_problems(
        Opportunity.model_validate(deal(customer={"tax_id": "DE136695977"}).data)
    )
    assert len(problems) == 1 and "DE136695977" in problems[0] and "checksum" in problems[0].lower()


def test_a_fixed_deal_resumes_by_itself_and_closes_the_exception() -> None:
    blocked = FLOW.on_record(None, deal(customer={"tax_id": ""}))
    assert blocked is not None and blocked.state == "blocked"
    fixed = FLOW.on_record(state(blocked), deal(version="2026-03-02T09:00:00+00:00"))
    assert fixed is not None and fixed.state == "matching"
    assert fixed.resolves == (f"salesforce:Opportunity:{DEAL}",)
    match = unknown_to_the_xref(fixed)
    assert match.system == "tryton" and match.operation == "match_customer"
    assert match.payload["tax_ids"] == ["DE136695976"] and match.payload["country"] == "DE"


ACCOUNT_XREF = "account:salesforce:0015g0000000001AAA"


def xref_answer(code: str | None) -> Signal:
    data = {"entity": ACCOUNT_XREF, "system": "tryton", "external_id": code}
    return Signal("mobilize", "engagement:c-1", "xref", data)


def unknown_to_the_xref(matching: FlowStep) -> Command:
    """The cross-reference is asked first; it knows nothing, so the ERP is asked to match."""
    (lookup,) = matching.signals
    assert (lookup.flow, lookup.business_key, lookup.name) == ("xref", ACCOUNT_XREF, "lookup")
    assert lookup.data["reply_to"] == ["mobilize", "engagement:c-1"]
    asked = FLOW.on_signal(state(matching), xref_answer(None), NOW)
    assert asked is not None and asked.state == "matching"
    (match,) = asked.commands
    assert FLOW.on_signal(state(asked), xref_answer(None), NOW) is None  # asked once
    return match


def provision(result: dict[str, Any], **changes: Any) -> FlowStep:
    matching = FLOW.on_record(None, deal(**changes))
    assert matching is not None
    unknown_to_the_xref(matching)
    asked = FlowState("mobilize", "engagement:c-1", "matching", {**matching.data, "match_asked": 1})
    step = FLOW.on_result(asked, "match_customer", "tryton:customer:x", Applied(result))
    assert step is not None
    return step


def test_an_account_the_cross_reference_knows_is_not_matched_again() -> None:
    matching = FLOW.on_record(None, deal())
    assert matching is not None
    known = FLOW.on_signal(state(matching), xref_answer("C-0042"), NOW)
    assert known is not None and known.state == "provisioning"
    assert [c.operation for c in known.commands] == ["upsert_project", "upsert_project"]
    assert known.commands[1].payload["customer_code"] == "C-0042"
    assert known.data["customer_match_kind"] == "xref"


def test_no_match_creates_the_customer_then_both_projects() -> None:
    step = provision({"kind": "none"})
    assert step.state == "provisioning"
    ops = [(c.system, c.operation) for c in step.commands]
    assert ops == [
        ("tryton", "upsert_customer"),
        ("harvest", "upsert_project"),
        ("tryton", "upsert_project"),
    ]
    customer, psa, erp = step.commands
    assert customer.payload["code"] == "SF-0015g0000000001AAA"
    assert customer.payload["tax_ids"] == [["eu_vat", "DE136695976"]]
    assert psa.payload == erp.payload  # one canonical project, each system translates it
    tasks = {t["name"]: (t["hourly_rate"], t["budget_hours"]) for t in psa.payload["tasks"]}
    assert tasks == {"Senior Consultant": ("180.00", "80"), "Analyst": ("95.00", "40")}
    assert psa.payload["key"] == f"SF-{DEAL}" and psa.payload["currency"] == "EUR"
    assert erp.payload["customer_code"] == "SF-0015g0000000001AAA"
    assert erp.payload["customer_name"] == "Acme Consulting GmbH"
    assert psa.idempotency_key == f"harvest:upsert_project:SF-{DEAL}"
    assert erp.idempotency_key == f"tryton:upsert_project:SF-{DEAL}"
    assert {c.business_key for c in step.commands} == {"engagement:c-1"}  # the instance's key


def test_a_matched_customer_is_used_not_created() -> None:
    step = provision(
        {
            "kind": "tax_id",
            "party_code": "C-0042",
            "party_id": 42,
            "explain": "matched ERP customer C-0042 by tax id",
        }
    )
    assert [c.operation for c in step.commands] == ["upsert_project", "upsert_project"]
    assert step.commands[1].payload["customer_code"] == "C-0042"
    (link,) = step.signals  # the next deal of the account finds it in the cross-reference
    assert (link.flow, link.business_key, link.name) == ("xref", ACCOUNT_XREF, "link")
    assert link.data == {"system": "tryton", "external_id": "C-0042"}


def test_an_ambiguous_match_waits_for_a_person_to_link_one() -> None:
    step = provision(
        {"kind": "ambiguous", "explain": "several ERP customers could be this account"}
    )
    assert step.state == "blocked" and step.issues[0].error_class == "duplicate"
    assert "several ERP customers" in step.issues[0].message
    assert "closeloop xref link account salesforce:0015g0000000001AAA" in step.issues[0].message
    (watch,) = step.signals
    assert watch.name == "lookup" and watch.data["watch"] is True
    assert FLOW.on_signal(state(step), xref_answer(None), NOW) is None  # nobody decided yet
    linked = FLOW.on_signal(state(step), xref_answer("C-0007"), NOW)
    assert linked is not None and linked.state == "provisioning"
    assert linked.resolves == (f"salesforce:Opportunity:{DEAL}",)
    assert [c.operation for c in linked.commands] == ["upsert_project", "upsert_project"]
    assert linked.commands[1].payload["customer_code"] == "C-0007"
    assert FLOW.on_signal(state(linked), xref_answer("C-0007"), NOW) is None


def finish(step: FlowStep) -> FlowStep:
    current = step
    for op, entity, result in (
        ("upsert_customer", "tryton:customer:SF-1", {"party": 7}),
        ("upsert_project", f"harvest:project:SF-{DEAL}", {"project_id": 5000001}),
        ("upsert_project", f"tryton:project:SF-{DEAL}", {"project_id": 31}),
    ):
        following = FLOW.on_result(state(current), op, entity, Applied(result))
        assert following is not None
        current = following
    return current


def test_a_created_customer_is_linked_once_the_erp_made_it() -> None:
    provisioning = provision({"kind": "none"})
    assert not provisioning.signals  # not yet: the create may still fail
    created = FLOW.on_result(
        state(provisioning), "upsert_customer", "tryton:customer:SF-1", Applied({"party": 7})
    )
    assert created is not None
    (link,) = created.signals
    assert link.name == "link" and link.data["external_id"] == "SF-0015g0000000001AAA"


def test_results_lead_to_mobilized_and_the_write_back() -> None:
    done = finish(provision({"kind": "none"}))
    assert done.state == "mobilized"
    (write_back,) = done.commands
    assert write_back.operation == "update_engagement"
    fields = write_back.payload
    assert fields["status"] == "Mobilized"
    assert fields["customer_code"] == "SF-0015g0000000001AAA"
    assert fields["psa_project_id"] == "5000001" and fields["project_key"] == f"SF-{DEAL}"
    invoicing, status = done.signals  # the engagement's invoicing releases its time
    assert (invoicing.flow, invoicing.business_key) == ("invoice", f"billing:SF-{DEAL}")
    assert invoicing.data["status"] == "mobilized"
    assert invoicing.data["engagement"] == "engagement:c-1"
    assert invoicing.data["erp"] == "tryton"  # where the engagement was routed
    assert (status.flow, status.business_key) == ("status_back", f"status:SF-{DEAL}")
    assert status.data["account_id"] == "0015g0000000001AAA"
    assert status.data["client"] == "Acme Consulting GmbH"
    assert (status.data["crm"], status.data["psa"]) == ("salesforce", "harvest")


def test_pending_finance_approval_provisions_provisionally_until_approved() -> None:
    done = finish(provision({"kind": "none"}, finance_approval="pending"))
    assert done.state == "provisional"
    assert done.commands[0].payload["status"] == "Provisional"
    assert done.signals[0].data["status"] == "provisional"  # its time is held
    approved = FLOW.on_record(
        state(done), deal(version="2026-03-05T00:00:00+00:00", finance_approval="approved")
    )
    assert (
        approved is not None and approved.state == "mobilized" and approved.data["finance_approved"]
    )
    assert approved.signals[0].data["status"] == "mobilized"  # and now released


def test_a_deal_lost_before_billing_closes_both_projects_and_says_why() -> None:
    done = finish(provision({"kind": "none"}))
    lost = FLOW.on_record(
        state(done), deal(version="2026-03-09T00:00:00+00:00", stage="closed_lost", won=False)
    )
    assert lost is not None and lost.state == "closed"
    assert [(c.system, c.operation) for c in lost.commands] == [
        ("harvest", "close_project"),
        ("tryton", "close_project"),
        ("salesforce", "update_engagement"),
    ]
    assert "before any time was billed" in lost.data["closed_because"]
    assert lost.signals[0].data["status"] == "closed"  # held time is refused, not recorded


def test_a_deal_lost_after_time_was_billed_keeps_its_projects_and_asks_a_person() -> None:
    done = finish(provision({"kind": "none"}))
    billed = FLOW.on_signal(state(done), Signal("mobilize", "engagement:c-1", "billed"), NOW)
    assert billed is not None and billed.state == "mobilized" and billed.data["billed"]
    lost = FLOW.on_record(state(billed), deal(stage="closed_lost", won=False))
    assert lost is not None and not lost.commands
    (issue,) = lost.issues
    assert issue.error_class.value == "conflict" and "after time was billed" in issue.message
    assert FLOW.on_record(state(lost), deal(stage="closed_lost", won=False)) is None  # once


def test_only_opportunities_have_an_engagement() -> None:
    other = CanonicalRecord("account", "a-1", ("salesforce", "Account", "001"), "1", {})
    assert FLOW.business_key(other) is None and FLOW.business_key(deal()) == "engagement:c-1"
