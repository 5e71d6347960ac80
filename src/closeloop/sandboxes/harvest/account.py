"""The Harvest sandbox account's data: records of each resource in memory, written through to
SQLite, with Harvest's write rules (*Harvest API v2* documentation: required fields, unique
names, locked time entries) and its approval workflow.

Records are kept flat (``project_id``, ``user_id``, ...); :mod:`.render` gives them the shape
the API returns. All methods run under :attr:`Account.lock`.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from closeloop.sandboxes.harvest.fields import (
    BILL_BY,
    BUDGET_BY,
    DEFAULTS,
    NESTED,
    REFERENCES,
    SEED_ONLY,
    WRITABLE,
)

RESOURCES = (
    "users",
    "clients",
    "contacts",
    "tasks",
    "projects",
    "task_assignments",
    "user_assignments",
    "expense_categories",
    "time_entries",
    "expenses",
    "invoices",
)
APPROVED = "Item Approved and Locked for this Time Period"
INVOICED = "Item Invoiced and Approved and Locked for this Time Period"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (resource TEXT NOT NULL, id INTEGER NOT NULL,
                                    data TEXT NOT NULL, PRIMARY KEY (resource, id));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Harvest's ids are unique across all accounts (and int32, as its OpenAPI description says):
# each resource has its own range of 100 million, and each sandbox account starts at a random
# place in the lower half of it (so two sandboxes all but never share an id)
_ID_RANGE = 100_000_000
_ID_BASE = {name: _ID_RANGE * (i + 1) for i, name in enumerate((*RESOURCES, "line_items"))}


class HarvestError(Exception):
    """An error answer: HTTP ``status`` and Harvest's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        """The error body (``{"code", "message"}``)."""
        return {"code": self.status, "message": self.message}


