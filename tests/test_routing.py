"""Several systems per role: routing rules pick an engagement's PSA and ERP once, and every
later step follows that choice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from closeloop.domain.commands import Applied, ExceptionClass
from closeloop.domain.records import FlowState, FlowStep, Signal
from closeloop.domain.routing import RoleRouting, Roles, RouteRule, single
from closeloop.flows.invoice import InvoiceFlow
from closeloop.flows.mobilize import UNROUTED, MobilizeFlow
from tests.test_mobilize import deal

NOW = datetime(2026, 3, 10, tzinfo=UTC)
BY_COUNTRY = RoleRouting(
    systems=("erp_de", "erp_fr"),
    rules=(RouteRule(field="customer.country", values=("FR",), system="erp_fr"),),
    default="erp_de",
)


def roles(erp: RoleRouting = BY_COUNTRY) -> Roles:
    return Roles(
        crm=single("salesforce"),
        psa=single("harvest"),
        erp=erp,
        key_prefixes={"salesforce": "SF"},
    )


def at(step: FlowStep) -> FlowState:
    return FlowState("mobilize", "engagement:c-1", step.state, step.data)


def test_a_rule_picks_the_first_match_else_the_default() -> None:
    assert BY_COUNTRY.route({"customer": {"country": "fr"}}) == "erp_fr"
    assert BY_COUNTRY.route({"customer": {"country": "DE"}}) == "erp_de"
    assert BY_COUNTRY.route({}) == "erp_de"  # no value: not a match, the default
    no_default = BY_COUNTRY.model_copy(update={"default": None})
    assert no_default.route({"customer": {"country": "DE"}}) is None
    assert single("tryton").route({}) == "tryton"


def test_a_rule_naming_a_system_outside_the_role_is_refused() -> None:
    with pytest.raises(ValidationError, match="erp_xx"):
        RoleRouting(
            systems=("erp_de",),
            rules=(RouteRule(field="customer.country", values=("FR",), system="erp_xx"),),
        )
    with pytest.raises(ValidationError, match="key prefix"):
        Roles(crm=single("a"), psa=single("b"), erp=single("c"))


def test_each_deal_s_commands_go_to_the_erp_its_route_names() -> None:
    flow = MobilizeFlow(roles())
    french = flow.on_record(None, deal(customer={"country": "France", "tax_id": "FR40303265045"}))
    german = flow.on_record(None, deal())
    assert french is not None and german is not None
    assert french.data["systems"] == {"crm": "salesforce", "psa": "harvest", "erp": "erp_fr"}
    assert german.data["systems"]["erp"] == "erp_de"
    (lookup,) = french.signals  # the cross-reference is asked about the French ERP
    assert lookup.data["system"] == "erp_fr"
    asked = flow.on_signal(at(french), Signal("mobilize", "engagement:c-1", "xref", {}), NOW)
    assert asked is not None
    (match,) = asked.commands
    assert match.system == "erp_fr" and match.idempotency_key.startswith("erp_fr:match_customer:")
    state = FlowState("mobilize", "engagement:c-1", "matching", {**asked.data})
    provisioning = flow.on_result(state, "match_customer", "erp_fr:x", Applied({"kind": "none"}))
    assert provisioning is not None
    assert [(c.system, c.operation) for c in provisioning.commands] == [
        ("erp_fr", "upsert_customer"),
        ("harvest", "upsert_project"),
        ("erp_fr", "upsert_project"),
    ]


def test_a_deal_no_rule_routes_is_blocked_with_a_reason() -> None:
    flow = MobilizeFlow(roles(BY_COUNTRY.model_copy(update={"default": None})))
    blocked = flow.on_record(None, deal())
    assert blocked is not None and blocked.state == "blocked"
    (issue,) = blocked.issues
    assert issue.error_class is ExceptionClass.MAPPING
    assert f"{UNROUTED} erp" in issue.message and "customer.country" in issue.message
    (status,) = blocked.commands  # the CRM shows why
    assert status.system == "salesforce" and status.payload["status"] == "Blocked"


def test_an_engagement_keeps_its_systems_when_the_rules_change() -> None:
    before = MobilizeFlow(roles())
    matching = before.on_record(None, deal())
    assert matching is not None and matching.data["systems"]["erp"] == "erp_de"
    ambiguous = before.on_signal(at(matching), Signal("mobilize", "engagement:c-1", "xref"), NOW)
    assert ambiguous is not None
    state = FlowState("mobilize", "engagement:c-1", "matching", ambiguous.data)
    blocked = before.on_result(
        state, "match_customer", "erp_de:x", Applied({"kind": "ambiguous", "explain": "two"})
    )
    assert blocked is not None and blocked.state == "blocked"
    everything_to_fr = BY_COUNTRY.model_copy(update={"rules": (), "default": "erp_fr"})
    after = MobilizeFlow(roles(everything_to_fr))
    again = after.on_record(at(blocked), deal(version="2026-03-04T00:00:00+00:00"))
    assert again is not None and again.data["systems"]["erp"] == "erp_de"  # kept


def test_invoicing_and_time_follow_the_engagement_s_erp() -> None:
    invoice = InvoiceFlow(settle_s=0)
    key = "billing:SF-006A"
    engagement = Signal(
        "invoice", key, "engagement", {"status": "mobilized", "engagement": "e", "erp": "erp_fr"}
    )
    step = invoice.on_signal(None, engagement, NOW)
    assert step is not None
    logged = Signal("invoice", key, "time_logged", {"entry": "time_entry:t-1"})
    answered = invoice.on_signal(FlowState("invoice", key, step.state, step.data), logged, NOW)
    assert answered is not None
    (release,) = answered.signals
    assert release.name == "release" and release.data == {"erp": "erp_fr"}
    recorded = Signal("invoice", key, "recorded", {"date": "2026-02-10", "hours": "2"})
    current = FlowState("invoice", key, answered.state, answered.data)
    with_line = invoice.on_signal(current, recorded, NOW)
    assert with_line is not None
    fired = invoice.on_timer(
        FlowState("invoice", key, with_line.state, with_line.data, with_line.wake_at), NOW
    )
    assert fired is not None
    assert {c.system for c in fired.commands} == {"erp_fr"}
    assert [c.operation for c in fired.commands] == ["invoice_project", "post_invoice"]


def test_a_deal_blocked_for_its_data_is_routed_again_once_fixed() -> None:
    """The country may have been the mistake: a blocked deal is not held to its first route."""
    flow = MobilizeFlow(roles())
    wrong = deal(customer={"country": "Germany", "tax_id": "FR40303265045"})  # a French VAT id
    blocked = flow.on_record(None, wrong)
    assert blocked is not None and blocked.state == "blocked"
    fixed = deal(
        version="2026-03-04T00:00:00+00:00",
        customer={"country": "France", "tax_id": "FR40303265045"},
    )
    matching = flow.on_record(at(blocked), fixed)
    assert matching is not None and matching.state == "matching"
    assert matching.data["systems"]["erp"] == "erp_fr"
