"""The realistic part of ``closeloop bench tryton``: what the demo's billing phase sends.

Two workloads, each measured through :meth:`TrytonConnector.execute` (commands in batches of
up to 1,000, as the engine sends them) and through the bare RPC floor for the same work:

- **the mix**: ``add_timesheet_line`` commands of which a share (``refused_share``, default
  5 %) is dated after its project was closed in Tryton (``close_project(key, on=...)``), so
  Tryton refuses it; the refused lines are spread evenly over the batches, the rest go to the
  run's open projects. Floor, per batch of up to 1,000 lines: one ``timesheet.work``
  ``search_read`` (the timesheet end dates of the batch's works: what tells a closed
  project) and one ``timesheet.line`` ``create`` of the accepted lines (ids prepared).
- **invoices**: one batch of ``invoice_project`` commands for ``projects`` projects with
  lines, then one batch of their ``post_invoice`` commands (the payloads of the Invoice
  flow). Floor for the same work, five calls whatever the count: one ``project.work``
  ``write`` of the up-to date, one ``project.work.invoice`` of all projects, one
  ``account.invoice`` ``search_read`` to find the new invoices (by their description, the
  project's name), one ``account.invoice`` ``write`` of every invoice's reference and date
  (several id/value pairs in one call), and one ``account.invoice.post`` of all.

Lines and invoices are dated in the previous year (:data:`YEAR`): the sandbox has its fiscal
year, and past invoice dates raise no warning.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import TaskSpec, TrytonOperations
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.commands import Applied, Command, ExceptionClass, Outcome, Permanent

BATCH = 1000  #: commands per ``execute``, as the engine sends them
PEOPLE = 25
YEAR = datetime.now(UTC).year - 1
FIRST_DAY = date(YEAR, 1, 5)
CLOSED_ON = date(YEAR, 7, 1)  #: finance closes the closed projects on this day
UP_TO = date(YEAR, 12, 31)  #: invoices take every line up to, and are dated, this day
TASKS = ("Consultant", "Analyst")  #: tasks per project


class BenchError(RuntimeError):
    """The connector did not do the work the benchmark asked for (a line refused that should
    have been recorded, an invoice missing): figures would be meaningless."""


@dataclass(frozen=True)
class Project:
    """A bench project in Tryton: its key and name, its work id, and its tasks' keys with
    their timesheet work ids."""

    key: str
    name: str
    id: int
    tasks: dict[str, int]


@dataclass(frozen=True)
class Line:
    """One planned time entry: ``refused`` when it is dated after its project was closed."""

    key: str
    employee: str
    task: str
    day: date
    refused: bool


@dataclass
class Timed:
    """What one way did: seconds, RPC calls, the calls by ``(method, caller)`` and the
    seconds waited for Tryton's answers by RPC method."""

    seconds: float
    calls: int
    by_method: Counter[tuple[str, str]]
    waited_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Mark:
    """The RPC session's counters at the start of a way (:func:`mark`, :func:`since`)."""

    calls: int
    by_method: Counter[tuple[str, str]]
    waited_s: dict[str, float]
    started: float


def mark(rpc: TrytonRPC) -> Mark:
    """The counters now."""
    waited = dict(rpc.seconds_by_method)
    return Mark(rpc.calls, Counter(rpc.calls_by_method), waited, time.perf_counter())


def since(rpc: TrytonRPC, start: Mark) -> Timed:
    """What was done since ``start``."""
    waited = {
        m: round(s - start.waited_s.get(m, 0.0), 3)
        for m, s in rpc.seconds_by_method.items()
        if s > start.waited_s.get(m, 0.0)
    }
    return Timed(
        time.perf_counter() - start.started,
        rpc.calls - start.calls,
        rpc.calls_by_method - start.by_method,
        waited,
    )


def make_projects(ops: TrytonOperations, prefix: str, count: int, customer: str) -> list[Project]:
    """``count`` projects ``<prefix>-<n>`` with the :data:`TASKS` at 100 an hour."""
    projects = []
    for n in range(count):
        key, name = f"{prefix}-{n}", f"Bench {prefix} {n}"
        specs = [TaskSpec(f"{key}/{t}", t, Decimal(100)) for t in TASKS]
        ops.upsert_project(key, name, customer, specs, Decimal(100))
        works = ops.find_works([key, *(s.key for s in specs)])
        tasks = {s.key: works[s.key]["timesheet_works"][0] for s in specs}
        projects.append(Project(key, name, works[key]["id"], tasks))
    return projects


def plan_lines(
    prefix: str, entries: int, refused_share: float, open_: list[Project], closed: list[Project]
) -> list[Line]:
    """``entries`` lines; ``floor(entries * refused_share)`` of them, spread evenly, on the
    ``closed`` projects after :data:`CLOSED_ON`; the others on the ``open_`` projects over
    the year."""
    share = Decimal(str(refused_share))
    open_tasks = [t for p in open_ for t in p.tasks]
    closed_tasks = [t for p in closed for t in p.tasks]
    lines = []
    for i in range(entries):
        refused = int((i + 1) * share) > int(i * share)
        if refused:
            task = closed_tasks[i % len(closed_tasks)]
            day = CLOSED_ON + timedelta(days=1 + i % 90)
        else:
            task = open_tasks[i % len(open_tasks)]
            day = FIRST_DAY + timedelta(days=i % 300)
        lines.append(Line(f"{prefix}-{i}", f"p{i % PEOPLE}", task, day, refused))
    return lines


