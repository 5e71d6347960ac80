"""Matching a closed-won deal's customer and provisioning its projects (part of
:mod:`.mobilize`).

The cross-reference is asked first (:func:`lookup`): an account it knows keeps its ERP
customer (:func:`cross_referenced`); else the ERP is asked which customer the account is
(``match_customer``) and its answer decides (:func:`matched`): a match is linked in the
cross-reference, none creates the customer (its code from the CRM's key prefix), an ambiguous
one blocks the deal until a person merges the customers or links the account. Then the
project is set up in the PSA and the ERP (:func:`provision`), and once both are
(:func:`provisioned`) the engagement is ``mobilized``, or ``provisional`` while finance
approval is pending.
"""

from __future__ import annotations

from typing import Any

from closeloop.domain.canonical.sales import FinanceApproval
from closeloop.domain.commands import Command, ExceptionClass, Impact
from closeloop.domain.keys import engagement_code
from closeloop.domain.operations import Address, MatchCustomer, UpsertCustomer
from closeloop.domain.records import BusinessIssue, FlowState, FlowStep, Signal
from closeloop.domain.routing import Roles
from closeloop.flows.amend import project_operation
from closeloop.flows.mobilize_commands import (
    command,
    engagement_signals,
    status_command,
    write_back,
)
from closeloop.ports.flows import xref_link, xref_lookup

BLOCKED = "closed-won deal blocked from mobilization"
"""How the business exception of a deal kept from mobilization begins."""


def account(data: dict[str, Any]) -> tuple[str, str, str]:
    """The deal's account as the cross-reference names it."""
    return ("account", data["systems"]["crm"], data["customer"]["crm_id"])


def lookup(data: dict[str, Any], flow_name: str, *, watch: bool) -> Signal:
    """Ask the cross-reference what the account is in the engagement's ERP, answered to the
    instance of flow ``flow_name``; ``watch``: answered again when a person links it."""
    erp = data["systems"]["erp"]
    return xref_lookup(account(data), erp, (flow_name, data["business_key"]), watch=watch)


def link(data: dict[str, Any], code: str) -> Signal:
    """Link the account to the ERP customer ``code`` in the cross-reference."""
    return xref_link(account(data), data["systems"]["erp"], code)


def match_command(data: dict[str, Any], threshold: float) -> Command:
    """Ask the ERP which customer the account is (a name-and-address match needs a
    similarity score of ``threshold``)."""
    customer = data["customer"]
    match = MatchCustomer(
        name=customer["legal_name"],
        country=customer["country"],
        tax_ids=tuple(t for t in (customer["tax_id"],) if t),
        street=customer.get("street") or "",
        city=customer.get("city") or "",
        postal_code=customer.get("postal_code") or "",
        threshold=threshold,
    )
    key = f"{data['deal_id']}:{data['version']}"
    return command(data, "erp", match, key, f"customer:{customer['crm_id']}")


def cross_referenced(state: FlowState, code: str | None, threshold: float) -> FlowStep | None:
    """The cross-reference first: a known account is not matched again. An unknown one is
    matched in the ERP; a deal blocked on an ambiguous match resumes once a person links
    the account to one customer (``closeloop xref link``)."""
    data = dict(state.data)
    if state.state == "matching" and not data.get("match_asked"):
        if code:
            data.update(customer_match_kind="xref", customer_match=f"known as {code}")
            return provision(data, code)
        data["match_asked"] = True
        return FlowStep("matching", data, commands=(match_command(data, threshold),))
    if state.state == "blocked" and data.pop("ambiguous", False) and code:
        entity = data["deal_entity"]
        data.update(customer_match_kind="linked", customer_match=f"linked to {code}")
        step = provision(data, code)
        return FlowStep(step.state, step.data, commands=step.commands, resolves=(entity,))
    return None


