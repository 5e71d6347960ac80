"""Items (Xero's price list) and what an invoice or credit note line takes from its
``ItemCode``, following Xero's "Items" page.

An item is ``{"ItemID", "Code", "Name", "Description", "PurchaseDescription", "IsSold",
"IsPurchased", "SalesDetails": {"UnitPrice", "AccountCode", "TaxType"}, "PurchaseDetails":
{...}, "IsTrackedAsInventory": false, "UpdatedDateUTC"}``. ``Code`` is required, at most 30
characters and unique (ignoring case: "Price List Item with Code 'X' already exists");
``Name`` at most 50, ``Description`` and ``PurchaseDescription`` at most 4000. ``IsSold`` and
``IsPurchased`` default to true; turning ``IsSold`` false clears ``Description`` and
``SalesDetails`` (``IsPurchased`` false: ``PurchaseDescription`` and ``PurchaseDetails``), as
the OpenAPI description says. ``UnitPrice`` is rounded to ``unitdp`` (2, or 4 when asked);
an ``AccountCode`` must be in the chart, a ``TaxType`` one of the organisation's rates.
``PUT`` creates; ``POST`` creates or updates the item matched by ``ItemID``, else by
``Code``. Inventory tracking is not modelled.

A line with ``ItemCode`` (an unknown one is "Item code 'X' is not valid.") takes from the
item, when the line does not give them, ``Description``, ``UnitAmount`` (``UnitPrice``),
``AccountCode`` and ``TaxType``: ``SalesDetails`` and ``Description`` on sales documents,
``PurchaseDetails`` and ``PurchaseDescription`` on purchases (Xero's "Items" page: an item
"with enough detail to populate an invoice line item"). The stored line carries
``ItemCode`` and ``Item`` (``ItemID``, ``Code``, ``Name``).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from closeloop.sandboxes.xero.org import Organisation, public
from closeloop.sandboxes.xero.settings import CHART
from closeloop.sandboxes.xero.taxes import UK_RATES
from closeloop.sandboxes.xero.wire import money

LIMITS = {"Code": 30, "Name": 50, "Description": 4000, "PurchaseDescription": 4000}
_DETAILS = ("SalesDetails", "PurchaseDetails")


def find(org: Organisation, code: Any) -> dict[str, Any] | None:
    """The item whose ``Code`` is ``code`` (ignoring case), or ``None``."""
    if not isinstance(code, str):
        return None
    wanted = code.strip().lower()
    return next((i for i in org.items.values() if i["Code"].lower() == wanted), None)


def existing(org: Organisation, element: dict[str, Any]) -> dict[str, Any] | None:
    """The item an element names: by ``ItemID``, else by ``Code``."""
    if element.get("ItemID"):
        return org.items.get(str(element["ItemID"]))
    return find(org, element.get("Code"))


def _details(value: Any, name: str, unitdp: int, errors: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        errors.append(f"{name} must be an object")
        return {}
    made: dict[str, Any] = {}
    if value.get("UnitPrice") is not None:
        try:
            price = money(value["UnitPrice"], f"{name}.UnitPrice")
            made["UnitPrice"] = price.quantize(Decimal(1).scaleb(-unitdp))
        except ValueError as exc:
            errors.append(str(exc))
    for key in ("AccountCode", "COGSAccountCode"):
        code = value.get(key)
        if code is not None and str(code) not in CHART:
            errors.append(f"Account code '{code}' is not a valid code")
        elif code is not None:
            made[key] = str(code)
    tax_type = value.get("TaxType")
    if tax_type is not None and tax_type not in UK_RATES:
        errors.append(f"The TaxType code '{tax_type}' does not exist or cannot be used")
    elif tax_type is not None:
        made["TaxType"] = tax_type
    return made


def check(
    org: Organisation, element: dict[str, Any], create_only: bool, unitdp: int = 2
) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one item and what :func:`apply` writes."""
    if element.get("ItemID") and str(element["ItemID"]) not in org.items:
        return [f"Item with ItemID {element['ItemID']} could not be found"], {}
    record = existing(org, element)
    code = element.get("Code", record["Code"] if record else None)
    errors: list[str] = []
    if not isinstance(code, str) or not code.strip():
        errors.append("Item code must be specified")
    else:
        other = find(org, code)
        if (create_only and record is not None) or (other is not None and other is not record):
            errors.append(f"Price List Item with Code '{code.strip()}' already exists")
    plan: dict[str, Any] = {}
    for key, limit in LIMITS.items():
        value = element.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(f"{key} must be text")
        elif len(value) > limit:
            errors.append(f"{key} must not be longer than {limit} characters")
        else:
            plan[key] = value.strip() if key == "Code" else value
    for flag in ("IsSold", "IsPurchased"):
        if flag in element and not isinstance(element[flag], bool):
            errors.append(f"{flag} must be true or false")
        elif flag in element:
            plan[flag] = element[flag]
    for key in _DETAILS:
        if element.get(key) is not None:
            plan[key] = _details(element[key], key, unitdp, errors)
    return errors, plan


def apply(org: Organisation, element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Write one checked item; the stored record."""
    record = existing(org, element)
    if record is None:
        record = {
            "ItemID": str(uuid.uuid4()),
            "IsSold": True,
            "IsPurchased": True,
            "IsTrackedAsInventory": False,
            "SalesDetails": {},
            "PurchaseDetails": {},
        }
        org.items[record["ItemID"]] = record
    record.update(plan)
    if not record["IsSold"]:
        record.pop("Description", None)
        record["SalesDetails"] = {}
    if not record["IsPurchased"]:
        record.pop("PurchaseDescription", None)
        record["PurchaseDetails"] = {}
    org.touch(record)
    return record


def render(record: dict[str, Any]) -> dict[str, Any]:
    """The ``Item`` object Xero answers."""
    return public(record) | {"ValidationErrors": []}


def line_defaults(
    org: Organisation, line: dict[str, Any], sales: bool, errors: list[str]
) -> dict[str, Any]:
    """``line`` with what its ``ItemCode`` gives it (see the module's docstring); an unknown
    code is appended to ``errors`` and the line is answered as sent."""
    code = line.get("ItemCode")
    if code is None:
        return line
    item = find(org, code)
    if item is None:
        errors.append(f"Item code '{code}' is not valid.")
        return line
    details = item["SalesDetails" if sales else "PurchaseDetails"]
    description = item.get("Description" if sales else "PurchaseDescription")
    account = details.get("AccountCode") or details.get("COGSAccountCode")
    given = dict(line)
    for key, value in (
        ("Description", description),
        ("AccountCode", account),
        ("TaxType", details.get("TaxType")),
    ):
        if given.get(key) in (None, "") and value is not None:
            given[key] = value
    if "UnitAmount" not in given and given.get("LineAmount") is None and "UnitPrice" in details:
        given["UnitAmount"] = details["UnitPrice"]
    given["ItemCode"] = item["Code"]
    given["Item"] = {"ItemID": item["ItemID"], "Code": item["Code"], "Name": item.get("Name", "")}
    return given
