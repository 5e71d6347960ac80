"""What each phase of the demo cost and did: API calls per system (by resource, and Tryton's
by RPC method and caller), the hub's polls, CPU seconds of the hub and of the systems'
processes, and the business work (:class:`~closeloop.devtools.demo.summary.PhaseWork`) next to its
floor (:func:`~closeloop.devtools.demo.summary.floors`).

A :class:`Meter` takes a :class:`Reading` at a phase's start and end; :meth:`Meter.phase`
turns the two into the phase's report.
"""

from __future__ import annotations

import os
import resource
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from closeloop.bootstrap import Hub
from closeloop.devtools.demo.summary import PhaseWork, erp_systems, floors
from closeloop.engine.intake import IntakeResult
from closeloop.store import tables as t

SYSTEMS = ("salesforce", "harvest", "tryton")
"""The systems whose calls have a floor (:func:`~closeloop.devtools.demo.summary.floors`)."""
HTTP_SYSTEMS = ("salesforce", "harvest", "xero")
"""The systems whose clients count calls by resource (Xero: the acquired unit's, when the
hub has it; its floor is ``closeloop bench xero``'s)."""
TOP_METHODS = 10


@dataclass(frozen=True)
class Reading:
    """The counters at one moment: requests per system by resource (Salesforce, Harvest)
    or by ``(RPC method, caller)`` (Tryton, with the seconds waited for its answers by
    method), the hub database's last command id, the number
    of polls per system so far, and CPU seconds by process (``hub``, and each system's
    process group when readable)."""

    by_resource: dict[str, dict[str, int]]
    tryton_methods: Counter[tuple[str, str]]
    tryton_waited_s: dict[str, float]
    last_command: int
    polls: dict[str, int]
    cpu_s: dict[str, float]

    def calls(self) -> dict[str, int]:
        """Requests per system."""
        out = {s: sum(calls.values()) for s, calls in self.by_resource.items()}
        out["tryton"] = sum(self.tryton_methods.values())
        return out


def process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of the processes in ``pid``'s process group (and of their
    children they waited for), from ``/proc``; ``None`` where there is no ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
        if int(fields[2]) != pid:  # 5th field: process group
            continue
        found = True
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks if found else None


