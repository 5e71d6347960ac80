"""Outbound messages as notifications: record the ids, read the records, take them.

An outbound message carries only the fields its workflow rule selected, often without
``SystemModstamp``, and anyone who knows the org's id can post one. So the hub takes the
message as a notice that records changed, not as their content: for each bound object it
reads the notified records from Salesforce in one query (:meth:`SalesforceConnector.read_records`:
the fields and translation of the polling feed, the real ``SystemModstamp`` as the version),
and commits them to the inbox before the Ack (Salesforce Help, "Outbound Messaging": the
sender retries until it gets ``<Ack>true</Ack>``).

Nothing in the message is trusted: a ``SystemModstamp`` it carries is a hint (logged when
it lies ahead of the hub's clock), and ids the org does not have are only logged, so a
forged message can cause reads but never an exception or an inbox row. A record whose
``SystemModstamp`` as read lies more than the system's ``max_clock_skew_s`` ahead of the
hub's clock is not applied: it would make every genuine edit of the record look older and
be dropped. It becomes a rejected inbox row with a validation exception naming the record
and the timestamp. Notifications of objects no flow
is bound to are acknowledged and reported (:mod:`closeloop.engine.notifications`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from closeloop.connectors.salesforce.connector import SalesforceConnector
from closeloop.connectors.salesforce.outbound import Notification, OutboundMessage
from closeloop.domain.changes import Change, deferred_text_checks, parse_instant
from closeloop.domain.errors import VendorError
from closeloop.engine.intake import Intake
from closeloop.engine.registry import UnknownObjectError
from closeloop.ports.connector import AmbiguousError, TransientError

log = structlog.get_logger(__name__)

STANDARD_OBJECTS = frozenset(
    {
        "Account",
        "Campaign",
        "Case",
        "Contact",
        "Contract",
        "Event",
        "Lead",
        "Milestone__c",
        "Opportunity",
        "OpportunityLineItem",
        "Order",
        "Pricebook2",
        "PricebookEntry",
        "Product2",
        "Quote",
        "Task",
        "User",
    }
)
"""Objects whose names may label ``closeloop_notifications_ignored_total`` (with the
connector's polled ones); any other name is counted as ``(other)``."""
_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")


class BadNotification(ValueError):
    """The message cannot be a Salesforce outbound message (answered with a Client fault)."""


class ReadFailed(Exception):
    """The notified records could not be read from Salesforce (a Server fault: Salesforce
    delivers the message again later)."""


@dataclass(frozen=True, slots=True)
class Taken:
    """What became of a message: records ``accepted`` into the inbox, ``duplicates``,
    ``refused`` (ahead of the clock), ``ignored`` (unbound objects), ``missing`` (ids the
    org does not have)."""

    accepted: int
    duplicates: int
    refused: int
    ignored: int
    missing: int


def take(intake: Intake, system: str, skew_s: int, message: OutboundMessage) -> Taken:
    """Read and commit the records ``message`` notifies for ``system`` (module docstring).
    Raises :class:`BadNotification` (a record id or timestamp that Salesforce never sends)
    or :class:`ReadFailed`; in both cases nothing is stored."""
    connector = intake.registry.connector(system)
    if not isinstance(connector, SalesforceConnector):
        raise ReadFailed(f"{system} has no Salesforce connector to read the records with")
    now = intake.clock.now()
    latest = now + timedelta(seconds=skew_s)
    wanted: dict[str, dict[str, Notification]] = {}
    refused: list[tuple[Change, str]] = []
    ignored: Counter[str] = Counter()
    for note in message.notifications:
        if not _ID.fullmatch(note.record_id):
            raise BadNotification(f"notification {note.notification_id}: bad record Id")
        try:
            intake.registry.binding(system, note.sobject)
        except UnknownObjectError:
            ignored[note.sobject] += 1
            continue
        stamp = _stamp(note)  # a hint only: what counts is the record as read
        if stamp is not None and stamp > latest:
            log.warning(
                "salesforce_notified_stamp_ahead",
                system=system,
                record=note.record_id,
                stamp=stamp.isoformat(),
            )
        wanted.setdefault(note.sobject, {})[note.record_id[:15]] = note
    good: list[Change] = []
    missing = 0
    for sobject, notes in wanted.items():
        try:
            with deferred_text_checks():
                records = connector.read_records(sobject, [n.record_id for n in notes.values()])
        except (TransientError, AmbiguousError, VendorError, KeyError, ValueError) as exc:
            raise ReadFailed(f"reading {len(notes)} {sobject} from Salesforce: {exc}") from exc
        found = set()
        for change in records:
            notified = notes.get(change.external_id[:15])
            if notified is None:
                continue
            found.add(change.external_id[:15])
            change = change.model_copy(  # no validation: the text check stays with intake
                update={"correlation_id": notified.notification_id[:64]}
            )
            if change.modified_at is not None and change.modified_at > latest:
                refused.append(_ahead(change, now, skew_s, "as read from Salesforce"))
            else:
                good.append(change)
        lost = [n.record_id for key, n in notes.items() if key not in found]
        if lost:
            missing += len(lost)
            log.warning("salesforce_notified_record_missing", system=system, ids=lost[:10])
    result = intake.accept_read(good, refused)
    known = STANDARD_OBJECTS | set(connector.objects())
    for name, count in ignored.items():
        intake.ignored.record(system, name, known, _hint(system, name), count)
    return Taken(result.accepted, result.duplicates, len(refused), sum(ignored.values()), missing)


def _stamp(note: Notification) -> datetime | None:
    value = note.fields.get("SystemModstamp")
    if not value:
        return None
    try:
        return parse_instant(str(value))
    except ValueError:
        raise BadNotification(
            f"notification {note.notification_id}: SystemModstamp {str(value)[:40]!r} is not "
            "a date and time"
        ) from None


def _ahead(change: Change, now: datetime, skew_s: int, source: str) -> tuple[Change, str]:
    """The refusal of a record read from Salesforce with a ``SystemModstamp`` ahead."""
    c = change
    message = (
        f"{c.system} {c.object} {c.external_id} has SystemModstamp {c.version} ({source}), "
        f"more than {skew_s}s ahead of the hub's clock ({now.isoformat(timespec='seconds')}): "
        f"not applied, so that it cannot make the record's genuine edits look older. Check "
        f"the org's and the hub's clocks (systems.{c.system}.max_clock_skew_s) and who sent "
        f"the notification; the record's next edit is taken."
    )
    return change, message


def _hint(system: str, sobject: str) -> str:
    return (
        f"bind {sobject} of {system} to a flow (a mapping and a flow for it), or remove "
        f"{sobject} from the org's outbound-message rule (Setup > Outbound Messages) so "
        f"Salesforce stops sending it"
    )
