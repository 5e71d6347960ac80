"""Intake: webhook deliveries and polls become inbox rows (DESIGN.md step 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from closeloop.domain.changes import Change
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.registry import Registry, UnknownObjectError
from closeloop.ports.clock import Clock
from closeloop.ports.store import Cursor, Store

log = structlog.get_logger(__name__)


class IntakeError(ValueError):
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

    def validate(self, items: Sequence[Change | Mapping[str, Any]]) -> list[Change]:
        """Parse and check every item; raises :class:`IntakeError` naming every bad one.

        A change must parse as :class:`Change` and name a bound system and object.
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
                    problems.append(f"change {position}: {path}: {err['msg']}")
                continue
            except UnknownObjectError as exc:
                problems.append(f"change {position}: {exc}")
                continue
            changes.append(change)
        if problems:
            raise IntakeError(problems)
        return changes

    def accept(self, items: Sequence[Change | Mapping[str, Any]]) -> IntakeResult:
        """Validate ``items`` and commit them to the inbox in one transaction.

        All or nothing: one bad item refuses the whole delivery (:class:`IntakeError`) and
        stores nothing. Repeats of changes already in the inbox are counted, not stored.
        """
        changes = self.validate(items)
        with self.store.transaction() as tx:
            fresh = tx.insert_changes(changes, self.clock.now())
        self._count(changes, fresh)
        return IntakeResult(accepted=sum(fresh), duplicates=len(fresh) - sum(fresh))

    def _count(self, changes: Sequence[Change], fresh: Sequence[bool]) -> None:
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
        """
        connector = self.registry.connector(system)
        overlap = timedelta(seconds=overlap_s)
        with self.store.transaction() as tx:
            cursor = tx.get_cursor(system, object_name) or Cursor(system, object_name, None)
        since = cursor.watermark - overlap if cursor.watermark else None
        accepted = duplicates = 0
        for page in connector.read_changes(object_name, since):
            fresh_changes = [c for c in page if (c.external_id, c.version) not in cursor.seen]
            skipped = len(page) - len(fresh_changes)
            cursor = _advance(cursor, page, overlap)
            with self.store.transaction() as tx:
                fresh = tx.insert_changes(fresh_changes, self.clock.now())
                tx.put_cursor(cursor, self.clock.now())
            self._count(fresh_changes, fresh)
            accepted += sum(fresh)
            duplicates += skipped + len(fresh) - sum(fresh)
        if accepted:
            log.info(
                "poll",
                system=system,
                object=object_name,
                accepted=accepted,
                duplicates=duplicates,
                watermark=str(cursor.watermark),
            )
        return IntakeResult(accepted, duplicates)


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
