"""``closeloop bench reconcile``: what one full reconciliation over the demo firm costs.

A run builds the hub of a demo home's ``closeloop.yaml`` (the running systems of
``closeloop demo --keep-running``), reconciles every domain without repairing, and counts
what each system received: its client's own counters first (Salesforce and Harvest HTTP
requests by resource, with Salesforce's OAuth token requests, which its counter leaves out;
Tryton RPC calls), then each call logged with the reconciliation domain being read and the
closeloop functions that made it. Beside the calls, the records each system returned (each
record once, by id, per list read) and the paging floor: the fewest calls the vendor's
largest page allows for those records (:data:`PAGING`), one call at least for each list
read. Also the wall seconds of the run, the CPU seconds of this process (the hub) and of the
systems' processes, the records reconciled per domain and the drift found.

``run_reconcile_bench`` runs the demo itself first (in a temporary home, left running for
the runs and stopped after them) when no home with running systems is given.
"""

from __future__ import annotations

import io
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import load_settings
from closeloop.connectors.harvest.client import PER_PAGE as HARVEST_PAGE
from closeloop.connectors.tryton.facts import PAGE as TRYTON_PAGE
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.meter import hub_cpu_s, process_cpu_s
from closeloop.devtools.demo.run import DemoOptions, run_demo
from closeloop.devtools.demo.summary import SALESFORCE_PAGE
from closeloop.ports.reconcile import DOMAINS, Fact, FactSource
from closeloop.reconcile.run import RunRequest, drift_total
from closeloop.sandboxes.tryton.server import stop_pid

SYSTEMS = ("salesforce", "harvest", "tryton")
"""The kinds of system measured (every configured system of a kind counts under it: the
demo's Tryton is one system per legal entity)."""

OUTSIDE = "(outside a read)"
"""The domain of a call made while no domain was being read (e.g. a session renewed)."""


@dataclass(frozen=True)
class Paging:
    """A vendor's largest page for the lists reconciliation reads, and where it comes from."""

    page: int
    source: str


PAGING = {
    "salesforce": Paging(
        SALESFORCE_PAGE,
        "2,000 records per SOQL query page, the REST API's largest "
        "(devtools.demo.summary.SALESFORCE_PAGE); connectors/salesforce/facts.py reads each "
        "domain with one query (Account; Opportunity with a mobilization status; "
        "Milestone__c of those opportunities)",
    ),
    "harvest": Paging(
        HARVEST_PAGE,
        "2,000 records per list page, Harvest's largest (connectors.harvest.client.PER_PAGE);"
        " connectors/harvest/facts.py reads /projects and /task_assignments for projects, "
        "/time_entries for time, /expenses for charges",
    ),
    "tryton": Paging(
        TRYTON_PAGE,
        "500 rows per search_read, the connector's page (connectors.tryton.facts.PAGE; "
        "Tryton itself sets no maximum), per company: project.work (customers and "
        "projects), timesheet.line, account.invoice, account.invoice.line (charges)",
    ),
}


def floor_calls(records_by_list: Mapping[str, int], page: int) -> int:
    """The fewest calls that read lists of these sizes in pages of ``page``: one per page,
    one at least for each list (an empty answer is a call too)."""
    return sum(max(1, math.ceil(n / page)) for n in records_by_list.values())


def per_1000(calls: float, records: float) -> float | None:
    """Calls per 1,000 records, one decimal (``None`` without records)."""
    return round(calls * 1000 / records, 1) if records else None


# --- counting one hub's calls ----------------------------------------------------------
_CLIENT_MODULES = (
    "closeloop.connectors.salesforce.client",
    "closeloop.connectors.harvest.client",
    "closeloop.connectors.tryton.rpc",
    __name__,
)


def _caller(depth: int = 3) -> str:
    """The nearest ``depth`` named closeloop functions on the stack outside the clients and
    this module, innermost first (``connectors.tryton.facts._pages < _hub_projects < ...``)."""
    names: list[str] = []
    frame = sys._getframe(1)
    last = ""
    while frame is not None and len(names) < depth:
        module = str(frame.f_globals.get("__name__", ""))
        name = frame.f_code.co_name
        ours = module.startswith("closeloop") and module not in _CLIENT_MODULES
        if ours and not name.startswith("<"):
            short = module.removeprefix("closeloop.")
            names.append(name if short == last else f"{short}.{name}")
            last = short
        frame = frame.f_back  # type: ignore[assignment]
    return " < ".join(names) or "?"


