"""The pydantic models of the ``/api/v1`` views: what the console shows (the overview,
engagements and their timelines, exceptions grouped by cause) as typed answers. Times are
ISO 8601 with their offset (UTC); money and hours are decimal text (never a float)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from closeloop.api.v1.models import ExceptionItem
from closeloop.domain.commands import CommandStatus, ExceptionClass, Impact

Amount = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        description="a decimal as text, without exponent (money or hours)",
        examples=["1250.00"],
    ),
]


class SystemState(BaseModel):
    """One system: its circuit ``breaker`` in this process (``unknown``: this process
    dispatches nothing to it), ``quota`` left in words (``-``: the connector says nothing;
    ``unknown (...)``: asking failed), its outbox commands ``pending`` (waiting to send),
    ``in_flight`` (sending) and ``parked`` (waiting for a person), and ``healthy``
    (breaker closed or unknown and nothing parked)."""

    name: str
    breaker: Literal["closed", "open", "half_open", "unknown"]
    quota: str
    pending: int
    in_flight: int
    parked: int
    healthy: bool


class LastRun(BaseModel):
    """The latest reconciliation run: its ``id`` (``GET /api/v1/reconcile/runs/{id}`` has
    its drifts), ``status`` (``ok``, ``failed``), who started it (``trigger``), when it
    finished and how many ``drifts`` it counted (those in flight or already with a person
    excluded)."""

    id: int
    status: str
    trigger: str
    started_at: datetime
    finished_at: datetime
    drifts: int


class Overview(BaseModel):
    """The console's overview: each configured system (:class:`SystemState`, by name), the
    inbox's ``inbox_pending`` changes and the age of the oldest (``oldest_pending_age_s``,
    seconds; ``None``: none waits), open exceptions in all, by class and by impact (the
    impacts of at most 10,000 are counted), and the ``last_run`` of reconciliation (``None``
    before the first)."""

    systems: list[SystemState]
    inbox_pending: int
    oldest_pending_age_s: float | None
    open_exceptions: int
    exceptions_by_class: dict[str, int]
    exceptions_by_impact: dict[str, int]
    last_run: LastRun | None


class Engagement(BaseModel):
    """One engagement (a won CRM deal and what followed): the deal (``deal_id``,
    ``deal_name``, the CRM record ``deal_entity`` as ``system:object:id``, ``close_date``),
    the ``client`` (legal name) and the ``customer`` the flows matched, its lifecycle
    ``stage`` and what ``blockers`` stop it, its ``project_key``, the ``systems`` it was
    routed to by role, its ``invoices`` (reference -> number, ``""`` while not posted), its
    time (entries by state, hours recorded and held) and money (invoiced, paid,
    outstanding, as the status-back flow last reported them)."""

    deal_id: str
    deal_name: str
    deal_entity: str
    close_date: str
    client: str
    customer: str
    stage: str
    blockers: list[str]
    project_key: str
    systems: dict[str, str]
    invoices: dict[str, str]
    time_entries: dict[str, int]
    hours_recorded: Amount
    hours_held: Amount
    invoices_posted: int
    invoiced: Amount
    paid: Amount
    outstanding: Amount
    payment_status: str
    next_invoicing: str | None


class EngagementList(BaseModel):
    """The engagements found, by client then deal id: at most ``limit`` of ``total``."""

    items: list[Engagement]
    total: int


class TimelineEvent(BaseModel):
    """One line of a timeline: when (``None``: what the flow state says, without a time),
    a ``title`` and ``detail`` in words, the ``system`` concerned (``""``: the hub) and a
    ``tone``: ``ok``, ``waiting``, ``blocked``, ``failed`` or ``muted`` (skipped or
    replaced)."""

    at: datetime | None
    title: str
    detail: str
    system: str
    tone: Literal["ok", "waiting", "blocked", "failed", "muted"]


class TimelineStage(BaseModel):
    """One stage of the timeline (``Closed won``, ``Customer``, ``Projects``, ``Time``,
    ``Invoices``, ``Payments``) with its events, in time order (the untimed first)."""

    stage: str
    events: list[TimelineEvent]


class CommandItem(BaseModel):
    """An outbox command written for the engagement: the ``operation`` on ``entity`` in
    ``system``, its delivery ``status`` and ``attempts``, and its last error."""

    id: int
    system: str
    operation: str
    entity: str
    status: CommandStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime | None


class EngagementDetail(BaseModel):
    """One engagement with its ``timeline`` (every stage, in order), its ``open_exceptions``
    (those naming its deal or project), the ``commands`` sent or waiting for its records
    (oldest first) and their counts per system and status (``commands_by_system``)."""

    engagement: Engagement
    timeline: list[TimelineStage]
    open_exceptions: list[ExceptionItem]
    commands_by_system: dict[str, dict[str, int]]
    commands: list[CommandItem]


class ExceptionGroup(BaseModel):
    """Open exceptions with one cause: the same ``error_class``, ``system`` and message once
    ids, amounts and dates are taken out (``cause``). ``key``: a stable id of the cause
    (12 hex digits); ``count`` exceptions, the ``oldest`` opened at, its ``example`` (the
    oldest), their distinct ``impacts`` and ``entities`` and their ``exception_ids``
    (oldest first: ``POST /api/v1/exceptions/bulk`` takes them)."""

    key: str
    error_class: ExceptionClass
    system: str
    cause: str
    count: int
    oldest: datetime
    example: ExceptionItem
    impacts: list[Impact]
    entities: list[str]
    exception_ids: list[int]


class ExceptionGroups(BaseModel):
    """The groups, largest first, then oldest; ``truncated``: 10,000 open exceptions were
    read and more may match (narrow the filters)."""

    groups: list[ExceptionGroup]
    truncated: bool
