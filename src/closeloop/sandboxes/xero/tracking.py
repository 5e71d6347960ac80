"""Tracking categories and their options, and the ``Tracking`` of invoice and credit note
lines, following Xero's "Tracking Categories" page.

A category is ``{"TrackingCategoryID", "Name", "Status", "Options": [...]}``, an option
``{"TrackingOptionID", "Name", "Status", "IsActive", "IsArchived", "IsDeleted",
"HasValidationErrors"}``; statuses are ``ACTIVE`` and ``ARCHIVED`` (``DELETED`` is not
written: the sandbox has no ``DELETE``). Names are at most 100 characters and unique
(ignoring case: categories among categories, options within their category, archived ones
included). Xero's limits: at most two ``ACTIVE`` categories and four in all (its API page:
"a maximum of two ACTIVE tracking categories and four tracking categories total (ACTIVE
and ARCHIVED)"), and at most 100 ``ACTIVE`` options in a category (Xero's help and
accountants' guides; archived options do not count; the API page does not say). Options are
added or changed in ``ACTIVE`` categories only (the sandbox's choice).

A line's ``Tracking`` is at most two elements, each naming a category (``Name`` or
``TrackingCategoryID``) and one of its options (``Option`` or ``TrackingOptionID``); both
must be ``ACTIVE``. The stored element is complete: ``{"TrackingCategoryID",
"TrackingOptionID", "Name", "Option"}``; lines are answered with the current names.
"""

from __future__ import annotations

import uuid
from typing import Any

from closeloop.sandboxes.xero.org import Organisation

MAX_ACTIVE_CATEGORIES = 2
MAX_CATEGORIES = 4
MAX_ACTIVE_OPTIONS = 100
MAX_NAME = 100
UNKNOWN_CATEGORY = (
    "Unknown tracking details. A Tracking Category did not match a known active Tracking Category."
)
UNKNOWN_OPTION = (
    "Unknown tracking details. A Tracking Option did not match a known active Tracking Option."
)
STATUSES = ("ACTIVE", "ARCHIVED")


def _name_errors(name: Any, kind: str, others: list[dict[str, Any]]) -> list[str]:
    if not isinstance(name, str) or not name.strip():
        return [f"The {kind} name must be specified"]
    if len(name.strip()) > MAX_NAME:
        return [f"The {kind} name must not be longer than {MAX_NAME} characters"]
    if any(o["Name"].lower() == name.strip().lower() for o in others):
        return [f"For each specified {kind} the name must be unique"]
    return []


def _status_error(status: Any) -> list[str]:
    return [] if status is None or status in STATUSES else ["Status must be ACTIVE or ARCHIVED"]


