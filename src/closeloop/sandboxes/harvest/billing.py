"""Harvest's approval workflow and invoicing in the sandbox: locks, billable rates by the
project's ``bill_by``, approval (Harvest has no public approval endpoint: the sandbox offers it
under ``/__sandbox/approve``, as a manager's approval screen), and invoices that import a
project's approved, unbilled time.
"""

from __future__ import annotations

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


def invoice(account: Account, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /invoices``: with ``line_items_import`` the project's approved, billable,
    unbilled time in the period becomes line items (by task) and is marked invoiced.
    Raises ``HarvestError(422)``."""
    client_id = body.get("client_id")
    if client_id not in account.records["clients"]:
        raise HarvestError(422, "Client can't be blank")
    number = str(body.get("number") or _next_number(account))
    if any(i["number"] == number for i in account.records["invoices"].values()):
        raise HarvestError(422, "Number has already been taken")
    rid = account.next_id("invoices")
    lines, entries = _import(account, client_id, body.get("line_items_import") or {}, rid)
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
        "period_start": (body.get("line_items_import") or {}).get("time", {}).get("from"),
        "period_end": (body.get("line_items_import") or {}).get("time", {}).get("to"),
        "issue_date": body.get("issue_date") or account.clock().date().isoformat(),
        "due_date": body.get("due_date") or account.clock().date().isoformat(),
        "payment_term": body.get("payment_term") or "upon receipt",
        "line_items": lines,
        "created_at": now,
        "updated_at": now,
    }
    for entry in entries:
        account.put("time_entries", {**entry, "invoice_id": rid, "updated_at": now})
    return account.put("invoices", invoice)


def _import(
    account: Account, client_id: int, spec: dict[str, Any], invoice_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    project_ids = spec.get("project_ids") or []
    for pid in project_ids:
        if account.records["projects"].get(pid, {}).get("client_id") != client_id:
            raise HarvestError(422, f"Project {pid} is not a project of this client")
    time_spec = spec.get("time")
    if not project_ids or not time_spec:
        return [], []
    start, end = time_spec.get("from") or "0000-01-01", time_spec.get("to") or "9999-12-31"
    entries = [
        e
        for e in account.records["time_entries"].values()
        if e["project_id"] in project_ids
        and start <= e["spent_date"] <= end
        and e.get("is_closed")
        and not e.get("invoice_id")
        and billable(account, e)
    ]
    lines: dict[tuple[int, int], dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: (e["spent_date"], e["id"])):
        rate = billable_rate(account, entry) or 0.0
        key = (entry["project_id"], entry["task_id"])
        task = account.records["tasks"][entry["task_id"]]["name"]
        line = lines.setdefault(
            key,
            {
                "id": account.next_id("line_items"),
                "project_id": entry["project_id"],
                "kind": "Service",
                "description": task,
                "quantity": 0.0,
                "unit_price": rate,
                "amount": 0.0,
                "taxed": False,
                "taxed2": False,
            },
        )
        line["quantity"] = round(line["quantity"] + float(entry["hours"]), 2)
        line["amount"] = round(line["amount"] + float(entry["hours"]) * rate, 2)
    return list(lines.values()), entries


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