def stamp(moment: datetime) -> str:
    """Harvest's timestamps: UTC, whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Account:
    """One Harvest account's records; ``clock`` gives aware UTC datetimes."""

    path: Path
    account_id: int = 1_234_567
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.records: dict[str, dict[int, dict[str, Any]]] = {r: {} for r in RESOURCES}
        for resource, rid, data in self._db.execute("SELECT resource, id, data FROM records"):
            self.records[resource][rid] = json.loads(data)
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self._sequences: dict[str, int] = json.loads(meta.get("sequences", "{}"))
        if not self._sequences:  # a new account: where its ids start
            offset = random.SystemRandom().randrange(_ID_RANGE // 2)
            self._sequences = {name: base + offset for name, base in _ID_BASE.items()}
        # the records a transaction touched, as they were before it (None: did not exist)
        self._before: dict[tuple[str, int], dict[str, Any] | None] | None = None

    # --- persistence -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside are all-or-nothing (the touched records are restored as they were)
        and commit to SQLite together."""
        if self._before is not None:
            yield
            return
        sequences = dict(self._sequences)
        self._before = {}
        try:
            yield
        except BaseException:
            for (resource, rid), record in self._before.items():
                if record is None:
                    self.records[resource].pop(rid, None)
                else:
                    self.records[resource][rid] = record
            self._sequences, self._before = sequences, None
            raise
        dirty, self._before = self._before, None
        rows = [(r, i, json.dumps(self.records[r][i])) for (r, i) in dirty if i in self.records[r]]
        gone = [(r, i) for (r, i) in dirty if i not in self.records[r]]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", rows)
        self._db.executemany("DELETE FROM records WHERE resource = ? AND id = ?", gone)
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('sequences', ?)", (json.dumps(self._sequences),)
        )
        self._db.execute("COMMIT")

    def put(self, resource: str, record: dict[str, Any]) -> dict[str, Any]:
        """Store ``record`` (inside a transaction); returns it."""
        self._remember(resource, record["id"])
        self.records[resource][record["id"]] = record
        return record

    def _remember(self, resource: str, rid: int) -> None:
        assert self._before is not None, "writes happen inside Account.transaction()"
        self._before.setdefault((resource, rid), self.records[resource].get(rid))

    # --- generic create / update / delete --------------------------------------------------
    def get(self, resource: str, rid: int) -> dict[str, Any]:
        """One record; raises ``HarvestError(404)``."""
        record = self.records[resource].get(rid)
        if record is None:
            raise HarvestError(404, "Not Found")
        return record

    def create(self, resource: str, body: dict[str, Any], seed: bool = False) -> dict[str, Any]:
        """Validate and insert; returns the stored record. ``seed`` keeps a given ``id`` and
        timestamps. Raises ``HarvestError(422)`` naming the problem."""
        values = self._clean(resource, body, creating=True, seed=seed)
        now = stamp(self.clock())
        rid = int(body["id"]) if seed and body.get("id") is not None else self.next_id(resource)
        if rid in self.records[resource]:
            raise HarvestError(422, f"Id {rid} has already been taken")
        record = {**DEFAULTS.get(resource, {}), **values, "id": rid}
        record["created_at"] = body.get("created_at") if seed and body.get("created_at") else now
        record["updated_at"] = body.get("updated_at") if seed and body.get("updated_at") else now
        self._check(resource, record, None)
        return self.put(resource, record)

    def update(self, resource: str, rid: int, body: dict[str, Any]) -> dict[str, Any]:
        """Validate and change fields; returns the record. Raises ``HarvestError``."""
        current = self.get(resource, rid)
        values = self._clean(resource, body, creating=False)
        record = {**current, **values, "updated_at": stamp(self.clock())}
        self._check(resource, record, current)
        return self.put(resource, record)

    def add_to_new_project(self, project: dict[str, Any]) -> None:
        """What Harvest does to a project created through the API (inside its transaction):
        active tasks marked ``is_default`` ("automatically added to future projects") are
        assigned, billable as their ``billable_by_default``, at their ``default_hourly_rate``
        ("the hourly rate to use for this task when it is added to a project"); active people
        with ``has_access_to_all_future_projects`` are assigned at their default rates."""
        for task in sorted(self.records["tasks"].values(), key=lambda t: t["id"]):
            if task.get("is_default") and task.get("is_active", True):
                values = {
                    "project_id": project["id"],
                    "task_id": task["id"],
                    "billable": bool(task.get("billable_by_default", True)),
                    "hourly_rate": task.get("default_hourly_rate"),
                }
                self.create("task_assignments", values)
        for user in sorted(self.records["users"].values(), key=lambda u: u["id"]):
            if user.get("has_access_to_all_future_projects") and user.get("is_active", True):
                self.create(
                    "user_assignments", {"project_id": project["id"], "user_id": user["id"]}
                )

    def delete(self, resource: str, rid: int) -> None:
        """Remove a record; refuses (422) a locked time entry or a record still in use."""
        record = self.get(resource, rid)
        if resource == "time_entries" and is_locked(self, record):
            raise HarvestError(422, "This time entry is locked and cannot be deleted")
        if resource == "expenses" and is_locked(self, record):
            raise HarvestError(422, "This expense is locked and cannot be deleted")
        users = {"clients": "client_id", "projects": "project_id", "tasks": "task_id"}
        if resource in users:
            key = users[resource]
            for other in ("projects", "time_entries", "task_assignments", "contacts"):
                if any(r.get(key) == rid for r in self.records[other].values()):
                    raise HarvestError(422, f"This {resource[:-1]} is in use and cannot be deleted")
        self._remember(resource, rid)
        del self.records[resource][rid]

    def next_id(self, resource: str) -> int:
        """A new id of ``resource`` (each resource has its own range)."""
        current = self._sequences.get(resource, _ID_BASE[resource])
        current = int(max([current, *self.records.get(resource, {})])) + 1
        self._sequences[resource] = current
        return current

    def _clean(
        self, resource: str, body: dict[str, Any], creating: bool, seed: bool = False
    ) -> dict[str, Any]:
        allowed = dict(WRITABLE[resource])
        if seed:
            allowed.update(SEED_ONLY.get(resource, {}))
        values: dict[str, Any] = {}
        for name, value in body.items():
            if name in ("id", "created_at", "updated_at") and seed:
                continue
            if name in NESTED and isinstance(value, dict) and (seed or name == "client"):
                values[NESTED[name]] = value.get("id")
                continue
            if name not in allowed:
                if seed:
                    continue  # list-response fields the sandbox derives (is_locked, ...)
                raise HarvestError(422, f"Unknown parameter: {name}")
            types, _ = allowed[name]
            if value is not None and (
                not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
            ):
                raise HarvestError(422, f"{name} is invalid")
            values[name] = value
        if creating:
            missing = [n for n, (_, required) in allowed.items() if required and n not in values]
            if missing:
                raise HarvestError(422, f"{_label(missing[0])} can't be blank")
        return values

    def _check(self, resource: str, record: dict[str, Any], before: dict[str, Any] | None) -> None:
        """Cross-record rules: references exist, names are unique, locks hold."""
        for key, target in REFERENCES.get(resource, {}).items():
            if record.get(key) is not None and record[key] not in self.records[target]:
                raise HarvestError(422, f"{_label(key)} is invalid")
        if resource in ("clients", "tasks", "expense_categories"):
            lowered = str(record["name"]).strip().lower()
            if not lowered:
                raise HarvestError(422, "Name can't be blank")
            if any(
                str(r["name"]).strip().lower() == lowered and r["id"] != record["id"]
                for r in self.records[resource].values()
            ):
                raise HarvestError(422, "Name has already been taken")
        if resource == "users" and any(
            r["email"].lower() == record["email"].lower() and r["id"] != record["id"]
            for r in self.records["users"].values()
        ):
            raise HarvestError(422, "Email has already been taken")
        if resource == "projects":
            if record["bill_by"] not in BILL_BY:
                raise HarvestError(422, f"Bill by must be one of {', '.join(BILL_BY)}")
            if record["budget_by"] not in BUDGET_BY:
                raise HarvestError(422, f"Budget by must be one of {', '.join(BUDGET_BY)}")
            for key in ("starts_on", "ends_on"):
                _check_date(record, key)
        if resource in ("task_assignments", "user_assignments"):
            other = "task_id" if resource == "task_assignments" else "user_id"
            if any(
                r["project_id"] == record["project_id"]
                and r[other] == record[other]
                and r["id"] != record["id"]
                for r in self.records[resource].values()
            ):
                raise HarvestError(422, f"{_label(other)} has already been taken")
        if resource == "time_entries":
            self._check_time_entry(record, before)
        if resource == "expenses":
            self._check_expense(record, before)

    def _check_time_entry(self, record: dict[str, Any], before: dict[str, Any] | None) -> None:
        try:
            date.fromisoformat(record["spent_date"])
        except ValueError:
            raise HarvestError(422, "Spent date is invalid") from None
        if not 0 <= float(record.get("hours") or 0) <= 24:
            raise HarvestError(422, "Hours must be between 0 and 24")
        if before is not None and is_locked(self, before):
            changed = {k for k in WRITABLE["time_entries"] if record.get(k) != before.get(k)}
            if changed - {"external_reference"}:
                raise HarvestError(422, f"This time entry is locked: {locked_reason(self, before)}")
        project = self.records["projects"][record["project_id"]]
        if not project["is_active"] and (before is None or before["project_id"] != project["id"]):
            raise HarvestError(422, "Project is archived")
        if not any(
            a["project_id"] == record["project_id"] and a["task_id"] == record["task_id"]
            for a in self.records["task_assignments"].values()
        ):
            raise HarvestError(422, "Task is not assigned to this project")
        if record.get("user_id") is None:
            record["user_id"] = min(self.records["users"]) if self.records["users"] else None
        if record.get("user_id") is None:
            raise HarvestError(422, "User can't be blank")

    def _check_expense(self, record: dict[str, Any], before: dict[str, Any] | None) -> None:
        """An expense's date, lock (approved, invoiced, or its project archived: "Whether the
        expense has been been invoiced, approved, or the project or person related to the
        expense is archived"), its person (the caller by default) and, for a category with a
        unit price, ``total_cost`` = units x unit price. A negative ``total_cost`` (a refund)
        is kept: the contract sets no minimum."""
        _check_date(record, "spent_date", required=True)
        if before is not None and is_locked(self, before):
            changed = {k for k in WRITABLE["expenses"] if record.get(k) != before.get(k)}
            if changed:
                reason = expense_locked_reason(self, before)
                raise HarvestError(422, f"This expense is locked: {reason}")
        project = self.records["projects"][record["project_id"]]
        if not project["is_active"] and (before is None or before["project_id"] != project["id"]):
            raise HarvestError(422, "Project is archived")
        if record.get("user_id") is None:
            record["user_id"] = min(self.records["users"]) if self.records["users"] else None
        if record.get("user_id") is None:
            raise HarvestError(422, "User can't be blank")
        category = self.records["expense_categories"][record["expense_category_id"]]
        if category.get("unit_price") is not None:
            units = record.get("units") or 1
            record["total_cost"] = round(float(units) * float(category["unit_price"]), 2)

    # --- seeding --------------------------------------------------------------------------------
    def seed(self, data: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        """Load records given in list-response shape (``{"clients": [...], ...}``), parents
        first, in one transaction. Raises ``HarvestError(422)`` naming the resource and
        position; then nothing is loaded."""
        unknown = [name for name in data if name not in RESOURCES or name == "invoices"]
        if unknown:
            raise HarvestError(422, f"cannot seed: {unknown} (known: {RESOURCES[:-1]})")
        counts = {}
        with self.transaction():
            for resource in RESOURCES:
                for position, record in enumerate(data.get(resource, [])):
                    try:
                        self.create(resource, record, seed=True)
                    except HarvestError as exc:
                        raise HarvestError(422, f"{resource}[{position}]: {exc.message}") from None
                if data.get(resource):
                    counts[resource] = len(data[resource])
        return counts


def is_locked(account: Account, entry: dict[str, Any]) -> bool:
    """Approved, invoiced, or on an archived project."""
    project = account.records["projects"].get(entry.get("project_id") or 0)
    archived = project is not None and not project["is_active"]
    return bool(entry.get("is_closed") or entry.get("invoice_id") or archived)


def locked_reason(account: Account, entry: dict[str, Any]) -> str | None:
    """Harvest's ``locked_reason`` text."""
    if entry.get("invoice_id"):
        return INVOICED if entry.get("is_closed") else "Item Invoiced and Locked"
    if entry.get("is_closed"):
        return APPROVED
    if is_locked(account, entry):
        return "Project or person is archived"
    return None


def expense_locked_reason(account: Account, expense: dict[str, Any]) -> str | None:
    """An expense's ``locked_reason`` ("Expense is invoiced." in the contract's example)."""
    if expense.get("invoice_id"):
        return "Expense is invoiced."
    if expense.get("is_closed"):
        return APPROVED
    if is_locked(account, expense):
        return "Project or person is archived"
    return None


def _check_date(record: dict[str, Any], key: str, required: bool = False) -> None:
    """Refuse (422) a date field that is not an ISO date."""
    value = record.get(key)
    if value is None and not required:
        return
    try:
        date.fromisoformat(str(value))
    except ValueError:
        raise HarvestError(422, f"{_label(key)} is invalid") from None


def _label(name: str) -> str:
    text = name.removesuffix("_id").replace("_", " ")
    return text[:1].upper() + text[1:]