def _delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@dataclass
class Tap:
    """Counts the calls a hub's Salesforce, Harvest and Tryton systems receive and logs each
    with the domain being read and its caller; keeps the records each list returned, by id.

    ``kinds``: configured system name -> kind, for the systems measured."""

    hub: Hub
    kinds: dict[str, str] = field(default_factory=dict)
    #: (system, domain, call, caller) -> calls
    log: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    #: (system, list) -> ids of the records it returned; (system, domain, list) -> rows
    ids: dict[tuple[str, str], set[Any]] = field(default_factory=dict)
    rows: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: (system, domain) -> facts yielded
    facts: Counter[tuple[str, str]] = field(default_factory=Counter)
    logins: Counter[str] = field(default_factory=Counter)
    reading: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        systems = self.hub.settings.systems
        self.kinds = {n: s.kind for n, s in systems.items() if s.kind in SYSTEMS}
        for name, kind in self.kinds.items():
            connector: Any = self.hub.registry.connector(name)
            if kind == "salesforce":
                self._tap_salesforce(name, connector.client)
            elif kind == "harvest":
                self._tap_harvest(name, connector.client)
            else:
                self._tap_tryton(name, connector.operations.rpc)
        sources = self.hub.reconciler.sources
        for name, source in list(sources.items()):
            sources[name] = _Attributed(source, name, self)

    # counters ------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Calls each measured system received so far, by its client's own counters (and
        Salesforce's token requests)."""
        out: dict[str, int] = {}
        for name, kind in self.kinds.items():
            connector: Any = self.hub.registry.connector(name)
            if kind == "tryton":
                out[name] = int(connector.operations.rpc.calls)
            else:
                out[name] = sum(connector.client.calls.values()) + self.logins[name]
        return out

    def waited_s(self) -> float:
        """Seconds Harvest's clients waited for its rate limit so far."""
        return sum(
            float(getattr(self.hub.registry.connector(n), "client").waited_s)  # noqa: B009
            for n, k in self.kinds.items()
            if k == "harvest"
        )

    # wrappers -------------------------------------------------------------------------
    def _domain(self, system: str) -> str:
        return self.reading[1] if self.reading and self.reading[0] == system else OUTSIDE

    def _record(self, system: str, list_name: str, rows: Sequence[Any], id_key: str) -> None:
        seen = self.ids.setdefault((system, list_name), set())
        for n, row in enumerate(rows):
            seen.add(row.get(id_key, ("row", n)) if isinstance(row, Mapping) else ("row", n))
        self.rows[(system, self._domain(system), list_name)] += len(rows)

    def _logged(self, system: str, client: Any, call: Callable[[], Any]) -> Any:
        """``call()``, logging the requests it made by the client's ``calls`` counter."""
        before = dict(client.calls)
        try:
            return call()
        finally:
            caller = _caller()
            for resource, n in _delta(before, client.calls).items():
                self.log[(system, self._domain(system), resource, caller)] += n

    def _tap_salesforce(self, system: str, client: Any) -> None:
        request, login, query = client.request, client._login, client.query

        def counted_request(method: str, path: str, **kw: Any) -> Any:
            return self._logged(system, client, lambda: request(method, path, **kw))

        def counted_login() -> Any:
            self.logins[system] += 1
            self.log[(system, self._domain(system), "oauth2/token", _caller())] += 1
            return login()

        def counted_query(soql: str, **kw: Any) -> Iterator[dict[str, Any]]:
            words = soql.split()
            sobject = words[words.index("FROM") + 1] if "FROM" in words else "?"
            for page in query(soql, **kw):
                self._record(system, sobject, page.get("records") or [], "Id")
                yield page

        setattr(client, "request", counted_request)  # noqa: B010 - an instance's, to count
        setattr(client, "_login", counted_login)  # noqa: B010 - its token requests
        setattr(client, "query", counted_query)  # noqa: B010

    def _tap_harvest(self, system: str, client: Any) -> None:
        request, list_all = client.request, client.list_all

        def counted_request(method: str, path: str, **kw: Any) -> Any:
            return self._logged(system, client, lambda: request(method, path, **kw))

        def counted_list(resource: str, params: Any = None) -> tuple[list[Any], int]:
            rows, total = list_all(resource, params)
            self._record(system, resource, rows, "id")
            return rows, total

        setattr(client, "request", counted_request)  # noqa: B010
        setattr(client, "list_all", counted_list)  # noqa: B010

    def _tap_tryton(self, system: str, rpc: Any) -> None:
        search_read = rpc.search_read

        def counted(model: str, *args: Any, **kw: Any) -> list[dict[str, Any]]:
            before = rpc.calls
            try:
                rows: list[dict[str, Any]] = search_read(model, *args, **kw)
            finally:
                n = rpc.calls - before
                if n:
                    self.log[(system, self._domain(system), f"{model}.search_read", _caller())] += n
            self._record(system, model, rows, "id")
            return rows

        setattr(rpc, "search_read", counted)  # noqa: B010


