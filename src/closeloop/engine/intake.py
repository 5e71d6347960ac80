"""Intake: webhook deliveries and polls become inbox rows (docs/architecture.md).

Text the hub cannot store or send (a surrogate code point, a NUL; see
:func:`~closeloop.domain.changes.payload_problems`) is refused here, before it reaches the
inbox, a flow or a vendor. The two paths refuse it differently:

- a webhook delivery is refused whole (:class:`IntakeError`, a 422 on ``/webhooks/changes``)
  naming the change position and the field path: the sender still holds the delivery and
  can fix and resend it;
- a poll cannot be "sent back": one bad vendor record fails alone. The connector's changes
  are built inside :func:`~closeloop.domain.changes.deferred_text_checks` so that the page
  can be read at all; :meth:`Intake.poll` then checks each change itself, stores a bad one as
  a ``rejected`` inbox row with a scrubbed payload (for the audit) and a validation exception
  telling the operator to fix the record at its source, and takes the rest of the page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from closeloop.domain.changes import (
    INTAKE_REFUSAL,
    INVALID_TEXT,
    Change,
    TextProblem,
    deferred_text_checks,
    listed_problems,
    payload_problems,
    scrub_payload,
)
from closeloop.domain.commands import ExceptionClass
from closeloop.domain.errors import InputError
from closeloop.engine.apply import rejection
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.notifications import IgnoredNotifications
from closeloop.engine.registry import Registry, UnknownObjectError
from closeloop.ports.clock import Clock
from closeloop.ports.connector import Connector
from closeloop.ports.store import Cursor, InboxRow, NewException, Store, UnitOfWork

log = structlog.get_logger(__name__)
_LISTED = 10  # text problems named per change


class IntakeError(InputError):
    """A delivery was refused as a whole; ``problems`` lists each bad change by position."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """How many changes were new and how many were repeats of ones already in the inbox."""

    accepted: int
    duplicates: int


class Intake:
    """Validates changes and commits them to the inbox; the caller acknowledges after return."""

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, metrics: EngineMetrics
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.metrics = metrics
        self.ignored = IgnoredNotifications(store, clock, metrics)

    def validate(self, items: Sequence[Change | Mapping[str, Any]]) -> list[Change]:
        """Parse and check every item; returns them as changes, in order. Raises
        :class:`IntakeError` naming every bad one (``change 2: payload.lines[0].notes: lone
        surrogate U+DC00 at character 5 (...)``).

        A change must parse as :class:`Change`, name a bound system and object, and hold no
        text the hub cannot store or send. The text is checked on every change, so also on
        :class:`Change` instances built without the check (``model_construct``, or inside
        :func:`~closeloop.domain.changes.deferred_text_checks`).
        """
        problems: list[str] = []
        changes: list[Change] = []
        for position, item in enumerate(items):
            try:
                change = item if isinstance(item, Change) else Change.model_validate(item)
                self.registry.binding(change.system, change.object)
            except ValidationError as exc:
                for err in exc.errors():
                    path = ".".join(str(p) for p in err["loc"]) or "change"
                    if err["type"] == INVALID_TEXT:  # a line per problem, with the full path
                        problems.extend(_text_lines(position, payload_problems(err["input"])))
                    else:
                        problems.append(f"change {position}: {path}: {err['msg']}")
                continue
            except UnknownObjectError as exc:
                problems.append(f"change {position}: {exc}")
                continue
            bad_text = payload_problems(change.payload)
            if bad_text:
                problems.extend(_text_lines(position, bad_text))
                continue
            changes.append(change)
        if problems:
            raise IntakeError(problems)
        return changes

    def accept(self, items: Sequence[Change | Mapping[str, Any]]) -> IntakeResult:
        """Validate ``items`` and commit them to the inbox in one transaction.

        All or nothing: one bad item refuses the whole delivery (:class:`IntakeError`) and
        stores nothing. Repeats of changes already in the inbox are counted, not stored.
        This is the webhook path; polls go through :meth:`poll`, where a bad record is
        refused alone.
        """
        changes = self.validate(items)
        with self.store.transaction() as tx:
            fresh = tx.insert_changes(changes, self.clock.now())
        self._count(changes, fresh)
        return IntakeResult(accepted=sum(fresh), duplicates=len(fresh) - sum(fresh))

    def accept_read(
        self, changes: Sequence[Change], refused: Sequence[tuple[Change, str]] = ()
    ) -> IntakeResult:
        """Commit records a connector read from its system after a notification, under the
        poll's rules (one bad record fails alone) in one transaction, without a cursor.

        ``changes``: the records as read (built inside
        :func:`~closeloop.domain.changes.deferred_text_checks`); one holding text the hub
        cannot store or send is refused as a poll record is (:meth:`poll`). ``refused``:
        ``(change, message)`` pairs the caller refused (a timestamp beyond the clock skew):
        each becomes a ``rejected`` inbox row (payload scrubbed) with a validation exception
        about the record whose text is ``message``; a repeat of one already in the inbox
        opens nothing. Raises :class:`IntakeError`, storing nothing, when any change names a
        system or object no binding knows (checked before any metric label is made)."""
        problems = []
        for position, change in enumerate([*changes, *(c for c, _ in refused)]):
            try:
                self.registry.binding(change.system, change.object)
            except UnknownObjectError as exc:
                problems.append(f"change {position}: {exc}")
        if problems:
            raise IntakeError(problems)
        good, bad = _sort_text(changes)
        for change, message in refused:
            copy = change.model_copy(
                update={
                    "payload": scrub_payload(change.payload),
                    "correlation_id": change.correlation_id or uuid.uuid4().hex,
                }
            )
            bad.append((copy, INTAKE_REFUSAL + message))
        with self.store.transaction() as tx:
            now = self.clock.now()
            fresh = tx.insert_changes(good, now)
            opened = self._refuse(tx, bad, now) if bad else 0
        self._count(good, fresh)
        if opened:
            self.metrics.exceptions.labels(ExceptionClass.VALIDATION.value).inc(opened)
        duplicates = len(fresh) - sum(fresh) + len(bad) - opened
        return IntakeResult(accepted=sum(fresh), duplicates=duplicates)

    def _count(self, changes: Sequence[Change], fresh: Sequence[bool]) -> None:
        """Count changes already known to be bound (validated): a label is never made of
        a name no binding knows, so ``/metrics`` stays bounded whatever a sender invents."""
        for change, new in zip(changes, fresh, strict=True):
            result = "accepted" if new else "duplicate"
            self.metrics.changes_received.labels(change.system, change.object, result).inc()

    def poll(self, system: str, object_name: str, overlap_s: float) -> IntakeResult:
        """Read changes of one object since its cursor and commit them, page by page.

        The poll starts ``overlap_s`` before the watermark, so a record whose modification
        committed late is read again; ``(external id, version)`` pairs seen inside the overlap
        are skipped, and the inbox key drops any other repeat. Each page's inbox rows and the
        advanced cursor commit together, so a crash mid-poll loses nothing and re-reads at most
        one overlap. Raises the connector's errors (the cursor stays where it was).

        A record whose payload holds text the hub cannot store or send fails alone: it is
        stored with the bad characters replaced by U+FFFD, as a ``rejected`` inbox row that is
        never applied (nor replayed), with an open validation exception about the record
        naming the field paths and characters and asking for the record to be fixed in
        ``system``. The rest of the page goes in and the cursor advances past it; the
        record's next version is polled as usual and, once it applies, settles the
        exception (as any later version settles the rejection of an earlier one). A refused
        record counts in neither ``accepted`` nor ``duplicates``.
        """
        connector = self.registry.connector(system)
        overlap = timedelta(seconds=overlap_s)
        with self.store.transaction() as tx:
            cursor = tx.get_cursor(system, object_name) or Cursor(system, object_name, None)
        since = cursor.watermark - overlap if cursor.watermark else None
        accepted = duplicates = refused = 0
        for page in _pages(connector, object_name, since):
            fresh_changes = [c for c in page if (c.external_id, c.version) not in cursor.seen]
            skipped = len(page) - len(fresh_changes)
            good, bad = _sort_text(fresh_changes)
            cursor = _advance(cursor, page, overlap)
            with self.store.transaction() as tx:
                now = self.clock.now()
                fresh = tx.insert_changes(good, now)
                opened = self._refuse(tx, bad, now) if bad else 0
                tx.put_cursor(cursor, now)
            self._count(good, fresh)
            accepted += sum(fresh)
            refused += opened
            duplicates += skipped + len(fresh) - sum(fresh) + len(bad) - opened
        if refused:
            self.metrics.exceptions.labels(ExceptionClass.VALIDATION.value).inc(refused)
        if accepted or refused:
            log.info(
                "poll",
                system=system,
                object=object_name,
                accepted=accepted,
                refused=refused,
                duplicates=duplicates,
                watermark=str(cursor.watermark),
            )
        return IntakeResult(accepted, duplicates)

    def _refuse(self, tx: UnitOfWork, bad: Sequence[tuple[Change, str]], now: datetime) -> int:
        """Store refused poll records as rejected rows with a validation exception each (not
        for a repeat already in the inbox); returns how many were new."""
        ids = tx.insert_refused(bad, now)
        exceptions: list[NewException] = []
        for (change, error), inbox_id in zip(bad, ids, strict=True):
            result = "duplicate" if inbox_id is None else "refused"
            self.metrics.changes_received.labels(change.system, change.object, result).inc()
            if inbox_id is None:
                continue
            message = error.removeprefix(INTAKE_REFUSAL)
            row = InboxRow(inbox_id, change, now)
            exceptions.append(rejection(row, ExceptionClass.VALIDATION, message))
            log.warning(
                "poll record refused",
                system=change.system,
                object=change.object,
                external_id=change.external_id,
                version=change.version,
                correlation_id=change.correlation_id,
                problem=message,
            )
        tx.open_exceptions(exceptions, now)
        return len(exceptions)


def _text_lines(position: int, problems: Sequence[TextProblem]) -> list[str]:
    """IntakeError lines for the payload text problems of change ``position``: the first
    ten, then how many more."""
    lines = [f"change {position}: payload.{p}" for p in problems[:_LISTED]]
    if len(problems) > _LISTED:
        lines.append(f"change {position}: payload: and {len(problems) - _LISTED} more")
    return lines


def _pages(
    connector: Connector, object_name: str, since: datetime | None
) -> Iterator[Sequence[Change]]:
    """The connector's pages, each read with the payload text check deferred (the poll makes
    it per change): a connector's ``Change(...)`` of a bad record does not fail the page."""
    with deferred_text_checks():
        pages = iter(connector.read_changes(object_name, since))
    while True:
        with deferred_text_checks():
            page = next(pages, None)
        if page is None:
            return
        yield page


