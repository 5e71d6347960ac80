"""``POST /webhooks/salesforce/outbound-message``: Salesforce Outbound Messages into the inbox.

The envelope is parsed (:mod:`.outbound`); a wrong ``OrganizationId`` or a malformed envelope
gets a SOAP fault (HTTP 500, as SOAP 1.1 answers faults) and stores nothing. Each
notification of a polled/bound object becomes a change (version: its ``SystemModstamp``,
which the outbound-message rule must send); notifications of objects this hub does not bind
are acknowledged and counted as ``ignored`` (``closeloop_changes_received_total``), never
refused, since Salesforce would resend them for 24 hours. The Ack goes out only after the
inbox commit.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from closeloop.connectors.salesforce.outbound import MalformedEnvelope, ack, fault, parse
from closeloop.domain.changes import parse_instant
from closeloop.engine.intake import Intake, IntakeError
from closeloop.engine.registry import UnknownObjectError

log = structlog.get_logger(__name__)
PATH = "/webhooks/salesforce/outbound-message"
_XML = "text/xml; charset=utf-8"


async def _raw(request: Request) -> bytes:
    return await request.body()


def outbound_message_router(intake: Intake, orgs: dict[str, str]) -> APIRouter:
    """The endpoint for the configured orgs: ``{organization id: system name}`` (ids of 15
    or 18 characters)."""
    router = APIRouter()
    systems = {org[:15]: system for org, system in orgs.items()}

    @router.post(PATH)
    def receive(body: bytes = Depends(_raw)) -> Response:
        try:
            message = parse(body)
        except MalformedEnvelope as exc:
            log.warning("salesforce_outbound_malformed", problem=str(exc))
            return Response(fault(str(exc)), status_code=500, media_type=_XML)
        system = systems.get(message.organization_id[:15])
        if system is None:
            log.warning("salesforce_outbound_unknown_org", org=message.organization_id)
            return Response(
                fault(f"organization {message.organization_id} is not the configured org"),
                status_code=500,
                media_type=_XML,
            )
        changes: list[dict[str, Any]] = []
        ignored = 0
        for note in message.notifications:
            try:
                intake.registry.binding(system, note.sobject)
            except UnknownObjectError:
                ignored += 1
                intake.metrics.changes_received.labels(system, note.sobject, "ignored").inc()
                continue
            stamp = note.fields.get("SystemModstamp")
            if not stamp:
                problem = f"notification {note.notification_id} has no SystemModstamp field"
                return Response(fault(problem), status_code=500, media_type=_XML)
            version = parse_instant(str(stamp)).isoformat()
            changes.append(
                {
                    "system": system,
                    "object": note.sobject,
                    "external_id": note.record_id,
                    "version": version,
                    "modified_at": version,
                    "payload": note.fields,
                    "correlation_id": note.notification_id,
                }
            )
        try:
            result = intake.accept(changes) if changes else None
        except IntakeError as exc:
            return Response(fault("; ".join(exc.problems)), status_code=500, media_type=_XML)
        log.info(
            "salesforce_outbound",
            system=system,
            action=message.action_id,
            accepted=result.accepted if result else 0,
            duplicates=result.duplicates if result else 0,
            ignored=ignored,
        )
        return Response(ack(), media_type=_XML)

    return router
