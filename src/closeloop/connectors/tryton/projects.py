"""Projects in Tryton: a ``project.work`` per engagement with one child task per role (time is
recorded on those) and, for a fixed-fee engagement, one child work per milestone.

Billing methods: a time-and-materials project is invoiced on timesheets (Tryton's
``project_invoice_method`` ``timesheet``: its project invoicing bills the recorded time); a
fixed-fee or retainer project is ``manual``, so its time stays for cost and margin
(``timesheet_cost``, ``project_revenue``) but Tryton's project invoicing never bills it: the hub
bills milestones, fees and overage as charges (:mod:`.charges`).

A milestone is a child work of type task keyed ``<project key>:milestone:<milestone key>``
(:func:`~.keys.milestone_work_key`, in its ``comment`` as every work's key), named as the
milestone, without product and with the milestone's amount as ``list_price`` (so that
``project_revenue`` counts it once, not per hour), not open for time. Tryton 8.2's project
works have no planned or end date (``timesheet_end_date`` closes a work for time), so a
milestone's planned date is not kept in Tryton.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.charges import billed_lines, net_billed
from closeloop.connectors.tryton.keys import WORK_KEY
from closeloop.connectors.tryton.rpc import TrytonError, TrytonRPC, after_write
from closeloop.connectors.tryton.setup import TrytonIds
from closeloop.connectors.tryton.taxes import apply_tax_treatments
from closeloop.domain.commands import ExceptionClass
from closeloop.domain.taxrules import TaxTreatment

_WORK_FIELDS = [
    "comment",
    "type",
    "timesheet_works",
    "name",
    "list_price",
    "parent",
    "status",
    "project_invoice_method",
]


@dataclass(frozen=True)
class TaskSpec:
    """A task of a project: its key, name and hourly list price."""

    key: str
    name: str
    list_price: Decimal


@dataclass(frozen=True)
class MilestoneSpec:
    """A milestone of a fixed-fee project: its work ``key``
    (:func:`~.keys.milestone_work_key`), ``name``, ``amount`` (in the project's currency),
    ``planned_date`` and ``charge_key``, the key of the charge that bills it
    (:func:`~.keys.milestone_charge_key`)."""

    key: str
    name: str
    amount: Decimal
    charge_key: str
    planned_date: date | None = None


@dataclass(frozen=True)
class ProjectSpec:
    """A project to create or bring up to date: its ``key``, ``name``, the customer's party
    code, its tasks, hourly list price and Tryton invoice method (``timesheet`` for time and
    materials, ``manual`` for fixed fee and retainer); ``tax_treatment``: how the customer's
    invoices of this company are taxed (``None``: left as Tryton has it); ``milestones``:
    a fixed-fee project's."""

    key: str
    name: str
    customer_code: str
    tasks: tuple[TaskSpec, ...] = field(default_factory=tuple)
    list_price: Decimal = Decimal(0)
    invoice_method: str = "timesheet"
    tax_treatment: TaxTreatment | None = None
    milestones: tuple[MilestoneSpec, ...] = field(default_factory=tuple)

    @property
    def keys(self) -> tuple[str, ...]:
        """The project's key, then its tasks' and milestones'."""
        return (self.key, *[t.key for t in self.tasks], *[m.key for m in self.milestones])


class MilestoneInvoicedError(TrytonError):
    """An upsert would change the amount of a milestone already invoiced: refused, nothing
    written (credit the invoice first, or leave the amount)."""

    error_class = ExceptionClass.CONFLICT


class ProjectOperations:
    """The project part of :class:`~.operations.TrytonOperations` (a mixin: it needs ``rpc``,
    ``ids`` and the work status cache)."""

    rpc: TrytonRPC
    ids: TrytonIds
    _statuses: dict[str, int]

    def _status(self, name: str) -> int:
        """The id of the work status called ``name`` (``Open``, ``Done``); read once."""
        if name not in self._statuses:
            rows = self.rpc.search_read("project.work.status", [["name", "=", name]], ["id"])
            self._statuses[name] = rows[0]["id"]
        return self._statuses[name]

    def find_works(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """This company's projects, tasks and milestones by key:
        ``{key: {"id", "timesheet_works", "type", "list_price", ...}}``."""
        if not keys:
            return {}
        comments = [WORK_KEY.format(key=k) for k in keys]
        rows = self.rpc.search_read(
            "project.work",
            [["company", "=", self.ids.company], ["comment", "in", comments]],
            _WORK_FIELDS,
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
        milestones: Sequence[MilestoneSpec] = (),
    ) -> dict[str, int]:
        """Create or update one project (:meth:`upsert_projects`); work ids by key."""
        spec = ProjectSpec(
            key,
            name,
            customer_code,
            tuple(tasks),
            list_price,
            invoice_method,
            tax_treatment,
            tuple(milestones),
        )
        return self.upsert_projects([spec])[0]

    def upsert_projects(self, specs: Sequence[ProjectSpec]) -> list[dict[str, int]]:
        """Create the projects Tryton lacks, with their tasks and milestones, in one bulk
        call, and update the others: name, invoice method and prices, missing tasks and
        milestones added, milestones renamed and re-valued (never removed); give each
        customer the tax rule of its spec's treatment in this company
        (:func:`~.taxes.apply_tax_treatments`). Returns, per spec, the work ids by key (the
        project's under its key). Four calls for a batch of new projects, plus one write per
        distinct tax rule that some customer lacks, one write per updated project and per
        changed task or milestone, and one search of invoice lines when a milestone's amount
        changes.

        Raises, writing nothing: ``LookupError`` when a customer does not exist in Tryton or
        the company has no tax rule for a treatment; :class:`MilestoneInvoicedError` when a
        milestone whose charge is billed (on a customer invoice that is not cancelled, and
        not credited) would get another amount; Tryton's refusal
        (:class:`~.rpc.TrytonError`) of any new project: then none of them is created.
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
        keys = sorted({k for s in specs for k in s.keys})
        existing = self.find_works(keys)
        self._refuse_invoiced_revaluations(specs, existing)
        apply_tax_treatments(
            self.rpc,
            self.ids,
            {s.customer_code: s.tax_treatment for s in specs if s.tax_treatment},
            {str(r["code"]): (int(r["id"]), r["customer_tax_rule"]) for r in rows},
        )
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
            return [{k: works[k]["id"] for k in s.keys if k in works} for s in specs]

    def _refuse_invoiced_revaluations(
        self, specs: Sequence[ProjectSpec], existing: dict[str, dict[str, Any]]
    ) -> None:
        """Raise :class:`MilestoneInvoicedError` for the first existing milestone of
        ``specs`` that would get another amount while its charge is billed."""
        changed = {
            m.charge_key: (spec, m, existing[m.key]["list_price"])
            for spec in specs
            for m in spec.milestones
            if m.key in existing and existing[m.key]["list_price"] != m.amount
        }
        if not changed:
            return
        billed = net_billed(billed_lines(self.rpc, self.ids.company, sorted(changed)))
        for charge_key, (spec, milestone, amount) in changed.items():
            if charge_key in billed:
                raise MilestoneInvoicedError(
                    f"milestone {milestone.name!r} of project {spec.key} is already invoiced "
                    f"at {amount} (charge {charge_key} on invoice "
                    f"{', '.join(billed[charge_key]) or 'without reference'}), so its amount "
                    f"cannot become {milestone.amount}: credit that invoice first, or keep "
                    "the amount"
                )

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

    def _milestone_values(self, milestone: MilestoneSpec) -> dict[str, Any]:
        return {
            "name": milestone.name,
            "type": "task",
            "company": self.ids.company,
            "status": self._status("Open"),
            "list_price": milestone.amount,
            "timesheet_available": False,
            "comment": WORK_KEY.format(key=milestone.key),
        }

    def _children(
        self, spec: ProjectSpec, existing: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The values of ``spec``'s tasks and milestones Tryton lacks."""
        return [self._task_values(t) for t in spec.tasks if t.key not in existing] + [
            self._milestone_values(m) for m in spec.milestones if m.key not in existing
        ]

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
            "children": [["create", self._children(spec, {})]],
        }

    def _update_project(self, spec: ProjectSpec, existing: dict[str, dict[str, Any]]) -> None:
        current = existing[spec.key]
        new = self._children(spec, existing)
        values: dict[str, Any] = {"name": spec.name, "list_price": spec.list_price}
        if current.get("project_invoice_method") != spec.invoice_method:
            values["project_invoice_method"] = spec.invoice_method
        if new:
            values["children"] = [["create", new]]
        self.rpc.write("project.work", [current["id"]], values)
        for task in spec.tasks:
            if task.key in existing and existing[task.key]["list_price"] != task.list_price:
                self.rpc.write(
                    "project.work",
                    [existing[task.key]["id"]],
                    {"list_price": task.list_price, "name": task.name},
                )
        for milestone in spec.milestones:
            found = existing.get(milestone.key)
            if found and (found["list_price"], found["name"]) != (
                milestone.amount,
                milestone.name,
            ):
                self.rpc.write(
                    "project.work",
                    [found["id"]],
                    {"list_price": milestone.amount, "name": milestone.name},
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
