"""Fields the sandbox org computes, as Salesforce does: a contact's or user's ``Name``; an
opportunity's ``IsClosed``, ``IsWon``, default ``Probability``, ``ForecastCategoryName`` and
``ExpectedRevenue`` from its stage (the stage table in :mod:`.schema`); a line's price from its
price book entry, its ``TotalPrice`` and ``Name``; a price book entry's product name and code.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from closeloop.sandboxes.salesforce.records import SalesforceError
from closeloop.sandboxes.salesforce.schema import STAGES, SObjectDef

Live = dict[str, dict[str, dict[str, Any]]]
_STAGE = {s[0]: s for s in STAGES}


def derive(
    live: Live, spec: SObjectDef, record: dict[str, Any], before: dict[str, Any] | None
) -> None:
    """Set the fields Salesforce computes on ``record`` (``before``: the record as it was, or
    ``None`` on create): names, stage-driven fields, line totals. ``live`` holds the org's
    records by object and id. Raises :class:`SalesforceError` for a line without a price."""
    if spec.name in ("Contact", "User"):
        record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
    if spec.name == "Opportunity" and record.get("StageName") in _STAGE:
        stage = _STAGE[record["StageName"]]
        changed = before is None or before.get("StageName") != record["StageName"]
        if changed and (before is None or record.get("Probability") == before.get("Probability")):
            record["Probability"] = float(stage[1])
        if record.get("Probability") is None:
            record["Probability"] = float(stage[1])
        record.update(IsClosed=stage[2], IsWon=stage[3])
        if changed:
            record["ForecastCategoryName"] = stage[4]
        amount = record.get("Amount")
        record["ExpectedRevenue"] = (
            None if amount is None else round(amount * record["Probability"] / 100, 2)
        )
    if spec.name == "OpportunityLineItem":
        _derive_line(live, record)
    if spec.name == "PricebookEntry":
        product = live["Product2"].get(record.get("Product2Id") or "")
        record["Name"] = product["Name"] if product else None
        record["ProductCode"] = product.get("ProductCode") if product else None


def _derive_line(live: Live, record: dict[str, Any]) -> None:
    entry = live["PricebookEntry"].get(record.get("PricebookEntryId") or "")
    if entry is not None:
        record["Product2Id"] = entry["Product2Id"]
        record["ListPrice"] = entry.get("UnitPrice")
        if record.get("UnitPrice") is None:
            record["UnitPrice"] = entry.get("UnitPrice")
    if record.get("UnitPrice") is None and record.get("TotalPrice") is not None:
        record["UnitPrice"] = round(record["TotalPrice"] / record["Quantity"], 2)
    if record.get("UnitPrice") is None:
        raise SalesforceError(
            400,
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [UnitPrice, TotalPrice]",
            ["UnitPrice"],
        )
    total = Decimal(str(record["Quantity"])) * Decimal(str(record["UnitPrice"]))
    record["TotalPrice"] = float(round(total, 2))
    opportunity = live["Opportunity"].get(record.get("OpportunityId") or "")
    product = live["Product2"].get(record.get("Product2Id") or "")
    record["Name"] = " ".join(
        p for p in ((opportunity or {}).get("Name"), (product or {}).get("Name")) if p
    )