class _Attributed:
    """A fact source whose reads say, while they run, which system and domain they read."""

    def __init__(self, inner: FactSource, system: str, tap: Tap) -> None:
        self.inner, self.system, self.tap = inner, system, tap

    def fact_domains(self) -> Sequence[str]:
        return self.inner.fact_domains()

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        pages = iter(self.inner.read_facts(domain))  # ValueError at once, as the source's

        def attributed() -> Iterator[Sequence[Fact]]:
            while True:
                self.tap.reading = (self.system, domain)
                try:
                    page = next(pages)
                except StopIteration:
                    return
                finally:
                    self.tap.reading = None
                self.tap.facts[(self.system, domain)] += len(page)
                yield page

        return attributed()


# --- one run ---------------------------------------------------------------------------
def running(home: Path) -> bool:
    """Whether ``home`` has Salesforce, Harvest and Tryton running (``sandbox.json``)."""
    state = sandboxctl.read_state(home)
    return all(
        isinstance(state.get(s), dict)
        and "pid" in state[s]
        and sandboxctl.alive(int(state[s]["pid"]))
        for s in SYSTEMS
    )


def system_pids(home: Path) -> dict[str, int]:
    """The systems' process ids of ``home`` (``sandbox.json``), by kind."""
    state = sandboxctl.read_state(home)
    return {s: int(state[s]["pid"]) for s in SYSTEMS if "pid" in (state.get(s) or {})}


def _cpu(pids: Mapping[str, int]) -> dict[str, float]:
    out = {"hub": hub_cpu_s()}
    for name, pid in pids.items():
        seconds = process_cpu_s(pid)
        if seconds is not None:
            out[name] = seconds
    return out


