"""A reconciliation run: read every system's facts in bulk, compare them through the hub's
keys, explain each difference, optionally repair, keep the report in the store.

A run reads the domains asked for (:data:`~closeloop.ports.reconcile.DOMAINS`) from every
system whose connector is a :class:`~closeloop.ports.reconcile.FactSource`, compares them
(:mod:`.compare`, :mod:`.compare_billing`), explains each finding against the hub's own
records (:mod:`.explain`: still in flight, a person's exception already, or drift with its
likely cause) and, with ``repair``, repairs what has a clear owner (:mod:`.repair`) in one
transaction with the report (``dry_run``: the plan only). A system that cannot answer
fails only its domains: the run is kept with status ``failed`` and the error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from time import monotonic

import structlog
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from closeloop.domain.errors import InputError
from closeloop.engine.registry import Registry
from closeloop.engine.runtime import FlowFailure, FlowRuntime
from closeloop.ports.clock import Clock
from closeloop.ports.connector import ConnectorError
from closeloop.ports.reconcile import (
    CUSTOMERS,
    DOMAINS,
    INVOICES,
    PROJECTS,
    TIME,
    Fact,
    FactSource,
)
from closeloop.ports.store import AuditEntry, DriftRow, NewCommand, ReconcileRun, Store, UnitOfWork
from closeloop.reconcile.compare import Finding, Owners, compare_customers, compare_projects, index
from closeloop.reconcile.compare_billing import compare_invoices, compare_time, deals_of
from closeloop.reconcile.explain import DRIFT, EXCEPTION, IN_FLIGHT, Explainer
from closeloop.reconcile.repair import FLOW, drift_entity, plan
from closeloop.reconcile.view import HubView

log = structlog.get_logger(__name__)

REPAIRED = "repaired"
PLANNED = "planned"
_NEEDS = {
    CUSTOMERS: (CUSTOMERS,),
    PROJECTS: (PROJECTS, INVOICES),  # the CRM's deals scope the orphans
    TIME: (TIME,),
    INVOICES: (INVOICES,),
}


class ReconcileInputError(InputError):
    """A run asked for a domain reconciliation does not know."""


class ReconcileMetrics:
    """Prometheus metrics of reconciliation, on the hub's registry: drift by domain and kind
    of the last run (``closeloop_reconcile_drift``), its duration in seconds and runs by
    status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.drift = Gauge(
            "closeloop_reconcile_drift",
            "Drift the last reconciliation run found, by domain and kind",
            ["domain", "kind"],
            registry=registry,
        )
        self.duration = Gauge(
            "closeloop_reconcile_duration_seconds",
            "How long the last reconciliation run took",
            registry=registry,
        )
        self.runs = PromCounter(
            "closeloop_reconcile_runs",
            "Reconciliation runs by status",
            ["status"],
            registry=registry,
        )

    def observe(self, run: ReconcileRun, seconds: float) -> None:
        """Record ``run``'s counts (domains it did not read keep their last values)."""
        for domain in run.domains:
            for kind in ("mismatch", "missing", "orphan", "dangling"):
                self.drift.labels(domain, kind).set(run.counts.get(domain, {}).get(kind, 0))
        self.duration.set(seconds)
        self.runs.labels(run.status).inc()


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a run does: ``domains``; ``repair`` (``dry_run``: plan only); who asked
    (``trigger``: ``cli``, ``api``, ``schedule``; ``actor``); ``since`` (aware): report only
    differences in records changed at or after it (or whose systems keep no modification
    time). Every record is still read: a comparison needs both sides."""

    domains: tuple[str, ...] = DOMAINS
    repair: bool = False
    dry_run: bool = False
    trigger: str = "cli"
    actor: str = "closeloop"
    since: datetime | None = None


class Reconciler:
    """Runs reconciliation over ``sources`` (system name -> fact source) against ``store``;
    repairs go through ``registry``'s flows; ``owners`` decides who owns each field."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock,
        sources: Mapping[str, FactSource],
        owners: Owners,
        metrics: ReconcileMetrics | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.sources = dict(sources)
        self.owners = owners
        self.metrics = metrics

    def run(self, request: RunRequest | None = None) -> ReconcileRun:
        """One run (module docstring); returns the report as kept (with its id). Raises
        :class:`ReconcileInputError` for an unknown domain (nothing is read then)."""
        request = request or RunRequest()
        unknown = sorted(set(request.domains) - set(DOMAINS))
        if unknown or not request.domains:
            raise ReconcileInputError(
                f"unknown domain {', '.join(unknown) or '(none given)'}: choose from "
                + ", ".join(DOMAINS)
            )
        domains = tuple(d for d in DOMAINS if d in request.domains)
        started, clock_start = self.clock.now(), monotonic()
        with self.store.transaction() as tx:
            view = HubView.load(tx)
        facts, records, pages, errors = self._read(domains)
        by = index(facts)
        findings: list[Finding] = []
        deals = deals_of(by, view)
        if CUSTOMERS in domains:
            findings += compare_customers(by, view, self.owners)
        if PROJECTS in domains:
            findings += compare_projects(by, view, self.owners, deals)
        if TIME in domains:
            findings += compare_time(by, view)
        if INVOICES in domains:
            findings += compare_invoices(by, view, deals)
        if request.since is not None:
            since = request.since
            findings = [f for f in findings if _touched(f, since)]
        now = self.clock.now()
        with self.store.transaction() as tx:
            rows = Explainer(tx, set(self.registry.polled_objects())).explain(findings)
            rows = self._with_people(tx, rows)
            if request.repair:
                rows = self._repair(tx, rows, findings, request, now)
            counts = _counts(domains, rows)
            run = ReconcileRun(
                started_at=started,
                finished_at=self.clock.now(),
                trigger=request.trigger,
                actor=request.actor,
                domains=domains,
                repair=request.repair,
                dry_run=request.dry_run,
                records=records,
                pages=pages,
                counts=counts,
                status="failed" if errors else "ok",
                error="; ".join(errors) or None,
                drifts=tuple(rows),
            )
            run_id = tx.save_reconcile_run(run)
        run = replace(run, id=run_id)
        if self.metrics is not None:
            self.metrics.observe(run, monotonic() - clock_start)
        log.info("reconciled", run=run_id, status=run.status, counts=counts, pages=pages)
        return run

    def runs(self, limit: int = 20) -> list[ReconcileRun]:
        """The latest runs, newest first, without their drifts."""
        with self.store.transaction() as tx:
            return tx.list_reconcile_runs(limit)

    def report(self, run_id: int) -> ReconcileRun | None:
        """One run with its drifts (``None`` when there is none)."""
        with self.store.transaction() as tx:
            return tx.get_reconcile_run(run_id)

    def _read(
        self, domains: Sequence[str]
    ) -> tuple[list[Fact], dict[str, int], dict[str, int], list[str]]:
        wanted = {d for domain in domains for d in _NEEDS[domain]}
        facts: list[Fact] = []
        records: Counter[str] = Counter()
        pages: Counter[str] = Counter()
        errors: list[str] = []
        for system, source in sorted(self.sources.items()):
            for domain in source.fact_domains():
                if domain not in wanted:
                    continue
                try:
                    for page in source.read_facts(domain):
                        pages[system] += 1
                        facts.extend(page)
                        if domain in domains:
                            records[domain] += len(page)
                except ConnectorError as exc:
                    errors.append(f"{system} could not be read for {domain}: {exc}")
        return facts, dict(records), dict(pages), errors

    @staticmethod
    def _with_people(tx: UnitOfWork, rows: list[DriftRow]) -> list[DriftRow]:
        """Drift that a person already has as an open business exception of an earlier run
        is theirs: shown with it, not counted again."""
        open_by_entity = {e.entity: e for e in tx.list_exceptions("open", 100_000)}
        out = []
        for row in rows:
            held = open_by_entity.get(drift_entity(row))
            if row.status == DRIFT and held is not None:
                row = replace(
                    row,
                    status=EXCEPTION,
                    exception_id=held.id,
                    cause=f"{row.cause} (with a person: exception #{held.id})",
                )
            out.append(row)
        return out

    def _repair(
        self,
        tx: UnitOfWork,
        rows: list[DriftRow],
        findings: list[Finding],
        request: RunRequest,
        now: datetime,
    ) -> list[DriftRow]:
        tag = f"repair-{now.strftime('%Y%m%dT%H%M%S%f')}"
        runtime = FlowRuntime(tx, self.registry, now)
        out = []
        for row, finding in zip(rows, findings, strict=True):
            if row.status != DRIFT:
                out.append(row)
                continue
            repair = plan(row, finding, tag)
            if request.dry_run:
                out.append(replace(row, status=PLANNED, repair=repair.plan))
                continue
            status, exception_id = REPAIRED, None
            if repair.command is not None:
                tx.add_commands([NewCommand(repair.command, FLOW, None)], now)
            elif repair.signal is not None:
                try:
                    runtime.offer_signals([repair.signal])
                except FlowFailure as failure:
                    log.warning("repair failed", entity=drift_entity(row), error=str(failure))
                    out.append(replace(row, repair=f"{repair.plan}: failed: {failure}"))
                    continue
            elif repair.exception is not None:
                (exception_id,) = tx.open_exceptions([repair.exception], now)
                status = EXCEPTION
            detail = {"plan": repair.plan, "cause": row.cause, "values": row.values}
            tx.audit([AuditEntry(now, request.actor, "repair", drift_entity(row), detail, None)])
            out.append(replace(row, status=status, repair=repair.plan, exception_id=exception_id))
        runtime.buffer.write(tx, now)
        return out


def _counts(domains: Sequence[str], rows: Sequence[DriftRow]) -> dict[str, dict[str, int]]:
    """Drift per domain and kind (what was repaired, planned or handed to a person counts;
    changes in flight and what a person already has are counted apart, as ``in_flight`` and
    ``with_person``)."""
    counts: dict[str, dict[str, int]] = {d: {} for d in domains}
    for row in rows:
        if row.status == IN_FLIGHT:
            kind = "in_flight"
        elif row.status == EXCEPTION and row.repair == "":
            kind = "with_person"
        else:
            kind = row.kind
        counts[row.domain][kind] = counts[row.domain].get(kind, 0) + 1
    return counts


def drift_total(run: ReconcileRun) -> int:
    """How many drifts ``run`` counted (in flight and already with a person excluded)."""
    return sum(
        n
        for kinds in run.counts.values()
        for kind, n in kinds.items()
        if kind not in ("in_flight", "with_person")
    )


def _touched(finding: Finding, since: datetime) -> bool:
    times = [f.modified_at for f in finding.facts.values() if f.modified_at is not None]
    return not times or max(times) >= since
