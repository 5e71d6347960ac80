"""``POST /webhooks/xero/{system}``: Xero's webhook events as notifications that the hub
acts on by reading the records.

Xero signs each delivery with the app's webhook signing key: ``x-xero-signature`` is the
base64 HMAC-SHA256 of the raw body keyed with the key's UTF-8 bytes (Xero's "Configuring
your server"; :func:`signature`). The route checks it in constant time against the
system's ``webhook_key`` before reading anything else, and answers as Xero demands of a
receiver, which is also what its "Intent to receive" validation checks: 401 with no body
for a missing or wrong signature (and for a system without a ``webhook_key``), 200 with no
body once the events are taken. Bodies above ``http.max_body_bytes`` never reach the route
(413 from the app's :class:`~closeloop.api.limits.RequestLimits`).

An event names a record (``eventCategory``, ``resourceId``, ``tenantId``) and carries no
content, so nothing in it is trusted beyond the ids: the notified records are read back from
Xero through the system's connector (:class:`NotifiedReader`, one call per object) and
committed to the inbox under the poll's rules (:meth:`Intake.accept_read`), and only then
the 200 goes out. When Xero cannot be read, the answer is 503: Xero delivers the payload
again (it retries for 24 hours) and the inbox drops what it already holds. Events of another
tenant than the system's ``tenant_id`` are acknowledged and ignored (counted in
``closeloop_notifications_ignored_total`` with the object ``(other tenant)``, logged); events
of objects no flow is bound to (a category the hub does not read, credit notes when
unbound) are acknowledged and reported (:mod:`closeloop.engine.notifications`).

Xero wants the answer within 5 seconds; the reads are one call per object, so a slow or
throttled Xero makes Xero retry, never lose, a delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import SecretStr

from closeloop.domain.changes import Change, deferred_text_checks
from closeloop.domain.errors import VendorError
from closeloop.engine.intake import Intake, IntakeError
from closeloop.engine.registry import UnknownObjectError
from closeloop.ports.connector import AmbiguousError, TransientError

log = structlog.get_logger(__name__)

PATH = "/webhooks/xero/{system}"
SIGNATURE_HEADER = "x-xero-signature"
OBJECTS: dict[str, str] = {
    "INVOICE": "Invoices",
    "CONTACT": "Contacts",
    "CREDITNOTE": "CreditNotes",
}
"""The Accounting API object each ``eventCategory`` names."""
OTHER_TENANT = "(other tenant)"
"""The ``object`` label under which events of another tenant are counted."""


@runtime_checkable
class NotifiedReader(Protocol):
    """What the route needs of a Xero system's connector."""

    def read_records(self, object_name: str, ids: Sequence[str]) -> Sequence[Change]:
        """The current version of each record of ``ids`` (``InvoiceID``s, ``ContactID``s,
        ``CreditNoteID``s) of ``object_name`` (``"Invoices"``, ``"Contacts"``,
        ``"CreditNotes"``), as the polling feed makes it (same ``object``, ``external_id``
        the record's id, ``version`` and ``modified_at`` from its ``UpdatedDateUTC``), in as
        few calls as the API allows (``GET /Invoices?IDs=...``). Ids the organisation does
        not have are left out. Built inside
        :func:`~closeloop.domain.changes.deferred_text_checks` by the caller. Raises the
        connector errors (:class:`~closeloop.ports.connector.TransientError`, ...)."""
        ...


class XeroWebhookSettings(Protocol):
    """What the route needs of a Xero system's settings."""

    @property
    def tenant_id(self) -> str:
        """The organisation the system acts in (``xero-tenant-id``)."""
        ...

    @property
    def webhook_key(self) -> str | SecretStr | None:
        """The app's webhook signing key (``None``: the route refuses every delivery)."""
        ...


@dataclass(frozen=True, slots=True)
class _Endpoint:
    tenant_id: str
    key: bytes | None


def signature(key: str | bytes, body: bytes) -> str:
    """``x-xero-signature`` of ``body``: base64 of HMAC-SHA256 keyed with ``key``."""
    raw = key.encode() if isinstance(key, str) else key
    return base64.b64encode(hmac.new(raw, body, hashlib.sha256).digest()).decode("ascii")


def verified(key: str | bytes, body: bytes, given: str | None) -> bool:
    """Whether ``given`` is the signature of ``body`` (compared in constant time)."""
    if not given:
        return False
    return hmac.compare_digest(signature(key, body).encode(), given.strip().encode("latin-1"))


async def _raw(request: Request) -> bytes:
    return await request.body()


def _empty(status: int) -> Response:
    return Response(status_code=status)


class _Malformed(ValueError):
    """A signed body that is not a Xero event payload."""


