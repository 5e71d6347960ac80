"""What the hub itself knows, as reconciliation reads it: the engagements it mobilized (with
the systems each was routed to, its ERP customer and its rate card), the time entries it
recorded, the invoices it made and those credited to be billed again.

Read from the flows' state in the store, in one transaction, never from the systems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
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
    fee: Decimal | None = None
    set_up: bool = True

    @property
    def provisioned(self) -> bool:
        """Whether its projects were set up in the PSA and the ERP (a deal closed before
        they were is not)."""
        return self.state in PROVISIONED and self.set_up


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
    def load(cls, tx: UnitOfWork, today: date) -> HubView:
        """Read the view from the flows' state; rates are those in force on ``today``."""
        in_force = _rates_in_force(tx, today)
        engagements: dict[str, Engagement] = {}
        for state in tx.list_flows("mobilize", _ALL):
            data = state.data
            key = data.get("project_key")
            if not key or not data.get("systems"):
                continue
            rates = {
                str(role["role"]): Decimal(str(role["rate"])) for role in data.get("roles") or []
            }
            rates.update(in_force.get(key, {}))  # a change order dated later is not in force
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
                fee=Decimal(str(data["fee"])) if data.get("fee") else None,
                set_up=state.state != "closed" or bool(data.get("psa_project_id")),
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


def _rates_in_force(tx: UnitOfWork, today: date) -> dict[str, dict[str, Decimal]]:
    """Project key -> role -> the rate in force on ``today`` by the engagement's invoicing
    terms (a rate change takes effect from its date: :mod:`closeloop.flows.amend`)."""
    out: dict[str, dict[str, Decimal]] = {}
    for state in tx.list_flows("invoice", _ALL):
        terms = (state.data.get("terms") or {}).get("rates") or {}
        key = state.data.get("project_key")
        if not key:
            continue
        for role, changes in terms.items():
            effective = [
                c for c in changes or [] if not c.get("from") or str(c["from"]) <= today.isoformat()
            ]
            if effective:
                latest = max(effective, key=lambda c: str(c.get("from") or ""))
                out.setdefault(str(key), {})[str(role)] = Decimal(str(latest["rate"]))
    return out
