"""Harvest's approval workflow and invoicing in the sandbox: locks, billable rates by the
project's ``bill_by``, approval (Harvest has no public approval endpoint: the sandbox offers it
under ``/__sandbox/approve``, as a manager's approval screen), invoices that import a
project's approved, unbilled time and expenses (``line_items_import``), and deleting an
invoice, which un-bills what it imported.

What the import does, by the *Harvest API v2* description (``line_items_import``) and
Harvest's help where that is silent:

- ``project_ids`` is required; each project must be the client's. ``time`` and ``expenses``
  each need a ``summary_type`` (time: project, task, people, detailed; expenses: project,
  category, people, detailed) and take ``from`` and ``to`` together or neither (neither: all
  unbilled records).
- Time becomes ``Service`` lines, expenses ``Product`` lines: the account's default invoice
  item categories, ``Service`` used for billable hours and ``Product`` for expenses
  (``use_as_service`` / ``use_as_expense`` in the contract's example). Only approved
  (``is_closed``), billable, unbilled records of billable projects are imported; each is
  then billed by the invoice (``is_billed``, ``invoice``) and locked.
- An expense line is quantity 1 at the summed cost (a detailed line of a unit-priced
  category: its units at the category's unit price). A negative expense (a refund) is
  imported as a negative line: the contract sets no minimum on ``total_cost``, and Harvest
  documents negative line items ("prepend your unit price with a minus sign").
- ``attach_receipt`` (boolean): Harvest attaches a PDF expense report with the receipts to
  the invoice. The invoice object of the API has no field for it, so the sandbox keeps the
  report's description (file name, expenses, receipts) for ``/__sandbox/invoices/{id}/
  attachments``.
- ``DELETE /invoices/{id}``: "all hours and expenses associated with that invoice will become
  unlocked and marked as uninvoiced" (Harvest help, deleting an invoice); an approval stays.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from closeloop.sandboxes.harvest.account import Account, HarvestError, stamp


def approve(
    account: Account, ids: list[int] | None, user_id: int | None, start: str, end: str
) -> int:
    """Approve time entries (by ids, or of a user in a period) and expenses alike, as a
    manager does in Harvest's approval screen; returns how many changed."""
    changed = 0
    now = stamp(account.clock())
    for resource in ("time_entries", "expenses"):
        for record in list(account.records[resource].values()):
            chosen = (
                record["id"] in ids
                if ids is not None
                else (user_id is None or record.get("user_id") == user_id)
                and start <= record["spent_date"] <= end
            )
            if chosen and not record.get("is_closed"):
                account.put(resource, {**record, "is_closed": True, "updated_at": now})
                changed += 1
    return changed


def withdraw_approval(account: Account, ids: list[int]) -> int:
    """Withdraw the approval of time entries (``ids``), as a manager does in Harvest's
    approval screen before correcting them; an invoiced entry keeps its approval (Harvest
    locks invoiced time). Returns how many changed."""
    changed = 0
    now = stamp(account.clock())
    for entry_id in ids:
        record = account.records["time_entries"].get(entry_id)
        if record and record.get("is_closed") and not record.get("invoice_id"):
            account.put("time_entries", {**record, "is_closed": False, "updated_at": now})
            changed += 1
    return changed


