"""The one settings object: a YAML file, overridden by ``CLOSELOOP_*`` environment variables.

Nested keys use ``__`` in variable names: ``CLOSELOOP_WORKER__THREADS=8``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from closeloop.domain.periods import PeriodKind

DEFAULT_CONFIG = Path("closeloop.yaml")
DEFAULT_DATABASE_URL = "sqlite:///./.closeloop/closeloop.db"


class HttpSettings(BaseModel):
    """The HTTP server: webhooks, health, metrics, operations API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)


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


class SystemConfig(BaseModel):
    """One connected system. ``kind`` picks the connector; limits override its defaults.

    ``tryton`` needs ``database``, ``user`` and ``password`` (better given as
    ``CLOSELOOP_SYSTEMS__<NAME>__PASSWORD``); the database must have been prepared with
    ``closeloop tryton init``.

    ``salesforce``: ``url`` is the org's instance URL; ``client_id`` and ``client_secret`` of
    the connected app, and ``user``/``password`` for the username-password flow (without a
    user, the client-credentials flow); ``organization_id`` is checked on outbound messages;
    ``quota_reserve`` is the fraction of the daily API allocation left untouched.

    ``harvest``: ``url`` is the API base (``https://api.harvestapp.com/v2``), ``token`` a
    personal access token (better ``CLOSELOOP_SYSTEMS__<NAME>__TOKEN``) and ``account_id``;
    ``requests_per_window`` per ``window_s`` is the account's limit, shared by all workers.
    """

    kind: Literal["memory", "tryton", "salesforce", "harvest"]
    url: str
    database: str | None = None
    user: str | None = None
    password: str | None = None
    objects: list[str] | None = Field(default=None, description="default: the connector's")
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    organization_id: str | None = None
    api_version: str = "62.0"
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust")
    quota_reserve: float = Field(default=0.1, ge=0, lt=1)
    token: str | None = None
    account_id: str | None = None
    batch_size: int | None = Field(default=None, ge=1, description="default: the connector's")
    requests_per_window: int | None = Field(
        default=None, ge=1, description="default: the vendor's (memory: 100)"
    )
    window_s: float | None = Field(default=None, gt=0, description="default: the vendor's (1 s)")
    max_concurrent: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)


class MirrorConfig(BaseModel):
    """The built-in example flow: mirror ``source.object`` into ``target``."""

    source: str
    object: str = "Record"
    target: str
    target_object: str = "Record"


class MobilizeConfig(BaseModel):
    """The Mobilize flow: closed-won deals of ``crm`` become customers and projects in ``erp``
    and projects in ``psa``. ``match_threshold``: the name-and-address similarity (0-100) an
    existing ERP customer needs to be taken for the deal's account."""

    crm: str = "salesforce"
    psa: str = "harvest"
    erp: str = "tryton"
    match_threshold: float = Field(default=85.0, ge=0, le=100)


class BillTimeConfig(BaseModel):
    """The Bill time flow: approved billable time entries of ``psa`` become timesheet lines
    in ``erp``."""

    psa: str = "harvest"
    erp: str = "tryton"


class InvoiceConfig(BaseModel):
    """The Invoice flow: per project and billing ``period``, ``erp`` invoices the recorded
    time and posts the invoice, ``grace_days`` after the period's end and once no line came
    for ``settle_s`` seconds."""

    erp: str = "tryton"
    period: PeriodKind = PeriodKind.MONTHLY
    grace_days: int = Field(default=0, ge=0, le=60)
    settle_s: float = Field(default=60.0, ge=0)


class StatusBackConfig(BaseModel):
    """The Status back flow: posted and paid invoices of ``erp`` update the opportunity and
    account in ``crm`` and mark the time billed in ``psa``."""

    crm: str = "salesforce"
    psa: str = "harvest"
    erp: str = "tryton"


class FlowsConfig(BaseModel):
    """The project-to-cash flows to run (none unless configured). Invoice needs Mobilize and
    Bill time (it holds and counts their time); Status back reads Invoice's references."""

    mobilize: MobilizeConfig | None = None
    bill_time: BillTimeConfig | None = None
    invoice: InvoiceConfig | None = None
    status_back: StatusBackConfig | None = None

    @model_validator(mode="after")
    def _needs(self) -> FlowsConfig:
        problems = []
        if self.bill_time is not None and self.invoice is None:
            problems.append("flows.bill_time needs flows.invoice (it decides what is held)")
        if self.invoice is not None and (self.mobilize is None or self.bill_time is None):
            problems.append("flows.invoice needs flows.mobilize and flows.bill_time")
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
        env_prefix="CLOSELOOP_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = DEFAULT_DATABASE_URL
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http: HttpSettings = Field(default_factory=HttpSettings)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    systems: dict[str, SystemConfig] = Field(default_factory=dict)
    mirrors: list[MirrorConfig] = Field(default_factory=list)
    flows: FlowsConfig = Field(default_factory=FlowsConfig)
    mappings: list[Path] = Field(
        default_factory=list,
        description="mapping files; one for a connection replaces the shipped default",
    )

    @model_validator(mode="after")
    def _mirrors_name_systems(self) -> Settings:
        for name, system in self.systems.items():
            if system.kind == "tryton" and not (
                system.database and system.user and system.password
            ):
                raise ValueError(
                    f"systems.{name}: a tryton system needs database, user and password"
                )
            if system.kind == "salesforce" and not (
                system.client_id and system.client_secret and system.organization_id
            ):
                raise ValueError(
                    f"systems.{name}: a salesforce system needs client_id, client_secret and "
                    "organization_id"
                )
            if system.kind == "harvest" and not (system.token and system.account_id):
                raise ValueError(f"systems.{name}: a harvest system needs token and account_id")
            if system.timeout_s * 2 > self.worker.lease_s:
                raise ValueError(
                    f"systems.{name}.timeout_s ({system.timeout_s}) must be under half of "
                    f"worker.lease_s ({self.worker.lease_s}): a claim must outlive its call"
                )
        for flow_name in ("mobilize", "bill_time"):
            flow = getattr(self.flows, flow_name)
            for role in ("crm", "psa", "erp"):
                named = getattr(flow, role, None) if flow is not None else None
                if named is not None and named not in self.systems:
                    raise ValueError(
                        f"flows.{flow_name}.{role} names system {named!r}, which is not under "
                        "systems"
                    )
        for mirror in self.mirrors:
            for name in (mirror.source, mirror.target):
                if name not in self.systems:
                    raise ValueError(f"mirror names system {name!r}, which is not under systems")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: arguments, then environment, then the YAML file."""
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the file and each bad key."""


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (default ``./closeloop.yaml`` when it exists) and the environment.

    Raises :class:`ConfigError` for a missing file or invalid values.
    """
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    chosen = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = dict(Settings.model_config)
    config["yaml_file"] = str(chosen) if chosen else None
    bound = type("BoundSettings", (Settings,), {"model_config": config})
    try:
        settings: Settings = bound(**overrides)
    except ValidationError as exc:
        where = str(chosen) if chosen else "environment"
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from exc
    if chosen is not None:  # mapping files are named relative to the configuration file
        settings.mappings = [p if p.is_absolute() else chosen.parent / p for p in settings.mappings]
    return settings
