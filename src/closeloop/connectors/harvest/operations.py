"""Writes to Harvest, each idempotent through a key Harvest shows and keeps:

- clients by **name** (Harvest refuses a second client of the same name);
- projects by **code** (shown next to the name everywhere in Harvest, free for the firm to
  read; Harvest does not make codes unique, so the hub looks the code up before creating);
  tasks by name (unique in Harvest), task and user assignments by (project, task or person);
- billing by the **invoice number**: marking time billed creates a Harvest invoice that
  imports the project's approved, unbilled time for the period under the ERP invoice's number
  (Harvest locks and flags each imported entry ``is_billed`` with the invoice, and never
  imports an entry twice); a number Harvest already has is that earlier write;
- an ERP reference on a single entry by its ``external_reference`` id.

A :class:`Batch` caches the account's clients, projects, tasks and people for the commands of
one batch, so a batch of project set-ups costs a few list calls plus the writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from closeloop.connectors.harvest.client import HarvestApiError, HarvestClient


@dataclass
class Batch:
    """Lookups shared by the commands of one batch."""

    client: HarvestClient
    _lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rows(self, resource: str) -> list[dict[str, Any]]:
        """All records of ``resource`` (listed once per batch)."""
        if resource not in self._lists:
            self._lists[resource] = self.client.list_all(resource)[0]
        return self._lists[resource]

    def remember(self, resource: str, record: dict[str, Any]) -> dict[str, Any]:
        """Add a record this batch created to its cached list."""
        self.rows(resource).append(record)
        return record

    def create(
        self,
        resource: str,
        body: Mapping[str, Any],
        find: Callable[[str], dict[str, Any] | None],
        key: str,
    ) -> dict[str, Any]:
        """Create a record of ``resource`` unique by ``key`` (a name Harvest keeps unique).
        When Harvest answers that the key is taken, an earlier create of ours landed after
        this batch listed (a timed-out request still running, or a killed worker's): the list
        is read again and ``find(key)`` is returned. Raises :class:`HarvestApiError` when
        there is none to find."""
        try:
            return self.remember(resource, self.client.request("POST", resource, body=dict(body)))
        except HarvestApiError as exc:
            if not _taken(exc):
                raise
            self._lists.pop(resource, None)
            found = find(key)
            if found is None:
                raise
            return found

    # --- lookups by the visible keys ------------------------------------------------------
    def client_named(self, name: str) -> dict[str, Any] | None:
        """The client called ``name`` (case and spaces ignored, as Harvest's uniqueness)."""
        wanted = name.strip().lower()
        return next((c for c in self.rows("clients") if c["name"].strip().lower() == wanted), None)

    def project_coded(self, code: str) -> dict[str, Any] | None:
        """The project whose code is ``code``."""
        return next((p for p in self.rows("projects") if p.get("code") == code), None)

    def task_named(self, name: str) -> dict[str, Any] | None:
        """The task called ``name``."""
        wanted = name.strip().lower()
        return next((t for t in self.rows("tasks") if t["name"].strip().lower() == wanted), None)

    def user_with_email(self, email: str) -> dict[str, Any] | None:
        """The person with ``email``."""
        wanted = email.strip().lower()
        return next((u for u in self.rows("users") if u["email"].lower() == wanted), None)

    def invoice_numbered(self, number: str) -> dict[str, Any] | None:
        """The invoice with ``number``."""
        return next((i for i in self.rows("invoices") if i["number"] == number), None)

    # --- writes -----------------------------------------------------------------------------
    def upsert_client(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Create the client, or update the one of the same name: ``{name, currency,
        address, is_active}``. Returns ``{"client_id"}``."""
        body: dict[str, Any] = {
            k: payload[k] for k in ("name", "currency", "address", "is_active") if k in payload
        }
        found = self.client_named(str(payload["name"]))
        if found is None:
            found = self.create("clients", body, self.client_named, str(payload["name"]))
        elif any(found.get(k) != v for k, v in body.items()):
            found.update(self.client.request("PATCH", f"clients/{found['id']}", body=body))
        return {"client_id": found["id"]}

    def upsert_project(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Create or update the project with code ``code`` for client ``client`` (a name; the
        client is created, with ``currency``, when Harvest has none of that name), with its
        ``tasks`` (``[{name, hourly_rate, billable}]``, created in the account when
        missing, assigned to the project) and ``people`` (``[{email, hourly_rate,
        is_project_manager}]``), budget, ``bill_by``, hourly rate or fixed fee. Returns
        ``{"project_id", "client_id", "task_ids": {name: id}}``. Raises ``LookupError`` for an
        unknown person."""
        client_payload = {"name": payload["client"]}
        if payload.get("currency"):
            client_payload["currency"] = payload["currency"]
        if self.client_named(str(payload["client"])) is None:
            self.upsert_client(client_payload)
        client = self.client_named(str(payload["client"]))
        if client is None:
            raise LookupError(f"Harvest has no client named {payload['client']!r}")
        body = {k: payload[k] for k in _PROJECT_FIELDS if k in payload}
        body.update(client_id=client["id"], code=payload["code"])
        body.setdefault("is_billable", True)
        body.setdefault("bill_by", "Tasks")
        body.setdefault("budget_by", "project")
        project = self.project_coded(str(payload["code"]))
        if project is None:
            project = self.remember("projects", self.client.request("POST", "projects", body=body))
        else:
            project.update(self.client.request("PATCH", f"projects/{project['id']}", body=body))
        task_ids = self._assign_tasks(project["id"], payload.get("tasks") or [])
        self._assign_people(project["id"], payload.get("people") or [])
        return {"project_id": project["id"], "client_id": client["id"], "task_ids": task_ids}

    def _assign_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, int]:
        path = f"projects/{project_id}/task_assignments"
        existing = self._task_assignments(path) if tasks else {}
        ids = {}
        for spec in tasks:
            name = str(spec["name"])
            task = self.task_named(name) or self.create(
                "tasks", {"name": name}, self.task_named, name
            )
            ids[name] = task["id"]
            body = {
                "billable": bool(spec.get("billable", True)),
                "hourly_rate": spec.get("hourly_rate"),
            }
            assignment = existing.get(task["id"])
            if assignment is None:
                try:
                    self.client.request("POST", path, body={"task_id": task["id"], **body})
                    continue
                except HarvestApiError as exc:  # an earlier attempt's assignment landed late
                    if not _taken(exc):
                        raise
                existing = self._task_assignments(path)
                assignment = existing[task["id"]]
            if any(assignment.get(k) != v for k, v in body.items()):
                self.client.request("PATCH", f"{path}/{assignment['id']}", body=body)
        return ids

    def _task_assignments(self, path: str) -> dict[int, dict[str, Any]]:
        return {a["task"]["id"]: a for a in self.client.list_all(path)[0]}

    def _assign_people(self, project_id: int, people: list[dict[str, Any]]) -> None:
        path = f"projects/{project_id}/user_assignments"
        existing = {a["user"]["id"] for a in self.client.list_all(path)[0]} if people else set()
        for spec in people:
            user = self.user_with_email(str(spec["email"]))
            if user is None:
                raise LookupError(f"Harvest has no person with email {spec['email']!r}")
            if user["id"] in existing:
                continue
            body = {
                "user_id": user["id"],
                "is_project_manager": bool(spec.get("is_project_manager", False)),
                "use_default_rates": spec.get("hourly_rate") is None,
                "hourly_rate": spec.get("hourly_rate"),
            }
            try:
                self.client.request("POST", path, body=body)
            except HarvestApiError as exc:  # an earlier attempt's assignment landed late
                if not _taken(exc):
                    raise

    def close_project(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Archive the project with code ``code`` (never deleted). Raises ``LookupError``."""
        project = self.project_coded(str(payload["code"]))
        if project is None:
            raise LookupError(f"Harvest has no project with code {payload['code']!r}")
        if project.get("is_active", True):
            body = {"is_active": False}
            project.update(self.client.request("PATCH", f"projects/{project['id']}", body=body))
        return {"project_id": project["id"], "is_active": False}

    def mark_billed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Mark the approved, unbilled time of projects ``codes`` from ``from`` to ``to``
        billed by a Harvest invoice numbered ``number`` (the ERP invoice's number) for client
        ``client``. Returns ``{"invoice_id", "amount", "hours"}``."""
        number = str(payload["number"])
        found = self.invoice_numbered(number)
        if found is None:
            client = self.client_named(str(payload["client"]))
            if client is None:
                raise LookupError(f"Harvest has no client named {payload['client']!r}")
            ids = []
            for code in payload["codes"]:
                project = self.project_coded(str(code))
                if project is None:
                    raise LookupError(f"Harvest has no project with code {code!r}")
                ids.append(project["id"])
            body = {
                "client_id": client["id"],
                "number": number,
                "subject": payload.get("subject") or f"Billed in the ERP as {number}",
                "line_items_import": {
                    "project_ids": ids,
                    "time": {"summary_type": "task", "from": payload["from"], "to": payload["to"]},
                },
            }
            found = self.remember("invoices", self.client.request("POST", "invoices", body=body))
        hours = sum(float(line.get("quantity") or 0) for line in found.get("line_items", []))
        return {"invoice_id": found["id"], "amount": str(found["amount"]), "hours": round(hours, 2)}

    def attach_reference(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Set ``external_reference`` (``{id, group_id, permalink}``) on time entry
        ``time_entry_id``: the ERP line and invoice that billed it."""
        entry_id = int(payload["time_entry_id"])
        reference = dict(payload["reference"])
        current = self.client.request("GET", f"time_entries/{entry_id}")
        if (current.get("external_reference") or {}).get("id") != reference.get("id"):
            body = {"external_reference": reference}
            self.client.request("PATCH", f"time_entries/{entry_id}", body=body)
        return {"time_entry_id": entry_id}


_PROJECT_FIELDS = (
    "name",
    "is_active",
    "is_billable",
    "is_fixed_fee",
    "bill_by",
    "hourly_rate",
    "budget",
    "budget_by",
    "fee",
    "notes",
    "starts_on",
    "ends_on",
)


def refused(exc: HarvestApiError | LookupError) -> str:
    """A refusal as text for a business exception."""
    if isinstance(exc, HarvestApiError):
        return f"Harvest refused it (HTTP {exc.status}): {exc.message}"
    return str(exc.args[0])


def _taken(exc: HarvestApiError) -> bool:
    """Whether Harvest refused a create because its unique key exists ("Name has already
    been taken", "Task has already been taken", HTTP 422)."""
    return exc.status == 422 and "already been taken" in exc.message
