"""Time in Tryton: consultants as employees, approved time entries as timesheet lines.

A timesheet line's key is a ``[cl:<key>]`` marker at the end of its ``description`` (its
``uuid`` cannot be written over RPC). A batch of entries costs, once the tasks and people
are known to this session: one read of the tasks' timesheet dates (what a closed project
refuses is decided on it, per entry) and one bulk ``create`` of the rest. Looking the
markers up is for resolving a lost answer only (:meth:`TimesheetOperations.find_timesheet_lines`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.keys import LINE_MARK
from closeloop.connectors.tryton.rpc import TrytonRPC, TrytonUserError
from closeloop.connectors.tryton.setup import TrytonIds

FIND_CHUNK = 200  # like clauses per search (SQLite refuses an expression 1,000 deep)


@dataclass(frozen=True)
class TimesheetEntry:
    """An approved time entry to record: ``key`` is its idempotency key; ``employee_key``
    and ``employee_name`` identify the consultant; ``task_key`` the task worked on."""

    key: str
    employee_key: str
    employee_name: str
    task_key: str
    date: date
    hours: Decimal
    description: str = ""


class TimesheetOperations:
    """The time part of :class:`~.operations.TrytonOperations` (a mixin: it needs ``rpc``,
    ``ids`` and ``find_works`` from the class that combines it, and the two caches below)."""

    rpc: TrytonRPC
    ids: TrytonIds
    _employees: dict[str, int]
    _timesheet_works: dict[str, int]

    def find_works(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Provided by the project operations."""
        raise NotImplementedError

    def forget_cached(self) -> None:
        """Drop what this session remembers of tasks and people (after a refusal: a task or
        employee may have been removed in Tryton since)."""
        self._employees.clear()
        self._timesheet_works.clear()

    def ensure_employees(self, people: Iterable[tuple[str, str]]) -> dict[str, int]:
        """Employee ids in this company by person key, for ``(key, name)`` pairs: a person
        is the party of code ``EMP-<key>``, shared by the companies; one without an employee
        of this company gets one (reusing the party of another company's employee, or a
        new party). Four calls at most, whatever the count (this company's and others'
        employees, parties, created parties, created employees), none for people this
        session already knows."""
        wanted = {k: v for k, v in people if k not in self._employees}
        if not wanted:
            return dict(self._employees)
        codes = {f"EMP-{k}": k for k in wanted}
        rows = self.rpc.search_read(
            "company.employee",
            [["party.code", "in", list(codes)]],
            ["party", "party.code", "company"],
            context={"active_test": False},
        )
        found: dict[str, int] = {}
        parties: dict[str, int] = {}
        for row in rows:
            key = codes[row["party."]["code"]]
            parties[key] = row["party"]
            if row["company"] == self.ids.company:
                found[key] = row["id"]
        unknown = [f"EMP-{k}" for k in wanted if k not in parties]
        if unknown:
            for row in self.rpc.search_read(
                "party.party", [["code", "in", unknown]], ["code"], context={"active_test": False}
            ):
                parties[codes[row["code"]]] = row["id"]
        new = [k for k in wanted if k not in parties]
        if new:
            created = self.rpc.create(
                "party.party", [{"name": wanted[k], "code": f"EMP-{k}"} for k in new]
            )
            parties.update(zip(new, created, strict=True))
        missing = [k for k in wanted if k not in found]
        if missing:
            employees = self.rpc.create(
                "company.employee",
                [{"party": parties[k], "company": self.ids.company} for k in missing],
            )
            found.update(zip(missing, employees, strict=True))
        self._employees.update(found)
        return dict(self._employees)

    def timesheet_works(self, task_keys: Iterable[str]) -> dict[str, int]:
        """The timesheet work id of each known task key (one read for tasks this session has
        not seen yet; a task Tryton lacks is absent from the result)."""
        task_keys = list(task_keys)
        wanted = sorted(set(task_keys) - set(self._timesheet_works))
        if wanted:
            tasks = self.find_works(wanted)
            self._timesheet_works.update(
                {k: v["timesheet_works"][0] for k, v in tasks.items() if v["timesheet_works"]}
            )
        return {k: self._timesheet_works[k] for k in task_keys if k in self._timesheet_works}

    def screen_entries(self, entries: Sequence[TimesheetEntry]) -> dict[str, Exception]:
        """What Tryton would refuse among ``entries``, decided on data read once for the
        batch, by entry key: ``LookupError`` for a task Tryton does not know,
        :class:`TrytonUserError` (closed period) for time dated after its task's timesheet
        ended (a closed project) or before it started. At most two reads."""
        works = self.timesheet_works(e.task_key for e in entries)
        refused: dict[str, Exception] = {}
        for entry in entries:
            if entry.task_key not in works:
                refused[entry.key] = LookupError(f"tasks unknown to Tryton: {entry.task_key}")
        known = sorted({works[e.task_key] for e in entries if e.key not in refused})
        if not known:
            return refused
        rows = self.rpc.search_read(
            "timesheet.work",
            [["id", "in", known]],
            ["timesheet_start_date", "timesheet_end_date"],
        )
        dates = {r["id"]: (r["timesheet_start_date"], r["timesheet_end_date"]) for r in rows}
        for entry in entries:
            if entry.key in refused:
                continue
            start, end = dates.get(works[entry.task_key], (None, None))
            if end is not None and entry.date > end:
                refused[entry.key] = TrytonUserError(
                    f"project task {entry.task_key} is closed: its timesheet ended on "
                    f"{end.isoformat()}, so time of {entry.date.isoformat()} cannot be "
                    "recorded (the period is closed)"
                )
            elif start is not None and entry.date < start:
                refused[entry.key] = TrytonUserError(
                    f"project task {entry.task_key} takes time from {start.isoformat()} "
                    f"only, so time of {entry.date.isoformat()} cannot be recorded "
                    "(the period is closed)"
                )
        return refused

    def create_timesheet_lines(self, entries: Sequence[TimesheetEntry]) -> list[int]:
        """Create one line per entry in one bulk call (entries screened and their tasks
        known: :meth:`screen_entries`); line ids in order. Tryton refuses the call as a whole
        (:class:`~.rpc.TrytonError`) when it refuses any line, and writes none then."""
        if not entries:
            return []
        works = self.timesheet_works(e.task_key for e in entries)
        employees = self.ensure_employees((e.employee_key, e.employee_name) for e in entries)
        return self.rpc.create(
            "timesheet.line",
            [
                {
                    "company": self.ids.company,
                    "employee": employees[e.employee_key],
                    "work": works[e.task_key],
                    "date": e.date,
                    "duration": timedelta(hours=float(e.hours)),
                    "description": line_description(e),
                }
                for e in entries
            ],
        )

    def find_timesheet_lines(self, keys: Sequence[str]) -> dict[str, int]:
        """Line ids of the entry keys already recorded, found by their markers (for
        resolving a lost answer): one search per :data:`FIND_CHUNK` keys, since each key is
        its own ``like`` clause."""
        found: dict[str, int] = {}
        for start in range(0, len(keys), FIND_CHUNK):
            marks = {LINE_MARK.format(key=k): k for k in keys[start : start + FIND_CHUNK]}
            domain: list[Any] = ["OR", *[["description", "like", f"%{m}"] for m in marks]]
            company = ["company", "=", self.ids.company]
            for row in self.rpc.search_read("timesheet.line", [company, domain], ["description"]):
                description = row["description"] or ""
                mark = description[description.rfind("[cl:") :]
                if mark in marks:
                    found[marks[mark]] = row["id"]
        return found

    def _recorded(self, entries: Sequence[TimesheetEntry]) -> dict[str, int]:
        """Line ids by key of ``entries`` already recorded: one search on the exact
        descriptions they would have, on their works and dates."""
        works = self.timesheet_works(e.task_key for e in entries)
        descriptions = {line_description(e): e.key for e in entries}
        rows = self.rpc.search_read(
            "timesheet.line",
            [
                ["work", "in", sorted(set(works.values()))],
                ["date", ">=", min(e.date for e in entries)],
                ["date", "<=", max(e.date for e in entries)],
                ["description", "in", list(descriptions)],
            ],
            ["description"],
        )
        return {descriptions[r["description"]]: r["id"] for r in rows}

    def add_timesheet_lines(self, entries: Sequence[TimesheetEntry]) -> dict[str, int]:
        """Record ``entries`` in bulk, skipping those already recorded; line ids by key.

        Raises the first refusal of :meth:`screen_entries` (``LookupError`` for an unknown
        task, :class:`TrytonUserError` for a closed project), or Tryton's.
        """
        if not entries:
            return {}
        refused = self.screen_entries(entries)
        if refused:
            raise next(iter(refused.values()))
        done = self._recorded(entries)
        todo = [e for e in entries if e.key not in done]
        done.update(zip((e.key for e in todo), self.create_timesheet_lines(todo), strict=True))
        return {e.key: done[e.key] for e in entries}


def line_description(entry: TimesheetEntry) -> str:
    """The entry's text with its key marker at the end."""
    return f"{entry.description} {LINE_MARK.format(key=entry.key)}".strip()
