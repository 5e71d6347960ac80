"""Engine behaviour end to end in one process: memory systems in, SQLite store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from closeloop.bootstrap import build_hub
from closeloop.config import DEFAULT_DATABASE_URL, Settings, load_settings
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, CommandStatus
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep
from closeloop.engine.intake import IntakeError
from closeloop.engine.operations import OperationError, OperationInputError, OperationNotFound
from closeloop.flows.invoice import InvoiceFlow
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.flows import Binding, Unsignalled
from closeloop.sandboxes.faults import FaultPlan
from tests.conftest import make_hub
from tests.memory_system import MemorySystem


def effects_per_key(target: MemorySystem) -> dict[str, int]:
    counts: dict[str, int] = {}
    for effect in target.effects:
        counts[effect.idempotency_key] = counts.get(effect.idempotency_key, 0) + 1
    return counts


def test_every_record_reaches_the_target_once_despite_faults(sqlite_url: str) -> None:
    source = MemorySystem(name="crm")
    target = MemorySystem(
        name="erp",
        faults=FaultPlan(
            rate_limited=0.1, server_error=0.1, timeout=0.1, lost_response=0.15, seed=3
        ),
    )
    for i in range(400):
        source.put("Record", f"r{i}", {"name": f"n{i}"})
    hub = make_hub(sqlite_url, source, target)
    try:
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(120)
        stats = hub.operations.stats()
    finally:
        hub.close()
    counts = effects_per_key(target)
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert stats.commands_by_status == {"done": 400}
    assert target.calls["find"] > 0  # lost responses were settled by lookup, not by resending


def test_versions_of_one_record_apply_in_order(sqlite_url: str) -> None:
    source = MemorySystem(name="crm")
    target = MemorySystem(name="erp", faults=FaultPlan(server_error=0.3, lost_response=0.2, seed=5))
    hub = make_hub(sqlite_url, source, target)
    try:
        for version in range(1, 6):
            for i in range(20):
                source.put("Record", f"r{i}", {"name": f"n{i}", "v": version})
            hub.worker.poll_all()
            hub.worker.run_once()
        assert hub.worker.run_until_idle(60)
    finally:
        hub.close()
    seen: dict[str, list[int]] = {}
    for effect in target.effects:
        seen.setdefault(effect.entity, []).append(int(effect.data["v"]))
    assert len(seen) == 20
    for versions in seen.values():
        assert versions == sorted(versions) and versions[-1] == 5
    assert set(effects_per_key(target).values()) == {1}


def test_bad_delivery_is_refused_whole_and_stores_nothing(sqlite_url: str) -> None:
    hub = make_hub(sqlite_url, MemorySystem(name="crm"), MemorySystem(name="erp"))
    good = {
        "system": "crm",
        "object": "Record",
        "external_id": "a",
        "version": "1",
        "payload": {"name": "a"},
    }
    try:
        with pytest.raises(IntakeError) as info:
            hub.intake.accept(
                [
                    good,
                    {**good, "external_id": ""},
                    {**good, "object": "Invoice"},
                    {**good, "system": "nope"},
                    {**good, "payload": [1]},
                ]
            )
        assert len(info.value.problems) == 4
        assert "change 1: external_id" in info.value.problems[0]
        assert "no binding for crm.Invoice" in info.value.problems[1]
        assert hub.operations.stats().inbox_by_status == {}
        assert hub.intake.accept([good, good]).accepted == 1
        assert hub.intake.accept([good]).duplicates == 1
    finally:
        hub.close()


def test_unmappable_change_becomes_an_exception_until_a_fixed_version(sqlite_url: str) -> None:
    source = MemorySystem(name="crm")
    target = MemorySystem(name="erp")
    hub = make_hub(sqlite_url, source, target)
    bad = Change(
        system="crm",
        object="Record",
        external_id="x",
        version="1",
        payload={"name": " ", "amount": 1.5},
    )
    try:
        hub.intake.accept([bad])
        assert hub.worker.run_until_idle(10)
        (first,) = hub.operations.list_exceptions()
        assert first.error_class.value == "mapping" and first.entity == "crm:Record:x"
        assert "name: required" in first.message and "amount: floats" in first.message
        assert hub.operations.stats().inbox_by_status == {"rejected": 1}
        # replay applies the same change again: it is still unmappable, so a new exception opens
        assert hub.operations.replay(first.id, "bob", "mapping fixed?").status == "replayed"
        assert hub.worker.run_until_idle(10)
        (second,) = hub.operations.list_exceptions()
        assert second.id != first.id and second.inbox_id == first.inbox_id
        # a fixed version of the record goes through by itself and settles the exception
        hub.intake.accept(
            [
                Change(
                    system="crm",
                    object="Record",
                    external_id="x",
                    version="2",
                    payload={"name": "fixed", "amount": "1.50"},
                )
            ]
        )
        assert hub.worker.run_until_idle(10)
        assert list(target.targets.values()) == [{"name": "fixed", "amount": "1.50"}]
        assert hub.operations.list_exceptions() == []
        with pytest.raises(OperationError, match="is resolved, not open"):
            hub.operations.replay(second.id, "bob")
        with pytest.raises(OperationNotFound, match="no exception 999"):
            hub.operations.show(999)
    finally:
        hub.close()


def test_refused_command_parks_blocks_its_key_and_replay_or_resolve_frees_it(
    sqlite_url: str,
) -> None:
    source = MemorySystem(name="crm")
    target = MemorySystem(name="erp")
    hub = make_hub(sqlite_url, source, target)
    try:
        hub.intake.accept(
            [
                Change(
                    system="crm",
                    object="Record",
                    external_id="a",
                    version="1",
                    payload={"name": "a", "reject_reason": "VAT id missing"},
                ),
                Change(
                    system="crm",
                    object="Record",
                    external_id="b",
                    version="1",
                    payload={"name": "b", "reject_reason": "closed period"},
                ),
            ]
        )
        assert hub.worker.run_until_idle(10)
        exceptions = {e.message.rsplit(": ", 1)[1]: e for e in hub.operations.list_exceptions()}
        assert set(exceptions) == {"VAT id missing", "closed period"}
        assert all(e.error_class.value == "validation" for e in exceptions.values())
        assert hub.operations.stats().commands_by_status == {"parked": 2}

        vat = exceptions["VAT id missing"]
        with pytest.raises(OperationInputError, match="needs a reason"):
            hub.operations.resolve(vat.id, "bob", " ")
        resolved = hub.operations.resolve(exceptions["closed period"].id, "alice", "posted by hand")
        assert resolved.status == "resolved" and resolved.resolved_by == "alice"
        replayed = hub.operations.replay(vat.id, "bob", "retry")
        assert replayed.status == "replayed"
        assert hub.worker.run_until_idle(10)
        with hub.store.transaction() as tx:
            after = tx.get_command(vat.command_id or 0)
            audit = tx.list_audit(None, 10)
        # the stored payload is sent again under the same key and refused again
        assert after is not None and after.status is CommandStatus.PARKED and after.attempts == 1
        (reopened,) = hub.operations.list_exceptions()
        assert reopened.command_id == vat.command_id and reopened.id != vat.id
        assert [(a.actor, a.action) for a in audit] == [("bob", "replay"), ("alice", "resolve")]
        # the resolved command no longer blocks its key: a new version of "b" goes through
        hub.intake.accept(
            [
                Change(
                    system="crm",
                    object="Record",
                    external_id="b",
                    version="2",
                    payload={"name": "b2"},
                )
            ]
        )
        assert hub.worker.run_until_idle(10)
        assert {"name": "b2"} in target.targets.values()
    finally:
        hub.close()


def test_a_fixed_source_version_supersedes_the_parked_command(sqlite_url: str) -> None:
    source = MemorySystem(name="crm")
    target = MemorySystem(name="erp")
    hub = make_hub(sqlite_url, source, target)
    try:
        source.put("Record", "a", {"name": "a", "reject_reason": "no VAT id"})
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        assert hub.operations.stats().open_exceptions_by_class == {"validation": 1}
        source.put("Record", "a", {"name": "a", "vat": "DE136695976"})
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        stats = hub.operations.stats()
        (closed,) = hub.operations.list_exceptions(None)
    finally:
        hub.close()
    assert stats.commands_by_status == {"done": 1, "superseded": 1}
    assert stats.open_exceptions_by_class == {}
    assert closed.status == "resolved" and "fixed at source" in (closed.resolution or "")
    assert list(target.targets.values()) == [{"name": "a", "vat": "DE136695976"}]


def test_unchanged_and_stale_versions_send_nothing(sqlite_url: str) -> None:
    source = MemorySystem(name="crm")
    target = MemorySystem(name="erp")
    hub = make_hub(sqlite_url, source, target)
    base = {"system": "crm", "object": "Record", "external_id": "a"}
    try:
        hub.intake.accept([{**base, "version": "2", "payload": {"name": "two"}}])
        assert hub.worker.run_until_idle(10)
        hub.intake.accept(
            [
                {**base, "version": "1", "payload": {"name": "one"}},
                {**base, "version": "3", "payload": {"name": "two"}},
            ]
        )
        assert hub.worker.run_until_idle(10)
        stats = hub.operations.stats()
    finally:
        hub.close()
    assert stats.inbox_by_status == {"applied": 1, "stale": 1, "unchanged": 1}
    assert [e.data for e in target.effects] == [{"name": "two"}]


def test_poll_overlap_rereads_without_duplicates(sqlite_url: str) -> None:
    source = MemorySystem(name="crm", page_size=50)
    target = MemorySystem(name="erp")
    hub = make_hub(sqlite_url, source, target, overlap_s=3600.0)
    try:
        same_time = None
        for i in range(300):  # many records sharing one modification time
            source.put("Record", f"r{i:03d}", {"name": f"n{i}"}, at=same_time)
            same_time = same_time or source.records["Record"]["r000"].modified_at
        first = hub.intake.poll("crm", "Record", overlap_s=3600.0)
        second = hub.intake.poll("crm", "Record", overlap_s=3600.0)
        source.put("Record", "r007", {"name": "changed"}, at=same_time - timedelta(seconds=5))
        third = hub.intake.poll("crm", "Record", overlap_s=3600.0)
        assert hub.worker.run_until_idle(30)
    finally:
        hub.close()
    assert (first.accepted, first.duplicates) == (300, 0)
    assert (second.accepted, second.duplicates) == (0, 300)
    assert third.accepted == 1  # a late commit inside the overlap window is still found
    assert len(target.effects) == 301


class BuggyFlow(Unsignalled):
    """A flow with a bug: it raises on records named 'boom' and on every result."""

    name = "buggy"

    def business_key(self, record: CanonicalRecord) -> str | None:
        return f"buggy:{record.canonical_id}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        if record.data["name"] == "boom":
            raise KeyError("tax_id")
        return FlowStep(
            "seen",
            {"name": record.data["name"]},
            commands=(
                Command(
                    "erp",
                    "upsert",
                    f"buggy:{record.canonical_id}",
                    f"buggy:{record.canonical_id}",
                    {"object": "Audit", "id": record.canonical_id, "data": {"name": "x"}},
                ),
            ),
        )

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        raise RuntimeError("result handler bug")


def test_a_flow_bug_rejects_only_its_record_and_the_worker_goes_on(sqlite_url: str) -> None:
    source, target = MemorySystem(name="crm"), MemorySystem(name="erp")
    settings = Settings(database_url=sqlite_url)
    hub = build_hub(
        settings,
        connectors={"crm": source, "erp": target},
        bindings=[
            Binding("crm", "Record", "record", record_mapper, (MirrorFlow("erp"), BuggyFlow()))
        ],
        upgrade=True,
    )
    try:
        for name in ("ok1", "boom", "ok2"):
            source.put("Record", name, {"name": name})
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        stats = hub.operations.stats()
        exceptions = hub.operations.list_exceptions()
    finally:
        hub.close()
    assert stats.inbox_by_status == {"applied": 2, "rejected": 1}
    # nothing of the failed record was written, not even the other flow's command
    assert sorted(d["name"] for d in target.targets.values()) == ["ok1", "ok2", "x", "x"]
    assert stats.commands_by_status == {"done": 4}  # the effects happened: commands are done
    by_class: dict[str, list[str]] = {}
    for e in exceptions:
        by_class.setdefault(e.error_class.value, []).append(e.message)
    (boom,) = by_class["internal"][-1:]
    assert "crm Record boom (version 1) could not be processed: KeyError" in boom
    assert sum("result handler bug" in m for m in by_class["internal"]) == 2


def test_environment_overrides_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "closeloop.yaml"
    config.write_text("database_url: sqlite:///from-yaml.db\nworker:\n  threads: 2\n")
    monkeypatch.setenv("CLOSELOOP_WORKER__THREADS", "7")
    settings = load_settings(config)
    assert settings.worker.threads == 7
    assert settings.database_url == "sqlite:///from-yaml.db"
    monkeypatch.delenv("CLOSELOOP_WORKER__THREADS")
    monkeypatch.chdir(tmp_path / "..")
    assert load_settings().database_url == DEFAULT_DATABASE_URL


def test_a_credit_note_is_asked_only_for_a_posted_invoice_the_hub_made(sqlite_url: str) -> None:
    erp = MemorySystem("erp")
    settings = Settings(database_url=sqlite_url)
    hub = build_hub(
        settings, connectors={"erp": erp}, bindings=[], flows=[InvoiceFlow()], upgrade=True
    )
    try:
        invoices = {"SF-1/2026-08": {"state": "draft"}, "SF-1/2026-09": {"state": "posted"}}
        data = {
            "business_key": "billing:SF-1",
            "project_key": "SF-1",
            "erp": "erp",
            "status": "mobilized",
            "held": [],
            "billed": True,
            "periods": {},
            "invoices": invoices,
        }
        with hub.store.transaction() as tx:
            tx.put_flows([FlowState("invoice", "billing:SF-1", "open", data)], datetime.now(UTC))
        ops = hub.operations
        with pytest.raises(OperationInputError, match="a reason"):
            ops.credit("SF-1/2026-09", " ", "finance")
        with pytest.raises(OperationNotFound, match="no invoice 'SF-1/2026-10'"):
            ops.credit("SF-1/2026-10", "wrong hours", "finance")
        with pytest.raises(OperationError, match="is draft, not posted"):
            ops.credit("SF-1/2026-08", "wrong hours", "finance")
        assert ops.stats().commands_by_status == {}  # nothing asked of the ERP
        ops.credit("SF-1/2026-09", "wrong hours", "finance", ("time",), rebill=True)
        assert ops.stats().commands_by_status == {"pending": 1}
        with hub.store.transaction() as tx:
            (audit,) = tx.list_audit("invoice:SF-1/2026-09", 10)
        assert (audit.actor, audit.action) == ("finance", "credit")
        assert audit.detail == {"reason": "wrong hours", "line_keys": ["time"], "rebill": True}
    finally:
        hub.close()


def test_a_system_with_its_own_poll_interval_is_polled_on_its_own_schedule(
    sqlite_url: str,
) -> None:
    fast, slow = MemorySystem(name="crm"), MemorySystem(name="slow")
    target = MemorySystem(name="erp")
    settings = Settings(database_url=sqlite_url)
    mirror = MirrorFlow("erp")
    hub = build_hub(
        settings,
        connectors={"crm": fast, "slow": slow, "erp": target},
        bindings=[
            Binding(name, "Record", "record", record_mapper, (mirror,)) for name in ("crm", "slow")
        ],
        upgrade=True,
    )
    # every round is due for the workers' interval; "slow" waits an hour between its polls
    hub.worker.settings = replace(
        hub.worker.settings, poll_interval_s=1e-9, poll_intervals_s={"slow": 3600.0}
    )
    try:
        fast.put("Record", "r1", {"name": "r1"})
        slow.put("Record", "s1", {"name": "s1"})
        hub.worker.run_once()  # the first round polls every system
        fast.put("Record", "r2", {"name": "r2"})
        slow.put("Record", "s2", {"name": "s2"})
        assert hub.worker.run_until_idle(30)
        seen = {e.data["name"] for e in target.effects}
        assert {"r1", "s1", "r2"} <= seen and "s2" not in seen  # "slow" not polled again yet
        assert hub.worker.poll_all() == 1  # an explicit poll of everything takes it
        assert hub.worker.run_until_idle(30)
        assert "s2" in {e.data["name"] for e in target.effects}
    finally:
        hub.close()


def test_two_edits_within_one_second_of_a_whole_second_stamp_both_apply(sqlite_url: str) -> None:
    """Harvest's ``updated_at`` has whole seconds: an entry approved within the second it
    was logged keeps its stamp; the digest in its version makes the approval a new version
    (not a duplicate of the logging), ranked equal to it (not stale)."""
    from closeloop.domain.changes import stamped_version, version_sort_key

    source, target = MemorySystem(name="crm"), MemorySystem(name="erp")
    hub = make_hub(sqlite_url, source, target)
    second = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    logged, approved = {"name": "logged"}, {"name": "approved"}
    versions = [stamped_version(second, p) for p in (logged, approved)]
    assert versions[0] != versions[1]
    assert version_sort_key(versions[0]) == version_sort_key(versions[1])
    try:
        for version, payload in zip(versions, (logged, approved), strict=True):
            result = hub.intake.accept(
                [
                    Change(
                        system="crm",
                        object="Record",
                        external_id="e1",
                        version=version,
                        payload=payload,
                        modified_at=second,
                    )
                ]
            )
            assert result.accepted == 1  # not a duplicate of the first
            assert hub.worker.run_until_idle(30)
        stats = hub.operations.stats()
    finally:
        hub.close()
    assert stats.inbox_by_status == {"applied": 2}
    assert [e.data for e in target.effects][-1] == {"name": "approved"}
