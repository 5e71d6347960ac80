"""The Harvest connector as the engine sees it: a change feed by ``updated_since`` polling of
clients, projects, tasks, users, time entries and expenses, and idempotent writes
(:mod:`.operations`).

**Change feed.** Harvest lists time entries newest ``spent_date`` first and other resources
newest first, with page-number paging, so the pages are not in modification order and a
record can shift between pages while they are read. The connector therefore reads every page
of ``updated_since`` (the engine's watermark minus its overlap), checks that it saw as many
distinct records as Harvest counted (else it reads again, then gives up transiently), and
yields the records sorted by ``(updated_at, id)`` in chunks, so each committed chunk moves the
watermark forward only past what is already in the inbox.

**Writes.** The ``psa`` role's canonical operations (:mod:`closeloop.domain.operations`) are
translated here: ``upsert_project`` becomes a project budgeted in hours by project, with
one task per role at its hourly rate: billed by task (``time_and_materials``, and
``retainer``, whose fee the hub bills), or a fixed-fee project of ``fee`` (``is_fixed_fee``,
``bill_by: none``: Harvest's billable rates are for Time & Materials projects only);
``close_project`` archives the project of that code; ``mark_billed`` imports the period's
time and/or billable expenses into a Harvest invoice numbered as the operation says (the
hub's invoice reference, unique across ERPs); ``unmark_billed`` deletes that invoice, which
un-bills what it billed. ``upsert_client``,
``upsert_harvest_project`` (every project field Harvest has: ``bill_by``, fixed fees, people)
and ``attach_reference`` are Harvest's own (their payloads as :mod:`.operations` documents).
Idempotency keys: ``<system>:<operation>:<key>`` with the key Harvest shows (client name,
project code, invoice number, time entry id and reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.harvest import facts
from closeloop.connectors.harvest.client import PER_PAGE, HarvestApiError, HarvestClient
from closeloop.connectors.harvest.operations import Batch, refused
from closeloop.domain.changes import Change, parse_instant, stamped_version
from closeloop.domain.commands import (
    Ambiguous,
    Applied,
    Command,
    ExceptionClass,
    Outcome,
    Permanent,
    Transient,
)
from closeloop.domain.operations import CloseProject, MarkBilled, UnmarkBilled, UpsertProject
from closeloop.domain.operations import idempotency_key as role_key
from closeloop.ports.connector import (
    AmbiguousError,
    ConnectorLimits,
    RefusedError,
    TransientError,
)
from closeloop.ports.reconcile import Fact

SYSTEM = "harvest"
OBJECTS = ("clients", "projects", "tasks", "users", "time_entries", "expenses")
_OPERATIONS = (
    "upsert_client",
    "upsert_project",
    "upsert_harvest_project",
    "close_project",
    "mark_billed",
    "unmark_billed",
    "attach_reference",
)


def idempotency_key(operation: str, key: str, system: str = SYSTEM) -> str:
    """The idempotency key of a Harvest ``operation`` on ``key`` for the system named
    ``system`` (:func:`closeloop.domain.operations.idempotency_key`). Raises
    ``ValueError`` for an operation Harvest has not."""
    if operation not in _OPERATIONS:
        raise ValueError(f"unknown Harvest operation {operation!r}")
    return role_key(system, operation, key)


def command_key(command: Command) -> str:
    """The Harvest-visible key of a command's payload (what :meth:`find` looks up)."""
    payload = native_payload(command)
    if command.operation == "upsert_client":
        return str(payload["name"])
    if command.operation in ("upsert_project", "upsert_harvest_project", "close_project"):
        return str(payload["code"])
    if command.operation in ("mark_billed", "unmark_billed"):
        return str(payload["number"])
    return f"{payload['time_entry_id']}:{payload['reference']['id']}"


