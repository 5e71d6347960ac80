"""Contacts: create (``PUT``/``POST``), update by ``ContactID`` (``POST``), read.

Follows Xero's "Contacts" page: ``Name`` is required and unique among active contacts
("The contact name X is already assigned to another contact. The contact name must be
unique across all active contacts."); ``EmailAddress`` must look like one; ``TaxNumber`` is
free text (the VAT number in the UK); ``ContactStatus`` ``ARCHIVED`` archives. Fields the
sandbox does not model are kept as sent.
"""

from __future__ import annotations

import uuid
from typing import Any

from closeloop.sandboxes.xero.org import Organisation, public

_FIELDS = (
    "Name",
    "FirstName",
    "LastName",
    "EmailAddress",
    "TaxNumber",
    "AccountNumber",
    "ContactNumber",
    "CompanyNumber",
    "Addresses",
    "Phones",
    "IsCustomer",
    "IsSupplier",
    "DefaultCurrency",
    "ContactStatus",
    "Website",
)


def check(org: Organisation, element: dict[str, Any], create_only: bool) -> list[str]:
    """The validation messages of one element (empty when it can be written)."""
    errors: list[str] = []
    contact_id = element.get("ContactID")
    existing = org.contacts.get(str(contact_id)) if contact_id else None
    if contact_id and (existing is None or create_only):
        return [
            f"Contact with ContactID {contact_id} could not be found"
            if existing is None
            else "A contact with this ContactID already exists"
        ]
    name = element.get("Name", existing["Name"] if existing else None)
    if not isinstance(name, str) or not name.strip():
        errors.append("The contact name must be specified")
    else:
        for other in org.contacts.values():
            if (
                other is not existing
                and other["ContactStatus"] == "ACTIVE"
                and other["Name"].strip().lower() == name.strip().lower()
            ):
                errors.append(
                    f"The contact name {name} is already assigned to another contact. The "
                    "contact name must be unique across all active contacts."
                )
    email = element.get("EmailAddress")
    if email and (not isinstance(email, str) or "@" not in email):
        errors.append("Email address must be valid.")
    status = element.get("ContactStatus")
    if status is not None and status not in ("ACTIVE", "ARCHIVED"):
        errors.append("ContactStatus must be ACTIVE or ARCHIVED")
    return errors


def apply(org: Organisation, element: dict[str, Any]) -> dict[str, Any]:
    """Write one checked element; the stored contact."""
    contact_id = element.get("ContactID")
    record = org.contacts.get(str(contact_id)) if contact_id else None
    if record is None:
        record = {
            "ContactID": str(uuid.uuid4()),
            "ContactStatus": "ACTIVE",
            "Name": "",
            "EmailAddress": "",
            "Addresses": [],
            "Phones": [],
            "IsSupplier": False,
            "IsCustomer": False,
            "HasValidationErrors": False,
        }
        org.contacts[record["ContactID"]] = record
    for name in _FIELDS:
        if name in element:
            record[name] = element[name]
    org.touch(record)
    return record


def render(record: dict[str, Any]) -> dict[str, Any]:
    """The ``Contact`` object Xero answers."""
    return public(record)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The contact as nested in an invoice."""
    return {
        "ContactID": record["ContactID"],
        "Name": record["Name"],
        "ContactStatus": record["ContactStatus"],
        "HasValidationErrors": False,
    }