def _sort_text(changes: Sequence[Change]) -> tuple[list[Change], list[tuple[Change, str]]]:
    """``changes`` as ``(good, refused)``: a record holding text the hub cannot store or
    send is refused alone (:func:`_refused`), the rest go in."""
    good: list[Change] = []
    bad: list[tuple[Change, str]] = []
    for change in changes:
        problems = payload_problems(change.payload)
        if problems:
            bad.append(_refused(change, problems))
        else:
            good.append(change)
    return good, bad


def _refused(change: Change, problems: Sequence[TextProblem]) -> tuple[Change, str]:
    """The audit copy of a refused poll record (payload scrubbed, correlation id set so the
    inbox row and its exception share it) and its inbox error (:data:`INTAKE_REFUSAL` and
    the operator's message)."""
    listed = "; ".join(listed_problems(problems))
    copy = change.model_copy(
        update={
            "payload": scrub_payload(change.payload),
            "correlation_id": change.correlation_id or uuid.uuid4().hex,
        }
    )
    c = change
    message = (
        f"{c.system} {c.object} {c.external_id} (version {c.version}) was refused: it holds "
        f"characters that cannot be stored or sent to another system ({listed}). "
        f"Fix the record in {c.system}; its next version is taken."
    )
    return copy, INTAKE_REFUSAL + message


def _advance(cursor: Cursor, page: Sequence[Change], overlap: timedelta) -> Cursor:
    """The cursor after ``page``: the newest modification time, and the pairs inside the overlap."""
    seen = dict(cursor.seen)
    times = [cursor.watermark] if cursor.watermark else []
    for change in page:
        if change.modified_at is not None:
            seen[(change.external_id, change.version)] = change.modified_at
            times.append(change.modified_at)
    if not times:
        return cursor
    watermark = max(times)
    floor = watermark - overlap
    kept = {pair: at for pair, at in seen.items() if at >= floor}
    return Cursor(cursor.system, cursor.object, watermark, kept)