class HarvestConnector:
    """Reads and writes one Harvest account through :class:`HarvestClient`.

    ``limits``: one request at a time per worker and Harvest's 100 requests per 15 seconds
    (the client also takes each request from the account's shared window).
    """

    def __init__(
        self,
        client: HarvestClient,
        *,
        system: str = SYSTEM,
        objects: Sequence[str] = OBJECTS,
        batch_size: int = 50,
        call_timeout_s: float = 30.0,
    ) -> None:
        unknown = set(objects) - set(OBJECTS)
        if unknown:
            raise ValueError(f"Harvest objects {sorted(unknown)} are not polled (known: {OBJECTS})")
        self.client = client
        self._system = system
        self._objects = tuple(objects)
        requests, window_s = client.window
        self._limits = ConnectorLimits(
            batch_size=batch_size,
            requests_per_window=requests,
            window_s=window_s,
            max_concurrent=2,
            call_timeout_s=call_timeout_s,
        )

    @property
    def system(self) -> str:
        """The configured system name (default ``"harvest"``)."""
        return self._system

    @property
    def limits(self) -> ConnectorLimits:
        """Harvest's rate limit; small batches (each command is a few calls)."""
        return self._limits

    def objects(self) -> Sequence[str]:
        """The polled resources."""
        return self._objects

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # --- reconciliation (closeloop.ports.reconcile.FactSource) ------------------------------
    def fact_domains(self) -> Sequence[str]:
        """``projects`` (the hub's projects), ``time`` (their time entries) and ``charges``
        (their expenses)."""
        return facts.DOMAINS

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        """Pages of ``domain``'s facts, read in pages of 2,000 (:mod:`.facts`). Raises
        ``ValueError`` at once for a domain not in :meth:`fact_domains`."""
        return facts.read_facts(self.client, domain, system=self._system)

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """Changes of ``object_name`` updated at or after ``since``, oldest first (see the
        module docstring). Raises :class:`TransientError` when records kept moving."""
        if object_name not in self._objects:
            raise ValueError(f"{object_name!r} is not among the polled objects {self._objects}")
        params = {}
        if since is not None:
            params["updated_since"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for _attempt in range(2):
            rows, total = self.client.list_all(object_name, params)
            unique = {r["id"]: r for r in rows}
            if len(unique) >= total:
                break
        else:
            raise TransientError(
                f"Harvest {object_name}: records moved between pages twice; polling again later"
            )
        ordered = sorted(unique.values(), key=lambda r: (r["updated_at"], r["id"]))
        for start in range(0, len(ordered), PER_PAGE):
            yield [self._change(object_name, r) for r in ordered[start : start + PER_PAGE]]

    def _change(self, object_name: str, record: dict[str, Any]) -> Change:
        modified = parse_instant(record["updated_at"])
        return Change(
            system=self._system,
            object=object_name,
            external_id=str(record["id"]),
            version=stamped_version(modified, record),  # updated_at has whole seconds only
            modified_at=modified,
            payload=record,
        )

    # --- writes -----------------------------------------------------------------------------
    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """Run ``commands`` in order with lookups shared by the batch. A command whose call
        fails is transient or ambiguous on its own (the others go on); a 429 leaves it and
        the rest of the batch for after ``Retry-After``. When nothing succeeded the first
        failure is raised, so the engine's breaker sees it."""
        batch = Batch(self.client)
        outcomes: list[Outcome] = []
        failures: list[Exception] = []
        for position, command in enumerate(commands):
            action = _action(batch, command.operation)
            try:
                outcomes.append(Applied(action(native_payload(command))))
            except AmbiguousError as exc:
                failures.append(exc)
                outcomes.append(Ambiguous(str(exc)))
                batch = Batch(self.client)  # what it cached may be stale now
            except TransientError as exc:
                failures.append(exc)
                outcomes.append(Transient(str(exc), exc.retry_after_s))
                batch = Batch(self.client)
                if exc.retry_after_s is not None:  # the account is throttled: stop here
                    rest = commands[position + 1 :]
                    outcomes.extend(Transient(str(exc), exc.retry_after_s) for _ in rest)
                    break
            except HarvestApiError as exc:
                outcomes.append(Permanent(_error_class(exc), refused(exc)))
            except RefusedError as exc:  # it could not even be sent (text no system takes)
                outcomes.append(Permanent(ExceptionClass.VALIDATION, str(exc)))
            except LookupError as exc:  # an unknown client, project or person
                outcomes.append(Permanent(ExceptionClass.NOT_FOUND, refused(exc)))
            except (TypeError, ValueError) as exc:
                outcomes.append(Permanent(ExceptionClass.VALIDATION, f"malformed command: {exc}"))
        return outcomes

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """Earlier writes, looked up by the key each operation makes visible (not for
        ``upsert_project``: see below)."""
        batch = Batch(self.client)
        found: dict[str, Applied] = {}
        for full in idempotency_keys:
            parts = full.split(":", 2)
            if len(parts) != 3 or parts[0] != self._system:
                continue
            operation, key = parts[1], parts[2]
            if operation == "upsert_client" and (client := batch.client_named(key)):
                found[full] = Applied({"client_id": client["id"]})
            # upsert_project is several writes (project, tasks, assignments): a project found
            # by its code may lack an assignment, so it is not reported; running it again
            # completes it and writes nothing twice.
            elif operation == "close_project":
                project = batch.project_coded(key)
                if project is not None and not project.get("is_active", True):
                    found[full] = Applied({"project_id": project["id"], "is_active": False})
            elif operation == "mark_billed" and (invoice := batch.invoice_numbered(key)):
                found[full] = Applied(
                    {"invoice_id": invoice["id"], "amount": str(invoice["amount"])}
                )
            elif operation == "unmark_billed" and batch.invoice_numbered(_number(key)) is None:
                # deleted (or never there): what unmark_billed leaves either way. The key is
                # the number, or ``<number>:<credit note>`` as status back asks for it
                found[full] = Applied({"number": _number(key), "invoice_id": None})
            elif operation == "attach_reference":
                entry_id, _, reference = key.partition(":")
                entry = self.client.request("GET", f"time_entries/{entry_id}")
                if (entry.get("external_reference") or {}).get("id") == reference:
                    found[full] = Applied({"time_entry_id": int(entry_id)})
        return found


def _number(key: str) -> str:
    """The PSA invoice number in an ``unmark_billed`` key: ``<number>`` or
    ``<number>:<what asked for it>`` (the hub's numbers, its invoice references, hold no
    colon)."""
    return key.split(":", 1)[0]


def native_payload(command: Command) -> dict[str, Any]:
    """The payload :class:`~.operations.Batch` takes for ``command``: a canonical operation
    translated into Harvest's fields, Harvest's own operations as they are. Raises
    ``ValueError`` for a payload that does not fit its operation."""
    if command.operation == UpsertProject.operation:
        project = UpsertProject.model_validate(command.payload)
        fixed_fee = project.billing_method == "fixed_fee"
        if fixed_fee and project.fee is None:
            raise ValueError("a fixed_fee project needs its fee")
        native: dict[str, Any] = {
            "client": project.customer_name,
            "currency": project.currency,
            "code": project.key,
            "name": project.name,
            "is_billable": True,
            "is_fixed_fee": fixed_fee,
            # Harvest's billable rates (bill_by Project, Tasks, People) are for Time &
            # Materials projects; a fixed-fee project bills its fee
            "bill_by": "none" if fixed_fee else "Tasks",
            "budget_by": "project",
            "budget": float(sum((t.budget_hours for t in project.tasks), Decimal(0))),
            "tasks": [{"name": t.name, "hourly_rate": float(t.hourly_rate)} for t in project.tasks],
        }
        if fixed_fee:
            native["fee"] = float(project.fee or 0)
        if project.assignments:
            native["people"] = [
                {
                    "email": a.email,
                    "is_project_manager": a.is_project_manager,
                    **({"hourly_rate": float(a.hourly_rate)} if a.hourly_rate is not None else {}),
                }
                for a in project.assignments
            ]
        if project.starts_on is not None:
            native["starts_on"] = project.starts_on.isoformat()
        if project.ends_on is not None:
            native["ends_on"] = project.ends_on.isoformat()
        return native
    if command.operation == CloseProject.operation:
        return {"code": CloseProject.model_validate(command.payload).key}
    if command.operation == MarkBilled.operation:
        mark = MarkBilled.model_validate(command.payload)
        if not (mark.time or mark.expenses):
            raise ValueError("mark_billed of neither time nor expenses bills nothing")
        return {
            "number": mark.number,
            "client": mark.customer_name,
            "codes": list(mark.project_keys),
            "from": mark.period_start.isoformat(),
            "to": mark.period_end.isoformat(),
            "subject": mark.subject,
            "time": mark.time,
            "expenses": mark.expenses,
        }
    if command.operation == UnmarkBilled.operation:
        return {"number": UnmarkBilled.model_validate(command.payload).number}
    return command.payload


def _action(batch: Batch, operation: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "upsert_client": batch.upsert_client,
        "upsert_project": batch.upsert_project,
        "upsert_harvest_project": batch.upsert_project,
        "close_project": batch.close_project,
        "mark_billed": batch.mark_billed,
        "unmark_billed": batch.unmark_billed,
        "attach_reference": batch.attach_reference,
    }
    if operation not in actions:
        raise ValueError(f"unknown Harvest operation {operation!r}")
    return actions[operation]


def _error_class(exc: HarvestApiError) -> ExceptionClass:
    text = exc.message.lower()
    if exc.status in (401, 403):
        return ExceptionClass.AUTH
    if exc.status == 404:
        return ExceptionClass.NOT_FOUND
    if "already been taken" in text:
        return ExceptionClass.DUPLICATE
    if "locked" in text or "archived" in text:
        return ExceptionClass.CONFLICT
    return ExceptionClass.VALIDATION
