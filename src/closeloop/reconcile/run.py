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
from closeloop.ports.clock import Clock
from closeloop.ports.reconcile import (
    CHARGES,
    CUSTOMERS,
    DOMAINS,
    INVOICES,
    PROJECTS,
    TIME,
    Fact,
    FactSource,
)
from closeloop.ports.store import DriftRow, ReconcileRun, Store
from closeloop.reconcile.compare import Finding, Owners, compare_customers, compare_projects, index
from closeloop.reconcile.compare_billing import compare_invoices, compare_time, deals_of
from closeloop.reconcile.compare_charges import compare_charges
from closeloop.reconcile.explain import EXCEPTION, IN_FLIGHT, Explainer
from closeloop.reconcile.repair import Repairer, with_people
from closeloop.reconcile.view import HubView

log = structlog.get_logger(__name__)

_NEEDS = {
    CUSTOMERS: (CUSTOMERS, PROJECTS),  # a PSA client is found through its projects
    PROJECTS: (PROJECTS, INVOICES),  # the CRM's deals scope the orphans
    TIME: (TIME,),
    INVOICES: (INVOICES,),
    CHARGES: (CHARGES,),
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
    time). Every record is still read: a comparison needs both sides. ``tag`` names the
    run in its repairs' idempotency keys (a scheduled run: its slot, so that two hubs
    repairing one slot send each repair once); by default the run's start."""

    domains: tuple[str, ...] = DOMAINS
    repair: bool = False
    dry_run: bool = False
    trigger: str = "cli"
    actor: str = "closeloop"
    since: datetime | None = None
    tag: str | None = None


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
            view = HubView.load(tx, started.date())
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
        if CHARGES in domains:
            findings += compare_charges(by, view)
        if request.since is not None:
            since = request.since
            findings = [f for f in findings if _touched(f, since)]
        now = self.clock.now()
        with self.store.transaction() as tx:
            explainer = Explainer(tx, set(self.registry.polled_objects()))
            rows = with_people(explainer.explain(findings), explainer.open)
            if request.repair and not errors:  # never from a partial read
                repairer = Repairer(tx, self.registry, now, request.actor, explainer.open)
                tag = request.tag or f"run-{now.strftime('%Y%m%dT%H%M%S%f')}"
                rows = repairer.repair(rows, findings, tag, request.dry_run)
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
                read: list[Fact] = []  # a domain read in part is left out whole
                try:
                    for page in source.read_facts(domain):
                        pages[system] += 1
                        read.extend(page)
                except Exception as exc:  # one system failing fails only its domains
                    log.warning(
                        "reconcile read failed", system=system, domain=domain, exc_info=True
                    )
                    errors.append(f"{system} could not be read for {domain}: {exc}")
                    continue
                facts.extend(read)
                if domain in domains:
                    records[domain] += len(read)
        return facts, dict(records), dict(pages), errors


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
