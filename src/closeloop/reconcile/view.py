"""What the hub itself knows, as reconciliation reads it: the engagements it mobilized (with
the systems each was routed to, its ERP customer and its rate card), the time entries it
recorded, the invoices it made and those credited to be billed again.

Read from the flows' state in the store, in one transaction, never from the systems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from closeloop.ports.store import UnitOfWork

PROVISIONED = ("mobilized", "provisional", "closed")
"""Mobilization states in which the engagement's projects exist in the PSA and the ERP."""
_ALL = 1_000_000


@dataclass(frozen=True, slots=True)
class Engagement:
    """One mobilized deal: ``project_key``, the mobilize instance (``instance``), its
    ``state``, the systems by role (``systems``: ``crm``, ``psa``, ``erp``), the CRM account
    and the ERP customer code it was linked to, its billing method and rates in force
    (task name -> Decimal)."""

    project_key: str
    instance: str
    state: str
    deal_id: str
    systems: dict[str, str]
    account_id: str | None
    customer_code: str | None
    billing_method: str
    rates: dict[str, Decimal]
    closed: bool

    @property
    def provisioned(self) -> bool:
        """Whether its projects were set up in the PSA and the ERP."""
        return self.state in PROVISIONED


@dataclass(frozen=True, slots=True)
class HubView:
    """The hub's own records (module docstring). ``engagements`` by project key;
    ``recorded``: time entry key (``harvest-42``) -> the bill_time state; ``invoices``:
    reference -> the invoice flow's record of it; ``rebilled``: references credited in full
    to be billed again (their time is unbilled in the PSA)."""

    engagements: dict[str, Engagement] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    rebilled: frozenset[str] = frozenset()

    @classmethod
    def load(cls, tx: UnitOfWork) -> HubView:
        """Read the view from the flows' state."""
        engagements: dict[str, Engagement] = {}
        for state in tx.list_flows("mobilize", _ALL):
            data = state.data
            key = data.get("project_key")
            if not key or not data.get("systems"):
                continue
            rates = {
                str(role["role"]): Decimal(str(role["rate"])) for role in data.get("roles") or []
            }
            engagements[key] = Engagement(
                project_key=key,
                instance=state.business_key,
                state=state.state,
                deal_id=str(data.get("deal_id") or ""),
                systems=dict(data["systems"]),
                account_id=(data.get("customer") or {}).get("crm_id"),
                customer_code=data.get("erp_customer_code"),
                billing_method=str(data.get("billing_method") or "time_and_materials"),
                rates=rates,
                closed=state.state == "closed",
            )
        recorded: dict[str, str] = {}
        for state in tx.list_flows("bill_time", _ALL):
            line = state.data.get("line") or {}
            if line.get("key"):
                recorded[str(line["key"])] = state.state
        invoices: dict[str, dict[str, Any]] = {}
        rebilled: set[str] = set()
        for state in tx.list_flows("invoice", _ALL):
            for reference, made in (state.data.get("invoices") or {}).items():
                invoices[str(reference)] = dict(made or {})  # None: asked for, not made yet
            rebilled.update(
                str(reference)
                for reference, rebill in (state.data.get("rebill") or {}).items()
                if rebill
            )
        return cls(engagements, recorded, invoices, frozenset(rebilled))
