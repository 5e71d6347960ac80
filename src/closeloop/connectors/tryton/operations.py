"""What closeloop does in Tryton, each operation idempotent through a key visible in Tryton,
and all in one company: the session acts in the company of its :class:`~.setup.TrytonIds`
(``company`` of every call's context), and finds only that company's projects, time,
employees and invoices. Parties (customers, people) are shared by the companies of a
database; a customer's tax rule is a company-dependent value.

Keys, and why:
- Customer: the party ``code``. Tryton lets a code be given at creation (it is read-only
  afterwards and unique), it shows on every screen and report, and it is what finance
  searches by.
- Project and task: a ``closeloop:<key>`` line in the work's ``comment``. The work
  ``number`` comes from a sequence and cannot be written; the comment is searchable, kept
  off invoices, and survives renames.
- Timesheet line: a ``[cl:<key>]`` marker at the end of the ``description`` (the line's
  ``uuid`` cannot be written over RPC), looked up only to resolve a lost answer
  (:mod:`.timesheets`).
- Invoice: the customer ``reference`` (``account.invoice.reference``), set right after the
  project is invoiced; an unreferenced draft invoice of the project is adopted on retry.
- Payment: the payment move's ``description`` (the pay wizard's description), with the
  invoice as the move's origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.invoicing import InvoicingOperations
from closeloop.connectors.tryton.keys import WORK_KEY
from closeloop.connectors.tryton.rpc import TrytonRPC, after_write
from closeloop.connectors.tryton.setup import TrytonIds, ensure_country
from closeloop.connectors.tryton.timesheets import TimesheetEntry, TimesheetOperations
from closeloop.domain.taxids import tax_id_forms
from closeloop.domain.taxrules import TaxTreatment
from closeloop.mdm.matching import Party, normalize_name

__all__ = ["CustomerSpec", "ProjectSpec", "TaskSpec", "TimesheetEntry", "TrytonOperations"]
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
class TaskSpec:
    """A task of a project: its key, name and hourly list price."""

    key: str
    name: str
    list_price: Decimal


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


@dataclass(frozen=True)
class ProjectSpec:
    """A project to create or bring up to date: its ``key``, ``name``, the customer's party
    code, its tasks, hourly list price and Tryton invoice method; ``tax_treatment``: how
    the customer's invoices of this company are taxed (``None``: left as Tryton has it)."""

    key: str
    name: str
    customer_code: str
    tasks: tuple[TaskSpec, ...] = field(default_factory=tuple)
    list_price: Decimal = Decimal(0)
    invoice_method: str = "timesheet"
    tax_treatment: TaxTreatment | None = None


