"""Retention: deleting the rows the hub is done with, in small batches, on SQLite and PostgreSQL.

Each table is walked by id (keyset: ``id > last`` in windows of ``batch_size`` rows, each
window one short transaction), so no statement holds a table or many rows for long and
the engine's own transactions interleave. A window's rows that are done and older than
their table's retention are deleted, the conditions checked again in the ``DELETE`` (a
row that changed state meanwhile, e.g. a rejected change replayed, stays). Ids grow with
time, so a walk stops at the first window whose rows were all *created* after the
cutoff: nothing later can be old enough. A pass costs the rows it removes plus the old
rows it must keep.

What is kept, whatever its age, and why (the flows' and operators' needs):

- ``inbox``: pending rows; the newest row of each record (reconciliation's explainer
  reads the newest version received to tell a change in flight from drift, and a
  re-delivery of that version is dropped at the door); rows an exception names (replay
  resets them). An older version delivered again after its row went is applied as
  ``stale`` or ``unchanged`` against the record's snapshot (``records``, never pruned):
  no flow sees it twice.
- ``commands``: pending, in-flight and parked commands; commands an exception names; the
  newest ``done`` command of each (system, operation, entity) (when the hub last wrote a
  record, for reconciliation; re-issuing it is dropped by its idempotency key). An
  identical command re-issued within the retention is dropped by the outbox's unique key;
  after it, flows do not re-issue: their state (``flows``, never pruned) records what
  they sent, and a re-delivered source version never reaches them (above).
- ``exceptions``: open ones, and closed ones whose command still waits (pending,
  in flight, parked).
- ``audit``: the lines of ignored notifications (bounded, ``closeloop check`` reads them).
- ``reconcile_runs`` (with their ``reconcile_drifts``): the newest run of each trigger
  (the schedule finds its last slot there).

Never touched: ``flows``, ``records``, ``xref``, ``cursors``, ``rate_windows``,
``api_keys``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import ColumnElement, Connection, Table, delete, func, select, tuple_

from closeloop.domain.commands import TERMINAL_STATUSES, CommandStatus
from closeloop.engine.notifications import ignored_entity
from closeloop.ports.clock import Clock
from closeloop.ports.store import iter_chunks
from closeloop.store import tables as t
from closeloop.store.sql import SqlStore

log = structlog.get_logger(__name__)

TABLES = ("exceptions", "commands", "inbox", "audit", "reconcile_runs")
"""The pruned tables, in the order of a pass (exceptions first: they free their commands
and inbox rows for the same pass)."""
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
_WAITING = [s.value for s in (CommandStatus.PENDING, CommandStatus.IN_FLIGHT, CommandStatus.PARKED)]
_IGNORED = ignored_entity("")


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a pass removed (``dry_run``: would remove): rows per table (``reconcile_drifts``
    with their runs), and each table's cutoff (rows done before it went; ``None``: kept
    forever)."""

    dry_run: bool
    removed: dict[str, int]
    cutoffs: dict[str, datetime | None]

    @property
    def total(self) -> int:
        """Rows removed over all tables."""
        return sum(self.removed.values())


class PruneMetrics:
    """``closeloop_rows_pruned_total{table}`` and the time of the last pass, on ``registry``
    (the hub's ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "closeloop_rows_pruned_total",
            "Rows deleted by retention (retention: settings)",
            ["table"],
            registry=registry,
        )
        self.last_pass = Gauge(
            "closeloop_prune_last_pass_timestamp_seconds",
            "When the last retention pass ended (unix seconds; 0: none yet)",
            registry=registry,
        )


@dataclass(frozen=True)
class _Rule:
    """How to prune one table: the columns a decision reads, which rows of a window may go
    (``doomed``, told the exceptions this pass removes), what the ``DELETE`` checks again,
    and the column of a row's creation."""

    table: Table
    columns: tuple[str, ...]
    created: str
    doomed: Callable[[Connection, Sequence[Any], datetime, set[int]], list[int]]
    recheck: Callable[[datetime], list[ColumnElement[bool]]]


