"""Salesforce Outbound Messages: parse the SOAP notification envelope, answer the Ack.

Workflow outbound messages POST a SOAP 1.1 envelope whose body is
``notifications`` (namespace ``http://soap.sforce.com/2005/09/outbound``) with
``OrganizationId``, ``ActionId``, ``SessionId``, ``EnterpriseUrl``, ``PartnerUrl`` and one
``Notification`` per record: its ``Id`` and an ``sObject`` whose ``xsi:type`` names the
object (``sf:Opportunity``) and whose children (namespace
``urn:sobject.enterprise.soap.sforce.com``) are the selected fields. Salesforce retries
until the endpoint answers ``<Ack>true</Ack>`` (Salesforce Help, "Outbound Messaging"). The
XML comes from the network, so it is parsed with defusedxml (no entities, no DTDs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


class MalformedEnvelope(ValueError):
    """Not a Salesforce outbound-message envelope; the message says what is wrong."""


@dataclass(frozen=True)
class Notification:
    """One notified record: notification id, object name, record id and field values
    (text as sent; ``None`` for ``xsi:nil``)."""

    notification_id: str
    sobject: str
    record_id: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    """A delivery: the sending org, the workflow action, and its notifications."""

    organization_id: str
    action_id: str
    notifications: tuple[Notification, ...]


def _text(parent: Element, tag: str, required: bool = True) -> str | None:
    node = parent.find(f"{{{OUTBOUND}}}{tag}")
    if node is None or (node.text or "").strip() == "":
        if required:
            raise MalformedEnvelope(f"notifications has no {tag}")
        return None
    return (node.text or "").strip()


def _value(node: Element) -> Any:
    if node.get(f"{{{XSI}}}nil") == "true":
        return None
    if len(node):  # a nested record (relationship field)
        return {child.tag.rsplit("}", 1)[-1]: _value(child) for child in node}
    return node.text or ""


def parse(body: bytes) -> OutboundMessage:
    """Parse an outbound-message POST body. Raises :class:`MalformedEnvelope` naming what is
    wrong (not XML, not SOAP, no notifications, a notification without Id or sObject)."""
    try:
        root = SafeET.fromstring(body)
    except (SafeET.ParseError, DefusedXmlException) as exc:
        raise MalformedEnvelope(f"not well-formed or unsafe XML: {exc}") from None
    if root.tag != f"{{{SOAP}}}Envelope":
        raise MalformedEnvelope(f"not a SOAP envelope (root element {root.tag})")
    notifications = root.find(f"{{{SOAP}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise MalformedEnvelope("the SOAP body holds no outbound notifications")
    organization_id = _text(notifications, "OrganizationId") or ""
    action_id = _text(notifications, "ActionId") or ""
    parsed = []
    for position, item in enumerate(notifications.findall(f"{{{OUTBOUND}}}Notification")):
        notification_id = _text(item, "Id")
        sobject = item.find(f"{{{OUTBOUND}}}sObject")
        if sobject is None or notification_id is None:
            raise MalformedEnvelope(f"notification {position} has no Id or no sObject")
        kind = (sobject.get(f"{{{XSI}}}type") or "").split(":")[-1]
        values = {child.tag.rsplit("}", 1)[-1]: _value(child) for child in sobject}
        record_id = values.get("Id")
        if not kind or not record_id:
            raise MalformedEnvelope(f"notification {position} names no object type or record Id")
        parsed.append(Notification(notification_id, kind, str(record_id), values))
    if not parsed:
        raise MalformedEnvelope("the envelope holds no Notification")
    return OutboundMessage(organization_id, action_id, tuple(parsed))


def ack() -> bytes:
    """The answer that tells Salesforce the delivery was taken (it stops retrying)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP}"><soapenv:Body>'
        f'<notificationsResponse xmlns="{OUTBOUND}"><Ack>true</Ack></notificationsResponse>'
        f"</soapenv:Body></soapenv:Envelope>"
    ).encode()


def fault(message: str, client: bool = True) -> bytes:
    """A SOAP 1.1 fault (``soapenv:Client`` for bad input, ``soapenv:Server`` otherwise)."""
    from xml.sax.saxutils import escape

    code = "soapenv:Client" if client else "soapenv:Server"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(message)}</faultstring>"
        f"</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()
