"""``closeloop bench engine``: end-to-end engine throughput next to the floor of bare writes.

Engine: ``changes`` changes arrive in deliveries of 500 (as webhooks bring them), and the
worker runs until idle: inbox, mapping, snapshot, xref, flow, outbox, claim, dispatch to a
no-op system, outcome and the flow's reaction. Floor: the same durable writes per change
(inbox insert, xref insert, snapshot upsert, flow upsert, command insert, inbox mark,
command claim, command finish, flow update), batched the same way, with nothing else: no
reads, no mapping, no Python decisions. ``ratio`` = engine / floor (higher is better).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, text, update

from closeloop.bootstrap import build_hub
from closeloop.config import Settings
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Outcome
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.connector import ConnectorLimits
from closeloop.ports.flows import Binding
from closeloop.store import migrate
from closeloop.store import tables as t
from closeloop.store.db import create_db_engine

DELIVERY = 500
APPLY_BATCH = 200
DISPATCH_BATCH = 100


class NoopSystem:
    """A target that applies every command instantly (measures the engine, not a vendor)."""

    system = "noop"
    limits = ConnectorLimits(batch_size=DISPATCH_BATCH, requests_per_window=10**9, max_concurrent=4)

    def objects(self) -> Sequence[str]:
        return ()

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        return iter(())

    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        return [Applied({"id": c.entity}) for c in commands]

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        return {}


def _changes(n: int) -> list[dict[str, Any]]:
    return [
        {
            "system": "bench",
            "object": "Record",
            "external_id": f"r{i}",
            "version": "1",
            "payload": {"name": f"record {i}", "amount": str(i)},
        }
        for i in range(n)
    ]


@contextmanager
def _database(postgres_url: str | None) -> Iterator[str]:
    """A fresh, empty database URL; a temporary SQLite file or a throwaway PostgreSQL schema."""
    if postgres_url is None:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_db_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def engine_run(url: str, n: int) -> float:
    """Seconds for the engine to take ``n`` changes from delivery to the target."""
    settings = Settings(database_url=url)
    settings.worker.apply_batch = APPLY_BATCH
    hub = build_hub(
        settings,
        connectors={"bench": NoopSystem(), "noop": NoopSystem()},
        bindings=[Binding("bench", "Record", "record", record_mapper, (MirrorFlow("noop"),))],
        upgrade=True,  # a fresh database
    )
    changes = _changes(n)
    try:
        started = time.perf_counter()
        for start in range(0, n, DELIVERY):
            hub.intake.accept(changes[start : start + DELIVERY])
        if not hub.worker.run_until_idle(600):
            raise RuntimeError("engine did not drain within 600 s")
        elapsed = time.perf_counter() - started
        stats = hub.operations.stats()
        if stats.commands_by_status.get("done") != n:
            raise RuntimeError(f"engine finished {stats.commands_by_status}, expected {n} done")
        return elapsed
    finally:
        hub.close()


def floor_run(url: str, n: int) -> float:
    """Seconds for the bare durable writes the engine must make for ``n`` changes."""
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    now = datetime.now(UTC)
    try:
        started = time.perf_counter()
        ids = list(range(1, n + 1))
        for start in range(0, n, DELIVERY):
            with engine.begin() as conn:
                conn.execute(
                    insert(t.inbox),
                    [
                        {
                            "system": "bench",
                            "object": "Record",
                            "external_id": f"r{i}",
                            "version": "1",
                            "payload": {"name": f"record {i}", "amount": str(i)},
                            "received_at": now,
                            "status": "pending",
                            "correlation_id": uuid.uuid4().hex,
                        }
                        for i in range(start, min(n, start + DELIVERY))
                    ],
                )
        for start in range(0, n, APPLY_BATCH):
            chunk = range(start, min(n, start + APPLY_BATCH))
            with engine.begin() as conn:
                conn.execute(
                    insert(t.xref),
                    [
                        {
                            "canonical_type": "record",
                            "system": "bench",
                            "external_id": f"r{i}",
                            "canonical_id": str(uuid.uuid4()),
                        }
                        for i in chunk
                    ],
                )
                conn.execute(
                    insert(t.records),
                    [
                        {
                            "system": "bench",
                            "object": "Record",
                            "external_id": f"r{i}",
                            "canonical_type": "record",
                            "canonical_id": f"c{i}",
                            "version": "1",
                            "hash": "0" * 64,
                            "data": {"name": f"record {i}"},
                            "updated_at": now,
                        }
                        for i in chunk
                    ],
                )
                conn.execute(
                    insert(t.flows),
                    [
                        {
                            "flow": "mirror",
                            "business_key": f"record:c{i}",
                            "state": "syncing",
                            "data": {},
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in chunk
                    ],
                )
                conn.execute(
                    insert(t.commands),
                    [
                        {
                            "idempotency_key": f"k{i}",
                            "system": "noop",
                            "operation": "upsert",
                            "business_key": f"record:c{i}",
                            "entity": f"Record:c{i}",
                            "impact": "reporting",
                            "flow": "mirror",
                            "payload": {"name": f"record {i}"},
                            "status": "pending",
                            "attempts": 0,
                            "ambiguous": False,
                            "next_attempt_at": now,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in chunk
                    ],
                )
                conn.execute(
                    update(t.inbox)
                    .where(t.inbox.c.id == bindparam("b_id"))
                    .values(status="applied", processed_at=now),
                    [{"b_id": ids[i]} for i in chunk],
                )
        claim = DISPATCH_BATCH * 4
        for start in range(0, n, claim):
            claimed = ids[start : start + claim]
            with engine.begin() as conn:
                conn.execute(
                    update(t.commands)
                    .where(t.commands.c.id.in_(claimed))
                    .values(status="in_flight", attempts=1, updated_at=now)
                )
            with engine.begin() as conn:
                conn.execute(
                    update(t.commands)
                    .where(t.commands.c.id == bindparam("b_id"))
                    .values(status="done", result={"ok": True}, updated_at=now),
                    [{"b_id": i} for i in claimed],
                )
                conn.execute(
                    update(t.flows)
                    .where(t.flows.c.business_key == bindparam("b_key"))
                    .values(state="synced", updated_at=now),
                    [{"b_key": f"record:c{i - 1}"} for i in claimed],
                )
        return time.perf_counter() - started
    finally:
        engine.dispose()


def run_engine_bench(
    changes: int = 5000, runs: int = 3, postgres_url: str | None = None
) -> dict[str, Any]:
    """Median figures per backend: ``{"changes", "runs", "backends": {name: {...}}}``.

    Each backend reports ``engine_changes_per_s``, ``floor_changes_per_s`` and ``ratio``,
    engine and floor runs alternating on fresh databases so both see the same machine load.
    """
    backends: dict[str, Any] = {}
    targets: list[tuple[str, str | None]] = [("sqlite", None)]
    if postgres_url:
        targets.append(("postgresql", postgres_url))
    for name, url in targets:
        engine_s: list[float] = []
        floor_s: list[float] = []
        for _ in range(runs):
            with _database(url) as db:
                floor_s.append(floor_run(db, changes))
            with _database(url) as db:
                engine_s.append(engine_run(db, changes))
        engine_rate = changes / statistics.median(engine_s)
        floor_rate = changes / statistics.median(floor_s)
        backends[name] = {
            "engine_changes_per_s": round(engine_rate, 1),
            "floor_changes_per_s": round(floor_rate, 1),
            "ratio": round(engine_rate / floor_rate, 3),
            "engine_runs_s": [round(s, 3) for s in engine_s],
            "floor_runs_s": [round(s, 3) for s in floor_s],
        }
    return {"changes": changes, "runs": runs, "backends": backends}
