"""A Harvest account's records as reconciliation's facts (:mod:`closeloop.ports.reconcile`):
its engagement projects (``projects``), their time (``time``) and their expenses
(``charges``).

Only records of projects whose ``code`` has the form of a project key
(:func:`~closeloop.domain.keys.split_engagement_code`) concern the hub; the rest of the
account is read past. Each list is read through :meth:`HarvestClient.list_all` in pages of
2,000 (Harvest's largest), so a domain costs one request per page of each list it reads:
``projects`` reads ``/projects`` and ``/task_assignments`` (every project's assignments in
one list, never one call per project), ``time`` reads ``/time_entries`` (each entry names
its project's code and its task's name), ``charges`` reads ``/expenses`` (each expense names
its project's code). Harvest pages by page number, newest first, so a
record created or changed while the pages are read may shift between them: as the change
feed does, a list is read whole, checked against the ``total_entries`` Harvest counted and
read once more when short (then :class:`~closeloop.ports.connector.TransientError`), and
its facts yielded in pages of 2,000 afterwards.

``projects``: key the project code, external id the Harvest project id. ``status``
``"open"`` for an active project, ``"closed"`` for an archived one; ``billing_method``
``"fixed_fee"`` for a fixed-fee project, else ``"time_and_materials"`` (the hub makes a
retainer's project a Time & Materials project billed by task: Harvest keeps nothing that
tells a retainer apart); ``fee`` (Decimal) of a fixed-fee project; ``rates``: task name ->
Decimal ``hourly_rate`` of the project's active task assignments (one with no rate is left
out). ``modified_at``: the latest ``updated_at`` of the project and its task assignments (a
rate edited in Harvest changes the assignment, not the project).

``time``: key ``<system>-<entry id>`` (the key the ERP's timesheet line carries), external
id the entry id. ``project_key``, ``task`` (the task's name), ``date`` (``spent_date``),
``hours`` (Decimal, two places), ``approved`` (``is_closed``: approved through Timesheet
Approval, as the shipped mapping reads it), ``billable``, ``billed`` (``is_billed``).
``modified_at``: ``updated_at``.

``charges``: one fact per expense, key ``expense:<project code>:<system>-<expense id>``: the
charge key the hub bills the expense under (``expense:<project key>:<PSA system>-<expense
id>``, :func:`closeloop.flows.charges.expense_charge` of :mod:`closeloop.flows.bill_expense`'s
``info["key"]``), external id the expense id. ``kind`` ``"expense"``, ``project_key``,
``amount`` (Decimal ``total_cost``, as Harvest gives it, in the client's currency; null read
as 0), ``date`` (``spent_date``), ``approved`` (``is_closed``, as the shipped mapping reads an
expense's approval), ``billable``, ``billed`` (``is_billed``). ``modified_at``:
``updated_at``; ``object``: ``expenses`` (the change feed's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from closeloop.connectors.harvest.client import PER_PAGE, HarvestClient
from closeloop.domain.changes import parse_instant
from closeloop.domain.keys import split_engagement_code
from closeloop.ports.connector import TransientError
from closeloop.ports.reconcile import CHARGES, CUSTOMERS, PROJECTS, TIME, Fact

DOMAINS = (CUSTOMERS, PROJECTS, TIME, CHARGES)
"""The domains a Harvest account holds records of."""

HUNDREDTH = Decimal("0.01")


def read_facts(client: HarvestClient, domain: str, *, system: str) -> Iterator[Sequence[Fact]]:
    """Pages of up to 2,000 facts of ``domain``; ``system`` is the configured system name
    (the prefix of the ``time`` keys and of the expense id in the ``charges`` keys).

    Raises ``ValueError`` at once for a domain not in :data:`DOMAINS`; while iterating,
    :class:`~closeloop.ports.connector.TransientError` when Harvest cannot answer now (or
    records kept moving between pages) and :class:`~.client.HarvestApiError` for a refusal.
    """
    readers: dict[str, Callable[[], list[Fact]]] = {
        PROJECTS: lambda: project_facts(
            read_list(client, "projects"), read_list(client, "task_assignments"), system
        ),
        CUSTOMERS: lambda: client_facts(read_list(client, "clients"), system),
        TIME: lambda: time_facts(read_list(client, "time_entries"), system),
        CHARGES: lambda: expense_facts(read_list(client, "expenses"), system),
    }
    if domain not in readers:
        raise ValueError(f"Harvest holds no {domain!r} facts (its domains: {DOMAINS})")
    return _pages(readers[domain])


def _pages(read: Callable[[], list[Fact]]) -> Iterator[Sequence[Fact]]:
    every = read()
    for start in range(0, len(every), PER_PAGE):
        yield every[start : start + PER_PAGE]


def read_list(client: HarvestClient, resource: str) -> list[dict[str, Any]]:
    """Every record of the list ``resource`` (pages of 2,000), each once. Raises
    :class:`~closeloop.ports.connector.TransientError` when records moved between pages in
    two reads running, besides the client's errors."""
    for _attempt in range(2):
        rows, total = client.list_all(resource)
        unique = {row["id"]: row for row in rows}
        if len(unique) >= total:
            return list(unique.values())
    raise TransientError(f"Harvest {resource}: records moved between pages twice; read again")


def is_engagement(code: Any) -> bool:
    """Whether a project ``code`` has the form of a project key (the hub's projects)."""
    return bool(code) and split_engagement_code(str(code)) is not None


