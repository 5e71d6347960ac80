"""``closeloop bench soak``: the engine run for many cycles on a clock moved ahead each cycle,
with the database size and the process's RSS printed every few cycles, retention on (and
off, to compare).

A cycle: the clock moves ``hours_per_cycle`` ahead; ``changes`` records of a population of
``records`` get a new version (webhook deliveries); the worker runs until idle: inbox,
mapping, snapshot, the mirror flow, the outbox, dispatch to an in-process target that
applies each write at once (and refuses every 50th on purpose: a parked command and a
business exception, which an operator resolves, leaving an audit line), every 100th change
(on every other version of its record) carries a float the mapping refuses (a rejected inbox
row and an exception, settled by the record's next version); then the hub's retention
schedule runs when due. No sleeping: the clock is the hub's injected clock.

Sizes: SQLite, the database file and its WAL (SQLite reuses freed pages, it does not give
them back); PostgreSQL, the tables and indexes of the bench's schema
(``pg_total_relation_size``), vacuumed after each cycle as autovacuum would have been
many times in the hours the cycle stands for (freed space is reused, not given back).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from closeloop.bootstrap import Hub, build_hub
from closeloop.config import RetentionConfig, Settings
from closeloop.devtools.bench.engine import NoopSystem, _database
from closeloop.domain.commands import Applied, Command, ExceptionClass, Outcome, Permanent
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.flows import Binding
from closeloop.store import tables as t

COUNTED = ("inbox", "commands", "exceptions", "audit", "flows", "records")
REFUSE_EVERY = 50
MISMAP_EVERY = 100
_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass
class SoakClock:
    """The hub's clock, moved by the soak (a fake of the Clock protocol)."""

    at: datetime = _START

    def now(self) -> datetime:
        """The soak's time."""
        return self.at

    def monotonic(self) -> float:
        """The machine's monotonic seconds (rate limits and breakers)."""
        return time.monotonic()


class SoakTarget(NoopSystem):
    """Applies every write at once, refusing those whose data holds ``refuse``."""

    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """An outcome per command: refused (validation) or applied."""
        return [
            Permanent(ExceptionClass.VALIDATION, "refused on purpose by the soak")
            if c.payload.get("data", {}).get("refuse")
            else Applied({"id": c.entity})
            for c in commands
        ]


@dataclass(frozen=True)
class SoakShape:
    """How much one soak run does: ``cycles``, a sample every ``every`` cycles, ``changes``
    per cycle over ``records`` records, ``hours_per_cycle`` of the hub's clock per cycle."""

    cycles: int = 300
    every: int = 25
    changes: int = 100
    records: int = 500
    hours_per_cycle: float = 48.0


@dataclass
class Sample:
    """The state after ``cycle`` cycles: ``days`` on the hub's clock, database bytes, the
    process's resident set (bytes), rows per table."""

    cycle: int
    days: float
    db_bytes: int
    rss_bytes: int
    rows: dict[str, int] = field(default_factory=dict)


