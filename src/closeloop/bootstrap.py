"""The one place that wires concrete adapters: store, connectors, flows, engine, HTTP app."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

from fastapi import FastAPI

from closeloop.config import Settings
from closeloop.connectors.catalog import BuildContext, build_connector, plugin, plugins
from closeloop.domain.operations import Role
from closeloop.domain.routing import RoleRouting
from closeloop.engine.access import Access
from closeloop.engine.apply import Applier
from closeloop.engine.dispatch import Dispatcher, DispatchSettings
from closeloop.engine.intake import Intake
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.operations import Operations
from closeloop.engine.registry import Registry
from closeloop.engine.retry import RetryPolicy
from closeloop.engine.timers import Timers
from closeloop.engine.worker import Worker, WorkerSettings
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.mapping.engine import Mapper
from closeloop.ports.clock import Clock, SystemClock
from closeloop.ports.connector import Connector
from closeloop.ports.flows import Binding, Flow
from closeloop.ports.ratelimit import SharedRateLimit
from closeloop.ports.reconcile import FactSource
from closeloop.ports.store import ReconcileRun
from closeloop.reconcile.compare import Owners
from closeloop.reconcile.run import ReconcileMetrics, Reconciler, RunRequest
from closeloop.reconcile.schedule import SCHEDULE, Schedule
from closeloop.store import migrate
from closeloop.store.migrate import SchemaMismatch as SchemaMismatch  # for the CLI
from closeloop.store.ratelimit_repo import SqlSharedRateLimit
from closeloop.store.retention import PruneMetrics, Pruner, RetentionSchedule
from closeloop.store.sql import SqlStore

if TYPE_CHECKING:
    from closeloop.alerts.alerter import Alerter
    from closeloop.api.sources import ViewSources


@dataclass
class Hub:
    """A wired hub: everything ``closeloop run``, ``worker``, the CLI and tests use."""

    settings: Settings
    store: SqlStore
    registry: Registry
    metrics: EngineMetrics
    clock: Clock
    intake: Intake
    applier: Applier
    dispatcher: Dispatcher
    worker: Worker
    operations: Operations
    reconciler: Reconciler
    access: Access

    def reconcile_schedule(self) -> Schedule:
        """The configured reconciliation schedule (``reconcile:`` settings)."""
        r = self.settings.reconcile
        request = RunRequest(tuple(r.domains), r.repair, trigger=SCHEDULE, actor=SCHEDULE)
        return Schedule(self.reconciler, self.store, self.clock, request, r.at_utc, r.every_h)

    def alerter(self) -> Alerter:
        """The alerts of the ``alerts:`` settings over this hub (:func:`build_alerter`)."""
        return build_alerter(self)

    @cached_property
    def pruner(self) -> Pruner:
        """Retention (``retention:`` settings), counted in ``/metrics``."""
        r = self.settings.retention
        metrics = PruneMetrics(self.metrics.registry)
        return Pruner(self.store, self.clock, r.keep_days(), r.batch_size, metrics)

    def retention_schedule(self) -> RetentionSchedule:
        """The hub's periodic pruning (``retention.every_min``, ``retention.enabled``)."""
        r = self.settings.retention
        return RetentionSchedule(self.pruner, self.clock, r.every_min, r.enabled)

    def requests_used(self, rate_limit_key: str, window_s: float) -> int:
        """Requests all workers made under ``rate_limit_key`` in the last ``window_s``
        seconds (an account's shared window, e.g. Harvest's)."""
        return SqlSharedRateLimit(self.store.engine).used(rate_limit_key, window_s)

    def close(self) -> None:
        """Stop the dispatcher's threads, close connectors and the connection pool."""
        self.dispatcher.close()
        for connector in self.registry.connectors.values():
            close = getattr(connector, "close", None)
            if callable(close):
                close()
        self.store.close()


