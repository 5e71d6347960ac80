"""Harvest's answer shapes: each resource as the v2 API returns it (nested ``client``,
``project``, ``task``, ``user`` objects, assignments inside time entries, derived lock and
billing fields), and list pages with ``links``.

Built to the object descriptions of the *Harvest API v2* documentation; the conformance test
validates these shapes against the OpenAPI description in ../shared/realdata.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from closeloop.sandboxes.harvest import billing
from closeloop.sandboxes.harvest.account import (
    Account,
    expense_locked_reason,
    is_locked,
    locked_reason,
)

_HIDDEN = (
    "client_id",
    "project_id",
    "task_id",
    "user_id",
    "expense_category_id",
    "invoice_id",
    "receipt_blob",  # a receipt's bytes, served at its url
    "expense_report",  # what attach_receipt attached (no field of the API's invoice)
)


def _ref(account: Account, resource: str, rid: int | None, *extra: str) -> dict[str, Any] | None:
    record = account.records[resource].get(rid or 0)
    if record is None:
        return None
    out = {"id": record["id"], "name": _name(resource, record)}
    out.update({k: record.get(k) for k in extra})
    return out


def _name(resource: str, record: dict[str, Any]) -> str:
    if resource == "users":
        return f"{record['first_name']} {record['last_name']}".strip()
    return str(record["name"])


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _HIDDEN}


def _assignment(record: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    if record is None:
        return None
    out = {"id": record["id"]}
    out.update({k: record.get(k) for k in keys})
    return out


def render(account: Account, resource: str, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` of ``resource`` as the API returns it."""
    out = _plain(record)
    if resource in ("contacts", "projects"):
        out["client"] = _ref(account, "clients", record["client_id"], "currency")
    elif resource in ("task_assignments", "user_assignments"):
        out["project"] = _ref(account, "projects", record["project_id"], "code")
        other = "tasks" if resource == "task_assignments" else "users"
        key = "task_id" if resource == "task_assignments" else "user_id"
        out[other[:-1]] = _ref(account, other, record[key])
    elif resource == "time_entries":
        out.update(_time_entry(account, record))
    elif resource == "expenses":
        out.update(_expense(account, record))
    elif resource == "invoices":
        out["client"] = _ref(account, "clients", record["client_id"])
        out["line_items"] = [
            {**_plain(line), "project": _ref(account, "projects", line["project_id"], "code")}
            for line in record["line_items"]
        ]
    return out


def _time_entry(account: Account, entry: dict[str, Any]) -> dict[str, Any]:
    project = account.records["projects"][entry["project_id"]]
    hours = float(entry.get("hours") or 0.0)
    invoice = account.records["invoices"].get(entry.get("invoice_id") or 0)
    rate = billing.billable_rate(account, entry)
    user = account.records["users"].get(entry["user_id"]) or {}
    return {
        "user": _ref(account, "users", entry["user_id"]),
        "client": _ref(account, "clients", project["client_id"], "currency"),
        "project": _ref(account, "projects", entry["project_id"], "code"),
        "task": _ref(account, "tasks", entry["task_id"]),
        "user_assignment": _assignment(
            billing.user_assignment(account, entry),
            "is_project_manager",
            "is_active",
            "use_default_rates",
            "budget",
            "created_at",
            "updated_at",
            "hourly_rate",
        ),
        "task_assignment": _assignment(
            billing.task_assignment(account, entry),
            "billable",
            "is_active",
            "created_at",
            "updated_at",
            "hourly_rate",
            "budget",
        ),
        "hours": round(hours, 2),
        "hours_without_timer": round(hours, 2),
        "rounded_hours": math.ceil(hours * 4 - 1e-9) / 4,
        "is_locked": is_locked(account, entry),
        "locked_reason": locked_reason(account, entry),
        "is_closed": bool(entry.get("is_closed")),
        "is_billed": invoice is not None,
        "invoice": {"id": invoice["id"], "number": invoice["number"]} if invoice else None,
        "billable": billing.billable(account, entry),
        "budgeted": project.get("budget") is not None,
        "billable_rate": rate,
        "cost_rate": user.get("cost_rate"),
    }


def _expense(account: Account, expense: dict[str, Any]) -> dict[str, Any]:
    project = account.records["projects"][expense["project_id"]]
    invoice = account.records["invoices"].get(expense.get("invoice_id") or 0)
    category = account.records["expense_categories"][expense["expense_category_id"]]
    return {
        "client": _ref(account, "clients", project["client_id"], "currency"),
        "project": _ref(account, "projects", expense["project_id"], "code"),
        "user": _ref(account, "users", expense["user_id"]),
        "user_assignment": _assignment(
            billing.user_assignment(account, expense),
            "is_project_manager",
            "is_active",
            "budget",
            "created_at",
            "updated_at",
            "hourly_rate",
        ),
        "expense_category": {
            "id": category["id"],
            "name": category["name"],
            "unit_price": category.get("unit_price"),
            "unit_name": category.get("unit_name"),
        },
        "receipt": expense.get("receipt"),
        "is_locked": is_locked(account, expense),
        "locked_reason": expense_locked_reason(account, expense),
        "is_billed": invoice is not None,
        "invoice": {"id": invoice["id"], "number": invoice["number"]} if invoice else None,
    }


def page(
    account: Account,
    resource: str,
    rows: list[dict[str, Any]],
    number: int,
    per_page: int,
    url: str,
    params: dict[str, str],
) -> dict[str, Any]:
    """One page of a list: ``{<resource>: [...], per_page, total_pages, total_entries,
    next_page, previous_page, page, links}``; ``url`` is the list's absolute URL."""
    total_pages = max(1, math.ceil(len(rows) / per_page))
    chosen = rows[(number - 1) * per_page : number * per_page]

    def link(target: int) -> str:
        return f"{url}?{urlencode({**params, 'page': target, 'per_page': per_page})}"

    return {
        resource: [render(account, resource, r) for r in chosen],
        "per_page": per_page,
        "total_pages": total_pages,
        "total_entries": len(rows),
        "next_page": number + 1 if number < total_pages else None,
        "previous_page": number - 1 if number > 1 else None,
        "page": number,
        "links": {
            "first": link(1),
            "next": link(number + 1) if number < total_pages else None,
            "previous": link(number - 1) if number > 1 else None,
            "last": link(total_pages),
        },
    }
