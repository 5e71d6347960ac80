"""The one settings object: a YAML file, overridden by ``CLOSELOOP_*`` environment variables.

Nested keys use ``__`` in variable names: ``CLOSELOOP_WORKER__THREADS=8``.
"""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from closeloop.alerts.settings import AlertsConfig
from closeloop.connectors.catalog import plugin, systems_adapter
from closeloop.connectors.settings import SystemSettings
from closeloop.domain.entities import LegalEntity, RatesConfig
from closeloop.domain.errors import InputError
from closeloop.domain.operations import Role
from closeloop.domain.periods import PeriodKind
from closeloop.domain.routing import RoleRouting, Roles, RouteRule
from closeloop.domain.taxrules import DEFAULT_RULES, TaxRule

DEFAULT_CONFIG = Path("closeloop.yaml")
DEFAULT_DATABASE_URL = "sqlite:///./.closeloop/closeloop.db"


class HttpSettings(BaseModel):
    """The HTTP server: webhooks, health, metrics, operations API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="the largest request body the hub reads (413 above it); webhooks included",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared secret of the generic change webhook (HMAC-SHA256 of timestamp "
        "and body); none: the webhook refuses every request",
    )
    webhook_tolerance_s: int = Field(
        default=300, ge=1, le=3600, description="replay window of a signed webhook request"
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="key that signs console session cookies; none: a random one per "
        "process (sessions end when the hub restarts)",
    )
    session_ttl_h: float = Field(default=8.0, gt=0, le=24 * 30)


class WorkerConfig(BaseModel):
    """Worker loop, dispatch and retry knobs (see ``engine.worker`` and ``engine.dispatch``)."""

    threads: int = Field(default=4, ge=1, le=64)
    poll_interval_s: float = Field(default=30.0, ge=0)
    overlap_s: float = Field(default=60.0, ge=0)
    apply_batch: int = Field(default=200, ge=1, le=5000)
    idle_wait_s: float = Field(default=0.2, gt=0)
    lease_s: float = Field(default=120.0, gt=0)
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=300.0, gt=0)
    retry_deadline_s: float = Field(default=86400.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, how long a worker waits for its calls in flight before it "
        "gives their commands back (due again, the attempt not counted)",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address of a worker process's /metrics and /healthz"
    )
    metrics_port: int | None = Field(
        default=0,
        ge=0,
        le=65535,
        description="port of a worker process's /metrics and /healthz (0: a free one, "
        "logged at start; null, or off in the environment: none)",
    )

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _port_off(cls, value: Any) -> Any:
        """``off`` (or ``null``, ``none``, empty: what an environment variable can say)
        turns the probe server off."""
        if isinstance(value, str) and value.strip().lower() in ("", "off", "null", "none"):
            return None
        return value


class ReconcileConfig(BaseModel):
    """Scheduled reconciliation inside the hub (``closeloop run``): every ``every_h`` hours
    from ``at_utc`` (a time of day, UTC; ``every_h: 0`` turns it off), over ``domains``,
    repairing what has a clear owner when ``repair`` is set."""

    model_config = ConfigDict(extra="forbid")

    every_h: float = Field(default=24.0, ge=0, le=24 * 31)
    at_utc: time = time(2, 0)
    domains: tuple[Literal["customers", "projects", "time", "invoices", "charges"], ...] = (
        "customers",
        "projects",
        "time",
        "invoices",
        "charges",
    )
    repair: bool = False


_RETAINED = (
    "done_inbox_days",
    "delivered_commands_days",
    "closed_exceptions_days",
    "reconcile_runs_days",
)


class RetentionConfig(BaseModel):
    """How long the hub keeps rows it is done with (days; ``0`` keeps them forever). ``closeloop
    run`` prunes every ``every_min`` minutes when ``enabled``; ``closeloop db prune`` prunes
    (or, ``--dry-run``, counts) on demand whatever ``enabled`` says. Rows go in transactions
    of at most ``batch_size`` rows (closeloop.store.retention).

    - ``done_inbox_days`` (30): inbox rows applied, unchanged, stale or rejected, counted
      from when they were processed: a month-end close can still look at what came in.
    - ``delivered_commands_days`` (90): outbox commands done, resolved or superseded,
      from their last update: a quarter's close can see what was sent, and an identical
      command re-issued within the window is dropped by its idempotency key.
    - ``closed_exceptions_days`` (180): exceptions resolved or replayed, from their closing.
    - ``reconcile_runs_days`` (400): reconciliation reports and their drifts, from their end:
      the evidence that the systems were reconciled, kept as long as the audit trail.
    - ``audit_days`` (400): the audit trail (who replayed, resolved, linked, credited ...)
      from its time: a fiscal year, its year-end close and the external audit that follows
      (13 months and a margin). It must be the longest (``0`` or at least every other): it
      explains the rows the others removed. The books of record stay in the ERP.

    Never removed, whatever the days: pending inbox rows, undelivered, in-flight or parked
    commands, open exceptions (and the inbox row or command each names), the newest inbox
    row of each record and the newest delivered command of each kind on each entity (what
    reconciliation reads), flow state, snapshots, the cross-reference, poll cursors, the
    newest reconciliation report of each trigger (the schedule reads it) and the audit lines
    of ignored notifications (``closeloop check`` reads them).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    every_min: float = Field(default=60.0, ge=1, le=7 * 24 * 60)
    batch_size: int = Field(default=500, ge=10, le=10_000)
    done_inbox_days: int = Field(default=30, ge=0)
    delivered_commands_days: int = Field(default=90, ge=0)
    closed_exceptions_days: int = Field(default=180, ge=0)
    reconcile_runs_days: int = Field(default=400, ge=0)
    audit_days: int = Field(default=400, ge=0)

    @model_validator(mode="after")
    def _audit_longest(self) -> RetentionConfig:
        if self.audit_days == 0:
            return self
        for name in _RETAINED:
            days = getattr(self, name)
            if days == 0 or days > self.audit_days:
                kept = "0 (forever)" if days == 0 else str(days)
                raise ValueError(
                    f"audit_days ({self.audit_days}) must be 0 (forever) or at least every "
                    f"other retention: {name} is {kept}"
                )
        return self

    def keep_days(self) -> dict[str, int]:
        """Days kept per pruned table (``0``: forever), by table name."""
        return {
            "inbox": self.done_inbox_days,
            "commands": self.delivered_commands_days,
            "exceptions": self.closed_exceptions_days,
            "reconcile_runs": self.reconcile_runs_days,
            "audit": self.audit_days,
        }