def build_alerter(hub: Hub) -> Alerter:
    """The :class:`~closeloop.alerts.alerter.Alerter` of ``hub.settings.alerts``: its rules
    read the hub's exceptions, its dispatcher's breakers (this process's), each system's
    quota left (through its connector's row: no vendor call) and the latest reconciliation
    run; its state is in the hub's database."""
    from closeloop.alerts.alerter import Alerter
    from closeloop.alerts.channels import build_sender
    from closeloop.alerts.conditions import Readings
    from closeloop.store.alerts_repo import SqlAlertStore

    def breakers_open_s() -> dict[str, float]:
        now = hub.clock.monotonic()
        return {
            name: now - since
            for name, gate in hub.dispatcher.gates.items()
            if (since := gate.breaker.open_since) is not None
        }

    def quota_left() -> dict[str, float | None]:
        left: dict[str, float | None] = {}
        for name, system in hub.settings.systems.items():
            measure = plugin(system.kind).quota_left
            if measure is not None:
                try:
                    left[name] = measure(hub.registry.connector(name), hub.requests_used)
                except Exception:  # an alert reading must not stop the others
                    left[name] = None
        return left

    def latest_run() -> ReconcileRun | None:
        runs = hub.reconciler.runs(1)
        return runs[0] if runs else None

    config = hub.settings.alerts
    readings = Readings(
        lambda: hub.operations.stats().open_exceptions_by_class,
        hub.operations.find_exceptions,
        breakers_open_s,
        quota_left,
        latest_run,
    )
    senders = [build_sender(name, channel) for name, channel in config.channels.items()]
    store = SqlAlertStore(hub.store.engine)
    return Alerter(config, readings, store, senders, hub.clock, worker_id())


def connectors_from_settings(
    settings: Settings, shared_limit: SharedRateLimit | None = None
) -> dict[str, Connector]:
    """One connector per configured system, each built by its kind's row of the connector
    table (:mod:`closeloop.connectors.catalog`); ``shared_limit`` counts requests of accounts
    whose limit all workers share (Harvest)."""
    context = BuildContext(shared_limit)
    return {
        name: build_connector(name, system, context) for name, system in settings.systems.items()
    }


def mirror_bindings(settings: Settings) -> list[Binding]:
    """Bindings of the built-in example flow, one per configured mirror."""
    flows: dict[tuple[str, str], list[Flow]] = {}
    for mirror in settings.mirrors:
        flow = MirrorFlow(
            mirror.target,
            mirror.target_object,
            name=f"mirror:{mirror.source}.{mirror.object}->{mirror.target}",
        )
        flows.setdefault((mirror.source, mirror.object), []).append(flow)
    return [
        Binding(system, obj, "record", record_mapper, tuple(f))
        for (system, obj), f in flows.items()
    ]


def flow_bindings(settings: Settings) -> tuple[list[Binding], list[Flow]]:
    """Bindings of the configured project-to-cash flows (each vendor object through its
    declarative mapping: Mobilize to every CRM's opportunities, Bill time to every PSA's
    time entries, Bill expense to their expenses, Status back to every ERP's invoices), and
    the flows no record drives
    (Invoice: signals and timers only). Raises what :func:`mapped_binding` raises."""
    from closeloop.flows.bill_expense import BillExpenseFlow
    from closeloop.flows.bill_time import BillTimeFlow
    from closeloop.flows.invoice import InvoiceFlow
    from closeloop.flows.mobilize import MobilizeFlow
    from closeloop.flows.status_back import StatusBackFlow

    flows = settings.flows
    bindings: list[Binding] = []
    unbound: list[Flow] = []
    if flows.mobilize is None and flows.bill_time is None:
        return bindings, unbound
    from closeloop.config.files import load_mappers

    roles = settings.engagement_roles()
    mappers = load_mappers(settings.mappings)  # read once for every binding

    def bind(role: Role, canonical_type: str, flow: Flow) -> None:
        routing: RoleRouting = getattr(roles, role.value)
        for system in routing.systems:
            bindings.extend(canonical_bindings(settings, system, canonical_type, (flow,), mappers))

    if flows.mobilize is not None:
        mobilize = MobilizeFlow(
            roles,
            flows.mobilize.match_threshold,
            entities=settings.legal_entities,
            tax_rules=settings.tax_rules,
            system_entities=settings.system_entities(),
        )
        bind(Role.CRM, "opportunity", mobilize)
    if flows.bill_time is not None:
        bind(Role.PSA, "time_entry", BillTimeFlow(roles.prefixes))
    if flows.bill_expense is not None:
        bind(Role.PSA, "expense", BillExpenseFlow(roles.prefixes))
    if flows.invoice is not None:
        i = flows.invoice
        unbound.append(
            InvoiceFlow(i.period, i.grace_days, i.settle_s, payment_terms_days=i.payment_terms_days)
        )
    if flows.status_back is not None:
        bind(Role.ERP, "invoice", StatusBackFlow(roles.prefixes))
    return bindings, unbound