def soak_run(
    url: str,
    shape: SoakShape,
    retention: RetentionConfig | None,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """One soak on the empty database at ``url``; ``retention`` ``None``: nothing pruned.
    Returns a sample every ``shape.every`` cycles (and after the last). Raises
    ``RuntimeError`` when a cycle's work does not drain within 600 s."""
    settings = Settings(database_url=url)
    settings.worker.idle_wait_s = 0.001
    settings.worker.poll_interval_s = 0
    settings.retention = retention or RetentionConfig(enabled=False)
    clock = SoakClock()
    hub = build_hub(
        settings,
        connectors={"bench": NoopSystem(), "noop": SoakTarget()},
        bindings=[Binding("bench", "Record", "record", record_mapper, (MirrorFlow("noop"),))],
        clock=clock,
        upgrade=True,  # a fresh database
    )
    schedule = hub.retention_schedule()
    samples: list[Sample] = []
    try:
        for cycle in range(1, shape.cycles + 1):
            clock.at += timedelta(hours=shape.hours_per_cycle)
            hub.intake.accept(_changes(cycle, shape))
            if not hub.worker.run_until_idle(600):
                raise RuntimeError(f"cycle {cycle} did not drain within 600 s")
            for row in hub.operations.list_exceptions("open", 10_000):
                if row.command_id is not None:
                    hub.operations.resolve(row.id, "soak", "refused on purpose by the soak")
            schedule.run_due()
            if hub.store.backend == "postgresql":
                _vacuum(hub)
            if cycle % shape.every == 0 or cycle == shape.cycles:
                sample = _sample(hub, url, cycle, clock)
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
    finally:
        hub.close()
    return samples


def _changes(cycle: int, shape: SoakShape) -> list[dict[str, Any]]:
    """This cycle's deliveries: the next ``changes`` records, round-robin, at version
    ``cycle``."""
    out = []
    for k in range(shape.changes):
        n = (cycle - 1) * shape.changes + k
        payload: dict[str, Any] = {"name": f"record {n % shape.records}", "note": "x" * 200}
        payload["cycle"] = str(cycle)
        if n % REFUSE_EVERY == 0:
            payload["refuse"] = "yes"
        if n % MISMAP_EVERY == 1 and (n // shape.records) % 2 == 0:
            payload["amount"] = 1.5  # refused by the mapping; the record's next version is not
        out.append(
            {
                "system": "bench",
                "object": "Record",
                "external_id": f"r{n % shape.records}",
                "version": str(cycle),
                "payload": payload,
            }
        )
    return out


def _vacuum(hub: Hub) -> None:
    """What autovacuum does in the hours a cycle stands for (it runs every minute of real
    time, which a soak compresses to a fraction of a second): dead rows' space made
    reusable, in every mode alike."""
    with hub.store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in ("inbox", "commands", "exceptions", "audit", "flows", "records"):
            conn.execute(text(f"VACUUM {name}"))


def _sample(hub: Hub, url: str, cycle: int, clock: SoakClock) -> Sample:
    with hub.store.engine.connect() as conn:
        rows = {
            name: int(
                conn.execute(select(func.count()).select_from(t.metadata.tables[name])).scalar()
                or 0
            )
            for name in COUNTED
        }
        if hub.store.backend == "postgresql":
            size = conn.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                )
            ).scalar()
            db_bytes = int(size or 0)
        else:
            db_bytes = _sqlite_bytes(url)
    days = (clock.at - _START).total_seconds() / 86400
    return Sample(cycle, round(days, 1), db_bytes, _rss_bytes(), rows)


def _sqlite_bytes(url: str) -> int:
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _rss_bytes() -> int:
    """The process's resident set now (Linux ``/proc``; else the peak, from ``resource``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_soak_bench(
    shape: SoakShape,
    runs: int = 3,
    compare: bool = True,
    postgres_url: str | None = None,
    retention: RetentionConfig | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median samples of ``runs`` soaks with retention (``retention``, default: the
    defaults) and, with ``compare``, as many without, each on a fresh database (SQLite, or
    a throwaway schema of ``postgres_url``): ``{"shape", "runs", "backend", "modes":
    {"retention": [sample, ...], "no retention": [...]}}`` where a sample is ``{"cycle",
    "days", "db_mb", "rss_mb", "rows"}`` (medians over the runs)."""
    modes: dict[str, RetentionConfig | None] = {"retention": retention or RetentionConfig()}
    if compare:
        modes["no retention"] = None
    result: dict[str, Any] = {
        "shape": shape.__dict__,
        "runs": runs,
        "backend": "postgresql" if postgres_url else "sqlite",
        "modes": {},
    }
    for mode, config in modes.items():
        per_run: list[list[Sample]] = []
        for run in range(runs):

            def step(sample: Sample, run: int = run, mode: str = mode) -> None:
                if on_step is not None:
                    mb = sample.db_bytes / 1e6
                    on_step(f"{mode}, run {run + 1}/{runs}: cycle {sample.cycle}, {mb:.1f} MB")

            with _database(postgres_url) as url:
                per_run.append(soak_run(url, shape, config, step))
        result["modes"][mode] = _medians(per_run)
    return result


def _medians(per_run: list[list[Sample]]) -> list[dict[str, Any]]:
    out = []
    for samples in zip(*per_run, strict=True):
        first = samples[0]
        out.append(
            {
                "cycle": first.cycle,
                "days": first.days,
                "db_mb": round(statistics.median(s.db_bytes for s in samples) / 1e6, 2),
                "rss_mb": round(statistics.median(s.rss_bytes for s in samples) / 1e6, 1),
                "rows": {
                    name: int(statistics.median(s.rows[name] for s in samples))
                    for name in first.rows
                },
            }
        )
    return out
