"""What closeloop does in Tryton, each operation idempotent through a key visible in Tryton.

Keys, and why:
- Customer: the party ``code``. Tryton lets a code be given at creation (it is read-only
  afterwards and unique), it shows on every screen and report, and it is what finance
  searches by.
- Project and task: a ``closeloop:<key>`` line in the work's ``comment``. The work
  ``number`` comes from a sequence and cannot be written; the comment is searchable, kept
  off invoices, and survives renames.
- Timesheet line: a ``[cl:<key>]`` marker at the end of the ``description`` (the line's
  ``uuid`` cannot be written over RPC). Lookups read the markers of the batch's works and
  dates in one call.
- Invoice: the customer ``reference`` (``account.invoice.reference``), set right after the
  project is invoiced; an unreferenced draft invoice of the project is adopted on retry.
- Payment: the payment move's ``description`` (the pay wizard's description), with the
  invoice as the move's origin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.invoicing import InvoicingOperations
from closeloop.connectors.tryton.rpc import TrytonRPC, TrytonUserError
from closeloop.connectors.tryton.setup import TrytonIds, ensure_country
from closeloop.domain.taxids import tax_id_forms
from closeloop.mdm.matching import Party, normalize_name

WORK_KEY = "closeloop:{key}"
LINE_MARK = "[cl:{key}]"


@dataclass(frozen=True)
class TaskSpec:
    """A task of a project: its key, name and hourly list price."""

    key: str
    name: str
    list_price: Decimal


@dataclass(frozen=True)
class TimesheetEntry:
    """An approved time entry to record: ``key`` is its idempotency key; ``employee_key``
    and ``employee_name`` identify the consultant; ``task_key`` the task worked on."""

    key: str
    employee_key: str
    employee_name: str
    task_key: str
    date: date
    hours: Decimal
    description: str = ""


class TrytonOperations(InvoicingOperations):
    """The hub's operations on one Tryton database (see the module docstring for keys);
    invoicing and payments come from :class:`~.invoicing.InvoicingOperations`."""

    def __init__(self, rpc: TrytonRPC, ids: TrytonIds) -> None:
        self.rpc = rpc
        self.ids = ids
        self._status_open: int | None = None
        # what bulk timesheet imports look up again and again; dropped on any refusal
        self._employees: dict[str, int] = {}
        self._timesheet_works: dict[str, int] = {}

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

    def customer_candidates(
        self, tax_ids: Sequence[str], name: str, country: str = ""
    ) -> list[Party]:
        """Parties that could be the customer: those holding any of ``tax_ids`` (in any of
        the forms Tryton may have stored: Tryton formats some, ``CHE-100.155.212``) and those
        whose name contains the name's longest significant word; with their tax ids and
        first address, as :class:`~closeloop.mdm.matching.Party` (``id`` is the party code)."""
        ids: set[int] = set()
        codes = sorted({form for t in tax_ids if t for form in tax_id_forms(t, country)})
        if codes:
            rows = self.rpc.search_read("party.identifier", [["code", "in", codes]], ["party"])
            ids |= {r["party"] for r in rows}
        words = sorted(normalize_name(name).split(), key=len, reverse=True)
        if words:
            rows = self.rpc.search_read(
                "party.party", [["name", "ilike", f"%{words[0]}%"]], ["id"], limit=50
            )
            ids |= {r["id"] for r in rows}
        if not ids:
            return []
        parties = self.rpc.search_read("party.party", [["id", "in", sorted(ids)]], ["code", "name"])
        identifiers: dict[int, list[str]] = {}
        for row in self.rpc.search_read(
            "party.identifier", [["party", "in", sorted(ids)]], ["party", "code"]
        ):
            identifiers.setdefault(row["party"], []).append(row["code"])
        addresses: dict[int, dict[str, Any]] = {}
        for row in self.rpc.search_read(
            "party.address",
            [["party", "in", sorted(ids)]],
            ["party", "street", "city", "postal_code", "country"],
        ):
            addresses.setdefault(row["party"], row)
        countries = (
            {
                c["id"]: c["code"]
                for c in self.rpc.search_read(
                    "country.country",
                    [
                        [
                            "id",
                            "in",
                            sorted({a["country"] for a in addresses.values() if a["country"]}),
                        ]
                    ],
                    ["code"],
                )
            }
            if addresses
            else {}
        )
        out = []
        for party in parties:
            address = addresses.get(party["id"], {})
            out.append(
                Party(
                    id=str(party["code"]),
                    name=str(party["name"]),
                    country=countries.get(address.get("country"), ""),
                    tax_ids=tuple(identifiers.get(party["id"], ())),
                    street=(address.get("street") or "").replace("\n", " "),
                    city=address.get("city") or "",
                    postal_code=address.get("postal_code") or "",
                )
            )
        return out

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
        up to date; returns its id. ``tax_ids`` are ``(scheme, value)`` pairs with Tryton's
        identifier types (``eu_vat``, ``gb_vat``, ``us_ein``, ...)."""
        country_id = ensure_country(self.rpc, country)
        addr = {"invoice": True, "country": country_id, **_address_values(address or {})}
        found = self.find_customers([code])
        if code not in found:
            values: dict[str, Any] = {
                "name": name,
                "code": code,
                "addresses": [["create", [addr]]],
                "identifiers": [["create", [{"type": t, "code": v} for t, v in tax_ids]]],
            }
            if email:
                values["contact_mechanisms"] = [["create", [{"type": "email", "value": email}]]]
            return self.rpc.create("party.party", [values])[0]
        party = found[code]
        current = self.rpc.search_read(
            "party.party", [["id", "=", party]], ["name", "addresses", "identifiers"]
        )[0]
        known = {
            (i["type"], i["code"])
            for i in self.rpc.search_read(
                "party.identifier", [["party", "=", party]], ["type", "code"]
            )
        }
        missing = [{"type": t, "code": v} for t, v in tax_ids if (t, v) not in known]
        values = {"name": name}
        if missing:
            values["identifiers"] = [["create", missing]]
        if current["addresses"]:
            values["addresses"] = [["write", current["addresses"][:1], addr]]
        else:
            values["addresses"] = [["create", [addr]]]
        self.rpc.write("party.party", [party], values)
        return party

    # --- projects -----------------------------------------------------------------------
    def _open_status(self) -> int:
        if self._status_open is None:
            rows = self.rpc.search_read("project.work.status", [["name", "=", "Open"]], ["id"])
            self._status_open = rows[0]["id"]
        return self._status_open

    def find_works(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Projects and tasks by key: ``{key: {"id", "timesheet_works", "type", ...}}``."""
        if not keys:
            return {}
        comments = [WORK_KEY.format(key=k) for k in keys]
        rows = self.rpc.search_read(
            "project.work",
            [["comment", "in", comments]],
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
    ) -> dict[str, int]:
        """Create the project ``key`` with its tasks, or update its name, prices and add
        missing tasks. Returns the work ids by key (the project's under ``key``).

        Raises ``LookupError`` when the customer does not exist in Tryton.
        """
        party = self.find_customers([customer_code]).get(customer_code)
        if party is None:
            raise LookupError(f"customer {customer_code} does not exist in Tryton")
        status = self._open_status()

        def task_values(task: TaskSpec) -> dict[str, Any]:
            return {
                "name": task.name,
                "type": "task",
                "company": self.ids.company,
                "status": status,
                "product": self.ids.product,
                "list_price": task.list_price,
                "timesheet_available": True,
                "comment": WORK_KEY.format(key=task.key),
            }

        existing = self.find_works([key, *[t.key for t in tasks]])
        if key not in existing:
            self.rpc.create(
                "project.work",
                [
                    {
                        "name": name,
                        "type": "project",
                        "company": self.ids.company,
                        "party": party,
                        "status": status,
                        "project_invoice_method": invoice_method,
                        "product": self.ids.product,
                        "list_price": list_price,
                        "timesheet_available": True,
                        "comment": WORK_KEY.format(key=key),
                        "children": [["create", [task_values(t) for t in tasks]]],
                    }
                ],
            )
        else:
            project = existing[key]["id"]
            new = [task_values(t) for t in tasks if t.key not in existing]
            values: dict[str, Any] = {"name": name, "list_price": list_price}
            if new:
                values["children"] = [["create", new]]
            self.rpc.write("project.work", [project], values)
            for task in tasks:
                if task.key in existing and existing[task.key]["list_price"] != task.list_price:
                    self.rpc.write(
                        "project.work",
                        [existing[task.key]["id"]],
                        {"list_price": task.list_price, "name": task.name},
                    )
        return {k: v["id"] for k, v in self.find_works([key, *[t.key for t in tasks]]).items()}

    def close_project(self, key: str, on: date | None = None) -> bool:
        """Set the project and its tasks to Done and end their timesheets on ``on`` (default
        today; Tryton then refuses time logged after it), never delete; ``False`` if unknown."""
        works = self.find_works([key])
        if key not in works:
            return False
        done = self.rpc.search_read("project.work.status", [["name", "=", "Done"]], ["id"])[0]
        project = works[key]["id"]
        children = self.rpc.search_read("project.work", [["parent", "child_of", [project]]], ["id"])
        self.rpc.write(
            "project.work",
            [c["id"] for c in children],
            {
                "status": done["id"],
                "progress": 1.0,
                "timesheet_end_date": on or datetime.now(UTC).date(),
            },
        )
        return True

    # --- people and time ----------------------------------------------------------------
    def ensure_employees(self, people: Iterable[tuple[str, str]]) -> dict[str, int]:
        """Employee ids by person key, creating party (code ``EMP-<key>``) and employee for
        people Tryton does not know yet: three calls at most, whatever the count."""
        wanted = {k: v for k, v in people if k not in self._employees}
        if not wanted:
            return dict(self._employees)
        codes = {f"EMP-{k}": k for k in wanted}
        rows = self.rpc.search_read(
            "company.employee",
            [["party.code", "in", list(codes)]],
            ["party.code"],
            context={"active_test": False},
        )
        found = {codes[r["party."]["code"]]: r["id"] for r in rows}
        missing = [k for k in wanted if k not in found]
        if missing:
            parties = self.rpc.create(
                "party.party", [{"name": wanted[k], "code": f"EMP-{k}"} for k in missing]
            )
            employees = self.rpc.create(
                "company.employee", [{"party": p, "company": self.ids.company} for p in parties]
            )
            found.update(zip(missing, employees, strict=True))
        self._employees.update(found)
        return dict(self._employees)

    def find_timesheet_lines(
        self, entries: Sequence[TimesheetEntry], work_of: dict[str, int]
    ) -> dict[str, int]:
        """Line ids by key of ``entries`` already recorded: one search on the exact
        descriptions they would have (returns only the lines that exist, usually none)."""
        descriptions = {_line_description(e): e.key for e in entries}
        rows = self.rpc.search_read(
            "timesheet.line",
            [
                ["work", "in", sorted({work_of[e.task_key] for e in entries})],
                ["date", ">=", min(e.date for e in entries)],
                ["date", "<=", max(e.date for e in entries)],
                ["description", "in", list(descriptions)],
            ],
            ["description"],
        )
        return {descriptions[r["description"]]: r["id"] for r in rows}

    def add_timesheet_lines(self, entries: Sequence[TimesheetEntry]) -> dict[str, int]:
        """Record ``entries`` in bulk, skipping those already recorded; line ids by key.

        Raises ``LookupError`` naming tasks Tryton does not know.
        """
        if not entries:
            return {}
        wanted = sorted({e.task_key for e in entries} - set(self._timesheet_works))
        if wanted:
            tasks = self.find_works(wanted)
            self._timesheet_works.update({k: v["timesheet_works"][0] for k, v in tasks.items()})
        unknown = sorted({e.task_key for e in entries} - set(self._timesheet_works))
        if unknown:
            raise LookupError(f"tasks unknown to Tryton: {', '.join(unknown)}")
        work_of = self._timesheet_works
        self._check_open(entries, work_of)
        done = self.find_timesheet_lines(entries, work_of)
        todo = [e for e in entries if e.key not in done]
        if todo:
            employees = self.ensure_employees((e.employee_key, e.employee_name) for e in todo)
            try:
                ids = self._create_lines(todo, employees, work_of)
            except Exception:
                self._employees.clear()
                self._timesheet_works.clear()
                raise
            done.update(zip((e.key for e in todo), ids, strict=True))
        return {e.key: done[e.key] for e in entries}

    def _check_open(self, entries: Sequence[TimesheetEntry], work_of: dict[str, int]) -> None:
        """Raise ``TrytonUserError`` (closed period) for the first entry dated after its
        task's timesheet end (a closed project): one read per batch, and a message finance
        can act on instead of Tryton's domain error."""
        works = sorted({work_of[e.task_key] for e in entries})
        rows = self.rpc.search_read("timesheet.work", [["id", "in", works]], ["timesheet_end_date"])
        ends = {r["id"]: r["timesheet_end_date"] for r in rows if r["timesheet_end_date"]}
        for entry in entries:
            end = ends.get(work_of[entry.task_key])
            if end is not None and entry.date > end:
                raise TrytonUserError(
                    f"project task {entry.task_key} is closed: its timesheet ended on "
                    f"{end.isoformat()}, so time of {entry.date.isoformat()} cannot be "
                    "recorded (the period is closed)"
                )

    def _create_lines(
        self, todo: Sequence[TimesheetEntry], employees: dict[str, int], work_of: dict[str, int]
    ) -> list[int]:
        return self.rpc.create(
            "timesheet.line",
            [
                {
                    "company": self.ids.company,
                    "employee": employees[e.employee_key],
                    "work": work_of[e.task_key],
                    "date": e.date,
                    "duration": timedelta(hours=float(e.hours)),
                    "description": _line_description(e),
                }
                for e in todo
            ],
        )


def _line_description(entry: TimesheetEntry) -> str:
    """The entry's text with its key marker at the end."""
    return f"{entry.description} {LINE_MARK.format(key=entry.key)}".strip()


def _address_values(address: dict[str, Any]) -> dict[str, Any]:
    street = "\n".join(p for p in (address.get("line1"), address.get("line2")) if p)
    values = {
        "street": street or None,
        "city": address.get("city"),
        "postal_code": address.get("postal_code"),
    }
    return {k: v for k, v in values.items() if v}
