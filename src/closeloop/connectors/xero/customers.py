"""Customers in Xero: contacts, matched and written in bulk.

A customer the hub made carries the hub's customer code in ``ContactNumber`` (which only the
API can set; Xero's "Contacts" page); a customer found by matching is known by its
``ContactNumber`` when it has one, else by its ``ContactID``. The VAT number is ``TaxNumber``
(one per contact), the billing address the ``POBOX`` address (Xero's name for it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from closeloop.connectors.xero.client import XeroClient, quoted, validation_messages
from closeloop.connectors.xero.projects import ElementRefused
from closeloop.domain.operations import MatchCustomer, UpsertCustomer
from closeloop.mdm.matching import Party, compact_tax_id, match_customer


def contact_code(contact: dict[str, Any]) -> str:
    """The code the hub knows a contact by: its ``ContactNumber``, else its ``ContactID``."""
    return str(contact.get("ContactNumber") or contact["ContactID"])


def _address(contact: dict[str, Any]) -> dict[str, Any]:
    addresses = contact.get("Addresses") or []
    billing = [a for a in addresses if a.get("AddressType") == "POBOX"]
    street = [a for a in addresses if a.get("AddressType") == "STREET"]
    return dict((billing or street or [{}])[0])


def party(contact: dict[str, Any]) -> Party:
    """A contact as matching compares it."""
    address = _address(contact)
    tax = compact_tax_id(str(contact.get("TaxNumber") or ""))
    return Party(
        id=contact_code(contact),
        name=str(contact.get("Name") or ""),
        country=str(address.get("Country") or ""),
        tax_ids=(tax,) if tax else (),
        street=str(address.get("AddressLine1") or ""),
        city=str(address.get("City") or ""),
        postal_code=str(address.get("PostalCode") or ""),
    )


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Customers:
    """The organisation's customers (contacts)."""

    def __init__(self, client: XeroClient) -> None:
        self.client = client

    def active(self) -> list[dict[str, Any]]:
        """Every active contact (paged, 1,000 a call)."""
        return self.client.list_all(
            "Contacts", "Contacts", params={"where": 'ContactStatus=="ACTIVE"'}
        )

    def match(self, accounts: Sequence[MatchCustomer]) -> list[dict[str, Any]]:
        """Which contact each account is (:func:`closeloop.mdm.matching.match_customer`):
        ``{"kind", "party_code", "party_id", "score", "explain", "candidates"}``; one read of
        the contacts for all accounts."""
        contacts = self.active()
        candidates = [party(c) for c in contacts]
        ids = {contact_code(c): str(c["ContactID"]) for c in contacts}
        out = []
        for account in accounts:
            wanted = Party(
                id="",
                name=account.name,
                country=account.country,
                tax_ids=tuple(compact_tax_id(t) for t in account.tax_ids if t),
                street=account.street,
                city=account.city,
                postal_code=account.postal_code,
            )
            result = match_customer(wanted, candidates, account.threshold)
            hit = result.match
            out.append(
                {
                    "kind": result.kind,
                    "party_code": hit.id if hit else None,
                    "party_id": ids.get(hit.id) if hit else None,
                    "score": result.score,
                    "explain": result.explain(),
                    "candidates": [[p.id, p.name, round(s, 1)] for p, s in result.candidates],
                }
            )
        return out

    def by_code(self, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The contacts of ``codes`` (``ContactNumber`` or ``ContactID``), by code."""
        unique = sorted(set(codes))
        found: dict[str, dict[str, Any]] = {}
        numbers = [c for c in unique if not _is_uuid(c)]
        for row in self.client.where_in(
            "Contacts", [f"ContactNumber=={quoted(c)}" for c in numbers]
        ):
            found[str(row.get("ContactNumber"))] = row
        ids = [c for c in unique if _is_uuid(c)]
        if ids:
            for row in self.client.list_all("Contacts", "Contacts", params={"IDs": ",".join(ids)}):
                found[str(row["ContactID"])] = row
        return found

    def upsert(self, customers: Sequence[UpsertCustomer]) -> list[str | Exception]:
        """Create or update each customer (by its code in ``ContactNumber``) in one write
        (a code asked for twice, as two deals of one account do, is written once, as last
        asked); one result per customer: its ``ContactID`` or the refusal."""
        existing = self.by_code([c.code for c in customers])
        latest = {c.code: c for c in customers}
        elements = []
        for customer in latest.values():
            element: dict[str, Any] = {
                "Name": customer.name,
                "ContactNumber": customer.code,
                "IsCustomer": True,
                "TaxNumber": customer.tax_ids[0][1] if customer.tax_ids else "",
                "Addresses": [
                    {
                        "AddressType": "POBOX",
                        "AddressLine1": customer.address.line1 if customer.address else "",
                        "City": customer.address.city if customer.address else "",
                        "PostalCode": customer.address.postal_code if customer.address else "",
                        "Country": customer.country,
                    }
                ],
            }
            if customer.email:
                element["EmailAddress"] = customer.email
            if customer.code in existing:
                element["ContactID"] = existing[customer.code]["ContactID"]
            elements.append(element)
        answer = self.client.request(
            "POST", "Contacts", params={"summarizeErrors": "false"}, body={"Contacts": elements}
        )
        answered = list(answer.get("Contacts") or [])
        if len(answered) != len(latest):
            raise ValueError(f"Xero answered {len(answered)} contacts for {len(latest)}")
        by_code: dict[str, str | Exception] = {}
        for code, element in zip(latest, answered, strict=True):
            messages = validation_messages(element)
            by_code[code] = ElementRefused(messages) if messages else str(element["ContactID"])
        return [by_code[c.code] for c in customers]