class MirrorConfig(BaseModel):
    """The built-in example flow: mirror ``source.object`` into ``target``."""

    source: str
    object: str = "Record"
    target: str
    target_object: str = "Record"


class RoleConfig(BaseModel):
    """The systems serving one role and how an engagement picks one of them.

    ``systems``: names under ``systems:`` (default: every configured system whose connector
    plays this role); ``rules``: routing rules in order, each ``{field, values, system}``
    over the canonical opportunity (e.g. ``customer.country``); ``default``: the system of
    an engagement no rule routes (with one system and no rules, that system). A deal no
    rule routes and with no default is blocked with a business exception.
    """

    model_config = ConfigDict(extra="forbid")

    systems: list[str] | None = None
    rules: list[RouteRule] = Field(default_factory=list)
    default: str | None = None


class RolesConfig(BaseModel):
    """Which systems play ``crm``, ``psa`` and ``erp`` for the project-to-cash flows."""

    model_config = ConfigDict(extra="forbid")

    crm: RoleConfig = Field(default_factory=RoleConfig)
    psa: RoleConfig = Field(default_factory=RoleConfig)
    erp: RoleConfig = Field(default_factory=RoleConfig)


class MobilizeConfig(BaseModel):
    """The Mobilize flow: closed-won deals of the CRMs become customers and projects in the
    ERP and projects in the PSA each deal is routed to. ``match_threshold``: the
    name-and-address similarity (0-100) an existing ERP customer needs to be taken for the
    deal's account."""

    model_config = ConfigDict(extra="forbid")

    match_threshold: float = Field(default=85.0, ge=0, le=100)


class BillTimeConfig(BaseModel):
    """The Bill time flow: approved billable time entries of the PSAs become timesheet lines
    in each engagement's ERP."""

    model_config = ConfigDict(extra="forbid")


class BillExpenseConfig(BaseModel):
    """The Bill expense flow: approved expenses of the PSAs go to each engagement's
    invoicing (billable ones re-billed at cost plus the deal's markup, the others counted as
    cost)."""

    model_config = ConfigDict(extra="forbid")