def mix_via_connector(connector: TrytonConnector, lines: list[Line]) -> Timed:
    """The lines as ``add_timesheet_line`` commands through the connector, in batches of
    :data:`BATCH`. Raises :class:`BenchError` unless exactly the planned lines were refused
    (closed period) and the others recorded."""
    commands = [
        Command(
            "tryton",
            "add_timesheet_line",
            line.key,
            idempotency_key("add_timesheet_line", line.key),
            {
                "key": line.key,
                "employee_key": line.employee,
                "employee_name": f"Consultant {line.employee[1:]}",
                "task_key": line.task,
                "date": line.day.isoformat(),
                "hours": "1.5",
                "description": "bench",
            },
        )
        for line in lines
    ]
    rpc = connector.operations.rpc
    begun = mark(rpc)
    outcomes: list[Outcome] = []
    for start in range(0, len(commands), BATCH):
        outcomes.extend(connector.execute(commands[start : start + BATCH]))
    timed = since(rpc, begun)
    wrong = [
        (line.key, outcome)
        for line, outcome in zip(lines, outcomes, strict=True)
        if not (_refused(outcome) if line.refused else isinstance(outcome, Applied))
    ]
    if wrong:
        raise BenchError(f"{len(wrong)} lines not as planned, e.g. {wrong[:2]}")
    return timed


def _refused(outcome: Outcome) -> bool:
    """Whether Tryton refused the line as time in a closed period (else it must be applied)."""
    return isinstance(outcome, Permanent) and outcome.error_class is ExceptionClass.CLOSED_PERIOD


def mix_floor(
    ops: TrytonOperations, lines: list[Line], employees: dict[str, int], work_of: dict[str, int]
) -> Timed:
    """The floor of the mix: per batch of :data:`BATCH`, one read of the batch's works'
    timesheet end dates and one bulk create of the lines dated up to them."""
    rpc = ops.rpc
    begun = mark(rpc)
    for start in range(0, len(lines), BATCH):
        batch = lines[start : start + BATCH]
        works = sorted({work_of[line.task] for line in batch})
        rows = rpc.search_read("timesheet.work", [["id", "in", works]], ["timesheet_end_date"])
        ends = {r["id"]: r["timesheet_end_date"] for r in rows if r["timesheet_end_date"]}
        accepted = [
            {
                "company": ops.ids.company,
                "employee": employees[line.employee],
                "work": work_of[line.task],
                "date": line.day,
                "duration": timedelta(hours=1.5),
                "description": f"bench [cl:{line.key}]",
            }
            for line in batch
            if ends.get(work_of[line.task]) is None or line.day <= ends[work_of[line.task]]
        ]
        rpc.create("timesheet.line", accepted)
    return since(rpc, begun)


def invoices_via_connector(
    connector: TrytonConnector, projects: list[Project]
) -> tuple[Timed, Timed]:
    """Invoice ``projects`` in one batch of ``invoice_project`` commands, then post them in
    one batch of ``post_invoice`` commands (the Invoice flow's payloads); what each batch
    cost. Raises :class:`BenchError` unless every project got a posted invoice."""

    def command(operation: str, reference: str, payload: dict[str, Any]) -> Command:
        return Command(
            "tryton",
            operation,
            reference,
            idempotency_key(operation, reference),
            payload,
            f"tryton:invoice:{reference}",
        )

    references = [f"{p.key}/{UP_TO.isoformat()}" for p in projects]
    invoice = [
        command(
            "invoice_project",
            ref,
            {
                "project_key": p.key,
                "up_to": UP_TO.isoformat(),
                "reference": ref,
                "invoice_date": UP_TO.isoformat(),
            },
        )
        for p, ref in zip(projects, references, strict=True)
    ]
    post = [command("post_invoice", ref, {"reference": ref}) for ref in references]
    rpc = connector.operations.rpc
    timed = []
    for commands, state in ((invoice, "draft"), (post, "posted")):
        begun = mark(rpc)
        outcomes = connector.execute(commands)
        timed.append(since(rpc, begun))
        bad = [
            o
            for o in outcomes
            if not isinstance(o, Applied) or o.result.get("state") not in (state, "posted")
        ]
        if bad:
            raise BenchError(f"{len(bad)} of {len(commands)} invoices not {state}: {bad[:2]}")
    return timed[0], timed[1]


def invoices_floor(rpc: TrytonRPC, projects: list[Project]) -> tuple[Timed, Timed]:
    """The same work in five bare calls: up-to write, invoice, find, reference write (the
    four of invoicing), post. Raises :class:`BenchError` when an invoice is missing."""
    ids = [p.id for p in projects]
    begun = mark(rpc)
    rpc.write("project.work", ids, {"project_invoice_timesheet_up_to": UP_TO})
    rpc.call("project.work", "invoice", ids)
    rows = rpc.search_read(
        "account.invoice",
        [
            ["type", "=", "out"],
            ["state", "=", "draft"],
            ["reference", "=", None],
            ["description", "in", [p.name for p in projects]],
        ],
        ["description"],
    )
    by_name = {r["description"]: r["id"] for r in rows}
    if len(by_name) != len(projects):
        raise BenchError(f"{len(by_name)} invoices for {len(projects)} projects")
    pairs: list[Any] = []
    for p in projects:
        pairs += [[by_name[p.name]], {"reference": f"{p.key}/{UP_TO}", "invoice_date": UP_TO}]
    rpc.call("account.invoice", "write", *pairs)
    invoicing = since(rpc, begun)
    begun = mark(rpc)
    rpc.call("account.invoice", "post", sorted(by_name.values()))
    return invoicing, since(rpc, begun)
