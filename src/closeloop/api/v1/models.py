"""The pydantic models of ``/api/v1``: what each route takes and answers, as the OpenAPI
document describes it. Times are ISO 8601 with their offset (UTC); money and quantities
stay text (a Decimal never becomes a float); ids are positive 63-bit integers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from closeloop.domain.access import AccessRole
from closeloop.domain.commands import ExceptionClass, Impact

MAX_ID = 2**63 - 1
"""The largest id a route takes (a signed 64-bit integer, as the database stores it)."""

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refused up front, not as a 500
Reason = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]


class Model(BaseModel):
    """Base of request bodies: unknown fields are refused (a typo is not ignored)."""

    model_config = ConfigDict(extra="forbid")


class Status(BaseModel):
    """Counts by state: inbox changes by status, commands by status and by target system,
    open exceptions by class, and when the oldest pending change arrived (``None``: none
    pending)."""

    inbox_by_status: dict[str, int]
    commands_by_status: dict[str, int]
    commands_by_system: dict[str, dict[str, int]]
    open_exceptions_by_class: dict[str, int]
    oldest_pending_inbox: datetime | None


class ExceptionItem(BaseModel):
    """A business exception: why (``error_class``, ``message``), what it blocks
    (``impact``, ``entity``, ``system``), where it stands (``status``: open, replayed,
    resolved; who closed it and why) and what it parks (``command_id`` or ``inbox_id``)."""

    id: int
    error_class: ExceptionClass
    impact: Impact
    entity: str
    system: str | None
    message: str
    status: str
    command_id: int | None
    inbox_id: int | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime
    resolved_by: str | None
    resolution: str | None


class ExceptionPage(BaseModel):
    """One page of exceptions, newest first; ``next``: the ``before_id`` of the next page
    (``None`` on the last)."""

    items: list[ExceptionItem]
    next: int | None


class ReplayRequest(Model):
    """Why an exception is replayed (optional, kept in the audit trail)."""

    reason: Reason = ""


class ResolveRequest(Model):
    """Why an exception is closed by hand (required)."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NO_NUL)]


class BulkRequest(Model):
    """``replay`` or ``resolve`` each of ``ids`` (1 to 1,000; duplicates count once) with
    ``reason`` (required to resolve)."""

    action: Literal["replay", "resolve"]
    ids: list[Id] = Field(min_length=1, max_length=1000)
    reason: Reason = ""


class BulkOutcome(BaseModel):
    """What the bulk action did to one exception: ``ok`` and its new status in ``detail``,
    or why it could not (the others are unaffected)."""

    id: int
    ok: bool
    detail: str


class BulkResult(BaseModel):
    """One outcome per distinct id, in the order asked."""

    outcomes: list[BulkOutcome]


class LinkRequest(Model):
    """The record's partner in another system: ``target_system`` and ``target_id``, and why
    a person says they are the same."""

    target_system: Name
    target_id: Name
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NO_NUL)]


class MovedInstance(BaseModel):
    """A flow instance the link answered: its ``flow`` and business ``key``."""

    flow: str
    key: str


class LinkResult(BaseModel):
    """The flow instances that moved on the link (a blocked deal resumes)."""

    moved: list[MovedInstance]


class CreditRequest(Model):
    """A person's request for a credit note: ``reason``, the ``line_keys`` to credit (none:
    the whole invoice) and whether the PSA should un-mark what it billed (``rebill``)."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NO_NUL)]
    line_keys: tuple[Name, ...] = Field(default=(), max_length=200)
    rebill: bool = False


class CreditResult(BaseModel):
    """The invoice credited and the billing flow instance that makes the credit note."""

    reference: str
    instance: str


class AuditItem(BaseModel):
    """One line of the audit trail: who (``actor``: ``key:<name>``, ``cli:<user>``, a
    flow) did what (``action``) to which ``entity``, with its ``detail``."""

    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    detail: dict[str, Any]
    correlation_id: str | None


class AuditPage(BaseModel):
    """One page of the audit trail, newest first; ``next``: the ``before_id`` of the next
    page (``None`` on the last)."""

    items: list[AuditItem]
    next: int | None


Domain = Literal["customers", "projects", "time", "invoices", "charges"]


class ReconcileRequest(Model):
    """A run: its ``domains`` (all by default), whether to ``repair`` what has a clear
    owner, and ``dry_run`` (the repair plan only)."""

    domains: tuple[Domain, ...] = Field(
        default=("customers", "projects", "time", "invoices", "charges"), min_length=1
    )
    repair: bool = False
    dry_run: bool = False


class Drift(BaseModel):
    """One drift of a run (:class:`closeloop.ports.store.DriftRow`): ``values`` per system
    as JSON (amounts as text)."""

    domain: str
    kind: str
    key: str
    field: str | None
    values: dict[str, Any]
    owner: str | None
    status: str
    cause: str
    repair: str
    exception_id: int | None


class ReconcileRun(BaseModel):
    """A reconciliation run (:class:`closeloop.ports.store.ReconcileRun`); ``drifts`` is
    empty in a list of runs."""

    id: int
    started_at: datetime
    finished_at: datetime
    trigger: str
    actor: str
    domains: list[str]
    repair: bool
    dry_run: bool
    records: dict[str, int]
    pages: dict[str, int]
    counts: dict[str, dict[str, int]]
    status: str
    error: str | None
    drifts: list[Drift]


class ApiKey(BaseModel):
    """An API key as listed: never its secret. ``state``: active, expired or revoked."""

    id: int
    name: str
    role: AccessRole
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyRequest(Model):
    """A key to make: ``name`` (letters, digits, ``._@-``), ``role`` and ``expires_days``
    (``None``: never)."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    role: AccessRole = AccessRole.VIEWER
    expires_days: int | None = Field(default=90, ge=1, le=3650)


class NewApiKey(BaseModel):
    """A key just made, with its ``token``: shown this once, stored only hashed."""

    key: ApiKey
    token: str