def invoice(account: Account, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /invoices``: with ``line_items_import`` the projects' approved, billable,
    unbilled time and expenses become line items and are marked invoiced (see the module
    docstring). Raises ``HarvestError(422)``."""
    client_id = body.get("client_id")
    if client_id not in account.records["clients"]:
        raise HarvestError(422, "Client can't be blank")
    number = str(body.get("number") or _next_number(account))
    if any(i["number"] == number for i in account.records["invoices"].values()):
        raise HarvestError(422, "Number has already been taken")
    spec = body.get("line_items_import")
    if spec is not None and not isinstance(spec, dict):
        raise HarvestError(422, "Line items import is invalid")
    spec = spec or {}
    rid = account.next_id("invoices")
    project_ids = _project_ids(account, client_id, spec) if spec else []
    time_spec = _period_spec(spec, "time", _TIME_SUMMARIES)
    expense_spec = _period_spec(spec, "expenses", _EXPENSE_SUMMARIES)
    lines, entries = _import_time(account, project_ids, time_spec)
    expense_lines, expenses = _import_expenses(account, project_ids, expense_spec)
    lines += expense_lines
    amount = round(sum(line["amount"] for line in lines), 2)
    now = stamp(account.clock())
    invoice = {
        "id": rid,
        "client_id": client_id,
        "number": number,
        "purchase_order": body.get("purchase_order") or "",
        "amount": amount,
        "due_amount": amount,
        "tax": None,
        "tax_amount": 0.0,
        "tax2": None,
        "tax2_amount": 0.0,
        "discount": None,
        "discount_amount": 0.0,
        "subject": body.get("subject") or "",
        "notes": body.get("notes") or "",
        "currency": body.get("currency") or account.records["clients"][client_id]["currency"],
        "state": "draft",
        # "the period during which time entries were added to this invoice"
        "period_start": (time_spec or {}).get("from"),
        "period_end": (time_spec or {}).get("to"),
        "issue_date": body.get("issue_date") or account.clock().date().isoformat(),
        "due_date": body.get("due_date") or account.clock().date().isoformat(),
        "payment_term": body.get("payment_term") or "upon receipt",
        "line_items": lines,
        "created_at": now,
        "updated_at": now,
    }
    if expense_spec and expense_spec.get("attach_receipt") and expenses:
        invoice["expense_report"] = _expense_report(account, number, expenses)
    for entry in entries:
        account.put("time_entries", {**entry, "invoice_id": rid, "updated_at": now})
    for expense in expenses:
        account.put("expenses", {**expense, "invoice_id": rid, "updated_at": now})
    return account.put("invoices", invoice)


def delete_invoice(account: Account, invoice_id: int) -> None:
    """``DELETE /invoices/{id}``: the invoice goes, and every time entry and expense it
    billed is uninvoiced again (``is_billed`` false, ``invoice`` null; approval stays).
    Raises ``HarvestError(404)``."""
    account.get("invoices", invoice_id)
    now = stamp(account.clock())
    for resource in ("time_entries", "expenses"):
        for record in list(account.records[resource].values()):
            if record.get("invoice_id") == invoice_id:
                account.put(resource, {**record, "invoice_id": None, "updated_at": now})
    account.delete("invoices", invoice_id)


_TIME_SUMMARIES = ("project", "task", "people", "detailed")
_EXPENSE_SUMMARIES = ("project", "category", "people", "detailed")


def _project_ids(account: Account, client_id: int, spec: dict[str, Any]) -> list[int]:
    project_ids = spec.get("project_ids")
    if not isinstance(project_ids, list) or not project_ids:
        raise HarvestError(422, "Project ids can't be blank")
    for pid in project_ids:
        if account.records["projects"].get(pid, {}).get("client_id") != client_id:
            raise HarvestError(422, f"Project {pid} is not a project of this client")
    return [int(pid) for pid in project_ids]


def _period_spec(
    spec: dict[str, Any], key: str, summaries: tuple[str, ...]
) -> dict[str, Any] | None:
    """The ``time`` or ``expenses`` import object, validated; ``None`` when absent."""
    value = spec.get(key)
    if value is None:
        return None
    label = "Time" if key == "time" else "Expenses"
    if not isinstance(value, dict):
        raise HarvestError(422, f"{label} import is invalid")
    if value.get("summary_type") not in summaries:
        raise HarvestError(422, f"{label} summary type must be one of {', '.join(summaries)}")
    start, end = value.get("from"), value.get("to")
    if (start is None) != (end is None):
        raise HarvestError(422, f"{label} import needs both from and to, or neither")
    for day in (start, end):
        if day is not None:
            try:
                date.fromisoformat(str(day))
            except ValueError:
                raise HarvestError(422, f"{label} import dates are invalid") from None
    if key == "expenses" and not isinstance(value.get("attach_receipt", False), bool):
        raise HarvestError(422, "Attach receipt is invalid")
    return value


def _between(record: dict[str, Any], spec: dict[str, Any]) -> bool:
    start, end = spec.get("from") or "0000-01-01", spec.get("to") or "9999-12-31"
    return bool(start <= record["spent_date"] <= end)


def _import_time(
    account: Account, project_ids: list[int], spec: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Service lines of the approved, billable, unbilled time in the period: one per
    (project, task) for ``task``, per project, per (project, person), or per entry."""
    if not project_ids or not spec:
        return [], []
    entries = [
        e
        for e in account.records["time_entries"].values()
        if e["project_id"] in project_ids
        and _between(e, spec)
        and e.get("is_closed")
        and not e.get("invoice_id")
        and billable(account, e)
    ]
    summary = spec["summary_type"]
    lines: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: (e["spent_date"], e["id"])):
        rate = billable_rate(account, entry) or 0.0
        task = account.records["tasks"][entry["task_id"]]["name"]
        key: tuple[Any, ...]
        if summary == "project":
            key = (entry["project_id"], rate)
            description = account.records["projects"][entry["project_id"]]["name"]
        elif summary == "people":
            key = (entry["project_id"], entry["user_id"], rate)
            description = _person(account, entry["user_id"])
        elif summary == "detailed":
            key = (entry["id"],)
            description = f"{entry['spent_date']} - {task}: {entry.get('notes') or ''}".strip()
        else:
            key = (entry["project_id"], entry["task_id"])
            description = task
        line = lines.setdefault(
            key, _line(account, entry["project_id"], "Service", description, rate)
        )
        line["quantity"] = round(line["quantity"] + float(entry["hours"]), 2)
        line["amount"] = round(line["amount"] + float(entry["hours"]) * rate, 2)
    return list(lines.values()), entries