def upgrade_database(
    settings: Settings, on_wait: Callable[[], None] | None = None
) -> migrate.Upgraded:
    """Migrate the configured database to the newest schema, one upgrader at a time (an
    advisory lock on PostgreSQL, the write lock on SQLite; ``on_wait`` is called when another
    one is migrating); the revisions before and after. Raises what
    :func:`closeloop.store.migrate.upgrade` raises. The set-up commands call it (``closeloop
    db upgrade``, ``sandbox up``, the demo); every other command only checks
    (:func:`build_hub`)."""
    from closeloop.store.db import create_db_engine

    engine = create_db_engine(settings.database_url)
    try:
        return migrate.upgrade(engine, on_wait=on_wait)
    finally:
        engine.dispose()


def check_database(settings: Settings) -> str:
    """The configured database's schema revision when it is the one this code needs; reads
    only (a SQLite file that does not exist is not created). Raises
    :class:`~closeloop.store.migrate.SchemaMismatch` (empty, behind, ahead: its message says
    what to run) and whatever the driver raises when the database cannot be reached."""
    from closeloop.store.db import create_db_engine

    _refuse_missing_file(settings.database_url)
    engine = create_db_engine(settings.database_url)
    try:
        return migrate.check(engine)
    finally:
        engine.dispose()


def _refuse_missing_file(url: str) -> None:
    """Raise :class:`SchemaMismatch` (``"empty"``) for a SQLite URL whose file does not
    exist, before anything would create it."""
    from closeloop.store.db import sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise SchemaMismatch("empty", None, migrate.head_revision(), migrate.shown(url))


