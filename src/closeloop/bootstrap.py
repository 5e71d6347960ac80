"""The one place that wires concrete adapters: store, connectors, flows, engine, HTTP app."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi import FastAPI

from closeloop.config import Settings, SystemConfig
from closeloop.connectors.memory.client import MemoryConnector
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
from closeloop.ports.clock import Clock, SystemClock
from closeloop.ports.connector import Connector, ConnectorLimits
from closeloop.ports.flows import Binding, Flow
from closeloop.ports.ratelimit import SharedRateLimit
from closeloop.store import migrate
from closeloop.store.ratelimit_repo import SqlSharedRateLimit
from closeloop.store.sql import SqlStore


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

    def close(self) -> None:
        """Stop the dispatcher's threads, close connectors and the connection pool."""
        self.dispatcher.close()
        for connector in self.registry.connectors.values():
            close = getattr(connector, "close", None)
            if callable(close):
                close()
        self.store.close()


def connectors_from_settings(
    settings: Settings, shared_limit: SharedRateLimit | None = None
) -> dict[str, Connector]:
    """One connector per configured system; ``shared_limit`` counts requests of accounts
    whose limit all workers share (Harvest)."""
    connectors: dict[str, Connector] = {}
    for name, system in settings.systems.items():
        if system.kind == "harvest":
            connectors[name] = harvest_connector(name, system, shared_limit)
            continue
        if system.kind == "tryton":
            connectors[name] = tryton_connector(system)
            continue
        if system.kind == "salesforce":
            connectors[name] = salesforce_connector(name, system)
            continue
        limits = ConnectorLimits(
            batch_size=system.batch_size or 100,
            requests_per_window=system.requests_per_window or 100,
            window_s=system.window_s or 1.0,
            max_concurrent=system.max_concurrent,
            call_timeout_s=system.timeout_s,
        )
        connectors[name] = MemoryConnector(
            system.url,
            system=name,
            source_objects=system.objects or ["Record"],
            limits=limits,
            timeout_s=system.timeout_s,
        )
    return connectors


def tryton_connector(system: SystemConfig) -> Connector:
    """A connector to a prepared Tryton database (ids looked up, nothing written).

    Raises ``LookupError`` when the database was not prepared with ``closeloop tryton init``.
    """
    from closeloop.connectors.tryton.connector import TrytonConnector
    from closeloop.connectors.tryton.operations import TrytonOperations
    from closeloop.connectors.tryton.rpc import TrytonRPC
    from closeloop.connectors.tryton.setup import TrytonSetup, find_ids

    assert system.database and system.user and system.password  # checked by Settings
    rpc = TrytonRPC(
        system.url, system.database, system.user, system.password, timeout_s=system.timeout_s
    )
    return TrytonConnector(
        TrytonOperations(rpc, find_ids(rpc, TrytonSetup())), batch_size=system.batch_size or 1000
    )


def salesforce_connector(name: str, system: SystemConfig) -> Connector:
    """A connector to a Salesforce org (nothing is called until it is used)."""
    from closeloop.connectors.salesforce.client import SalesforceClient, SalesforceCredentials
    from closeloop.connectors.salesforce.connector import DEFAULT_OBJECTS, SalesforceConnector
    from closeloop.connectors.salesforce.quota import QuotaBudget

    assert system.client_id and system.client_secret  # checked by Settings
    credentials = SalesforceCredentials(
        instance_url=system.url,
        client_id=system.client_id,
        client_secret=system.client_secret,
        token_url=system.token_url,
        username=system.user,
        password=system.password,
        api_version=system.api_version,
        ca_bundle=system.ca_bundle,
    )
    client = SalesforceClient(
        credentials, quota=QuotaBudget(system.quota_reserve), timeout_s=system.timeout_s
    )
    return SalesforceConnector(
        client,
        system=name,
        objects=tuple(system.objects or DEFAULT_OBJECTS),
        batch_size=system.batch_size or 1000,
        max_concurrent=system.max_concurrent,
        call_timeout_s=system.timeout_s,
    )


