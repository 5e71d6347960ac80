"""The data of an invoicing instance (part of :mod:`.invoice`) and what its use cases share:
the data a new instance starts with, a copy deep enough for one step, the billing periods'
slots, and the commands that issue and post an invoice in the engagement's ERP.

A slot (``data["periods"][<label>]``) is one billing period's invoicing: its ``start`` and
``end``, what was recorded in it, the ``charges`` waiting for its invoice, whether it has
something new to invoice (``dirty``) and the ``references`` of the invoices made of it.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.domain.commands import Command, Impact
from closeloop.domain.operations import (
    ChargeLine,
    InvoiceProject,
    Operation,
    PostInvoice,
    role_command,
)
from closeloop.domain.periods import BillingPeriod, PeriodKind, period_of

HELD_STATUSES = ("pending", "provisional")
"""The engagement statuses whose time and expenses are held (not yet mobilized)."""


def initial(business_key: str) -> dict[str, Any]:
    """The data of a new instance for ``billing:<project key>``."""
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


def copy_data(data: dict[str, Any]) -> dict[str, Any]:
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
    for name in (
        "held_expenses",
        "costs",
        "credits",
        "credit_counts",
        "credit_keys",
        "rebill",
        "charged",
    ):
        copied[name] = dict(data.get(name) or {})
    return copied


def new_slot(data: dict[str, Any], period: BillingPeriod) -> dict[str, Any]:
    """The invoicing slot of ``period`` (made when missing)."""
    slot: dict[str, Any] = data["periods"].setdefault(
        period.label,
        {"start": period.start.isoformat(), "end": period.end.isoformat(), "lines": 0},
    )
    slot.setdefault("label", period.label)
    return slot


def slot_of(data: dict[str, Any], day: date, kind: PeriodKind) -> dict[str, Any]:
    """The invoicing slot of the ``kind`` billing period ``day`` falls in (made when missing)."""
    return new_slot(data, period_of(day, kind))


def invoice_commands(
    data: dict[str, Any],
    reference: str,
    end: date | None,
    issued: date,
    charges: tuple[ChargeLine, ...],
    payment_terms_days: int,
) -> list[Command]:
    """Invoice ``reference``: the time up to ``end`` (``None``: no time) and ``charges``,
    then post it; ``payment_terms_days`` unless the deal has its own terms."""
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
            else payment_terms_days
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


def dec(value: Any) -> Decimal:
    """``value`` (a number, its text, ``None`` or blank) as a decimal; nothing is 0."""
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def invoiced_milestones(data: dict[str, Any]) -> list[str]:
    """The keys of the milestones invoiced and not credited (the whole set: :mod:`.mobilize`
    replaces what it knew)."""
    return sorted(k for k, m in (data.get("milestones") or {}).items() if m.get("invoiced"))
