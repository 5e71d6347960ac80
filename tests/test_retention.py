"""Retention (closeloop.store.retention, ``closeloop db prune``): what goes, what stays, and
that nothing a flow or a replay needs goes; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from closeloop.bootstrap import build_hub
from closeloop.cli import app
from closeloop.config import ConfigError, RetentionConfig, Settings, load_settings
from closeloop.domain.changes import Change
from closeloop.domain.commands import Command, CommandStatus, ExceptionClass, Impact
from closeloop.domain.records import FlowState
from closeloop.engine.notifications import ignored_entity
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.flows import Binding
from closeloop.ports.store import (
    AuditEntry,
    CommandUpdate,
    DriftRow,
    NewCommand,
    NewException,
    ReconcileRun,
    Snapshot,
)
from closeloop.store import migrate
from closeloop.store import tables as t
from closeloop.store.retention import Pruner, RetentionSchedule
from closeloop.store.sql import SqlStore
from tests.memory_system import MemorySystem

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=500)
RECENT = NOW - timedelta(days=1)
KEEP = RetentionConfig().keep_days()  # the defaults: 30, 90, 180, 400, 400 days
PRUNED = ("exceptions", "commands", "inbox", "audit", "reconcile_runs", "reconcile_drifts")
UNTOUCHED = ("flows", "records", "xref", "cursors")


@dataclass
class ManualClock:
    """A clock the test moves (a fake of the Clock protocol)."""

    at: datetime = NOW

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class Seeded:
    """Ids of the seeded rows by name, per table."""

    inbox: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)


def change(eid: str, version: str) -> Change:
    return Change(
        system="crm", object="Record", external_id=eid, version=version, payload={"n": eid}
    )


def command(key: str, entity: str, system: str = "erp") -> NewCommand:
    return NewCommand(Command(system, "upsert", f"bk-{key}", key, {"k": key}, entity), "f", None)


def run(trigger: str, at: datetime, drifts: int) -> ReconcileRun:
    drift = DriftRow("projects", "mismatch", "P-1", "name", {}, None, "drift", "c", "r")
    return ReconcileRun(
        at,
        at,
        trigger,
        "t",
        ("projects",),
        False,
        False,
        {},
        {},
        {},
        "ok",
        drifts=(drift,) * drifts,
    )


def seed(store: SqlStore) -> Seeded:
    """Old and recent rows of every kind, each named after what retention must do with it."""
    s = Seeded()
    i, c = t.inbox, t.commands
    with store.transaction() as tx:
        tx.insert_changes(
            [change(e, v) for e, v in (("a", "1"), ("a", "2"), ("b", "1"), ("c", "1"), ("c", "2"))],
            OLD,
        )
        tx.insert_changes([change("d", "1"), change("d", "2")], OLD)
        rows = tx.conn.execute(select(i.c.id, i.c.external_id, i.c.version).order_by(i.c.id))
        s.inbox = {f"{e}{v}": n for n, e, v in rows}
        tx.mark_inbox(
            [
                (s.inbox["a1"], "applied", None),
                (s.inbox["a2"], "applied", None),
                (s.inbox["c1"], "rejected", "bad"),
                (s.inbox["d1"], "rejected", "bad"),
                (s.inbox["d2"], "applied", None),
            ],
            OLD,
        )  # b1 and c2 stay pending
        tx.add_commands(
            [
                command("k1-done-v1", "E"),
                command("k10-done-replayed", "E"),
                command("k2-done-v2", "E"),
                command("k3-parked", "F"),
                command("k5-resolved", "H"),
                command("k6-superseded", "I"),
                command("k8-in-flight", "J"),
                command("k9-done-no-entity", ""),
                command("k4-pending", "G", system="crm"),
            ],
            OLD,
        )
        rows = tx.conn.execute(select(c.c.id, c.c.idempotency_key))
        s.commands = {key.split("-", 1)[0]: n for n, key in rows}
    with store.transaction() as tx:
        claimed = tx.claim_commands(["erp"], OLD, 100, OLD + timedelta(minutes=5), "w")
        assert len(claimed) == 8
        final = {
            "k1": CommandStatus.DONE,
            "k2": CommandStatus.DONE,
            "k3": CommandStatus.PARKED,
            "k5": CommandStatus.RESOLVED,
            "k6": CommandStatus.SUPERSEDED,
            "k9": CommandStatus.DONE,
            "k10": CommandStatus.DONE,
        }
        tx.finish_commands([CommandUpdate(s.commands[k], v) for k, v in final.items()], OLD)
        ids = tx.open_exceptions(
            [
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.REVENUE,
                    "F",
                    "parked",
                    command_id=s.commands["k3"],
                ),
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.REVENUE,
                    "H",
                    "resolved",
                    command_id=s.commands["k5"],
                ),
                NewException(
                    ExceptionClass.MAPPING,
                    Impact.REPORTING,
                    "c",
                    "open rejection",
                    inbox_id=s.inbox["c1"],
                ),
                NewException(
                    ExceptionClass.MAPPING,
                    Impact.REPORTING,
                    "d",
                    "closed rejection",
                    inbox_id=s.inbox["d1"],
                ),
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.REVENUE,
                    "G",
                    "replayed, waits",
                    command_id=s.commands["k4"],
                ),
                NewException(
                    ExceptionClass.VALIDATION,
                    Impact.REVENUE,
                    "E",
                    "replayed lately, delivered",
                    command_id=s.commands["k10"],
                ),
            ],
            OLD,
        )
        names = ("open", "resolved", "rejection", "closed", "waits", "replayed")
        s.exceptions = dict(zip(names, ids, strict=True))
        closed = [s.exceptions[k] for k in ("resolved", "closed")]
        tx.set_exception_status(closed, "resolved", "op", "done", OLD)
        tx.set_exception_status([s.exceptions["waits"]], "replayed", "op", "again", OLD)
        tx.set_exception_status([s.exceptions["replayed"]], "replayed", "op", "again", RECENT)
        tx.audit(
            [
                AuditEntry(OLD, "op", "resolve", "H", {}, None),
                AuditEntry(OLD, "hub", "notification_ignored", ignored_entity("crm"), {}, None),
            ]
        )
        s.runs = {
            "cli-1": tx.save_reconcile_run(run("cli", OLD, 3)),
            "cli-2": tx.save_reconcile_run(run("cli", OLD, 2)),
            "schedule": tx.save_reconcile_run(run("schedule", OLD, 1)),
        }
        tx.put_flows([FlowState("mirror", "record:1", "synced", {})], OLD)
        tx.canonical_ids("record", "crm", ["a", "b"])
        tx.put_snapshots([(Snapshot(("crm", "Record", "a"), "record", "x", "2", "h"), {})], OLD)
    with store.transaction() as tx:  # the recent rows, made last (ids grow with time)
        tx.insert_changes([change("e", "1")], RECENT)
        (e1,) = tx.conn.execute(select(i.c.id).where(i.c.external_id == "e")).scalars()
        s.inbox["e1"] = e1
        tx.mark_inbox([(e1, "applied", None)], RECENT)
        tx.add_commands([command("k7-recent", "L")], RECENT)
        s.commands["k7"] = tx.conn.execute(select(func.max(c.c.id))).scalar_one()
        (recent,) = tx.open_exceptions(
            [NewException(ExceptionClass.VALIDATION, Impact.REVENUE, "K", "recent")], RECENT
        )
        s.exceptions["recent"] = recent
        tx.set_exception_status([recent], "resolved", "op", "fine", RECENT)
        tx.audit([AuditEntry(RECENT, "op", "resolve", "K", {}, None)])
        s.runs["cli-recent"] = tx.save_reconcile_run(run("cli", RECENT, 1))
        tx.finish_commands([CommandUpdate(s.commands["k7"], CommandStatus.DONE)], RECENT)
    return s


def counts(store: SqlStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            name: int(
                conn.execute(select(func.count()).select_from(t.metadata.tables[name])).scalar_one()
            )
            for name in (*PRUNED, *UNTOUCHED)
        }


def ids(store: SqlStore, table: str) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(t.metadata.tables[table].c.id)).scalars())


EXPECTED = {
    "exceptions": 2,  # resolved (its command is done with), closed rejection
    "commands": 4,  # k1 (older than E's newest), k5 (its exception went), k6, k9
    "inbox": 2,  # a1 (a2 is a's newest), d1 (its exception went; d2 is d's newest)
    "audit": 1,  # the old line; ignored notifications stay
    "reconcile_runs": 2,  # two old cli runs; the newest of each trigger stays
    "reconcile_drifts": 5,
}


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(store: SqlStore) -> None:
    seed(store)
    before = counts(store)
    result = Pruner(store, ManualClock(), KEEP, batch_size=2).prune(dry_run=True)
    assert result.dry_run and result.removed == EXPECTED
    assert counts(store) == before


def test_pruning_removes_old_done_rows_and_keeps_what_flows_and_people_need(
    store: SqlStore,
) -> None:
    s = seed(store)
    before = counts(store)
    pruner = Pruner(store, ManualClock(), KEEP, batch_size=2)  # many windows, each a transaction
    assert pruner.prune().removed == EXPECTED
    after = counts(store)
    assert {n: before[n] - after[n] for n in PRUNED} == EXPECTED
    assert {n: after[n] for n in UNTOUCHED} == {n: before[n] for n in UNTOUCHED}
    inbox = {k for k, v in s.inbox.items() if v in ids(store, "inbox")}
    assert inbox == {"a2", "b1", "c1", "c2", "d2", "e1"}  # newest, pending, named, recent
    commands = {k for k, v in s.commands.items() if v in ids(store, "commands")}
    assert commands == {"k2", "k3", "k4", "k7", "k8", "k10"}  # newest, waiting, named, recent
    exceptions = {k for k, v in s.exceptions.items() if v in ids(store, "exceptions")}
    assert exceptions == {"open", "rejection", "waits", "replayed", "recent"}
    runs = {k for k, v in s.runs.items() if v in ids(store, "reconcile_runs")}
    assert runs == {"schedule", "cli-recent"}
    with store.transaction() as tx:
        assert tx.list_audit(None, 10)[0].at == RECENT
        assert len(tx.list_audit(ignored_entity("crm"), 10)) == 1
        assert tx.get_reconcile_run(s.runs["schedule"]).drifts  # type: ignore[union-attr]
    assert pruner.prune().total == 0  # nothing left to do


def test_zero_days_keeps_a_table_forever(store: SqlStore) -> None:
    seed(store)
    kept = {**KEEP, "inbox": 0, "audit": 0}
    result = Pruner(store, ManualClock(), kept).prune(dry_run=True)
    assert result.removed["inbox"] == result.removed["audit"] == 0
    assert result.cutoffs["inbox"] is None and result.removed["commands"] == 4


def test_after_pruning_a_redelivered_event_or_reissued_command_writes_nothing_twice(
    db_url: str,
) -> None:
    clock = ManualClock(NOW - timedelta(days=200))
    source, target = MemorySystem("crm"), MemorySystem("erp")
    settings = Settings(database_url=db_url)
    settings.worker.idle_wait_s = 0.01
    hub = build_hub(
        settings,
        connectors={"crm": source, "erp": target},
        bindings=[Binding("crm", "Record", "record", record_mapper, (MirrorFlow("erp"),))],
        clock=clock,
        upgrade=True,  # a fresh database
    )
    try:
        delivered = [
            {
                "system": "crm",
                "object": "Record",
                "external_id": eid,
                "version": v,
                "payload": {"name": f"{eid} v{v}"},
            }
            for eid, v in (("r1", "1"), ("r1", "2"), ("r2", "1"))
        ]
        refused = {**delivered[2], "external_id": "r3", "payload": {"reject_reason": "closed"}}
        for each in (*delivered, refused):
            hub.intake.accept([each])
            assert hub.worker.run_until_idle(30)
        assert len(target.effects) == 3
        (parked,) = hub.operations.list_exceptions("open", 10)
        clock.at = NOW  # 200 days later: past the inbox's and the commands' retention
        removed = hub.pruner.prune().removed
        assert (removed["inbox"], removed["commands"]) == (1, 1)  # r1 v1's row and command

        again = hub.intake.accept(delivered)  # the vendor delivers the same events again
        assert (again.accepted, again.duplicates) == (1, 2)  # the newest rows stayed
        assert hub.worker.run_until_idle(30)
        assert len(target.effects) == 3  # r1 v1 is older than what was applied: stale
        with hub.store.transaction() as tx:
            i = t.inbox
            newest = select(func.max(i.c.id))
            assert (
                tx.conn.execute(
                    select(i.c.status).where(i.c.id == newest.scalar_subquery())
                ).scalar_one()
                == "stale"
            )
            done = tx.conn.execute(select(t.commands).where(t.commands.c.status == "done")).all()
            reissued = [
                NewCommand(
                    Command(
                        r.system,
                        r.operation,
                        r.business_key,
                        r.idempotency_key,
                        dict(r.payload),
                        r.entity,
                    ),
                    r.flow,
                    None,
                )
                for r in done
            ]
            assert len(reissued) == 2 and tx.add_commands(reissued, NOW) == 0
        assert hub.worker.run_until_idle(30)
        assert len(target.effects) == 3
        replayed = hub.operations.replay(parked.id, "op", "the period is open again")
        assert replayed.status == "replayed"  # its command outlived the commands' retention
    finally:
        hub.close()


def test_the_schedule_prunes_when_due_and_counts_in_metrics(sqlite_url: str) -> None:
    clock = ManualClock(OLD)
    settings = Settings(database_url=sqlite_url)
    hub = build_hub(settings, connectors={}, bindings=[], clock=clock, upgrade=True)
    try:
        with hub.store.transaction() as tx:
            tx.audit([AuditEntry(OLD, "op", "resolve", "X", {}, None)] * 3)
        schedule = hub.retention_schedule()
        assert schedule.run_due() is not None  # the first pass runs at once
        clock.at = NOW
        assert schedule.run_due() is not None  # 500 days on: due, the audit lines go
        assert schedule.run_due() is None  # not again within every_min
        value = hub.metrics.registry.get_sample_value
        assert value("closeloop_rows_pruned_total", {"table": "audit"}) == 3
        assert value("closeloop_prune_last_pass_timestamp_seconds") == NOW.timestamp()
        off = RetentionSchedule(hub.pruner, clock, 60, enabled=False)
        clock.at = NOW + timedelta(days=1)
        assert off.run_due() is None
    finally:
        hub.close()


def test_the_audit_trail_must_be_kept_longest(tmp_path: Path) -> None:
    assert RetentionConfig(audit_days=0, done_inbox_days=0).keep_days()["audit"] == 0
    path = tmp_path / "closeloop.yaml"
    path.write_text("retention:\n  audit_days: 60\n")
    with pytest.raises(ConfigError, match="delivered_commands_days is 90"):
        load_settings(path)
    path.write_text("retention:\n  audit_days: 500\n  closed_exceptions_days: 0\n")
    with pytest.raises(ConfigError, match=r"closed_exceptions_days is 0 \(forever\)"):
        load_settings(path)


def test_db_prune_prints_what_would_go_then_removes_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    store = SqlStore.from_url(url)
    migrate.upgrade(store.engine)
    long_ago = datetime.now(UTC) - timedelta(days=800)
    with store.transaction() as tx:
        tx.audit([AuditEntry(long_ago, "op", "resolve", "X", {}, None)] * 2)
        tx.insert_changes([change("a", "1"), change("a", "2")], long_ago)
        tx.mark_inbox([(1, "applied", None), (2, "applied", None)], long_ago)
    config = tmp_path / "closeloop.yaml"
    config.write_text(f"database_url: {url}\n")
    runner = CliRunner()
    dry = runner.invoke(app, ["db", "prune", "-c", str(config), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    body = json.loads(dry.stdout)
    assert body["dry_run"] and body["removed"]["audit"] == 2 and body["removed"]["inbox"] == 1
    assert counts(store)["audit"] == 2
    shown = runner.invoke(app, ["db", "prune", "-c", str(config)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "rows removed" in shown.output and "400 days" in shown.output
    assert counts(store)["audit"] == 0 and counts(store)["inbox"] == 1
    store.close()


def test_a_short_soak_keeps_row_counts_bounded_with_retention(sqlite_url: str) -> None:
    from closeloop.devtools.bench.soak import SoakShape, soak_run

    shape = SoakShape(cycles=24, every=8, changes=20, records=40, hours_per_cycle=24)
    short = RetentionConfig(
        done_inbox_days=2,
        delivered_commands_days=2,
        closed_exceptions_days=2,
        reconcile_runs_days=2,
        audit_days=4,
    )
    kept = soak_run(sqlite_url, shape, short)
    grown = soak_run(sqlite_url.replace("closeloop.db", "off.db"), shape, None)
    # a record's newest row stays; else the changes of the last days inside the retention
    # (2 days, today's, and a rejected change until its exception closes and goes)
    bound = shape.records + 4 * shape.changes
    for name in ("inbox", "commands"):
        assert [s.rows[name] <= bound for s in kept] == [True] * 3
        assert grown[-1].rows[name] > 2 * bound
    assert grown[-1].rows["inbox"] == shape.cycles * shape.changes
    assert kept[-1].rows["audit"] <= 5 * 1  # an operator's resolve per refused write a day
    assert grown[-1].rows["audit"] > kept[-1].rows["audit"]
    assert kept[-1].rows["flows"] == kept[-1].rows["records"] == shape.records