def hub_cpu_s() -> float:
    """User plus system CPU seconds of this process so far (the hub and the demo driver)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Counts a hub's polls (by wrapping its intake's ``poll``) and reads its counters.
    ``pids``: the systems' process ids by name (``sandbox.json``), for their CPU seconds."""

    def __init__(self, hub: Hub, pids: dict[str, int]) -> None:
        self.hub = hub
        self.pids = pids
        #: per system, the records read by each poll, in order
        self.polls: dict[str, list[int]] = defaultdict(list)
        self._people: set[str] = set()
        inner = hub.intake.poll

        def counted(system: str, object_name: str, overlap_s: float) -> IntakeResult:
            result = inner(system, object_name, overlap_s)
            self.polls[system].append(result.accepted + result.duplicates)
            return result

        setattr(hub.intake, "poll", counted)  # noqa: B010 - an instance's method, for a count

    def reading(self) -> Reading:
        """The counters now."""
        by_resource = {}
        for name in HTTP_SYSTEMS:
            if name in self.hub.settings.systems:
                client = self.hub.registry.connector(name).client  # type: ignore[attr-defined]
                by_resource[name] = dict(client.calls)
        methods: Counter[tuple[str, str]] = Counter()
        waited: dict[str, float] = {}
        for name in erp_systems(self.hub):  # one Tryton, a connection per legal entity
            rpc = self.hub.registry.connector(name).operations.rpc  # type: ignore[attr-defined]
            methods.update(rpc.calls_by_method)
            for method, seconds in rpc.seconds_by_method.items():
                waited[method] = waited.get(method, 0.0) + seconds
        with self.hub.store.engine.connect() as conn:
            last = conn.execute(select(func.max(t.commands.c.id))).scalar() or 0
        cpu = {"hub": hub_cpu_s()}
        for name, pid in self.pids.items():
            seconds = process_cpu_s(pid)
            if seconds is not None:
                cpu[name] = seconds
        return Reading(
            by_resource,
            methods,
            waited,
            int(last),
            {s: len(p) for s, p in self.polls.items()},
            cpu,
        )

    def phase(self, start: Reading, end: Reading, seconds: float) -> dict[str, Any]:
        """The phase between two readings: ``seconds``, ``api_calls`` and ``floor`` per
        system (no floor for Xero), ``work`` (:class:`PhaseWork` as a dict),
        ``calls_by_resource`` (Salesforce, Harvest, Xero), the top
        ``tryton_calls_by_method`` and ``cpu_s`` by process."""
        calls = {s: n - start.calls().get(s, 0) for s, n in end.calls().items()}
        work = self.work(start, end)
        return {
            "seconds": round(seconds, 1),
            "api_calls": calls,
            "floor": floors(work),
            "work": asdict(work) | {"polls": {s: len(p) for s, p in work.polls.items()}},
            "calls_by_resource": {
                s: _delta(start.by_resource.get(s, {}), end.by_resource.get(s, {}))
                for s in HTTP_SYSTEMS
                if s in end.by_resource
            },
            "tryton_calls_by_method": by_method(start, end),
            "cpu_s": {
                k: round(v - start.cpu_s.get(k, 0.0), 2)
                for k, v in end.cpu_s.items()
                if k in start.cpu_s
            },
        }

    def work(self, start: Reading, end: Reading) -> PhaseWork:
        """What the commands done between the readings did, and the polls made."""
        c = t.commands
        query = select(c.c.system, c.c.operation, c.c.status, c.c.payload, c.c.result).where(
            c.c.id > start.last_command, c.c.id <= end.last_command
        )
        with self.hub.store.engine.connect() as conn:
            rows = conn.execute(query).all()
        done = [r for r in rows if r.status == "done"]
        erps = set(erp_systems(self.hub))

        def system_of(row: Any) -> str:
            return "tryton" if row.system in erps else str(row.system)

        def of(system: str, operation: str) -> list[Any]:
            return [r for r in done if system_of(r) == system and r.operation == operation]

        psa = of("harvest", "upsert_project")
        lines = of("tryton", "add_timesheet_line")
        people = {r.payload.get("employee_key") for r in lines} - self._people
        self._people |= people
        invoices = [r for r in of("tryton", "invoice_project") if (r.result or {}).get("reference")]
        per_project = Counter(r.payload.get("project_key") for r in invoices)
        crm = {
            (
                r.payload.get("record", "opportunity"),
                r.payload.get("record_id", r.payload.get("deal_id")),
            )
            for r in done
            if r.system == "salesforce"
            and r.operation in ("update_engagement", "update_billing_totals")
        }
        return PhaseWork(
            accounts_matched=len(of("tryton", "match_customer")),
            customers=len({r.payload.get("code") for r in of("tryton", "upsert_customer")}),
            erp_projects=len(of("tryton", "upsert_project")),
            psa_projects=len(psa),
            psa_clients=len({r.payload.get("customer_name") for r in psa}),
            psa_tasks=len({t["name"] for r in psa for t in r.payload.get("tasks") or []}),
            task_assignments=sum(len(r.payload.get("tasks") or []) for r in psa),
            user_assignments=sum(len(r.payload.get("assignments") or []) for r in psa),
            lines=len(lines),
            lines_refused=sum(
                system_of(r) == "tryton"
                and r.operation == "add_timesheet_line"
                and r.status != "done"
                for r in rows
            ),
            new_people=len(people),
            invoices=len(invoices),
            invoice_rounds=max(per_project.values(), default=0),
            posted=sum(
                (r.result or {}).get("state") in ("posted", "paid")
                for r in of("tryton", "post_invoice")
            ),
            crm_records=len(crm),
            psa_invoices=len(of("harvest", "mark_billed")),
            polls={
                s: list(p[start.polls.get(s, 0) : end.polls.get(s, 0)])
                for s, p in self.polls.items()
            },
            clock_reads=_delta(
                start.by_resource.get("salesforce", {}), end.by_resource.get("salesforce", {})
            ).get("limits", 0),
        )


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def by_method(start: Reading, end: Reading, top: int = TOP_METHODS) -> list[dict[str, Any]]:
    """The ``top`` Tryton RPC methods by calls between two readings, with the closeloop
    function that made them: ``[{"method", "caller", "calls", "method_waited_s"}]``, most
    first; ``method_waited_s``: seconds waited for Tryton's answers to that method, all its
    callers together."""
    counts = end.tryton_methods - start.tryton_methods
    return [
        {
            "method": method,
            "caller": caller,
            "calls": calls,
            "method_waited_s": round(
                end.tryton_waited_s.get(method, 0.0) - start.tryton_waited_s.get(method, 0.0), 2
            ),
        }
        for (method, caller), calls in counts.most_common(top)
    ]