class Pruner:
    """Deletes rows the hub is done with (module docstring) from ``store``.

    ``keep_days``: days kept per table (``inbox``, ``commands``, ``exceptions``, ``audit``,
    ``reconcile_runs``; ``0`` or absent: forever), counted back from ``clock.now()``.
    ``batch_size``: rows per window and transaction. ``metrics``: counted when given (not
    on a dry run). Safe to run while workers run and in several processes at once (a row
    two passes both pick is deleted once).
    """

    def __init__(
        self,
        store: SqlStore,
        clock: Clock,
        keep_days: Mapping[str, int],
        batch_size: int = 500,
        metrics: PruneMetrics | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.store = store
        self.clock = clock
        self.keep_days = dict(keep_days)
        self.batch_size = batch_size
        self.metrics = metrics
        self._rules = _rules()

    def cutoffs(self) -> dict[str, datetime | None]:
        """Per table, the time before which a done row goes (``None``: kept forever)."""
        now = self.clock.now()
        return {
            name: now - timedelta(days=days) if (days := self.keep_days.get(name, 0)) else None
            for name in TABLES
        }

    def prune(self, *, dry_run: bool = False, stop: threading.Event | None = None) -> PruneResult:
        """One pass over every table; returns the rows removed per table (``dry_run``: the
        rows that would be, deleting nothing). ``stop`` set: the pass ends after the current
        window (what went is counted). Raises what the database driver raises; the windows
        committed before stay committed."""
        cutoffs = self.cutoffs()
        removed = dict.fromkeys([*TABLES, "reconcile_drifts"], 0)
        gone: set[int] = set()  # exceptions of this pass: what they named may go too
        for name in TABLES:
            cutoff = cutoffs[name]
            if cutoff is None or (stop is not None and stop.is_set()):
                continue
            if name == "reconcile_runs":
                runs, drifts = self._prune_runs(cutoff, dry_run, stop)
                removed["reconcile_runs"], removed["reconcile_drifts"] = runs, drifts
            else:
                removed[name] = self._walk(self._rules[name], cutoff, dry_run, stop, gone)
        if self.metrics is not None and not dry_run:
            for name, count in removed.items():
                self.metrics.rows.labels(name).inc(count)
            self.metrics.last_pass.set(self.clock.now().timestamp())
        if any(removed.values()):
            log.info("retention pass", dry_run=dry_run, **removed)
        return PruneResult(dry_run, removed, cutoffs)

    def _walk(
        self,
        rule: _Rule,
        cutoff: datetime,
        dry_run: bool,
        stop: threading.Event | None,
        gone: set[int],
        on_doomed: Callable[[Connection, list[int]], None] | None = None,
    ) -> int:
        """Walk ``rule.table`` by id in windows; returns the rows (that would be) deleted.
        ``gone``: the exceptions removed in this pass (those of this table are added)."""
        table = rule.table
        columns = [table.c.id, *(table.c[name] for name in rule.columns)]
        after, count = 0, 0
        while stop is None or not stop.is_set():
            with self.store.engine.begin() as conn:
                window = select(*columns).where(table.c.id > after).order_by(table.c.id)
                rows = conn.execute(window.limit(self.batch_size)).all()
                if not rows:
                    return count
                after = rows[-1].id
                doomed = rule.doomed(conn, rows, cutoff, gone)
                if doomed and on_doomed is not None:
                    on_doomed(conn, doomed)
                if doomed and not dry_run:
                    stmt = delete(table).where(table.c.id.in_(doomed), *rule.recheck(cutoff))
                    doomed = list(conn.execute(stmt.returning(table.c.id)).scalars())
                count += len(doomed)
                if table is t.exceptions:
                    gone.update(doomed)
            if all(getattr(r, rule.created) >= cutoff for r in rows):
                return count  # every later row was made after the cutoff too
        return count

    def _prune_runs(
        self, cutoff: datetime, dry_run: bool, stop: threading.Event | None
    ) -> tuple[int, int]:
        """Reconciliation runs past ``cutoff`` (not the newest of a trigger) with their
        drifts; returns ``(runs, drifts)``. The runs are picked first (a small table), then
        per window of runs their drifts go in windows and the runs after them."""
        d, r = t.reconcile_drifts, t.reconcile_runs
        picked: list[int] = []

        def collect(_conn: Connection, ids: list[int]) -> None:
            picked.extend(ids)

        rule = self._rules["reconcile_runs"]
        self._walk(rule, cutoff, True, stop, set(), collect)
        runs = drifts = 0
        for chunk in iter_chunks(picked, self.batch_size):
            if dry_run:
                with self.store.engine.begin() as conn:
                    drifts += int(
                        conn.execute(select(func.count()).where(d.c.run_id.in_(chunk))).scalar()
                        or 0
                    )
                runs += len(chunk)
                continue
            while True:  # a run's drifts all go before the run does
                with self.store.engine.begin() as conn:
                    window = select(d.c.id).where(d.c.run_id.in_(chunk)).limit(self.batch_size)
                    gone = conn.execute(delete(d).where(d.c.id.in_(window))).rowcount
                drifts += gone
                if gone < self.batch_size:
                    break
            with self.store.engine.begin() as conn:
                stmt = delete(r).where(r.c.id.in_(chunk), *rule.recheck(cutoff))
                runs += conn.execute(stmt).rowcount
            if stop is not None and stop.is_set():
                break
        return runs, drifts


def _rules() -> dict[str, _Rule]:
    i, c, e, a, r = t.inbox, t.commands, t.exceptions, t.audit, t.reconcile_runs
    return {
        "inbox": _Rule(
            i,
            ("system", "object", "external_id", "status", "processed_at", "received_at"),
            "received_at",
            _doomed_inbox,
            lambda cutoff: [i.c.status != "pending", i.c.processed_at < cutoff],
        ),
        "commands": _Rule(
            c,
            ("system", "operation", "entity", "status", "updated_at", "created_at"),
            "created_at",
            _doomed_commands,
            lambda cutoff: [c.c.status.in_(_TERMINAL), c.c.updated_at < cutoff],
        ),
        "exceptions": _Rule(
            e,
            ("status", "command_id", "updated_at", "created_at"),
            "created_at",
            _doomed_exceptions,
            lambda cutoff: [e.c.status != "open", e.c.updated_at < cutoff],
        ),
        "audit": _Rule(
            a,
            ("at", "entity"),
            "at",
            lambda _conn, rows, cutoff, _gone: [
                row.id for row in rows if row.at < cutoff and not row.entity.startswith(_IGNORED)
            ],
            lambda cutoff: [a.c.at < cutoff],
        ),
        "reconcile_runs": _Rule(
            r,
            ("trigger", "started_at", "finished_at"),
            "started_at",
            _doomed_runs,
            lambda cutoff: [r.c.finished_at < cutoff],
        ),
    }


def _named_by_exceptions(
    conn: Connection, column: str, ids: Sequence[int], gone: set[int]
) -> set[int]:
    """Those of ``ids`` that an exception (open or closed, not in ``gone``) names in
    ``column``."""
    e = t.exceptions
    named = e.c[column]
    rows = conn.execute(select(e.c.id, named).where(named.in_(list(ids))))
    return {target for exception, target in rows if exception not in gone}


def _doomed_inbox(
    conn: Connection, rows: Sequence[Any], cutoff: datetime, gone: set[int]
) -> list[int]:
    old = [
        row
        for row in rows
        if row.status != "pending" and row.processed_at is not None and row.processed_at < cutoff
    ]
    if not old:
        return []
    i = t.inbox
    record = (i.c.system, i.c.object, i.c.external_id)
    keys = list({(row.system, row.object, row.external_id) for row in old})
    newest = set(
        conn.execute(
            select(func.max(i.c.id)).where(tuple_(*record).in_(keys)).group_by(*record)
        ).scalars()
    )
    named = _named_by_exceptions(conn, "inbox_id", [row.id for row in old], gone)
    return [row.id for row in old if row.id not in newest and row.id not in named]


def _doomed_commands(
    conn: Connection, rows: Sequence[Any], cutoff: datetime, gone: set[int]
) -> list[int]:
    old = [row for row in rows if row.status in _TERMINAL and row.updated_at < cutoff]
    if not old:
        return []
    c = t.commands
    kind = (c.c.system, c.c.operation, c.c.entity)
    keys = list({(row.system, row.operation, row.entity) for row in old if row.entity})
    newest: set[int] = set()
    if keys:
        newest = set(
            conn.execute(
                select(func.max(c.c.id))
                .where(tuple_(*kind).in_(keys), c.c.status == CommandStatus.DONE.value)
                .group_by(*kind)
            ).scalars()
        )
    named = _named_by_exceptions(conn, "command_id", [row.id for row in old], gone)
    return [row.id for row in old if row.id not in newest and row.id not in named]


def _doomed_exceptions(
    conn: Connection, rows: Sequence[Any], cutoff: datetime, _gone: set[int]
) -> list[int]:
    old = [row for row in rows if row.status != "open" and row.updated_at < cutoff]
    commands = [row.command_id for row in old if row.command_id is not None]
    waiting: set[int] = set()
    if commands:
        c = t.commands
        stmt = select(c.c.id).where(c.c.id.in_(commands), c.c.status.in_(_WAITING))
        waiting = set(conn.execute(stmt).scalars())
    return [row.id for row in old if row.command_id not in waiting]


def _doomed_runs(
    conn: Connection, rows: Sequence[Any], cutoff: datetime, _gone: set[int]
) -> list[int]:
    old = [row for row in rows if row.finished_at < cutoff]
    if not old:
        return []
    r = t.reconcile_runs
    newest = set(conn.execute(select(func.max(r.c.id)).group_by(r.c.trigger)).scalars())
    return [row.id for row in old if row.id not in newest]


@dataclass
class RetentionSchedule:
    """Prunes with ``pruner`` every ``every_min`` minutes of ``clock`` while ``enabled``
    (``closeloop run``'s retention thread)."""

    pruner: Pruner
    clock: Clock
    every_min: float
    enabled: bool = True
    _last: datetime | None = field(default=None, init=False)

    def run_due(self, stop: threading.Event | None = None) -> PruneResult | None:
        """Prune if ``every_min`` passed since the last pass of this schedule (or none
        ran); returns the pass, or ``None`` when none was due or it failed (logged: the
        next one tries again)."""
        now = self.clock.now()
        if not self.enabled or (
            self._last is not None and now - self._last < timedelta(minutes=self.every_min)
        ):
            return None
        self._last = now
        try:
            return self.pruner.prune(stop=stop)
        except Exception:
            log.exception("retention pass failed")
            return None

    def run(self, stop: threading.Event) -> None:
        """Prune now and then every ``every_min`` minutes until ``stop`` is set."""
        if not self.enabled:
            return
        while not stop.is_set():
            self.run_due(stop)
            stop.wait(self.every_min * 60)