def _events(body: bytes) -> tuple[list[Any], str]:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise _Malformed(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("events"), list):
        raise _Malformed("not an object with an events list")
    events = parsed["events"]
    sequence = f"{parsed.get('firstEventSequence')}-{parsed.get('lastEventSequence')}"
    return events, sequence[:40]


def _uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def webhook_router(intake: Intake, systems: Mapping[str, XeroWebhookSettings]) -> APIRouter:
    """The endpoint of the configured Xero systems (``{system name: settings}``)."""
    router = APIRouter()
    endpoints = {
        name: _Endpoint(
            _uuid(s.tenant_id) or str(s.tenant_id),
            (
                s.webhook_key.get_secret_value()
                if isinstance(s.webhook_key, SecretStr)
                else s.webhook_key
            ).encode()
            if s.webhook_key
            else None,
        )
        for name, s in systems.items()
    }

    @router.post(PATH)
    def receive(system: str, request: Request, body: bytes = Depends(_raw)) -> Response:
        """A Xero webhook delivery: 200 (no body) after the inbox commit, 401 (no body) when
        it is not signed with the system's key, 503 when Xero cannot be read now."""
        endpoint = endpoints.get(system)
        if endpoint is None:
            log.warning("xero_webhook_unknown_system", system=system[:40])
            return _empty(404)
        if endpoint.key is None:
            log.warning(
                "xero_webhook_no_key",
                system=system,
                hint=f"set systems.{system}.webhook_key to the app's webhook signing key",
            )
            return _empty(401)
        if not verified(endpoint.key, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("xero_webhook_bad_signature", system=system)
            return _empty(401)
        try:
            events, sequence = _events(body)
        except _Malformed as exc:
            log.error("xero_webhook_malformed", system=system, problem=str(exc))
            return _empty(400)
        if not events:  # Intent to receive, or nothing for the hub
            return _empty(200)
        try:
            taken = _take(intake, system, endpoint, events)
        except (_ReadFailed, IntakeError) as exc:
            log.error("xero_webhook_not_taken", system=system, problem=str(exc))
            return _empty(503)
        log.info("xero_webhook", system=system, sequence=sequence, **taken)
        return _empty(200)

    return router


class _ReadFailed(Exception):
    """The notified records could not be read from Xero (Xero delivers again later)."""


def _take(intake: Intake, system: str, endpoint: _Endpoint, events: list[Any]) -> dict[str, int]:
    """Read and commit the records ``events`` name; what became of them."""
    try:
        connector = intake.registry.connector(system)
    except UnknownObjectError as exc:
        raise _ReadFailed(str(exc)) from None
    if not isinstance(connector, NotifiedReader):
        raise _ReadFailed(f"{system}'s connector cannot read records by id")
    wanted: dict[str, dict[str, None]] = {}
    ignored: Counter[str] = Counter()
    other_tenant = malformed = 0
    for event in events:
        if not isinstance(event, dict):
            malformed += 1
            continue
        rid = _uuid(event.get("resourceId"))
        category = str(event.get("eventCategory", ""))[:80]
        if rid is None or not category:
            malformed += 1
            continue
        if _uuid(event.get("tenantId")) != endpoint.tenant_id:
            other_tenant += 1
            continue
        name = OBJECTS.get(category, category)
        try:
            intake.registry.binding(system, name)
        except UnknownObjectError:
            ignored[name] += 1
            continue
        wanted.setdefault(name, {})[rid] = None
    if other_tenant:
        intake.metrics.notifications_ignored.labels(system, OTHER_TENANT).inc(other_tenant)
        log.warning("xero_webhook_other_tenant", system=system, events=other_tenant)
    if malformed:
        log.warning("xero_webhook_event_malformed", system=system, events=malformed)
    good: list[Change] = []
    missing = 0
    for name, ids in wanted.items():
        try:
            with deferred_text_checks():
                records = connector.read_records(name, list(ids))
        except (TransientError, AmbiguousError, VendorError, KeyError, ValueError) as exc:
            raise _ReadFailed(f"reading {len(ids)} {name} from Xero: {exc}") from exc
        found = set()
        for change in records:
            key = _uuid(change.external_id)
            if key in ids and change.object == name and change.system == system:
                found.add(key)
                good.append(change)
        lost = [i for i in ids if i not in found]
        if lost:
            missing += len(lost)
            log.warning("xero_webhook_record_missing", system=system, object=name, ids=lost[:10])
    result = intake.accept_read(good)
    known = {*OBJECTS.values(), *connector.objects()}
    for name, count in ignored.items():
        intake.ignored.record(system, name, known, _hint(system, name), count)
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "ignored": sum(ignored.values()),
        "other_tenant": other_tenant,
        "malformed": malformed,
        "missing": missing,
    }


def _hint(system: str, name: str) -> str:
    return (
        f"bind {name} of {system} to a flow (a mapping and a flow for it), or unsubscribe "
        f"the app's webhook from that event category (Xero developer portal > Webhooks)"
    )