def matched(data: dict[str, Any], result: dict[str, Any], flow_name: str, roles: Roles) -> FlowStep:
    """The ERP's answer to ``match_customer``: an ambiguous match blocks the deal (and
    watches the cross-reference for a person's link); a match is provisioned and linked;
    none creates the customer, coded from the CRM's key prefix in ``roles``."""
    entity = data["deal_entity"]
    if result.get("kind") == "ambiguous":
        systems = data["systems"]
        message = (
            f"{BLOCKED}: {result.get('explain')}; merge the ERP customers, or pick one with "
            f"closeloop xref link account {systems['crm']}:{data['customer']['crm_id']} "
            f"{systems['erp']}:<customer code>"
        )
        issue = BusinessIssue(ExceptionClass.DUPLICATE, Impact.REVENUE, entity, message)
        data["ambiguous"] = True
        return FlowStep(
            "blocked",
            data,
            issues=(issue,),
            commands=(status_command(data, "Blocked", message),),
            signals=(lookup(data, flow_name, watch=True),),
        )
    data["customer_match_kind"] = result.get("kind") or "none"
    if result.get("kind") in ("tax_id", "similar"):
        data["erp_customer_id"] = result.get("party_id")
        data["customer_match"] = result.get("explain")
        step = provision(data, result["party_code"])
        signal = link(data, result["party_code"])
        return FlowStep(step.state, step.data, commands=step.commands, signals=(signal,))
    customer = data["customer"]
    prefix = roles.prefix(data["systems"]["crm"])
    code = engagement_code(prefix, customer["crm_id"])
    data["customer_match"] = "created"
    upsert = UpsertCustomer(
        code=code,
        name=customer["legal_name"],
        country=customer["country"],
        tax_ids=(((customer["tax_scheme"], customer["tax_id"]),) if customer["tax_id"] else ()),
        address=Address(
            line1=customer.get("street") or "",
            city=customer.get("city") or "",
            postal_code=customer.get("postal_code") or "",
        ),
    )
    create = command(data, "erp", upsert, f"{code}:{data['deal_id']}", f"customer:{code}")
    step = provision(data, code)
    return FlowStep(step.state, step.data, commands=(create, *step.commands))


def provision(data: dict[str, Any], customer_code: str) -> FlowStep:
    """Set up the projects in both systems for the ERP customer ``customer_code``."""
    data = {**data, "erp_customer_code": customer_code}
    data["base_rates"] = {r["role"]: r["rate"] for r in data["roles"]}
    key = data["project_key"]
    commands = tuple(
        command(data, role, project_operation(data, role), key, f"project:{key}")
        for role in ("psa", "erp")
    )
    return FlowStep("provisioning", data, commands=commands)


def provisioned(
    data: dict[str, Any], operation: str, entity: str, result: dict[str, Any]
) -> FlowStep:
    """Collect a set-up ``result``: a customer created is linked in the cross-reference,
    each project's id kept. ``provisioning`` while a project is missing; then
    ``provisional`` (finance approval pending) or ``mobilized``, written back to the CRM
    and signalled to the engagement's invoicing and status back."""
    signals: tuple[Signal, ...] = ()
    systems = data["systems"]
    if operation == "upsert_customer":  # created: the account is this customer from now
        data["erp_customer_id"] = result.get("party")
        signals = (link(data, data["erp_customer_code"]),)
    elif operation == "upsert_project" and entity.startswith(f"{systems['psa']}:"):
        data["psa_project_id"] = result.get("project_id")
    elif operation == "upsert_project" and entity.startswith(f"{systems['erp']}:"):
        data["erp_project_id"] = result.get("project_id")
    waiting = [k for k in ("psa_project_id", "erp_project_id") if data.get(k) is None]
    if waiting:
        return FlowStep("provisioning", data, signals=signals)
    provisional = data["finance_approval"] == FinanceApproval.PENDING.value
    status = "Provisional" if provisional else "Mobilized"
    return FlowStep(
        status.lower(),
        data,
        commands=(write_back(data, status),),
        signals=signals + engagement_signals(data, status.lower()),
    )
