"""The store contract, run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from closeloop.domain.changes import Change
from closeloop.domain.commands import Command, CommandStatus, ExceptionClass, Impact
from closeloop.domain.records import FlowState
from closeloop.ports.store import CommandUpdate, Cursor, NewCommand, NewException, Snapshot
from closeloop.store import migrate
from closeloop.store.sql import SqlStore
from closeloop.store.tables import metadata

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def change(eid: str, version: str = "1", system: str = "crm", **payload: object) -> Change:
    return Change(
        system=system,
        object="Record",
        external_id=eid,
        version=version,
        payload=payload or {"name": eid},
    )


def command(key: str, business_key: str, entity: str = "", system: str = "erp") -> NewCommand:
    return NewCommand(
        Command(system, "upsert", business_key, key, {"k": key}, entity), "flow", "c1"
    )


def test_migrations_match_the_table_definitions(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert migrate.current_revision(store.engine) == migrate.head_revision()


def test_inbox_drops_repeats_of_the_same_identity(store: SqlStore) -> None:
    with store.transaction() as tx:
        assert tx.insert_changes([change("a"), change("b"), change("a")], NOW) == [
            True,
            True,
            False,
        ]
    with store.transaction() as tx:
        assert tx.insert_changes([change("a"), change("a", "2")], NOW) == [False, True]
        assert tx.stats().inbox_by_status == {"pending": 3}


def test_a_failed_transaction_leaves_nothing(store: SqlStore) -> None:
    def crash_before_commit() -> None:
        with store.transaction() as tx:
            tx.insert_changes([change("a")], NOW)
            tx.add_commands([command("k1", "bk")], NOW)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    with store.transaction() as tx:
        stats = tx.stats()
    assert stats.inbox_by_status == {} and stats.commands_by_status == {}


def test_claim_inbox_offers_one_version_per_record_in_order(store: SqlStore) -> None:
    with store.transaction() as tx:
        tx.insert_changes([change("a", "1"), change("b", "1"), change("a", "2")], NOW)
    with store.transaction() as tx:
        first = tx.claim_inbox(10)
        assert [(r.change.external_id, r.change.version) for r in first] == [("a", "1"), ("b", "1")]
        tx.mark_inbox([(r.id, "applied", None) for r in first], NOW)
    with store.transaction() as tx:
        second = tx.claim_inbox(10)
    assert [(r.change.external_id, r.change.version) for r in second] == [("a", "2")]
    assert second[0].change.payload == {"name": "a"}


def test_commands_claim_only_the_head_of_each_business_key(store: SqlStore) -> None:
    with store.transaction() as tx:
        added = tx.add_commands(
            [command("k1", "A"), command("k2", "A"), command("k3", "B"), command("k1", "A")], NOW
        )
    assert added == 3  # the repeated idempotency key is skipped
    lease = NOW + timedelta(seconds=60)
    with store.transaction() as tx:
        claimed = tx.claim_commands(["erp"], NOW, 10, lease, "w1")
    assert [c.command.idempotency_key for c in claimed] == ["k1", "k3"]
    assert all(c.status is CommandStatus.IN_FLIGHT and c.attempts == 1 for c in claimed)
    with store.transaction() as tx:
        assert tx.claim_commands(["erp"], NOW, 10, lease, "w2") == []  # k2 waits behind k1
        tx.finish_commands(
            [CommandUpdate(claimed[0].id, CommandStatus.DONE, result={"id": 1})], NOW
        )
    with store.transaction() as tx:
        nxt = tx.claim_commands(["erp"], NOW, 10, lease, "w2")
        done = tx.get_command(claimed[0].id)
    assert [c.command.idempotency_key for c in nxt] == ["k2"]
    assert done is not None and done.status is CommandStatus.DONE


def test_a_parked_command_blocks_its_key_until_resolved(store: SqlStore) -> None:
    with store.transaction() as tx:
        tx.add_commands([command("k1", "A"), command("k2", "A")], NOW)
        (first,) = tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w")
        tx.finish_commands([CommandUpdate(first.id, CommandStatus.PARKED, last_error="no")], NOW)
        tx.add_commands([command("k3", "B")], NOW)
    with store.transaction() as tx:
        assert tx.runnable_commands() == 1  # k3; k2 waits behind the parked k1 (for a person)
        assert [
            c.command.idempotency_key
            for c in tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w")
        ] == ["k3"]
        assert tx.runnable_commands() == 1  # in flight
        assert tx.set_command_status(first.id, CommandStatus.RESOLVED, NOW)
        assert not tx.set_command_status(first.id, CommandStatus.RESOLVED, NOW)  # not parked now
    with store.transaction() as tx:
        assert tx.runnable_commands() == 2  # k2 free again, k3 in flight
        claimed = tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w")
    assert [c.command.idempotency_key for c in claimed] == ["k2"]


def test_an_expired_lease_is_claimed_again_as_ambiguous(store: SqlStore) -> None:
    with store.transaction() as tx:
        tx.add_commands([command("k1", "A")], NOW)
        tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=5), "dead-worker")
    with store.transaction() as tx:
        assert tx.claim_commands(["erp"], NOW + timedelta(seconds=4), 10, NOW, "w2") == []
        (again,) = tx.claim_commands(
            ["erp"], NOW + timedelta(seconds=6), 10, NOW + timedelta(seconds=60), "w2"
        )
    assert again.ambiguous and again.attempts == 2
    with store.transaction() as tx:  # the first worker's late answer is no longer its to record
        assert tx.still_claimed([again.id], "dead-worker") == set()
        assert tx.still_claimed([again.id], "w2") == {again.id}


def test_released_claims_are_due_again_uncounted_and_ambiguous_when_sent(store: SqlStore) -> None:
    with store.transaction() as tx:
        tx.add_commands([command("k1", "A"), command("k2", "B"), command("k3", "C")], NOW)
        k1, k2, k3 = tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w1")
    later = NOW + timedelta(seconds=1)
    with store.transaction() as tx:  # k3 was taken over by another worker meanwhile
        tx.finish_commands([CommandUpdate(k3.id, CommandStatus.PENDING)], NOW)
        tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w2")
        assert tx.release_commands([k1.id, k2.id, k3.id], [k2.id, k3.id], "w1", later) == 2
    with store.transaction() as tx:
        rows = {
            r.command.idempotency_key: r for r in (tx.get_command(c.id) for c in (k1, k2, k3)) if r
        }
        assert tx.still_claimed([k3.id], "w2") == {k3.id}  # not w1's to give back
        again = tx.claim_commands(["erp"], later, 10, later + timedelta(seconds=60), "w3")
    assert [(rows[k].status, rows[k].attempts, rows[k].ambiguous) for k in ("k1", "k2")] == [
        (CommandStatus.PENDING, 0, False),  # never sent: as if never claimed
        (CommandStatus.PENDING, 0, True),  # its call may have arrived: looked up first
    ]
    assert [c.command.idempotency_key for c in again] == ["k1", "k2"]


def test_commands_not_yet_due_are_not_claimed(store: SqlStore) -> None:
    with store.transaction() as tx:
        tx.add_commands([command("k1", "A")], NOW)
        (c,) = tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w")
        tx.finish_commands(
            [
                CommandUpdate(
                    c.id, CommandStatus.PENDING, next_attempt_at=NOW + timedelta(seconds=30)
                )
            ],
            NOW,
        )
    with store.transaction() as tx:
        assert tx.claim_commands(["erp"], NOW + timedelta(seconds=29), 10, NOW, "w") == []
        assert len(tx.claim_commands(["erp"], NOW + timedelta(seconds=31), 10, NOW, "w")) == 1
        assert tx.claim_commands(["other"], NOW + timedelta(seconds=31), 10, NOW, "w") == []


def test_supersede_and_close_exceptions_of_a_parked_command(store: SqlStore) -> None:
    with store.transaction() as tx:
        tx.add_commands([command("k1", "A", entity="Record:1")], NOW)
        (c,) = tx.claim_commands(["erp"], NOW, 10, NOW + timedelta(seconds=60), "w")
        tx.finish_commands([CommandUpdate(c.id, CommandStatus.PARKED)], NOW)
        (eid,) = tx.open_exceptions(
            [
                NewException(
                    ExceptionClass.VALIDATION, Impact.REVENUE, "Record:1", "bad", command_id=c.id
                )
            ],
            NOW,
        )
    with store.transaction() as tx:
        assert tx.supersede_parked([("erp", "upsert", "Record:1")], NOW) == [c.id]
        assert tx.close_exceptions_for([], [c.id], "closeloop", "fixed", NOW) == [eid]
        row = tx.get_exception(eid)
        cmd = tx.get_command(c.id)
    assert row is not None and row.status == "resolved" and row.resolved_by == "closeloop"
    assert cmd is not None and cmd.status is CommandStatus.SUPERSEDED


def test_snapshots_flows_and_xref_round_trip(store: SqlStore) -> None:
    with store.transaction() as tx:
        ids = tx.canonical_ids("record", "crm", ["a", "b", "a"])
        again = tx.canonical_ids("record", "crm", ["a"])
        tx.link_xref("record", ids["a"], "erp", "E-0")
        tx.link_xref("record", ids["b"], "erp", "E-1")
        tx.link_xref("record", ids["a"], "erp", "E-1")  # a person's correction moves E-1
        tx.link_xref("record", ids["a"], "erp", "E-1")
        snap = Snapshot(("crm", "Record", "a"), "record", ids["a"], "3", "h" * 64)
        tx.put_snapshots([(snap, {"name": "a"})], NOW)
        tx.put_flows([FlowState("f", "k", "syncing", {"n": 1}, NOW)], NOW)
        tx.put_flows([FlowState("f", "k", "synced", {"n": 2})], NOW)
        tx.put_flows([FlowState("f", "later", "waiting", {}, NOW + timedelta(hours=1))], NOW)
        tx.put_flows([FlowState("g", "due", "waiting", {}, NOW - timedelta(seconds=1))], NOW)
    with store.transaction() as tx:
        assert set(ids) == {"a", "b"} and again["a"] == ids["a"] and ids["a"] != ids["b"]
        assert tx.find_xref("record", ids["a"], "erp") == "E-1"
        assert tx.find_xref("record", ids["b"], "erp") is None
        assert tx.canonical_ids("record", "erp", ["E-0"])["E-0"] not in (ids["a"], ids["b"])
        assert tx.get_snapshots([("crm", "Record", "a"), ("crm", "Record", "zz")]) == {
            ("crm", "Record", "a"): snap
        }
        assert tx.get_flows([("f", "k")]) == {("f", "k"): FlowState("f", "k", "synced", {"n": 2})}
        # timers: only what is due, earliest first; a step without one clears it
        assert [f.business_key for f in tx.due_flows(NOW, 10)] == ["due"]
        later = NOW + timedelta(hours=2)
        assert [f.business_key for f in tx.due_flows(later, 10)] == ["due", "later"]
        assert tx.due_flows(later, 10)[1].wake_at == NOW + timedelta(hours=1)  # aware
        assert [f.flow for f in tx.list_flows("g", 10)] == ["g"]


def test_cursor_round_trip_keeps_aware_times(store: SqlStore) -> None:
    seen = {("a", "1"): NOW, ("b", "2"): NOW - timedelta(seconds=1)}
    with store.transaction() as tx:
        assert tx.get_cursor("crm", "Record") is None
        tx.put_cursor(Cursor("crm", "Record", NOW, seen), NOW)
    with store.transaction() as tx:
        cursor = tx.get_cursor("crm", "Record")
    assert cursor is not None and cursor.watermark == NOW and dict(cursor.seen) == seen


def test_exceptions_audit_and_stats(store: SqlStore) -> None:
    from closeloop.ports.store import AuditEntry

    with store.transaction() as tx:
        ids = tx.open_exceptions(
            [
                NewException(ExceptionClass.MAPPING, Impact.REPORTING, "crm:Record:a", "m1"),
                NewException(ExceptionClass.AUTH, Impact.REVENUE, "erp", "m2"),
            ],
            NOW,
        )
        tx.set_exception_status([ids[1]], "resolved", "alice", "rotated the key", NOW)
        tx.audit([AuditEntry(NOW, "alice", "resolve", "erp", {"why": "key"}, "c1")])
    with store.transaction() as tx:
        assert [e.id for e in tx.list_exceptions("open", 10)] == [ids[0]]
        assert [e.id for e in tx.list_exceptions(None, 10)] == [ids[1], ids[0]]
        assert tx.stats().open_exceptions_by_class == {"mapping": 1}
        (entry,) = tx.list_audit("erp", 10)
    assert entry.actor == "alice" and entry.detail == {"why": "key"} and entry.at == NOW


def test_naive_datetimes_are_refused(store: SqlStore) -> None:
    with pytest.raises(Exception, match="naive datetime"), store.transaction() as tx:
        tx.insert_changes([change("a")], datetime(2026, 1, 1))


def test_shared_rate_limit_counts_every_worker(store: SqlStore) -> None:
    """Eight threads with their own connections (as workers would be) race for a window of
    five slots: exactly five get one, the rest learn when the oldest slot frees."""
    import threading

    from closeloop.store.ratelimit_repo import SqlSharedRateLimit

    now = [1000.0]
    limit = SqlSharedRateLimit(store.engine, clock=lambda: now[0])
    waits: list[float] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        waits.append(limit.take("harvest:acct", 5, 15.0)[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits)[:5] == [0.0] * 5
    assert all(w == pytest.approx(15.0) for w in sorted(waits)[5:])
    assert limit.take("other-account", 5, 15.0) == (0.0, 1000.0)  # keys are separate
    now[0] += 5.0
    limit.settle("other-account", 1000.0)  # answered at 1005: counts from then on
    now[0] += 10.0  # the window has moved on from the first slots
    assert limit.take("harvest:acct", 5, 15.0) == (0.0, 1015.0)
    assert limit.take("other-account", 1, 15.0)[0] == pytest.approx(5.0)


def test_two_transactions_creating_one_flow_instance_see_each_other(store: SqlStore) -> None:
    """The second transaction to create an instance waits for the first and reads its state
    (it never overwrites it). On PostgreSQL this needs a row to lock before the instance
    exists; SQLite's single writer gives it anyway."""
    import threading

    from sqlalchemy import text

    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    key = ("f", "new")

    def step() -> None:
        with store.transaction() as tx:
            current = tx.get_flows([key]).get(key)
            count = current.data["n"] if current else 0
            tx.put_flows([FlowState(*key, "counted", {"n": count + 1})], NOW)

    waiting = text("select count(*) from pg_stat_activity where wait_event_type = 'Lock'")
    with store.transaction() as tx:
        assert tx.get_flows([key]) == {}
        second = threading.Thread(target=step)
        second.start()
        blocked = False
        with store.engine.connect() as watch:  # until the second waits on a lock (or 30 s)
            for _ in range(3000):
                blocked = bool(watch.execute(waiting).scalar())
                watch.rollback()  # PostgreSQL keeps one activity snapshot per transaction
                if blocked:
                    break
                threading.Event().wait(0.01)
        assert blocked, "the second transaction never waited for the first"
        tx.put_flows([FlowState(*key, "counted", {"n": 1})], NOW)
    second.join(timeout=30)
    assert not second.is_alive()
    with store.transaction() as tx:
        assert tx.get_flows([key])[key].data == {"n": 2}
        assert tx.list_flows("f", 10) == [FlowState("f", "new", "counted", {"n": 2})]
