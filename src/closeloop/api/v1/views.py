"""``/api/v1/overview`` and ``/api/v1/engagements``: what the console's overview and
engagement pages show, as typed answers from the same read models
(:class:`closeloop.api.sources.ViewSources`, :mod:`closeloop.flows.timeline`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from closeloop.api.auth import Authenticator
from closeloop.api.problems import PROBLEM_RESPONSES
from closeloop.api.sources import ViewSources
from closeloop.api.v1 import PREFIX
from closeloop.api.v1.exceptions import items
from closeloop.api.v1.models import NO_NUL
from closeloop.api.v1.view_models import (
    CommandItem,
    Engagement,
    EngagementDetail,
    EngagementList,
    LastRun,
    Overview,
    SystemState,
    TimelineEvent,
    TimelineStage,
)
from closeloop.domain.access import AccessRole
from closeloop.domain.errors import NotFoundError
from closeloop.engine import views
from closeloop.flows import timeline
from closeloop.ports.store import CommandRow
from closeloop.reconcile.run import drift_total


class EngagementNotFound(NotFoundError):
    """No flow knows the deal asked for."""


def views_router(sources: ViewSources, auth: Authenticator) -> APIRouter:
    """``GET /api/v1/overview``, ``GET /api/v1/engagements`` and ``GET
    /api/v1/engagements/{deal_id}`` (viewer), over ``sources``."""
    router = APIRouter(
        prefix=PREFIX,
        tags=["views"],
        dependencies=[Depends(auth.require(AccessRole.VIEWER))],
        responses=PROBLEM_RESPONSES,
    )

    @router.get("/overview", response_model=Overview)
    def overview() -> Overview:
        """Each system's breaker, quota left (may ask the vendors) and commands waiting,
        sending and parked; the inbox's pending changes and the age of the oldest; open
        exceptions by class and by impact; the last reconciliation run."""
        return overview_model(sources.overview())

    @router.get("/engagements", response_model=EngagementList)
    def engagements(
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                pattern=NO_NUL,
                description="text in the client, deal name or id, project code, invoice "
                "reference or number (case-insensitive; absent: all)",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> EngagementList:
        """The engagements matching ``q``, by client then deal id, at most ``limit``;
        ``total`` says how many matched."""
        found = timeline.find_engagements(sources.read_model, q or "")
        return EngagementList(items=[engagement_model(e) for e in found[:limit]], total=len(found))

    @router.get("/engagements/{deal_id}", response_model=EngagementDetail)
    def engagement(
        deal_id: Annotated[
            str, Path(min_length=1, max_length=200, pattern=NO_NUL, description="the CRM deal")
        ],
    ) -> EngagementDetail:
        """The engagement of CRM deal ``deal_id`` with its timeline by stage, its open
        exceptions and the commands sent for it (404 when no flow knows the deal)."""
        detail = timeline.engagement_detail(sources.read_model, deal_id)
        if detail is None:
            raise EngagementNotFound(f"no engagement for deal {deal_id!r}")
        return EngagementDetail(
            engagement=engagement_model(detail.engagement),
            timeline=[
                TimelineStage(stage=stage, events=[event_model(ev) for ev in events])
                for stage, events in detail.stages
            ],
            open_exceptions=items(sources.operations, detail.open_exceptions),
            commands_by_system=detail.commands_by_system,
            commands=[command_model(c) for c in detail.commands],
        )

    return router


def overview_model(view: views.Overview) -> Overview:
    """The overview as the API answers it."""
    run = view.last_run
    return Overview(
        systems=[
            SystemState(
                name=s.name,
                breaker=s.breaker,  # checked by the model
                quota=s.quota,
                pending=s.pending,
                in_flight=s.in_flight,
                parked=s.parked,
                healthy=s.healthy,
            )
            for s in view.systems
        ],
        inbox_pending=view.inbox_pending,
        oldest_pending_age_s=view.lag_s,
        open_exceptions=view.open_exceptions,
        exceptions_by_class=view.exceptions_by_class,
        exceptions_by_impact=view.exceptions_by_impact,
        last_run=None
        if run is None or run.id is None
        else LastRun(
            id=run.id,
            status=run.status,
            trigger=run.trigger,
            started_at=run.started_at,
            finished_at=run.finished_at,
            drifts=drift_total(run),
        ),
    )


def engagement_model(e: timeline.Engagement) -> Engagement:
    """An engagement as the API answers it (amounts as decimal text)."""
    s = e.status
    return Engagement(
        deal_id=e.deal_id,
        deal_name=e.deal_name,
        deal_entity=e.deal_entity,
        close_date=e.close_date,
        client=e.client,
        customer=s.customer,
        stage=s.stage,
        blockers=list(s.blockers),
        project_key=s.project_key,
        systems=dict(e.systems),
        invoices=dict(e.invoices),
        time_entries=dict(s.time_entries),
        hours_recorded=decimal_text(s.hours_recorded),
        hours_held=decimal_text(s.hours_held),
        invoices_posted=s.invoices_posted,
        invoiced=decimal_text(s.invoiced),
        paid=decimal_text(s.paid),
        outstanding=decimal_text(s.outstanding),
        payment_status=s.payment_status,
        next_invoicing=s.next_invoicing,
    )


def event_model(ev: timeline.TimelineEvent) -> TimelineEvent:
    """A timeline event as the API answers it (its stage is the one it is listed under)."""
    return TimelineEvent(
        at=ev.at,
        title=ev.title,
        detail=ev.detail,
        system=ev.system,
        tone=ev.tone,  # checked by the model
    )


def command_model(row: CommandRow) -> CommandItem:
    """An outbox command as the API answers it (without its payload)."""
    return CommandItem(
        id=row.id,
        system=row.command.system,
        operation=row.command.operation,
        entity=row.command.entity,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def decimal_text(value: Decimal) -> str:
    """``value`` as plain decimal text (``"1250.00"``, never ``"1.25E+3"``)."""
    return format(value, "f")
