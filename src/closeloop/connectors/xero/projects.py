"""Projects in Xero (:mod:`.marks`): the tracking option, the items of its tasks and its
anchor draft, set up for many projects in a few calls.

Calls for a batch of ``n`` new projects: one read of the tracking category (cached), one
``PUT`` of each new option (Xero's ``createTrackingOptions`` takes one option), one read and
one write of the items, one read and one write of the anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from closeloop.connectors.xero.client import (
    XeroApiError,
    XeroClient,
    quoted,
    validation_messages,
)
from closeloop.connectors.xero.marks import Anchor, anchor_of, item_code, wip_reference
from closeloop.domain.keys import task_key
from closeloop.domain.operations import UpsertProject


class ElementRefused(XeroApiError):
    """Xero refused one element of a batch (its validation messages); nothing of it was
    written."""

    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__(400, "; ".join(messages) or "refused")


@dataclass(frozen=True)
class Accounts:
    """The codes the hub posts to: ``sales`` (time, milestones, retainers: Xero's default UK
    chart's 200 Sales), ``expenses`` (re-billed expenses: 260 Other Revenue); ``tax_types``
    by tax treatment (:data:`~.marks.DEFAULT_TAX_TYPES`); the tracking category of projects."""

    sales: str
    expenses: str
    tax_types: dict[str, str]
    tracking_category: str


class Projects:
    """The projects of one organisation (see the module docstring)."""

    def __init__(self, client: XeroClient, accounts: Accounts) -> None:
        self.client = client
        self.accounts = accounts
        self._category: dict[str, Any] | None = None
        self._anchor_cache: dict[str, Anchor] = {}

    def forget(self) -> None:
        """Drop what is cached (the tracking category and its options, the anchors), to read
        it again."""
        self._category = None
        self._anchor_cache = {}

    # --- tracking ----------------------------------------------------------------------------
    def category(self) -> dict[str, Any]:
        """The tracking category of projects, made when missing; cached."""
        if self._category is None:
            name = self.accounts.tracking_category
            rows = (
                self.client.request(
                    "GET", "TrackingCategories", params={"includeArchived": "true"}
                ).get("TrackingCategories")
                or []
            )
            found = [r for r in rows if r.get("Name") == name and r.get("Status") == "ACTIVE"]
            if not found:
                made = self.client.request(
                    "PUT",
                    "TrackingCategories",
                    body={"Name": name},
                )
                found = list(made.get("TrackingCategories") or [])
                found[0].setdefault("Options", [])
            self._category = found[0]
        return self._category

    def options(self, active: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """The category's options by name (project key). The category is cached (another
        worker may have added or archived an option since): when any of ``active`` is
        missing or not active, it is read again first."""
        options = {str(o["Name"]): o for o in self.category().get("Options") or []}
        if any((options.get(k) or {}).get("Status") != "ACTIVE" for k in active):
            self._category = None
            options = {str(o["Name"]): o for o in self.category().get("Options") or []}
        return options

    def _add_option(self, key: str) -> dict[str, Any]:
        category = self.category()
        answer = self.client.request(
            "PUT",
            f"TrackingCategories/{category['TrackingCategoryID']}/Options",
            body={"Name": key},
        )
        option = dict((answer.get("Options") or [{}])[0])
        category.setdefault("Options", []).append(option)
        return option

    def set_option_status(self, key: str, status: str) -> bool:
        """Set the option of ``key`` ``ACTIVE`` or ``ARCHIVED``; ``False`` when there is no
        such project. (Closing a project archives its option: Xero keeps at most 100 active
        options per category.)"""
        option = self.options(active=(key,)).get(key)
        if option is None:
            return False
        if option.get("Status") != status:
            category = self.category()
            self.client.request(
                "POST",
                f"TrackingCategories/{category['TrackingCategoryID']}/Options/"
                f"{option['TrackingOptionID']}",
                body={"Name": key, "Status": status},
            )
            option["Status"] = status
        return True

    def tracking(self, key: str) -> list[dict[str, str]]:
        """A line's ``Tracking`` for project ``key``."""
        return [{"Name": self.accounts.tracking_category, "Option": key}]

    # --- anchors -----------------------------------------------------------------------------
    def anchors(self, keys: Sequence[str]) -> dict[str, Anchor]:
        """The anchors of the projects ``keys``: cached ones (an anchor changes only when its
        project is set up again), the others read (one call per 25 projects; the read
        brings the projects' time drafts too, which is why it is cached)."""
        found = {k: self._anchor_cache[k] for k in keys if k in self._anchor_cache}
        unique = sorted(set(keys) - set(found))
        clauses = [f"Reference=={quoted(wip_reference(k))}" for k in unique]
        for row in self.client.where_in(
            "Invoices", clauses, params=lambda clause: {"where": clause, "Statuses": "DRAFT"}
        ):
            anchor = anchor_of(row)
            if anchor is not None:
                found[anchor.project_key] = self._anchor_cache[anchor.project_key] = anchor
        return found

    # --- set-up ------------------------------------------------------------------------------
    def upsert(
        self, projects: Sequence[UpsertProject], contacts: dict[str, str]
    ) -> list[dict[str, Any] | Exception]:
        """Set up each project: its option, its tasks' items, its anchor. ``contacts`` maps
        customer codes to ``ContactID``; one result per project (``{"project_id",
        "works"}`` or the refusal)."""
        results: list[dict[str, Any] | Exception] = []
        todo: list[UpsertProject] = []
        for project in projects:
            if project.customer_code not in contacts:
                results.append(LookupError(f"no Xero contact {project.customer_code!r}"))
            else:
                results.append({})
                todo.append(project)
        if not todo:
            return results
        refusals = self._items(todo)
        refusals.update(self._anchors(todo, contacts, refusals))
        options = self.options(active=[p.key for p in todo])
        for position, project in enumerate(projects):
            if isinstance(results[position], Exception):
                continue
            if project.key in refusals:
                results[position] = ElementRefused(refusals[project.key])
                continue
            option = options.get(project.key) or self._add_option(project.key)
            if option.get("Status") == "ARCHIVED":
                self.set_option_status(project.key, "ACTIVE")
            option_id = str(option.get("TrackingOptionID"))
            results[position] = {"project_id": option_id, "works": {project.key: option_id}}
        return results

    def tax_type(self, project: UpsertProject) -> str:
        """The Xero tax type of the project's tax treatment (domestic when none is given)."""
        treatment = project.tax_treatment.value if project.tax_treatment else "domestic"
        return self.accounts.tax_types[treatment]

    def _items(self, projects: Sequence[UpsertProject]) -> dict[str, list[str]]:
        """Write every task's item (created or updated by code); the refusals by project."""
        items, owner = [], []
        for project in projects:
            for task in project.tasks:
                key = task_key(project.key, task.name)
                items.append(
                    {
                        "Code": item_code(key),
                        "Name": task.name[:50],
                        "Description": key,
                        "IsSold": project.billing_method == "time_and_materials",
                        "IsPurchased": False,
                        "SalesDetails": {
                            "UnitPrice": task.hourly_rate,
                            "AccountCode": self.accounts.sales,
                            "TaxType": self.tax_type(project),
                        },
                    }
                )
                owner.append(project.key)
        answer = self.client.request(
            "POST",
            "Items",
            params={"summarizeErrors": "false"},
            body={"Items": items},
        )
        refusals: dict[str, list[str]] = {}
        for key, element in zip(owner, answer.get("Items") or [], strict=False):
            messages = validation_messages(element)
            if messages:
                refusals.setdefault(key, []).extend(messages)
        return refusals

    def _anchors(
        self,
        projects: Sequence[UpsertProject],
        contacts: dict[str, str],
        refused: dict[str, list[str]],
    ) -> dict[str, list[str]]:
        """Create or update each project's anchor; the refusals by project."""
        for project in projects:  # read again: another worker may have set it up meanwhile
            self._anchor_cache.pop(project.key, None)
        existing = self.anchors([p.key for p in projects if p.key not in refused])
        elements, owner = [], []
        for project in projects:
            if project.key in refused:
                continue
            anchor = Anchor(
                project_key=project.key,
                contact_id=contacts[str(project.customer_code)],
                currency=project.currency,
                tax_type=self.tax_type(project),
                account_code=self.accounts.sales,
                billing_method=project.billing_method,
            )
            before = existing.get(project.key)
            if before is not None and before == Anchor(
                **{**anchor.__dict__, "invoice_id": before.invoice_id}
            ):
                continue
            element: dict[str, Any] = {
                "Type": "ACCREC",
                "Status": "DRAFT",
                "Reference": wip_reference(project.key),
                "Contact": {"ContactID": anchor.contact_id},
                "CurrencyCode": anchor.currency,
                "LineAmountTypes": "Exclusive",
                "LineItems": [anchor.line()],
            }
            if before is not None:
                element["InvoiceID"] = before.invoice_id
            elements.append(element)
            owner.append(project.key)
        if not elements:
            return {}
        answer = self.client.request(
            "POST",
            "Invoices",
            params={"summarizeErrors": "false"},
            body={"Invoices": elements},
        )
        refusals: dict[str, list[str]] = {}
        for key, element in zip(owner, answer.get("Invoices") or [], strict=True):
            messages = validation_messages(element)
            written = None if messages else anchor_of(element)
            if written is not None:
                self._anchor_cache[key] = written
            elif messages:
                refusals[key] = messages
        return refusals