class InvoiceConfig(BaseModel):
    """The Invoice flow: per project and billing ``period``, the engagement's ERP invoices
    the recorded time and posts the invoice, ``grace_days`` after the period's end and once
    no line came for ``settle_s`` seconds; an invoice is due ``payment_terms_days`` after its
    date when the deal's account has no payment terms of its own."""

    model_config = ConfigDict(extra="forbid")

    period: PeriodKind = PeriodKind.MONTHLY
    grace_days: int = Field(default=0, ge=0, le=60)
    settle_s: float = Field(default=60.0, ge=0)
    payment_terms_days: int = Field(default=30, ge=0, le=366)


class StatusBackConfig(BaseModel):
    """The Status back flow: posted and paid invoices of the ERPs update the opportunity and
    account in the engagement's CRM and mark the time billed in its PSA."""

    model_config = ConfigDict(extra="forbid")


class FlowsConfig(BaseModel):
    """The project-to-cash flows to run (none unless configured). Invoice needs Mobilize and
    Bill time (it holds and counts their time); Bill expense and Status back need Invoice."""

    mobilize: MobilizeConfig | None = None
    bill_time: BillTimeConfig | None = None
    bill_expense: BillExpenseConfig | None = None
    invoice: InvoiceConfig | None = None
    status_back: StatusBackConfig | None = None

    @model_validator(mode="after")
    def _needs(self) -> FlowsConfig:
        problems = []
        if self.bill_time is not None and self.invoice is None:
            problems.append("flows.bill_time needs flows.invoice (it decides what is held)")
        if self.invoice is not None and (self.mobilize is None or self.bill_time is None):
            problems.append("flows.invoice needs flows.mobilize and flows.bill_time")
        if self.bill_expense is not None and self.invoice is None:
            problems.append("flows.bill_expense needs flows.invoice (it bills the expenses)")
        if self.status_back is not None and self.invoice is None:
            problems.append("flows.status_back needs flows.invoice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Settings(BaseSettings):
    """Everything closeloop reads from configuration, parsed once.

    Raises ``pydantic.ValidationError`` naming each bad key.
    """

    model_config = SettingsConfigDict(
        env_prefix="CLOSELOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        secrets_dir_missing="error",
    )

    database_url: str = DEFAULT_DATABASE_URL
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http: HttpSettings = Field(default_factory=HttpSettings)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    systems: dict[str, SystemSettings] = Field(
        default_factory=dict,
        description="each a connector's settings, by kind (closeloop.connectors.catalog)",
    )
    roles: RolesConfig = Field(default_factory=RolesConfig)
    mirrors: list[MirrorConfig] = Field(default_factory=list)
    flows: FlowsConfig = Field(default_factory=FlowsConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    mappings: list[Path] = Field(
        default_factory=list,
        description="mapping files; one for a connection replaces the shipped default",
    )
    legal_entities: dict[str, LegalEntity] = Field(
        default_factory=dict,
        description="the firm's selling companies by code; none: one entity, no checks",
    )
    exchange_rates: RatesConfig = Field(default_factory=RatesConfig)
    tax_rules: tuple[TaxRule, ...] = Field(
        default=DEFAULT_RULES,
        description="the VAT treatment table (closeloop.domain.taxrules); replaces the default",
    )

    @field_validator("legal_entities", mode="before")
    @classmethod
    def _entity_codes(cls, value: Any) -> Any:
        """Each entity's ``code`` is its key."""
        if not isinstance(value, dict):
            return value
        return {
            code: {**entity, "code": code} if isinstance(entity, dict) else entity
            for code, entity in value.items()
        }

    @field_validator("systems", mode="before")
    @classmethod
    def _by_kind(cls, value: Any) -> Any:
        """Each system against its connector's settings model (the union by ``kind``)."""
        return systems_adapter().validate_python(value)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name, system in self.systems.items():
            if system.timeout_s * 2 > self.worker.lease_s:
                raise ValueError(
                    f"systems.{name}.timeout_s ({system.timeout_s}) must be under half of "
                    f"worker.lease_s ({self.worker.lease_s}): a claim must outlive its call"
                )
        books = self.system_entities()
        for name, system in self.systems.items():
            if not self.legal_entities or not hasattr(system, "company"):
                continue  # only an ERP system books for an entity
            if name in books and books[name] not in self.legal_entities:
                raise ValueError(
                    f"systems.{name}.company {books[name]!r} is not one of legal_entities "
                    f"({', '.join(sorted(self.legal_entities))})"
                )
            if name not in books and len(self.legal_entities) > 1:
                raise ValueError(
                    f"systems.{name} needs a company (the legal entity it books for): "
                    f"several legal_entities are configured"
                )
        for mirror in self.mirrors:
            for name in (mirror.source, mirror.target):
                if name not in self.systems:
                    raise ValueError(f"mirror names system {name!r}, which is not under systems")
        if self.flows.mobilize is not None or self.flows.bill_time is not None:
            self.engagement_roles()  # raises on a role no system plays or a bad rule
        return self

    def system_entities(self) -> dict[str, str]:
        """The legal entity each system books for (its ``company``), by system name."""
        return {
            name: str(company)
            for name, system in self.systems.items()
            if (company := getattr(system, "company", None))  # only an ERP system has one
        }

    def role_systems(self, role: Role) -> list[str]:
        """The systems playing ``role``: as configured under ``roles:``, else every system
        whose connector plays it. Raises ``ValueError`` for a name not under ``systems`` or
        a system whose connector plays another role."""
        configured = getattr(self.roles, role.value).systems
        if configured is None:
            return [n for n, s in self.systems.items() if plugin(s.kind).role is role]
        unknown = [n for n in configured if n not in self.systems]
        if unknown:
            raise ValueError(f"roles.{role.value} names {unknown}, which are not under systems")
        for name in configured:
            plays = plugin(self.systems[name].kind).role
            if plays not in (role, None):
                raise ValueError(
                    f"roles.{role.value} names {name!r}, a {self.systems[name].kind} system, "
                    f"which plays {plays.value if plays else 'no role'}"
                )
        return list(configured)

    def engagement_roles(self) -> Roles:
        """The roles of the project-to-cash flows with their routing and each CRM's key
        prefix. Raises ``ValueError`` naming a role no system plays, a system in two roles,
        several systems with no way to pick one, routing under ``crm`` (every CRM is read;
        its deals are routed to a PSA and an ERP), or a bad rule."""
        routing = {}
        seen: dict[str, str] = {}
        for role in Role:
            systems = self.role_systems(role)
            config = getattr(self.roles, role.value)
            if not systems:
                raise ValueError(
                    f"no system plays {role.value}: configure one under systems or name it "
                    f"under roles.{role.value}.systems"
                )
            for name in systems:
                if seen.setdefault(name, role.value) != role.value:
                    raise ValueError(f"{name!r} plays both {seen[name]} and {role.value}")
            if role is Role.CRM and (config.rules or config.default):
                raise ValueError("roles.crm takes no rules or default: every CRM is read")
            if len(systems) > 1 and not config.rules and config.default is None:
                raise ValueError(
                    f"roles.{role.value} has {systems} and neither rules nor a default to "
                    "pick one per engagement"
                )
            routing[role.value] = RoleRouting(
                systems=tuple(systems), rules=tuple(config.rules), default=config.default
            )
        prefixes = {
            name: self.systems[name].key_prefix or plugin(self.systems[name].kind).key_prefix
            for name in routing["crm"].systems
        }
        return Roles(key_prefixes=prefixes, **routing)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: arguments, then environment, then secret files (one file per
        key in ``secrets_dir``, named like the environment variable: ``closeloop_database_url``,
        ``closeloop_http__webhook_secret``), then the YAML file."""
        secrets = NestedSecretsSettingsSource(file_secret_settings)
        return (init_settings, env_settings, secrets, YamlConfigSettingsSource(settings_cls))


class ConfigError(InputError):
    """Configuration that cannot be used; the message names the file and each bad key."""


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (default ``./closeloop.yaml`` when it exists), the secret files in the
    folder ``CLOSELOOP_SECRETS_DIR`` names (e.g. ``/run/secrets`` of Docker and Kubernetes;
    none when unset) and the environment.

    Raises :class:`ConfigError` for a missing file or folder or invalid values.
    """
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    chosen = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = dict(Settings.model_config)
    config["yaml_file"] = str(chosen) if chosen else None
    secrets_dir = os.environ.get("CLOSELOOP_SECRETS_DIR") or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise ConfigError(f"CLOSELOOP_SECRETS_DIR: {secrets_dir}: no such folder")
    config["secrets_dir"] = secrets_dir
    bound = type("BoundSettings", (Settings,), {"model_config": config})
    try:
        settings: Settings = bound(**overrides)
    except ValidationError as exc:
        where = str(chosen) if chosen else "environment"
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from exc
    if chosen is not None:  # files are named relative to the configuration file
        settings.mappings = [p if p.is_absolute() else chosen.parent / p for p in settings.mappings]
        rates = settings.exchange_rates.file
        if rates is not None and not rates.is_absolute():
            settings.exchange_rates.file = chosen.parent / rates
    return settings