def _import_expenses(
    account: Account, project_ids: list[int], spec: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Product lines of the approved, billable, unbilled expenses in the period: one per
    (project, category) for ``category``, per project, per (project, person), or per
    expense."""
    if not project_ids or not spec:
        return [], []
    expenses = [
        x
        for x in account.records["expenses"].values()
        if x["project_id"] in project_ids
        and _between(x, spec)
        and x.get("is_closed")
        and not x.get("invoice_id")
        and x.get("billable", True)
        and account.records["projects"][x["project_id"]]["is_billable"]
    ]
    summary = spec["summary_type"]
    lines: dict[tuple[Any, ...], dict[str, Any]] = {}
    for expense in sorted(expenses, key=lambda x: (x["spent_date"], x["id"])):
        category = account.records["expense_categories"][expense["expense_category_id"]]
        cost = float(expense.get("total_cost") or 0.0)
        key: tuple[Any, ...]
        if summary == "project":
            key = (expense["project_id"],)
            description = account.records["projects"][expense["project_id"]]["name"]
        elif summary == "people":
            key = (expense["project_id"], expense["user_id"])
            description = _person(account, expense["user_id"])
        elif summary == "detailed":
            key = (expense["id"],)
            notes = expense.get("notes") or ""
            description = f"{expense['spent_date']} - {category['name']}: {notes}".strip()
        else:
            key = (expense["project_id"], expense["expense_category_id"])
            description = str(category["name"])
        line = lines.setdefault(key, _line(account, expense["project_id"], "Product", description))
        if summary == "detailed" and category.get("unit_price") is not None:
            line["quantity"] = float(expense.get("units") or 1)
            line["unit_price"] = float(category["unit_price"])
        else:
            line["quantity"] = 1.0
            line["unit_price"] = round(line["unit_price"] + cost, 2)
        line["amount"] = round(line["amount"] + cost, 2)
    return list(lines.values()), expenses


def _line(
    account: Account, project_id: int, kind: str, description: str, unit_price: float = 0.0
) -> dict[str, Any]:
    return {
        "id": account.next_id("line_items"),
        "project_id": project_id,
        "kind": kind,
        "description": description,
        "quantity": 0.0,
        "unit_price": unit_price,
        "amount": 0.0,
        "taxed": False,
        "taxed2": False,
    }


def _person(account: Account, user_id: int | None) -> str:
    user = account.records["users"].get(user_id or 0) or {}
    return f"{user.get('first_name', '')} {user.get('last_name', '')}".strip()


def _expense_report(
    account: Account, number: str, expenses: list[dict[str, Any]]
) -> dict[str, Any]:
    """What ``attach_receipt`` attaches: a PDF expense report of the imported expenses, with
    their receipts."""
    return {
        "file_name": f"expense-report-{number}.pdf",
        "content_type": "application/pdf",
        "expenses": sorted(x["id"] for x in expenses),
        "receipts": [
            {"expense_id": x["id"], **{k: v for k, v in x["receipt"].items() if k != "url"}}
            for x in sorted(expenses, key=lambda x: x["id"])
            if x.get("receipt")
        ],
    }


def _next_number(account: Account) -> str:
    numbers = [
        int(i["number"]) for i in account.records["invoices"].values() if i["number"].isdigit()
    ]
    return str(max(numbers, default=1000) + 1)


def billable(account: Account, entry: dict[str, Any]) -> bool:
    """Billable when the project is billable and its task assignment is."""
    project = account.records["projects"][entry["project_id"]]
    assignment = task_assignment(account, entry)
    billable = assignment.get("billable") if assignment else None
    if billable is None:
        billable = account.records["tasks"][entry["task_id"]]["billable_by_default"]
    return bool(project["is_billable"] and billable)


def task_assignment(account: Account, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The entry's task assignment."""
    return next(
        (
            a
            for a in account.records["task_assignments"].values()
            if a["project_id"] == entry["project_id"] and a["task_id"] == entry["task_id"]
        ),
        None,
    )


def user_assignment(account: Account, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The entry's user assignment."""
    return next(
        (
            a
            for a in account.records["user_assignments"].values()
            if a["project_id"] == entry["project_id"] and a["user_id"] == entry["user_id"]
        ),
        None,
    )


def billable_rate(account: Account, entry: dict[str, Any]) -> float | None:
    """The rate per hour by the project's ``bill_by``: the project's, the task
    assignment's, or the person's (assignment, else their default)."""
    if not billable(account, entry):
        return None
    project = account.records["projects"][entry["project_id"]]
    if project["bill_by"] == "Project":
        return _number(project["hourly_rate"])
    if project["bill_by"] == "Tasks":
        assignment = task_assignment(account, entry) or {}
        task = account.records["tasks"][entry["task_id"]]
        return _number(assignment.get("hourly_rate") or task["default_hourly_rate"])
    if project["bill_by"] == "People":
        assignment = user_assignment(account, entry) or {}
        user = account.records["users"].get(entry["user_id"]) or {}
        return _number(assignment.get("hourly_rate") or user.get("default_hourly_rate"))
    return None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