def worker_id() -> str:
    """``host:pid:random``, unique per worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build_hub(
    settings: Settings,
    *,
    connectors: Mapping[str, Connector] | None = None,
    bindings: Sequence[Binding] | None = None,
    flows: Sequence[Flow] = (),
    clock: Clock | None = None,
    upgrade: bool = False,
) -> Hub:
    """Wire a hub from ``settings``; ``connectors`` and ``bindings`` replace the configured ones
    (``flows``: flows no binding names, which given ``bindings`` need for their signals).

    The database must be at this code's schema: a hub is not built on one that is empty,
    behind or ahead (:class:`~closeloop.store.migrate.SchemaMismatch`, whose message says
    what to run; a missing SQLite file is not created). Set-up paths (the demo, dev tools,
    tests on a fresh database) pass ``upgrade=True`` to migrate it first, as
    :func:`upgrade_database` does (locked). Raises what the mapping files' loading raises.
    """
    clock = clock or SystemClock()
    w = settings.worker
    if not upgrade:
        _refuse_missing_file(settings.database_url)
    store = SqlStore.from_url(settings.database_url, pool_size=w.threads + 2)
    try:
        if upgrade:
            migrate.upgrade(store.engine)
        migrate.check(store.engine)
    except BaseException:
        store.close()
        raise
    configured, unbound = flow_bindings(settings) if bindings is None else ([], list(flows))
    ownership = owners(settings)
    registry = Registry(
        connectors=dict(
            connectors
            if connectors is not None
            else connectors_from_settings(settings, SqlSharedRateLimit(store.engine))
        ),
        bindings=[
            replace(
                b,
                foreign_fields=ownership.policy.foreign_fields(
                    b.canonical_type, b.system, ownership.role_of
                ),
            )
            for b in (
                bindings if bindings is not None else [*mirror_bindings(settings), *configured]
            )
        ],
        flows=unbound,
    )
    metrics = EngineMetrics()
    intake = Intake(store, registry, clock, metrics)
    applier = Applier(store, registry, clock, metrics)
    dispatcher = Dispatcher(
        store,
        registry,
        clock,
        metrics,
        RetryPolicy(w.retry_base_delay_s, w.retry_max_delay_s, w.retry_deadline_s),
        DispatchSettings(
            w.lease_s,
            w.breaker_failures,
            w.breaker_cooldown_s,
            w.threads,
            permit_wait_s=w.lease_s / 4,
        ),
        worker_id(),
    )
    worker = Worker(
        store,
        registry,
        intake,
        applier,
        dispatcher,
        Timers(store, registry, clock, metrics),
        WorkerSettings(
            w.poll_interval_s,
            w.overlap_s,
            w.apply_batch,
            w.idle_wait_s,
            w.shutdown_grace_s,
            {n: s.poll_interval_s for n, s in settings.systems.items() if s.poll_interval_s},
        ),
    )
    operations = Operations(store, clock, registry)
    metrics.watch_store(operations.stats, clock.now)
    sources = {n: c for n, c in registry.connectors.items() if isinstance(c, FactSource)}
    reconciler = Reconciler(
        store, registry, clock, sources, ownership, ReconcileMetrics(metrics.registry)
    )
    return Hub(
        settings,
        store,
        registry,
        metrics,
        clock,
        intake,
        applier,
        dispatcher,
        worker,
        operations,
        reconciler,
        Access(store, clock),
    )


def owners(settings: Settings) -> Owners:
    """Who owns each field for reconciliation: the ``ownership:`` of the mapping files
    (configured and shipped; none when they cannot be read: ``closeloop check`` says why),
    with each configured system's role."""
    from closeloop.config.files import FileProblems, load_mappers, ownership_policy

    try:
        roles = settings.engagement_roles()
    except ValueError:  # no project-to-cash roles (a mirror-only hub): owners by name only
        role_of: dict[str, str] = {}
    else:
        role_of = {
            system: role.value for role in Role for system in getattr(roles, role.value).systems
        }
    try:
        return Owners(ownership_policy(load_mappers(settings.mappings)), role_of)
    except (FileProblems, ValueError):
        return Owners(role_of=role_of)