class TrytonOperations(InvoicingOperations, TimesheetOperations):
    """The hub's operations on one Tryton database (see the module docstring for keys);
    invoicing and payments come from :class:`~.invoicing.InvoicingOperations`, time from
    :class:`~.timesheets.TimesheetOperations`. Every call of ``rpc`` acts in company
    ``ids.company`` from now on (:meth:`~.rpc.TrytonRPC.use_company`): give each company's
    operations a session of their own. Reference data that
    does not change under the hub (countries, work statuses, employees, tasks' timesheet
    works, payment terms, currencies and their earliest rates) is read once per session."""

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

    # --- reference data -----------------------------------------------------------------
    def country_ids(self, codes: Sequence[str]) -> dict[str, int]:
        """Country ids by ISO 3166 alpha-2 code, created when missing; read once per session.
        Raises ``ValueError`` for a code that is not ISO 3166."""
        for code in sorted(set(codes) - set(self._countries)):
            self._countries[code] = ensure_country(self.rpc, code)
        return {c: self._countries[c] for c in codes}

    def _status(self, name: str) -> int:
        """The id of the work status called ``name`` (``Open``, ``Done``); read once."""
        if name not in self._statuses:
            rows = self.rpc.search_read("project.work.status", [["name", "=", name]], ["id"])
            self._statuses[name] = rows[0]["id"]
        return self._statuses[name]

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

    # --- projects -----------------------------------------------------------------------
    def find_works(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """This company's projects and tasks by key:
        ``{key: {"id", "timesheet_works", "type", ...}}``."""
        if not keys:
            return {}
        comments = [WORK_KEY.format(key=k) for k in keys]
        rows = self.rpc.search_read(
            "project.work",
            [["company", "=", self.ids.company], ["comment", "in", comments]],
            ["comment", "type", "timesheet_works", "name", "list_price", "parent", "status"],
            context={"active_test": False},
        )
        return {r["comment"].split(":", 1)[1]: r for r in rows}

    def upsert_project(
        self,
        key: str,
        name: str,
        customer_code: str,
        tasks: Sequence[TaskSpec],
        list_price: Decimal,
        invoice_method: str = "timesheet",
        tax_treatment: TaxTreatment | None = None,
    ) -> dict[str, int]:
        """Create or update one project (:meth:`upsert_projects`); work ids by key."""
        spec = ProjectSpec(
            key, name, customer_code, tuple(tasks), list_price, invoice_method, tax_treatment
        )
        return self.upsert_projects([spec])[0]

    def upsert_projects(self, specs: Sequence[ProjectSpec]) -> list[dict[str, int]]:
        """Create the projects Tryton lacks, with their tasks, in one bulk call, and update
        the others' name and prices and add their missing tasks; give each customer the tax
        rule of its spec's treatment in this company (:meth:`apply_tax_treatments`). Returns,
        per spec, the work ids by key (the project's under its key). Four calls for a batch
        of new projects, plus one write per distinct tax rule that some customer lacks.

        Raises ``LookupError`` when a customer does not exist in Tryton or the company has
        no tax rule for a treatment, and Tryton's refusal (:class:`~.rpc.TrytonError`) of
        any new project: then none of them is created.
        """
        rows = self.rpc.search_read(
            "party.party",
            [["code", "in", sorted({s.customer_code for s in specs})]],
            ["code", "customer_tax_rule"],
            context={"active_test": False},
        )
        parties = {str(r["code"]): int(r["id"]) for r in rows}
        unknown = sorted({s.customer_code for s in specs} - set(parties))
        if unknown:
            raise LookupError(f"customer {', '.join(unknown)} does not exist in Tryton")
        self.apply_tax_treatments(
            {s.customer_code: s.tax_treatment for s in specs if s.tax_treatment},
            {str(r["code"]): (int(r["id"]), r["customer_tax_rule"]) for r in rows},
        )
        keys = sorted({k for s in specs for k in (s.key, *[t.key for t in s.tasks])})
        existing = self.find_works(keys)
        new = {s.key: s for s in specs if s.key not in existing}
        if new:
            self.rpc.create(
                "project.work",
                [self._project_values(s, parties[s.customer_code]) for s in new.values()],
            )
        with after_write() if new else nullcontext():
            for spec in {s.key: s for s in specs if s.key not in new}.values():
                self._update_project(spec, existing)
            works = self.find_works(keys) if new or len(existing) < len(keys) else existing
            return [
                {k: works[k]["id"] for k in (s.key, *[t.key for t in s.tasks]) if k in works}
                for s in specs
            ]

    def apply_tax_treatments(
        self,
        treatments: dict[str, TaxTreatment],
        parties: dict[str, tuple[int, int | None]],
    ) -> None:
        """Set each customer's ``customer_tax_rule`` in this company to its treatment's rule
        (none for ``domestic`` and ``no_vat``; the company's "Reverse charge" or "Outside
        the scope of VAT" rule): ``treatments`` by party code, ``parties`` ``{code: (id,
        current rule)}``. One write per distinct rule some customer lacks. Raises
        ``LookupError``, writing nothing, when the company has no rule for a treatment."""
        wanted: dict[str, int | None] = {}
        for code, treatment in treatments.items():
            if treatment in (TaxTreatment.DOMESTIC, TaxTreatment.NO_VAT):
                wanted[code] = None
            elif treatment in self.ids.tax_rules:
                wanted[code] = self.ids.tax_rules[treatment]
            else:
                raise LookupError(
                    f"company {self.ids.entity} has no tax rule for {treatment.value} (is it "
                    "VAT-registered? run `closeloop tryton init`)"
                )
        changes: dict[int | None, list[int]] = {}
        for code, rule in wanted.items():
            party, current = parties[code]
            if current != rule:
                changes.setdefault(rule, []).append(party)
        for rule, ids in changes.items():
            self.rpc.write("party.party", sorted(ids), {"customer_tax_rule": rule})

    def _task_values(self, task: TaskSpec) -> dict[str, Any]:
        return {
            "name": task.name,
            "type": "task",
            "company": self.ids.company,
            "status": self._status("Open"),
            "product": self.ids.product,
            "list_price": task.list_price,
            "timesheet_available": True,
            "comment": WORK_KEY.format(key=task.key),
        }

    def _project_values(self, spec: ProjectSpec, party: int) -> dict[str, Any]:
        return {
            "name": spec.name,
            "type": "project",
            "company": self.ids.company,
            "party": party,
            "status": self._status("Open"),
            "project_invoice_method": spec.invoice_method,
            "product": self.ids.product,
            "list_price": spec.list_price,
            "timesheet_available": True,
            "comment": WORK_KEY.format(key=spec.key),
            "children": [["create", [self._task_values(t) for t in spec.tasks]]],
        }

    def _update_project(self, spec: ProjectSpec, existing: dict[str, dict[str, Any]]) -> None:
        project = existing[spec.key]["id"]
        new = [self._task_values(t) for t in spec.tasks if t.key not in existing]
        values: dict[str, Any] = {"name": spec.name, "list_price": spec.list_price}
        if new:
            values["children"] = [["create", new]]
        self.rpc.write("project.work", [project], values)
        for task in spec.tasks:
            if task.key in existing and existing[task.key]["list_price"] != task.list_price:
                self.rpc.write(
                    "project.work",
                    [existing[task.key]["id"]],
                    {"list_price": task.list_price, "name": task.name},
                )

    def close_project(self, key: str, on: date | None = None) -> bool:
        """Set the project and its tasks to Done and end their timesheets on ``on`` (default
        today; Tryton then refuses time logged after it), never delete; ``False`` if unknown."""
        works = self.find_works([key])
        if key not in works:
            return False
        project = works[key]["id"]
        children = self.rpc.search_read("project.work", [["parent", "child_of", [project]]], ["id"])
        self.rpc.write(
            "project.work",
            [c["id"] for c in children],
            {
                "status": self._status("Done"),
                "progress": 1.0,
                "timesheet_end_date": on or datetime.now(UTC).date(),
            },
        )
        return True


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
