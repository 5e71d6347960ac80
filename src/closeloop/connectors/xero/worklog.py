"""Recorded time in Xero: lines on work-in-progress drafts (:mod:`.marks`).

Xero's Accounting API keeps no timesheets (its Projects API does, one time entry a call,
which at 60 calls a minute would take 17 minutes per 1,000 entries). A batch of time entries
becomes one new draft per project holding the batch's lines of that project, all in one
``PUT``: a line per entry at its task's item (so at the task's rate, account and tax type
as the project's set-up left them), tracked to the project, its description its day, the
person, the task and its key. An entry on an unknown task, a closed project, or a project
that is not set up is refused alone, before anything is written. Time of a fixed-fee or
retainer engagement is recorded for cost only elsewhere (its invoices bill charges): Xero
keeps none of it, and the entry is answered as not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from closeloop.connectors.xero.client import (
    XeroClient,
    quoted,
    recent,
    validation_messages,
)
from closeloop.connectors.xero.marks import item_code, mark_of, time_description, wip_reference
from closeloop.connectors.xero.projects import ElementRefused, Projects
from closeloop.domain.operations import AddTimesheetLine

FIND_DAYS = 45
"""How far back :func:`find_lines` looks (by the drafts' and invoices' last change): a lost
answer is looked up soon after it was lost."""


class Worklog:
    """Time lines of the organisation's projects."""

    def __init__(self, client: XeroClient, projects: Projects) -> None:
        self.client = client
        self.projects = projects
        self._known: dict[str, dict[str, Any]] = {}  # items by code

    def _items(self, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items of ``codes``: cached ones, the others read (one call per 25). Only an
        item's existence and whether it is sold are used: a line takes its rate, account
        and tax type from the item in Xero, so another worker's change of rate is never
        stale here."""
        found = {c: self._known[c] for c in codes if c in self._known}
        unique = sorted(set(codes) - set(found))
        clauses = [f"Code=={quoted(c)}" for c in unique]
        for row in self.client.where_in("Items", clauses, paged=False):  # Xero pages no items
            found[str(row["Code"])] = self._known[str(row["Code"])] = row
        return found

    def add(self, entries: Sequence[AddTimesheetLine]) -> list[dict[str, Any] | Exception]:
        """Record ``entries``; one result per entry: ``{"line": LineItemID}``, ``{"line":
        None, "recorded": False}`` (cost-only time) or the refusal."""
        projects = {e.task_key.partition(":")[0] for e in entries}
        anchors = self.projects.anchors(sorted(p for p in projects if p))
        options = self.projects.options(active=sorted(projects))
        items = self._items([item_code(e.task_key) for e in entries])
        results: list[dict[str, Any] | Exception] = []
        drafts: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for position, entry in enumerate(entries):
            project, _, task = entry.task_key.partition(":")
            item = items.get(item_code(entry.task_key))
            anchor = anchors.get(project)
            option = options.get(project)
            if anchor is None or option is None:
                results.append(LookupError(f"project {project!r} is not set up in Xero"))
            elif option.get("Status") != "ACTIVE":
                results.append(ElementRefused([f"project {project} is closed in Xero"]))
            elif item is None:
                results.append(LookupError(f"task {entry.task_key!r} is not set up in Xero"))
            elif not item.get("IsSold"):
                results.append({"line": None, "recorded": False})
            else:
                results.append({})
                line = {
                    "Description": time_description(
                        entry.date, entry.employee_name, task, entry.key
                    ),
                    "Quantity": entry.hours,
                    "ItemCode": item["Code"],  # its rate, account and tax type
                    "Tracking": self.projects.tracking(project),
                }
                drafts.setdefault(project, []).append((position, line))
        if drafts:
            self._write(drafts, anchors, results)
        return results

    def _write(
        self,
        drafts: dict[str, list[tuple[int, dict[str, Any]]]],
        anchors: dict[str, Any],
        results: list[dict[str, Any] | Exception],
    ) -> None:
        keys = sorted(drafts)
        elements = [
            {
                "Type": "ACCREC",
                "Status": "DRAFT",
                "Reference": wip_reference(k),
                "Contact": {"ContactID": anchors[k].contact_id},
                "CurrencyCode": anchors[k].currency,
                "LineAmountTypes": "Exclusive",
                "LineItems": [line for _, line in drafts[k]],
            }
            for k in keys
        ]
        answer = self.client.request(
            "PUT", "Invoices", params={"summarizeErrors": "false"}, body={"Invoices": elements}
        )
        for key, element in zip(keys, answer.get("Invoices") or [], strict=False):
            messages = validation_messages(element)
            lines = {mark_of(li.get("Description")): li for li in element.get("LineItems") or []}
            for position, line in drafts[key]:
                if messages:
                    results[position] = ElementRefused(messages)
                else:
                    written = lines.get(mark_of(line["Description"])) or {}
                    results[position] = {"line": written.get("LineItemID")}


def find_lines(client: XeroClient, keys: Sequence[str]) -> dict[str, str]:
    """The time lines of entry ``keys`` the organisation holds (on drafts or invoices changed
    in the last :data:`FIND_DAYS` days), ``{key: LineItemID}``."""
    wanted = set(keys)
    found: dict[str, str] = {}
    for page in client.pages(
        "Invoices",
        "Invoices",
        params={"where": 'Type=="ACCREC"', "Statuses": "DRAFT,SUBMITTED,AUTHORISED,PAID"},
        modified_since=recent(FIND_DAYS),
    ):
        for invoice in page:
            for line in invoice.get("LineItems") or []:
                key = mark_of(line.get("Description"))
                if key in wanted:
                    found[str(key)] = str(line.get("LineItemID"))
    return found
