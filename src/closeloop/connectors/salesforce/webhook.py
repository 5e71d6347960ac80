"""``POST /webhooks/salesforce/outbound-message``: Salesforce Outbound Messages as
notifications that the hub acts on by reading the records (:mod:`.notified`).

The envelope is parsed (:mod:`.outbound`); a wrong ``OrganizationId``, a malformed envelope
or a notification Salesforce would never send gets a Client fault (HTTP 500, as SOAP 1.1
answers faults) and stores nothing. When Salesforce cannot be read, the answer is a Server
fault: Salesforce delivers the message again later (it retries for 24 hours). Otherwise
the notified records of bound objects are read and committed to the inbox, and only then
the Ack goes out; notifications of unbound objects are acknowledged, counted, logged and
recorded for ``closeloop check``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from closeloop.connectors.salesforce.notified import BadNotification, ReadFailed, take
from closeloop.connectors.salesforce.outbound import MalformedEnvelope, ack, fault, parse
from closeloop.engine.intake import Intake, IntakeError

log = structlog.get_logger(__name__)
PATH = "/webhooks/salesforce/outbound-message"
MEDIA_TYPES = ("text/xml", "application/soap+xml")
"""The request media types the endpoint takes (SOAP 1.1 posts ``text/xml``)."""
_XML = "text/xml; charset=utf-8"


@dataclass(frozen=True, slots=True)
class OrgEndpoint:
    """The system a configured org's messages belong to, its ``max_clock_skew_s``, and the
    ``token`` the endpoint URL must carry (``?token=``; ``None``: none needed)."""

    system: str
    max_clock_skew_s: int = 300
    token: str | None = None


async def _raw(request: Request) -> bytes:
    return await request.body()


def _fault(message: str, client: bool = True) -> Response:
    return Response(fault(message, client), status_code=500, media_type=_XML)


def outbound_message_router(intake: Intake, orgs: Mapping[str, OrgEndpoint]) -> APIRouter:
    """The endpoint for the configured orgs: ``{organization id: endpoint}`` (ids of 15 or
    18 characters)."""
    router = APIRouter()
    endpoints = {org[:15]: endpoint for org, endpoint in orgs.items()}

    @router.post(
        PATH,
        openapi_extra={"requestBody": {"content": {kind: {} for kind in MEDIA_TYPES}}},
    )
    def receive(request: Request, body: bytes = Depends(_raw)) -> Response:
        """A SOAP outbound message; answers the Ack after the inbox commit, else a fault."""
        try:
            message = parse(body)
        except MalformedEnvelope as exc:
            log.warning("salesforce_outbound_malformed", problem=str(exc))
            return _fault(str(exc))
        endpoint = endpoints.get(message.organization_id[:15])
        if endpoint is None:
            log.warning("salesforce_outbound_unknown_org", org=message.organization_id[:18])
            return _fault(f"organization {message.organization_id[:18]} is not the configured org")
        sent = request.query_params.get("token", "")
        if endpoint.token is not None and not hmac.compare_digest(
            sent.encode(), endpoint.token.encode()
        ):
            log.warning("salesforce_outbound_bad_token", system=endpoint.system)
            return _fault("the endpoint URL lacks the configured token")
        try:
            taken = take(intake, endpoint.system, endpoint.max_clock_skew_s, message)
        except BadNotification as exc:
            log.warning("salesforce_outbound_malformed", problem=str(exc))
            return _fault(str(exc))
        except (ReadFailed, IntakeError) as exc:
            log.error("salesforce_outbound_not_taken", system=endpoint.system, problem=str(exc))
            return _fault("not taken now: deliver again later", client=False)
        log.info(
            "salesforce_outbound",
            system=endpoint.system,
            action=message.action_id,
            accepted=taken.accepted,
            duplicates=taken.duplicates,
            refused=taken.refused,
            ignored=taken.ignored,
            missing=taken.missing,
        )
        return Response(ack(), media_type=_XML)

    return router
