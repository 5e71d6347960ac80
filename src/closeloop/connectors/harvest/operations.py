"""Writes to Harvest, each idempotent through a key Harvest shows and keeps:

- clients by **name** (Harvest refuses a second client of the same name);
- projects by **code** (shown next to the name everywhere in Harvest, free for the firm to
  read; Harvest does not make codes unique, so the hub looks the code up before creating);
  tasks by name (unique in Harvest), task and user assignments by (project, task or person);
- billing by the **invoice number**: marking time billed creates a Harvest invoice that
  imports the project's approved, unbilled time for the period under the number the hub gives
  (Harvest locks and flags each imported entry ``is_billed`` with the invoice, and never
  imports an entry twice), and with ``expenses`` its approved, billable, unbilled expenses
  too (one line per category, the receipts attached as Harvest's expense report); a number
  Harvest already has is that earlier write. Unmarking deletes the invoice of that number
  (Harvest then marks its time and expenses uninvoiced again); none is what it leaves;
- an ERP reference on a single entry by its ``external_reference`` id.

A :class:`Batch` caches the account's clients, projects, tasks and people for the commands of
one batch, so a batch of project set-ups costs a few list calls plus the writes.

**The floor of a project set-up.** A new engagement of a new client with T tasks the account
has and P people needs 1 POST client + 1 POST project + T POST task assignments + P POST user
assignments (Harvest v2 takes one record per request and a project only for an existing
client), plus reads shared by the whole batch: the projects (codes are not unique and cannot be
filtered on: only a fresh list finds an earlier attempt's project), the tasks if any are
wanted, the people if any are (no filter by name or email either). A batch of n such set-ups
therefore costs n(2 + T + P) + 1 + [T > 0] + [P > 0] requests (4 + T for one alone with no
people), and that is what it costs: clients are read only when Harvest says a name is taken (a
client with a project is named in the project list); a project created in this call is not read
back (it has only what Harvest adds to every new project: its assignments are read only when a
wanted task is ``is_default`` or a wanted person ``has_access_to_all_future_projects``);
nothing unchanged is patched. An existing client saves its POST, a task new to the account
costs one POST once. Running it again costs the batch's reads, one read of each project's task
(and user) assignments, and the writes of what is missing or differs.
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
        """Add a record this batch created to its cached list, when the batch has read that
        list (a list read later shows it anyway, so nothing is read for it)."""
        if resource in self._lists:
            self._lists[resource].append(record)
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
        is_project_manager}]``), budget, ``bill_by``, hourly rate or fixed fee. An existing
        project is written only where it differs. Returns ``{"project_id", "client_id",
        "task_ids": {name: id}}``. Raises ``LookupError`` for an unknown person (before
        anything is written), :class:`HarvestApiError` for a refusal."""
        people = [(self._person(spec), spec) for spec in payload.get("people") or []]
        project = self.project_coded(str(payload["code"]))
        client_id = self._client_id(str(payload["client"]), payload.get("currency"))
        body = {k: payload[k] for k in _PROJECT_FIELDS if k in payload}
        body.update(client_id=client_id, code=payload["code"])
        body.setdefault("is_billable", True)
        body.setdefault("bill_by", "Tasks")
        body.setdefault("budget_by", "project")
        created = project is None
        if project is None:
            project = self.remember("projects", self.client.request("POST", "projects", body=body))
        elif any(_project_value(project, k) != v for k, v in body.items()):
            project.update(self.client.request("PATCH", f"projects/{project['id']}", body=body))
        task_ids = self._assign_tasks(project["id"], payload.get("tasks") or [], created)
        self._assign_people(project["id"], people, created)
        return {"project_id": project["id"], "client_id": client_id, "task_ids": task_ids}

    def _client_id(self, name: str, currency: Any) -> int:
        """The id of the client called ``name``, created (with ``currency``) when missing.
        Without reading the clients: a client with a project is named in the batch's
        project list, and a new one is created; only when Harvest answers that the name is
        taken (a client without projects, or an earlier create of ours that landed late)
        are the clients read."""
        if "clients" in self._lists:
            found = self.client_named(name)
        else:
            wanted = name.strip().lower()
            found = next(
                (
                    p["client"]
                    for p in self.rows("projects")
                    if str((p.get("client") or {}).get("name") or "").strip().lower() == wanted
                ),
                None,
            )
        if found is None:
            body = {"name": name, **({"currency": currency} if currency else {})}
            found = self.create("clients", body, self.client_named, name)
        return int(found["id"])

    def _person(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        user = self.user_with_email(str(spec["email"]))
        if user is None:
            raise LookupError(f"Harvest has no person with email {spec['email']!r}")
        return user

    def _assign_tasks(
        self, project_id: int, tasks: list[dict[str, Any]], created: bool
    ) -> dict[str, int]:
        """Assign ``tasks`` to the project (created when missing in the account); a project
        ``created`` in this call has only the assignments Harvest adds to every new project
        (tasks marked ``is_default``), so its assignments are read only when one of those is
        among ``tasks``."""
        path = f"projects/{project_id}/task_assignments"
        wanted = []
        for spec in tasks:
            name = str(spec["name"])
            task = self.task_named(name) or self.create(
                "tasks", {"name": name}, self.task_named, name
            )
            wanted.append((name, task, spec))
        added_by_harvest = any(_is_default(task) for _, task, _ in wanted)
        existing = (
            self._task_assignments(path) if wanted and (added_by_harvest or not created) else {}
        )
        ids = {}
        for name, task, spec in wanted:
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

    def _assign_people(
        self, project_id: int, people: list[tuple[dict[str, Any], dict[str, Any]]], created: bool
    ) -> None:
        """Assign ``people`` (``(user, spec)`` pairs) to the project; as for tasks, a project
        ``created`` in this call has only the people Harvest adds to every new project
        (``has_access_to_all_future_projects``), so its assignments are read only when one of
        those is among ``people``."""
        path = f"projects/{project_id}/user_assignments"
        added_by_harvest = any(_joins_new_projects(user) for user, _ in people)
        existing: set[int] = set()
        if people and (added_by_harvest or not created):
            existing = {a["user"]["id"] for a in self.client.list_all(path)[0]}
        for user, spec in people:
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
        """Mark the approved, unbilled time (unless ``time`` is false) and, with
        ``expenses``, the approved, billable, unbilled expenses of projects ``codes`` from
        ``from`` to ``to`` billed by a Harvest invoice numbered ``number`` (the hub's invoice
        reference) for client ``client``. Returns ``{"invoice_id", "amount", "hours",
        "expenses_amount"}`` (``hours`` from the time lines, ``expenses_amount`` the expense
        lines' sum)."""
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
            period = {"from": payload["from"], "to": payload["to"]}
            items: dict[str, Any] = {"project_ids": ids}
            if payload.get("time", True):
                items["time"] = {"summary_type": "task", **period}
            if payload.get("expenses", False):
                items["expenses"] = {"summary_type": "category", **period, "attach_receipt": True}
            body = {
                "client_id": client["id"],
                "number": number,
                "subject": payload.get("subject") or f"Billed in the ERP as {number}",
                "line_items_import": items,
            }
            found = self.remember("invoices", self.client.request("POST", "invoices", body=body))
        lines = found.get("line_items", [])
        hours = sum(float(line.get("quantity") or 0) for line in lines if _is_time(line))
        expenses = sum(float(line.get("amount") or 0) for line in lines if not _is_time(line))
        return {
            "invoice_id": found["id"],
            "amount": str(found["amount"]),
            "hours": round(hours, 2),
            "expenses_amount": str(round(expenses, 2)),
        }

    def unmark_billed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Delete the Harvest invoice numbered ``number``: Harvest marks the time entries and
        expenses it billed uninvoiced again. No such invoice (never made, or deleted by an
        earlier attempt) is success. Returns ``{"number", "invoice_id"}`` (the deleted
        invoice's id, ``None`` when there was none)."""
        number = str(payload["number"])
        found = self.invoice_numbered(number)
        if found is None:
            return {"number": number, "invoice_id": None}
        try:
            self.client.request("DELETE", f"invoices/{found['id']}")
        except HarvestApiError as exc:  # an earlier attempt's delete landed late
            if exc.status != 404:
                raise
        if "invoices" in self._lists:
            self._lists["invoices"] = [i for i in self._lists["invoices"] if i is not found]
        return {"number": number, "invoice_id": found["id"]}

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


def _project_value(project: Mapping[str, Any], key: str) -> Any:
    """A project's value for a field of the create/update body (a listed project names its
    client in ``client``)."""
    if key == "client_id":
        return (project.get("client") or {}).get("id")
    return project.get(key)


def _is_time(line: Mapping[str, Any]) -> bool:
    """Whether an invoice line bills time: ``Service``, the invoice item category Harvest
    uses for billable hours (expenses come in as ``Product``)."""
    return line.get("kind") == "Service"


def _is_default(task: Mapping[str, Any]) -> bool:
    """Whether Harvest adds ``task`` to every new project (an active default task)."""
    return bool(task.get("is_default")) and task.get("is_active", True) is not False


def _joins_new_projects(user: Mapping[str, Any]) -> bool:
    """Whether Harvest adds ``user`` to every new project."""
    return (
        bool(user.get("has_access_to_all_future_projects"))
        and user.get("is_active", True) is not False
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
