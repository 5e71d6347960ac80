"""The canonical project-to-cash model: the one language the hub speaks between systems.

:data:`CANONICAL_TYPES` maps each canonical type name to its model; :func:`json_schemas`
gives their versioned JSON Schemas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from closeloop.domain.canonical.base import Canonical
from closeloop.domain.canonical.billing import BillableItem, Invoice, InvoiceLine, Payment, TaxLine
from closeloop.domain.canonical.delivery import (
    Assignment,
    Expense,
    Milestone,
    Project,
    Task,
    TimeEntry,
)
from closeloop.domain.canonical.parties import Account, Address, Contact, Person
from closeloop.domain.canonical.sales import (
    DealCustomer,
    DealMilestone,
    Engagement,
    FixedFeePlan,
    Opportunity,
    OpportunityLineItem,
    RateCard,
    RetainerPlan,
    RetainerTerms,
    TimeAndMaterialsPlan,
)

_MODELS: tuple[type[Canonical], ...] = (
    Account,
    Address,
    Contact,
    Person,
    Opportunity,
    OpportunityLineItem,
    DealCustomer,
    DealMilestone,
    RetainerTerms,
    RateCard,
    Engagement,
    TimeAndMaterialsPlan,
    FixedFeePlan,
    RetainerPlan,
    Project,
    Task,
    Milestone,
    Assignment,
    TimeEntry,
    Expense,
    BillableItem,
    Invoice,
    InvoiceLine,
    TaxLine,
    Payment,
)

CANONICAL_TYPES: dict[str, type[Canonical]] = {m.CANONICAL_TYPE: m for m in _MODELS}
"""Canonical type name -> model, e.g. ``"time_entry"`` -> :class:`TimeEntry`."""


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one canonical type, with ``$id`` naming its version.

    Raises ``KeyError`` for an unknown type.
    """
    model = CANONICAL_TYPES[name]
    schema = model.model_json_schema(mode="validation")
    schema["$id"] = f"https://closeloop.dev/schemas/{name}/v{model.SCHEMA_VERSION}.json"
    schema["x-schema-version"] = model.SCHEMA_VERSION
    return schema


def schema_fingerprint(name: str) -> str:
    """SHA-256 of the type's JSON Schema without its version marks."""
    schema = json_schema(name)
    schema.pop("$id")
    schema.pop("x-schema-version")
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


__all__ = [
    "CANONICAL_TYPES",
    "Account",
    "Address",
    "Assignment",
    "BillableItem",
    "Canonical",
    "Contact",
    "DealMilestone",
    "Engagement",
    "Expense",
    "FixedFeePlan",
    "Invoice",
    "InvoiceLine",
    "Milestone",
    "Opportunity",
    "OpportunityLineItem",
    "Payment",
    "Person",
    "Project",
    "RateCard",
    "RetainerPlan",
    "RetainerTerms",
    "Task",
    "TaxLine",
    "TimeAndMaterialsPlan",
    "TimeEntry",
    "json_schema",
    "schema_fingerprint",
]