def project_facts(
    projects: Sequence[Mapping[str, Any]],
    task_assignments: Sequence[Mapping[str, Any]],
    system: str,
) -> list[Fact]:
    """The ``projects`` facts of Harvest's project records and the account's task
    assignments (list-response shapes), for the system named ``system``."""
    by_project: dict[Any, list[Mapping[str, Any]]] = {}
    for assignment in task_assignments:
        by_project.setdefault((assignment.get("project") or {}).get("id"), []).append(assignment)
    facts = []
    for project in projects:
        if not is_engagement(project.get("code")):
            continue
        assignments = by_project.get(project["id"], [])
        fixed_fee = bool(project.get("is_fixed_fee"))
        fields: dict[str, Any] = {
            "status": "open" if project.get("is_active", True) else "closed",
            "billing_method": "fixed_fee" if fixed_fee else "time_and_materials",
            "rates": rates(assignments),
        }
        if (project.get("client") or {}).get("id") is not None:
            fields["client_id"] = str(project["client"]["id"])
        if fixed_fee and project.get("fee") is not None:
            fields["fee"] = decimal(project["fee"])
        stamps = [_instant(r.get("updated_at")) for r in (project, *assignments)]
        facts.append(
            Fact(
                domain=PROJECTS,
                key=str(project["code"]),
                system=system,
                external_id=str(project["id"]),
                fields=fields,
                modified_at=max((s for s in stamps if s is not None), default=None),
            )
        )
    return facts


def client_facts(clients: Sequence[Mapping[str, Any]], system: str) -> list[Fact]:
    """The ``customers`` facts of Harvest's clients (every one: a client is paired through
    the ``client_id`` of an engagement's project): ``key`` and ``external_id`` the client
    id, ``legal_name`` its name (the hub names a client after the CRM account's legal
    name), ``currency``."""
    facts = []
    for client in clients:
        fields: dict[str, Any] = {"legal_name": str(client.get("name") or "")}
        if client.get("currency"):
            fields["currency"] = str(client["currency"])
        facts.append(
            Fact(
                domain=CUSTOMERS,
                key=str(client["id"]),
                system=system,
                external_id=str(client["id"]),
                fields=fields,
                modified_at=_instant(client.get("updated_at")),
            )
        )
    return facts


def rates(task_assignments: Sequence[Mapping[str, Any]]) -> dict[str, Decimal]:
    """Task name -> Decimal hourly rate of the active ``task_assignments`` of one project
    (an assignment without a rate is left out)."""
    return {
        str(a["task"]["name"]): decimal(a["hourly_rate"])
        for a in task_assignments
        if a.get("is_active", True) and a.get("hourly_rate") is not None and a.get("task")
    }


def time_facts(entries: Sequence[Mapping[str, Any]], system: str) -> list[Fact]:
    """The ``time`` facts of Harvest's time entry records (list-response shape) on the hub's
    projects, for the system named ``system``."""
    facts = []
    for entry in entries:
        code = (entry.get("project") or {}).get("code")
        if not is_engagement(code):
            continue
        fields = {
            "project_key": str(code),
            "task": str((entry.get("task") or {}).get("name") or ""),
            "date": str(entry["spent_date"]),
            "hours": decimal(entry.get("hours") or 0).quantize(HUNDREDTH, ROUND_HALF_UP),
            "approved": bool(entry.get("is_closed")),
            "billable": bool(entry.get("billable")),
            "billed": bool(entry.get("is_billed")),
        }
        facts.append(
            Fact(
                domain=TIME,
                key=f"{system}-{entry['id']}",
                system=system,
                external_id=str(entry["id"]),
                fields=fields,
                modified_at=_instant(entry.get("updated_at")),
                object="time_entries",
            )
        )
    return facts


def expense_facts(expenses: Sequence[Mapping[str, Any]], system: str) -> list[Fact]:
    """The ``charges`` facts of Harvest's expense records (list-response shape) on the hub's
    projects, for the system named ``system``: keyed by the hub's charge key
    ``expense:<project code>:<system>-<expense id>`` (module docstring). Raises ``KeyError``
    for a record without ``id`` or ``spent_date``."""
    facts = []
    for expense in expenses:
        code = (expense.get("project") or {}).get("code")
        if not is_engagement(code):
            continue
        fields = {
            "kind": "expense",
            "project_key": str(code),
            "amount": decimal(expense.get("total_cost") or 0),
            "date": str(expense["spent_date"]),
            "approved": bool(expense.get("is_closed")),
            "billable": bool(expense.get("billable")),
            "billed": bool(expense.get("is_billed")),
        }
        facts.append(
            Fact(
                domain=CHARGES,
                key=expense_key(str(code), system, expense["id"]),
                system=system,
                external_id=str(expense["id"]),
                fields=fields,
                modified_at=_instant(expense.get("updated_at")),
                object="expenses",
            )
        )
    return facts


def expense_key(project_key: str, system: str, expense_id: Any) -> str:
    """The charge key the hub bills a PSA expense under: ``expense:<project key>:<system>-
    <expense id>`` (``expense:SF-006...:psa-5001``)."""
    return f"expense:{project_key}:{system}-{expense_id}"


def decimal(value: Any) -> Decimal:
    """A JSON number as the Decimal it reads as (``7.25`` -> ``Decimal("7.25")``)."""
    return Decimal(str(value))


def _instant(value: Any) -> datetime | None:
    return parse_instant(str(value)) if value else None