def ignored_notifications(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """The objects each configured system sent webhook notifications for that no flow is
    bound to (recorded by :mod:`closeloop.engine.notifications`), still unbound in
    ``settings``: ``{system: [(object, hint), ...]}``. Reads the configured database without
    migrating or creating it (a SQLite file that does not exist: nothing). Raises what the
    database driver raises when it cannot be read."""
    from closeloop.engine.notifications import ignored_objects
    from closeloop.store.db import create_db_engine, sqlite_file

    url = settings.database_url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return {}
    try:
        bindings = [*mirror_bindings(settings), *flow_bindings(settings)[0]]
        bound = {(b.system, b.object) for b in bindings}
    except Exception:  # bad mappings: closeloop check reports them on their own
        bound = set()
    engine = create_db_engine(url)
    try:
        if migrate.current_revision(engine) is None:
            return {}
        store = SqlStore(engine)
        found: dict[str, list[tuple[str, str]]] = {}
        for system in settings.systems:
            for entry in ignored_objects(store, system):
                name = str(entry.detail.get("object"))
                if (system, name) not in bound:
                    found.setdefault(system, []).append((name, str(entry.detail.get("hint", ""))))
        return found
    finally:
        engine.dispose()


def build_http_app(hub: Hub) -> FastAPI:
    """The HTTP app of ``hub`` with health, metrics, webhooks and the operations API."""
    from closeloop.api.app import create_app
    from closeloop.api.auth import Authenticator
    from closeloop.api.webhooks import WebhookSecurity

    def ready() -> tuple[bool, str]:
        try:
            migrate.check(hub.store.engine)
        except SchemaMismatch as exc:  # behind: run closeloop db upgrade; ahead: upgrade us
            return False, str(exc)
        except Exception as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        return True, "ok"

    routers = []
    for kind, connector in plugins().items():
        systems = {n: s for n, s in hub.settings.systems.items() if s.kind == kind}
        if systems and connector.webhooks is not None:
            routers.append(connector.webhooks(hub.intake, systems))
    from closeloop.api.v1.reconcile import reconcile_router

    http = hub.settings.http
    session = http.session_secret.get_secret_value() if http.session_secret else None
    auth = Authenticator(hub.access, session, http.session_ttl_h * 3600)
    from closeloop.api.console import console_router
    from closeloop.api.v1.views import views_router

    routers.append(reconcile_router(hub.reconciler, auth))
    sources = view_sources(hub)
    routers.append(views_router(sources, auth))
    routers.append(console_router(sources, auth))
    secret = http.webhook_secret.get_secret_value() if http.webhook_secret else None
    security = WebhookSecurity(secret, http.webhook_tolerance_s, http.max_body_bytes)
    return create_app(
        hub.intake, hub.operations, hub.metrics.registry, ready, auth, routers, webhook=security
    )


def view_sources(hub: Hub) -> ViewSources:
    """What the console's pages and the API's views read of ``hub``
    (:class:`closeloop.api.sources.ViewSources`): breaker states of this process's
    dispatcher, each system's quota through its connector's row."""
    from closeloop.api.sources import ViewSources
    from closeloop.engine.views import ReadModel

    def quotas() -> dict[str, str]:
        left = {}
        for name, system in hub.settings.systems.items():
            describe = plugin(system.kind).quota
            try:
                left[name] = (
                    "-"
                    if describe is None
                    else describe(hub.registry.connector(name), hub.requests_used)
                )
            except Exception as exc:  # a status page reports, it does not fail
                left[name] = f"unknown ({type(exc).__name__})"
        return left

    def breakers() -> dict[str, str]:
        return {name: gate.breaker.state.value for name, gate in hub.dispatcher.gates.items()}

    return ViewSources(
        hub.operations,
        hub.reconciler,
        ReadModel(hub.store),
        tuple(hub.settings.systems),
        breakers,
        quotas,
        hub.clock.now,
        hub.alerter().overview,
    )


def mapped_binding(
    settings: Settings,
    system: str,
    vendor_object: str,
    flows: Sequence[Flow],
    mappers: Mapping[str, Mapper] | None = None,
) -> Binding:
    """A binding whose mapper is the declarative mapping of ``system.vendor_object``: a file
    for the connection named ``system`` under ``mappings:``, else the shipped mapping of its
    connector (connection = its kind). ``mappers``: the mappings already loaded (read from
    the files when ``None``). Raises :class:`~closeloop.config.files.FileProblems`, or
    ``KeyError`` naming what is missing."""
    mapper = _mapper(settings, system, mappers)
    canonical = mapper.object_mapping(vendor_object).canonical
    return Binding(system, vendor_object, canonical, mapper.mapper_for(vendor_object), tuple(flows))


def canonical_bindings(
    settings: Settings,
    system: str,
    canonical_type: str,
    flows: Sequence[Flow],
    mappers: Mapping[str, Mapper] | None = None,
) -> list[Binding]:
    """A binding of each vendor object of ``system`` that its mapping turns into
    ``canonical_type`` (see :func:`mapped_binding`; Xero keeps invoices and credit notes
    apart, Tryton in one object)."""
    mapper = _mapper(settings, system, mappers)
    return [
        mapped_binding(settings, system, vendor_object, flows, {system: mapper})
        for vendor_object in mapper.objects_for(canonical_type)
    ]


def _mapper(settings: Settings, system: str, mappers: Mapping[str, Mapper] | None) -> Mapper:
    if mappers is None:
        from closeloop.config.files import load_mappers

        mappers = load_mappers(settings.mappings)
    configured = settings.systems.get(system)
    mapper = mappers.get(system) or (mappers.get(configured.kind) if configured else None)
    if mapper is None:
        raise KeyError(f"no mapping for the connection {system!r} (nor for its kind)")
    return mapper
