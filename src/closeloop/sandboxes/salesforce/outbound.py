"""The sandbox's side of Outbound Messages: the SOAP envelope Salesforce POSTs.

Built to Salesforce's outbound-message WSDL (namespace
``http://soap.sforce.com/2005/09/outbound``; sObject fields in
``urn:sobject.enterprise.soap.sforce.com``; ``xsi:nil`` for empty fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _field(name: str, value: Any) -> str:
    if value is None:
        return f'<sf:{name} xsi:nil="true"/>'
    if isinstance(value, Mapping):
        inner = "".join(_field(k, v) for k, v in value.items())
        return f"<sf:{name}>{inner}</sf:{name}>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<sf:{name}>{escape(str(value))}</sf:{name}>"


def envelope(
    organization_id: str,
    action_id: str,
    instance_url: str,
    notifications: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> bytes:
    """The POST body for ``notifications`` of ``(notification id, object, fields)``; the
    fields include ``Id``."""
    items = "".join(
        f"<Notification><Id>{escape(nid)}</Id>"
        f'<sObject xsi:type={quoteattr("sf:" + sobject)} xmlns:sf="{SOBJECT}">'
        + "".join(_field(k, v) for k, v in fields.items())
        + "</sObject></Notification>"
        for nid, sobject, fields in notifications
    )
    url = escape(f"{instance_url}/services/Soap/c/62.0/{organization_id}")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP}" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="{XSI}">'
        f'<soapenv:Body><notifications xmlns="{OUTBOUND}">'
        f"<OrganizationId>{escape(organization_id)}</OrganizationId>"
        f"<ActionId>{escape(action_id)}</ActionId>"
        f'<SessionId xsi:nil="true"/>'
        f"<EnterpriseUrl>{url}</EnterpriseUrl><PartnerUrl>{url}</PartnerUrl>"
        f"{items}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def is_ack(body: bytes) -> bool:
    """Whether an endpoint's answer acknowledges the delivery (``<Ack>true</Ack>``)."""
    import defusedxml.ElementTree as SafeET

    try:
        root = SafeET.fromstring(body)
    except Exception:
        return False
    node = root.find(f"{{{SOAP}}}Body/{{{OUTBOUND}}}notificationsResponse/{{{OUTBOUND}}}Ack")
    return node is not None and (node.text or "").strip().lower() == "true"