def harvest_connector(
    name: str, system: SystemConfig, shared_limit: SharedRateLimit | None
) -> Connector:
    """A connector to a Harvest account; its rate limit is taken from ``shared_limit``."""
    from closeloop.connectors.harvest.client import REQUESTS_PER_WINDOW, WINDOW_S, HarvestClient
    from closeloop.connectors.harvest.connector import OBJECTS, HarvestConnector

    assert system.token and system.account_id  # checked by Settings
    client = HarvestClient(
        system.url,
        system.token,
        system.account_id,
        shared_limit=shared_limit,
        requests_per_window=system.requests_per_window or REQUESTS_PER_WINDOW,
        window_s=system.window_s or WINDOW_S,
        timeout_s=system.timeout_s,
    )
    return HarvestConnector(
        client,
        system=name,
        objects=tuple(system.objects or OBJECTS),
        batch_size=system.batch_size or 50,
        call_timeout_s=system.timeout_s,
    )


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
    declarative mapping), and the flows no record drives (Invoice: signals and timers only).
    Raises what :func:`mapped_binding` raises."""
    from closeloop.flows.bill_time import BillTimeFlow
    from closeloop.flows.invoice import InvoiceFlow
    from closeloop.flows.mobilize import MobilizeFlow
    from closeloop.flows.status_back import StatusBackFlow

    flows = settings.flows
    bindings: list[Binding] = []
    unbound: list[Flow] = []
    if flows.mobilize is not None:
        m = flows.mobilize
        mobilize = MobilizeFlow(m.crm, m.psa, m.erp, m.match_threshold)
        bindings.append(mapped_binding(settings, m.crm, "Opportunity", (mobilize,)))
    if flows.bill_time is not None:
        billing = BillTimeFlow(flows.bill_time.psa, flows.bill_time.erp)
        bindings.append(mapped_binding(settings, flows.bill_time.psa, "time_entries", (billing,)))
    if flows.invoice is not None:
        i = flows.invoice
        unbound.append(InvoiceFlow(i.erp, i.period, i.grace_days, i.settle_s))
    if flows.status_back is not None:
        b = flows.status_back
        status = StatusBackFlow(b.crm, b.psa, b.erp)
        bindings.append(mapped_binding(settings, b.erp, "account.invoice", (status,)))
    return bindings, unbound


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
    upgrade: bool = True,
) -> Hub:
    """Wire a hub from ``settings``; ``connectors`` and ``bindings`` replace the configured ones
    (``flows``: flows no binding names, which given ``bindings`` need for their signals).

    With ``upgrade`` the database is migrated to the newest schema first.
    """
    clock = clock or SystemClock()
    w = settings.worker
    store = SqlStore.from_url(settings.database_url, pool_size=w.threads + 2)
    if upgrade:
        migrate.upgrade(store.engine)
    configured, unbound = flow_bindings(settings) if bindings is None else ([], list(flows))
    registry = Registry(
        connectors=dict(
            connectors
            if connectors is not None
            else connectors_from_settings(settings, SqlSharedRateLimit(store.engine))
        ),
        bindings=list(
            bindings if bindings is not None else [*mirror_bindings(settings), *configured]
        ),
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
        WorkerSettings(w.poll_interval_s, w.overlap_s, w.apply_batch, w.idle_wait_s),
    )
    operations = Operations(store, clock, registry)
    metrics.watch_store(operations.stats, clock.now)
    return Hub(
        settings, store, registry, metrics, clock, intake, applier, dispatcher, worker, operations
    )


def build_http_app(hub: Hub) -> FastAPI:
    """The HTTP app of ``hub`` with health, metrics, webhooks and the operations API."""
    from closeloop.api.app import create_app

    def ready() -> tuple[bool, str]:
        try:
            current = migrate.current_revision(hub.store.engine)
        except Exception as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        head = migrate.head_revision()
        if current != head:
            return False, f"schema at {current}, code needs {head}: run closeloop db upgrade"
        return True, "ok"

    from closeloop.connectors.salesforce.webhook import outbound_message_router

    orgs = {
        system.organization_id or "": name
        for name, system in hub.settings.systems.items()
        if system.kind == "salesforce"
    }
    routers = [outbound_message_router(hub.intake, orgs)] if orgs else []
    return create_app(hub.intake, hub.operations, hub.metrics.registry, ready, routers)


def mapped_binding(
    settings: Settings, connection: str, vendor_object: str, flows: Sequence[Flow]
) -> Binding:
    """A binding whose mapper is the declarative mapping of ``connection.vendor_object``
    (shipped defaults, replaced by files under ``mappings:``). Raises
    :class:`~closeloop.configfiles.FileProblems` or ``KeyError`` naming what is missing."""
    from closeloop.configfiles import load_mappers

    mapper = load_mappers(settings.mappings)[connection]
    canonical = mapper.object_mapping(vendor_object).canonical
    return Binding(
        connection, vendor_object, canonical, mapper.mapper_for(vendor_object), tuple(flows)
    )