def reconcile_once(home: Path) -> dict[str, Any]:
    """One full reconciliation (every domain, no repair) through a hub built from
    ``home/closeloop.yaml``; what it cost and found (the keys of :func:`medians`'s runs)."""
    pids = system_pids(home)
    built = time.monotonic()
    hub = build_hub(load_settings(home / "closeloop.yaml"), upgrade=True)  # a set-up path
    try:
        build_s = time.monotonic() - built
        tap = Tap(hub)
        startup = tap.counters()  # sessions and company look-ups while the hub was built
        cpu_before, waited = _cpu(pids), tap.waited_s()
        counted = tap.counters()
        started = time.monotonic()
        run = hub.reconciler.run(RunRequest(DOMAINS, trigger="bench", actor="bench"))
        seconds = time.monotonic() - started
        cpu_after, counted_after = _cpu(pids), tap.counters()
        waited = tap.waited_s() - waited
    finally:
        hub.close()
    calls = {name: counted_after[name] - counted[name] for name in counted}
    logged: Counter[str] = Counter()
    for (system, *_), n in tap.log.items():
        logged[system] += n
    for system, n in calls.items():  # a call the wrappers did not see stays visible
        if n != logged[system]:
            tap.log[(system, OUTSIDE, "(not logged)", "?")] += n - logged[system]
    return {
        "seconds": round(seconds, 2),
        "build_s": round(build_s, 2),
        "cpu_s": {k: round(v - cpu_before[k], 2) for k, v in cpu_after.items() if k in cpu_before},
        "records": dict(run.records),
        "drift": {d: dict(k) for d, k in run.counts.items()},
        "drift_total": drift_total(run),
        "status": run.status,
        "error": run.error,
        "run_id": run.id,
        "pages_in_report": dict(run.pages),
        "harvest_rate_limit_wait_s": round(waited, 2),
        "startup_calls": _by_kind(tap.kinds, startup),
        "systems": _systems(tap, calls),
        "call_log": [
            {"system": s, "domain": d, "call": c, "caller": who, "calls": n}
            for (s, d, c, who), n in sorted(tap.log.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def _by_kind(kinds: Mapping[str, str], by_system: Mapping[str, int]) -> dict[str, int]:
    out = dict.fromkeys(SYSTEMS, 0)
    for name, n in by_system.items():
        out[kinds[name]] += n
    return out


def _systems(tap: Tap, calls: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per kind: ``calls``, ``records`` read (each once), ``returned`` (rows, re-reads
    included), ``facts`` yielded, ``floor``, ``calls_by_domain`` and ``lists`` (per
    ``system list``: records, rows returned, floor)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in SYSTEMS:
        names = [n for n, k in tap.kinds.items() if k == kind]
        sizes = {f"{s} {lst}": len(ids) for (s, lst), ids in tap.ids.items() if s in names}
        returned: Counter[str] = Counter()
        for (s, _, lst), n in tap.rows.items():
            if s in names:
                returned[f"{s} {lst}"] += n
        by_domain: Counter[str] = Counter()
        for (s, d, _, _), n in tap.log.items():
            if s in names:
                by_domain[d] += n
        page = PAGING[kind].page
        out[kind] = {
            "calls": sum(calls.get(n, 0) for n in names),
            "records": sum(sizes.values()),
            "returned": sum(returned.values()),
            "facts": sum(n for (s, _), n in tap.facts.items() if s in names),
            "floor": floor_calls(sizes, page),
            "calls_by_domain": dict(by_domain),
            "lists": {
                k: {"records": n, "returned": returned[k], "floor": floor_calls({k: n}, page)}
                for k, n in sorted(sizes.items())
            },
        }
    return out


# --- the benchmark ---------------------------------------------------------------------
def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 2) if values else 0.0


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The medians over runs of :func:`reconcile_once`: ``seconds``, ``cpu_s``, ``records``
    per domain, ``drift_total``; per system ``calls``, ``records``, ``facts``, ``floor``
    (each the median of that figure alone) and, computed from those medians,
    ``calls_per_1000`` and ``floor_per_1000`` records read and ``calls_to_floor``.
    ``per_run`` keeps each run; ``call_log``, ``lists`` and ``drift`` are the last run's."""
    last = runs[-1]
    domains = [d for d in DOMAINS if any(d in r["records"] for r in runs)]
    systems: dict[str, dict[str, Any]] = {}
    for kind in SYSTEMS:
        figures: dict[str, Any] = {
            key: _median([r["systems"][kind][key] for r in runs])
            for key in ("calls", "records", "facts", "floor")
        }
        figures |= {
            "calls_per_1000": per_1000(figures["calls"], figures["records"]),
            "floor_per_1000": per_1000(figures["floor"], figures["records"]),
            "calls_to_floor": round(figures["calls"] / figures["floor"], 2)
            if figures["floor"]
            else None,
            "calls_by_domain": last["systems"][kind]["calls_by_domain"],
            "lists": last["systems"][kind]["lists"],
            "floor_from": PAGING[kind].source,
            "page": PAGING[kind].page,
        }
        systems[kind] = figures
    cpu_keys = sorted({k for r in runs for k in r["cpu_s"]})
    return {
        "runs": len(runs),
        "seconds": _median([r["seconds"] for r in runs]),
        "build_s": _median([r["build_s"] for r in runs]),
        "cpu_s": {k: _median([r["cpu_s"][k] for r in runs if k in r["cpu_s"]]) for k in cpu_keys},
        "records": {d: _median([r["records"].get(d, 0) for r in runs]) for d in domains},
        "records_total": _median([sum(r["records"].values()) for r in runs]),
        "systems": systems,
        "startup_calls": {k: _median([r["startup_calls"][k] for r in runs]) for k in SYSTEMS},
        "harvest_rate_limit_wait_s": _median([r["harvest_rate_limit_wait_s"] for r in runs]),
        "drift_total": _median([r["drift_total"] for r in runs]),
        "drift": last["drift"],
        "status": "ok" if all(r["status"] == "ok" for r in runs) else "failed",
        "errors": [r["error"] for r in runs if r["error"]],
        "call_log": last["call_log"],
        "per_run": [
            {k: r[k] for k in ("seconds", "cpu_s", "records", "drift_total", "run_id", "status")}
            | {"calls": {k: r["systems"][k]["calls"] for k in SYSTEMS}}
            | {"pages_in_report": r["pages_in_report"]}
            for r in runs
        ],
    }


@dataclass(frozen=True)
class Firm:
    """The size of the firm the benchmark's own demo seeds."""

    clients: int = 40
    deals: int = 60
    consultants: int = 25


def run_reconcile_bench(
    home: Path | None = None,
    runs: int = 3,
    *,
    firm: Firm = Firm(),
    on_step: Callable[[str], None] = lambda step: None,
) -> dict[str, Any]:
    """Reconcile ``runs`` times over ``home``'s running systems; without ``home``, or when
    its systems do not run, over those of a demo of ``firm`` run first in a temporary home
    (its hub process stopped before measuring, everything stopped after). ``on_step(text)``
    says what starts. The medians (:func:`medians`) with ``home``, ``demo`` (the firm when
    the benchmark ran it, else ``None``; ``note`` says why when ``home`` was given) and
    ``demo_reconciliation`` (the demo's own month-end reconciliation, from
    ``demo-summary.json``, when there is one). Raises
    :class:`~closeloop.devtools.demo.run.DemoError` when the demo does not finish."""
    if home is not None and running(home):
        return _bench(home, runs, None, on_step)
    with tempfile.TemporaryDirectory(
        prefix="closeloop-bench-reconcile-", ignore_cleanup_errors=True
    ) as folder:
        own = Path(folder) / ".closeloop"
        on_step(
            f"running the demo ({firm.deals} deals, {firm.consultants} consultants) in {own} ..."
        )
        try:
            options = DemoOptions(
                home=own,
                clients=firm.clients,
                deals=firm.deals,
                consultants=firm.consultants,
                keep_running=True,
            )
            run_demo(options, console=Console(file=io.StringIO(), width=120))
            hub = sandboxctl.read_state(own).get("hub") or {}
            if "pid" in hub:  # its polls would add to the systems' CPU while measuring
                stop_pid(int(hub["pid"]))
            figures = _bench(own, runs, firm, on_step)
            if home is not None:
                figures["note"] = f"{home}: its systems do not run; the benchmark ran the demo"
        finally:
            sandboxctl.down(own)
    return figures


def _bench(
    home: Path, runs: int, firm: Firm | None, on_step: Callable[[str], None]
) -> dict[str, Any]:
    done = []
    for n in range(1, runs + 1):
        on_step(f"reconciling: run {n} of {runs} ...")
        done.append(reconcile_once(home))
    figures = medians(done)
    figures["home"] = str(home)
    figures["demo"] = None if firm is None else vars(firm)
    figures["demo_reconciliation"] = _demo_reconciliation(home)
    return figures


def _demo_reconciliation(home: Path) -> dict[str, Any] | None:
    """What the demo's own month-end reconciliation found (``demo-summary.json``)."""
    import json

    path = home / "demo-summary.json"
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text()).get("reconciliation")
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    return {
        k: found.get(k)
        for k in ("records", "found", "repaired", "to_people", "drift_after_repair", "runs")
    }
