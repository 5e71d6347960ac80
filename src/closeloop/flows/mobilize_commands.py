"""What a mobilize instance sends (part of :mod:`.mobilize`): each command to the system the
engagement was routed to for a role, the CRM's write-backs of where the engagement stands,
and the signals telling the engagement's invoicing (:mod:`.invoice`) and status-back
(:mod:`.status_back`) instances its status and terms. Pure builders over the instance's data.
"""

from __future__ import annotations

from typing import Any

from closeloop.domain.commands import Command, Impact
from closeloop.domain.operations import Operation, UpdateEngagement, role_command
from closeloop.domain.records import Signal
from closeloop.flows.amend import rate_schedule


def command(
    data: dict[str, Any], role: str, operation: Operation, key: str, entity: str
) -> Command:
    """``operation`` for the system the engagement was routed to for ``role``; ``entity``
    is named within that system."""
    system = data["systems"][role]
    return role_command(
        system,
        operation,
        business_key=data["business_key"],
        key=key,
        entity=f"{system}:{entity}",
        impact=Impact.REVENUE,
    )


def write_back(data: dict[str, Any], status: str) -> Command:
    """Tell the CRM the engagement is ``status`` (``Provisional``, ``Mobilized``) with its
    ERP customer and projects."""
    update = UpdateEngagement(
        deal_id=data["deal_id"],
        status=status,
        message=data.get("customer_match") or "",
        customer_code=data.get("erp_customer_code"),
        psa_project_id=str(data.get("psa_project_id") or ""),
        project_key=data.get("project_key"),
    )
    return crm_update(data, update)


def status_command(data: dict[str, Any], status: str, message: str) -> Command:
    """Tell the CRM the engagement is ``status`` (``Blocked``, ``Closed``) and why."""
    update = UpdateEngagement(deal_id=data["deal_id"], status=status, message=message)
    return crm_update(data, update)


def crm_update(data: dict[str, Any], update: UpdateEngagement) -> Command:
    """``update`` to the deal's CRM, once per status and version of the deal."""
    key = f"opportunity:{update.deal_id}:mobilization:{update.status}:{data['version']}"
    crm = data["systems"]["crm"]
    return role_command(
        crm,
        update,
        business_key=data["business_key"],
        key=key,
        entity=data["deal_entity"],
        impact=Impact.REVENUE,
    )


def engagement_signals(data: dict[str, Any], status: str) -> tuple[Signal, ...]:
    """Tell the engagement's invoicing and status-back instances where it stands."""
    key = data["project_key"]
    tax = data.get("tax") or {}
    invoicing = {
        "status": status,
        "engagement": data["business_key"],
        "closed_because": data.get("closed_because"),
        "erp": data["systems"]["erp"],
        "currency": data["currency"],
        "legal_entity": data.get("legal_entity"),
        "payment_terms_days": data.get("payment_terms_days"),
        "mention": tax.get("mention") or "",
        "customer_tax_id": (
            data["customer"]["tax_id"] if tax.get("treatment") == "reverse_charge" else None
        ),
        "billing_method": data.get("billing_method") or "time_and_materials",
        "milestones": data.get("milestones") or [],
        "retainer": data.get("retainer"),
        "expense_markup_percent": data.get("expense_markup_percent"),
        "rates": rate_schedule(data),
        "removed_roles": data.get("removed_roles") or {},
        "start_date": data["start_date"],
        "end_date": data.get("end_date"),
    }
    engagement = {
        "status": status,
        "deal_id": data["deal_id"],
        "account_id": data["customer"]["crm_id"],
        "client": data["customer"]["legal_name"],
        "start_date": data["start_date"],
        "currency": data["currency"],
        "account_currency": data["customer"].get("currency") or data["currency"],
        "legal_entity": data.get("legal_entity"),
        **data["systems"],
    }
    return (
        Signal("invoice", f"billing:{key}", "engagement", invoicing),
        Signal("status_back", f"status:{key}", "engagement", engagement),
    )
