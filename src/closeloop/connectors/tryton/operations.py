"""What closeloop does in Tryton, each operation idempotent through a key visible in Tryton,
and all in one company: the session acts in the company of its :class:`~.setup.TrytonIds`
(``company`` of every call's context), and finds only that company's projects, time,
employees and invoices. Parties (customers, people) are shared by the companies of a
database; a customer's tax rule is a company-dependent value.

Keys, and why:
- Customer: the party ``code``. Tryton lets a code be given at creation (it is read-only
  afterwards and unique), it shows on every screen and report, and it is what finance
  searches by.
- Project, task and milestone: a ``closeloop:<key>`` line in the work's ``comment``. The
  work ``number`` comes from a sequence and cannot be written; the comment is searchable,
  kept off invoices, and survives renames (:mod:`.projects`).
- Timesheet line: a ``[cl:<key>]`` marker at the end of the ``description`` (the line's
  ``uuid`` cannot be written over RPC), looked up only to resolve a lost answer
  (:mod:`.timesheets`).
- Invoice: the customer ``reference`` (``account.invoice.reference``), set right after the
  project is invoiced; an unreferenced draft invoice of the project is adopted on retry.
- Charge (a milestone, a retainer fee, overage, an expense billed on an invoice): a
  ``closeloop:<charge key>`` ``note`` on its invoice line (:mod:`.charges`).
- Credit note: its ``reference`` (the hub's credit reference); an unreferenced draft credit
  note of the invoice is adopted on retry (:mod:`.credits`).
- Payment: the payment move's ``description`` (the pay wizard's description), with the
  invoice as the move's origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date
from typing import Any

from closeloop.connectors.tryton.charges import Charge
from closeloop.connectors.tryton.credits import CreditOperations, CreditRequest
from closeloop.connectors.tryton.invoicing import InvoicingOperations
from closeloop.connectors.tryton.payments import PaymentOperations
from closeloop.connectors.tryton.projects import (
    MilestoneInvoicedError,
    MilestoneSpec,
    ProjectOperations,
    ProjectSpec,
    TaskSpec,
)
from closeloop.connectors.tryton.rpc import TrytonRPC, after_write
from closeloop.connectors.tryton.setup import TrytonIds, ensure_country
from closeloop.connectors.tryton.timesheets import TimesheetEntry, TimesheetOperations
from closeloop.domain.taxids import tax_id_forms
from closeloop.mdm.matching import Party, normalize_name

__all__ = [
    "Charge",
    "CreditRequest",
    "CustomerSpec",
    "MilestoneInvoicedError",
    "MilestoneSpec",
    "ProjectSpec",
    "TaskSpec",
    "TimesheetEntry",
    "TrytonOperations",
]
_PARTY_FIELDS = [
    "code",
    "name",
    "identifiers.code",
    "addresses.street",
    "addresses.city",
    "addresses.postal_code",
    "addresses.country.code",
]


@dataclass(frozen=True)
class CustomerSpec:
    """A customer to create or bring up to date: party ``code``, legal ``name``, ISO 3166
    ``country``, ``tax_ids`` as ``(Tryton identifier type, value)`` pairs (``eu_vat``,
    ``gb_vat``, ``us_ein``, ...), invoice ``address`` (``line1``, ``line2``, ``city``,
    ``postal_code``) and ``email``."""

    code: str
    name: str
    country: str
    tax_ids: tuple[tuple[str, str], ...] = ()
    address: dict[str, Any] | None = None
    email: str | None = None


class TrytonOperations(
    ProjectOperations,
    CreditOperations,
    InvoicingOperations,
    PaymentOperations,
    TimesheetOperations,
):
    """The hub's operations on one Tryton database (see the module docstring for keys):
    customers here; projects from :class:`~.projects.ProjectOperations`, invoicing with
    charges from :class:`~.invoicing.InvoicingOperations`, credit notes from
    :class:`~.credits.CreditOperations`, payments from
    :class:`~.payments.PaymentOperations`, time from
    :class:`~.timesheets.TimesheetOperations`. Every call of ``rpc`` acts in company
    ``ids.company`` from now on (:meth:`~.rpc.TrytonRPC.use_company`): give each company's
    operations a session of their own. Reference data that
    does not change under the hub (countries, work statuses, employees, tasks' timesheet
    works, payment terms, currencies and their earliest rates, expense products, invoice line
    defaults by product, customer and tax rule) is read once per session."""

    def __init__(self, rpc: TrytonRPC, ids: TrytonIds) -> None:
        self.rpc = rpc
        self.ids = ids
        rpc.use_company(ids.company)
        self._statuses: dict[str, int] = {}
        self._countries: dict[str, int] = {}
        # what bulk timesheet imports look up again and again; dropped on any refusal
        self._employees: dict[str, int] = {}
        self._timesheet_works: dict[str, int] = {}
        self._payment_terms: dict[int, int] = {}
        self._currencies: dict[str, int] = {}
        self._rates_since: dict[str, date] = {}
        self._expense_products: dict[str, int] = {}
        self._line_defaults: dict[tuple[int, int, int | None], dict[str, Any]] = {}

    # --- reference data -----------------------------------------------------------------
    def country_ids(self, codes: Sequence[str]) -> dict[str, int]:
        """Country ids by ISO 3166 alpha-2 code, created when missing; read once per session.
        Raises ``ValueError`` for a code that is not ISO 3166."""
        for code in sorted(set(codes) - set(self._countries)):
            self._countries[code] = ensure_country(self.rpc, code)
        return {c: self._countries[c] for c in codes}

    # --- customers ----------------------------------------------------------------------
    def find_customers(self, codes: Sequence[str]) -> dict[str, int]:
        """Party ids by code (inactive parties included)."""
        rows = (
            self.rpc.search_read(
                "party.party",
                [["code", "in", list(codes)]],
                ["code"],
                context={"active_test": False},
            )
            if codes
            else []
        )
        return {r["code"]: r["id"] for r in rows}

    def candidates_for(
        self, accounts: Sequence[tuple[Sequence[str], str, str]]
    ) -> tuple[list[list[Party]], dict[str, int]]:
        """For each account ``(tax_ids, name, country)``, the parties that could be it: those
        holding any of its tax ids (in any form Tryton may have stored: Tryton formats some,
        ``CHE-100.155.212``) and those whose name contains the name's longest significant
        word, with their tax ids and first address as
        :class:`~closeloop.mdm.matching.Party` (``id`` is the party code); and the party ids
        by code of all of them. One read for all accounts, with the fields matching needs."""
        wanted = []
        clauses: list[Any] = []
        for tax_ids, name, country in accounts:
            forms = {form for t in tax_ids if t for form in tax_id_forms(t, country)}
            words = sorted(normalize_name(name).split(), key=len, reverse=True)
            word = words[0] if words else ""
            wanted.append((forms, word))
            if forms:
                clauses.append([["identifiers.code", "in", sorted(forms)]])
            if word:
                clauses.append([["name", "ilike", f"%{word}%"]])
        if not clauses:
            return [[] for _ in accounts], {}
        # no limit: a cut could drop the party that holds the tax id, and a duplicate
        # customer would be created
        rows = self.rpc.search_read("party.party", ["OR", *clauses], _PARTY_FIELDS)
        parties = [(_party(r), {i["code"] for i in r.get("identifiers.") or []}) for r in rows]
        ids = {str(r["code"]): int(r["id"]) for r in rows}
        return [
            [
                party
                for party, codes in parties
                if (forms & codes)
                or (word and (word in party.name.lower() or word in normalize_name(party.name)))
            ]
            for forms, word in wanted
        ], ids

    def upsert_customer(
        self,
        code: str,
        name: str,
        country: str,
        tax_ids: Sequence[tuple[str, str]] = (),
        address: dict[str, Any] | None = None,
        email: str | None = None,
    ) -> int:
        """Create the party ``code`` or bring its name, invoice address and tax identifiers
        up to date; returns its id (:meth:`upsert_customers` for one)."""
        spec = CustomerSpec(code, name, country, tuple((t, v) for t, v in tax_ids), address, email)
        return self.upsert_customers([spec])[0]

    def upsert_customers(self, specs: Sequence[CustomerSpec]) -> list[int]:
        """Create the parties Tryton lacks in one bulk call and bring the others' name,
        invoice address and tax identifiers up to date; party ids in order of ``specs``.

        Raises :class:`~.rpc.TrytonError` when Tryton refuses any new party (a bad VAT
        number, say): then none of them is created. ``ValueError`` for an unknown country.
        """
        countries = self.country_ids([s.country for s in specs])
        found = self.find_customers([s.code for s in specs])
        new: dict[str, CustomerSpec] = {}
        for spec in specs:
            if spec.code not in found:
                new.setdefault(spec.code, spec)
        if new:
            values = [_party_values(s, countries[s.country]) for s in new.values()]
            found.update(zip(new, self.rpc.create("party.party", values), strict=True))
        with after_write() if new else nullcontext():
            for spec in {s.code: s for s in specs if s.code not in new}.values():
                self._update_customer(found[spec.code], spec, countries[spec.country])
            return [found[s.code] for s in specs]

    def _update_customer(self, party: int, spec: CustomerSpec, country: int) -> None:
        current = self.rpc.search_read(
            "party.party",
            [["id", "=", party]],
            ["name", "addresses", "identifiers.type", "identifiers.code"],
        )[0]
        known = {(i["type"], i["code"]) for i in current.get("identifiers.") or []}
        missing = [{"type": t, "code": v} for t, v in spec.tax_ids if (t, v) not in known]
        addr = {"invoice": True, "country": country, **_address_values(spec.address or {})}
        values: dict[str, Any] = {"name": spec.name}
        if missing:
            values["identifiers"] = [["create", missing]]
        if current["addresses"]:
            values["addresses"] = [["write", current["addresses"][:1], addr]]
        else:
            values["addresses"] = [["create", [addr]]]
        self.rpc.write("party.party", [party], values)


def _party(row: dict[str, Any]) -> Party:
    """A ``party.party`` row read with :data:`_PARTY_FIELDS` as a matching party."""
    addresses = row.get("addresses.") or [{}]
    address = addresses[0]
    return Party(
        id=str(row["code"]),
        name=str(row["name"]),
        country=(address.get("country.") or {}).get("code", ""),
        tax_ids=tuple(i["code"] for i in row.get("identifiers.") or []),
        street=(address.get("street") or "").replace("\n", " "),
        city=address.get("city") or "",
        postal_code=address.get("postal_code") or "",
    )


def _party_values(spec: CustomerSpec, country: int) -> dict[str, Any]:
    addr = {"invoice": True, "country": country, **_address_values(spec.address or {})}
    values: dict[str, Any] = {
        "name": spec.name,
        "code": spec.code,
        "addresses": [["create", [addr]]],
        "identifiers": [["create", [{"type": t, "code": v} for t, v in spec.tax_ids]]],
    }
    if spec.email:
        values["contact_mechanisms"] = [["create", [{"type": "email", "value": spec.email}]]]
    return values


def _address_values(address: dict[str, Any]) -> dict[str, Any]:
    street = "\n".join(p for p in (address.get("line1"), address.get("line2")) if p)
    values = {
        "street": street or None,
        "city": address.get("city"),
        "postal_code": address.get("postal_code"),
    }
    return {k: v for k, v in values.items() if v}