def check_category(
    org: Organisation, element: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one category written (created when ``existing`` is
    ``None``, else renamed or archived) and what :func:`apply_category` writes."""
    others = [c for c in org.tracking.values() if c is not existing]
    errors: list[str] = []
    if existing is None or "Name" in element:
        errors += _name_errors(element.get("Name"), "tracking category", others)
    status = element.get("Status")
    errors += _status_error(status)
    status = status or (existing["Status"] if existing else "ACTIVE")
    if existing is None and len(others) >= MAX_CATEGORIES:
        errors.append(f"An organisation can have at most {MAX_CATEGORIES} tracking categories")
    active = [c for c in others if c["Status"] == "ACTIVE"]
    if (
        status == "ACTIVE"
        and (existing is None or existing["Status"] != "ACTIVE")
        and len(active) >= MAX_ACTIVE_CATEGORIES
    ):
        errors.append(
            f"An organisation can have at most {MAX_ACTIVE_CATEGORIES} active tracking categories"
        )
    plan = {"Status": status}
    if isinstance(element.get("Name"), str):
        plan["Name"] = element["Name"].strip()
    return errors, plan


def apply_category(
    org: Organisation, existing: dict[str, Any] | None, plan: dict[str, Any]
) -> dict[str, Any]:
    """Write one checked category; the stored record."""
    record = existing
    if record is None:
        record = {"TrackingCategoryID": str(uuid.uuid4()), "Options": []}
        org.tracking[record["TrackingCategoryID"]] = record
    record.update(plan)
    org.touch(record)
    return record


def check_option(
    category: dict[str, Any], element: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any]]:
    """The validation messages of one option of ``category`` written (created when
    ``existing`` is ``None``) and what :func:`apply_option` writes."""
    others = [o for o in category["Options"] if o is not existing]
    errors: list[str] = []
    if category["Status"] != "ACTIVE":
        errors.append("Options can only be changed in an active tracking category")
    if existing is None or "Name" in element:
        errors += _name_errors(element.get("Name"), "tracking option", others)
    status = element.get("Status")
    errors += _status_error(status)
    status = status or (existing["Status"] if existing else "ACTIVE")
    active = [o for o in others if o["Status"] == "ACTIVE"]
    if (
        status == "ACTIVE"
        and (existing is None or existing["Status"] != "ACTIVE")
        and len(active) >= MAX_ACTIVE_OPTIONS
    ):
        errors.append(
            f"A tracking category can have at most {MAX_ACTIVE_OPTIONS} active tracking options"
        )
    plan = {"Status": status}
    if isinstance(element.get("Name"), str):
        plan["Name"] = element["Name"].strip()
    return errors, plan


def apply_option(
    org: Organisation,
    category: dict[str, Any],
    existing: dict[str, Any] | None,
    plan: dict[str, Any],
) -> dict[str, Any]:
    """Write one checked option; the stored option (its category is touched too)."""
    option = existing
    if option is None:
        option = {"TrackingOptionID": str(uuid.uuid4()), "HasValidationErrors": False}
        category["Options"].append(option)
    option.update(plan)
    status = option["Status"]
    option.update(IsActive=status == "ACTIVE", IsArchived=status == "ARCHIVED", IsDeleted=False)
    org.touch(category)
    return option


def render_option(option: dict[str, Any]) -> dict[str, Any]:
    """The ``TrackingOption`` object Xero answers."""
    return {k: v for k, v in option.items() if not k.startswith("_")}


def render_category(category: dict[str, Any], archived: bool = True) -> dict[str, Any]:
    """The ``TrackingCategory`` object Xero answers, its archived options only when
    ``archived``."""
    options = [render_option(o) for o in category["Options"] if archived or o["Status"] == "ACTIVE"]
    return {
        "TrackingCategoryID": category["TrackingCategoryID"],
        "Name": category["Name"],
        "Status": category["Status"],
        "Options": options,
    }


def _same(value: Any, wanted: str) -> bool:
    return isinstance(value, str) and value.strip().lower() == wanted.lower()


def resolve(org: Organisation, tracking: Any, errors: list[str]) -> list[dict[str, Any]]:
    """The stored ``Tracking`` of one line from what was sent (problems are appended to
    ``errors``; an unknown or archived category or option is Xero's "Unknown tracking
    details" message)."""
    if tracking is None:
        return []
    if not isinstance(tracking, list) or not all(isinstance(t, dict) for t in tracking):
        errors.append("Tracking must be a list of tracking categories")
        return []
    if len(tracking) > MAX_ACTIVE_CATEGORIES:
        errors.append("A line item can have at most 2 tracking categories")
        return []
    made: list[dict[str, Any]] = []
    for element in tracking:
        category_id, name = element.get("TrackingCategoryID"), element.get("Name")
        category = next(
            (
                c
                for c in org.tracking.values()
                if c["Status"] == "ACTIVE"
                and (
                    c["TrackingCategoryID"] == category_id
                    if category_id
                    else _same(name, c["Name"])
                )
            ),
            None,
        )
        if category is None:
            errors.append(UNKNOWN_CATEGORY)
            continue
        option_id, option_name = element.get("TrackingOptionID"), element.get("Option")
        option = next(
            (
                o
                for o in category["Options"]
                if o["Status"] == "ACTIVE"
                and (
                    o["TrackingOptionID"] == option_id
                    if option_id
                    else _same(option_name, o["Name"])
                )
            ),
            None,
        )
        if option is None:
            errors.append(UNKNOWN_OPTION)
            continue
        if any(t["TrackingCategoryID"] == category["TrackingCategoryID"] for t in made):
            errors.append("A line item can have one option of each tracking category")
            continue
        made.append(
            {
                "TrackingCategoryID": category["TrackingCategoryID"],
                "TrackingOptionID": option["TrackingOptionID"],
                "Name": category["Name"],
                "Option": option["Name"],
            }
        )
    return made


def current(org: Organisation, tracking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored line's ``Tracking`` with the current names of its categories and options
    (renamed since the line was written, say)."""
    shown = []
    for element in tracking:
        category = org.tracking.get(element["TrackingCategoryID"])
        option = next(
            (
                o
                for o in (category or {}).get("Options", [])
                if o["TrackingOptionID"] == element["TrackingOptionID"]
            ),
            None,
        )
        shown.append(
            element
            | ({"Name": category["Name"]} if category else {})
            | ({"Option": option["Name"]} if option else {})
        )
    return shown
