"""Signals between flow instances and flow timers, through the real engine and store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from closeloop.bootstrap import build_hub
from closeloop.config import Settings
from closeloop.domain.commands import Applied, Command
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.engine.operations import OperationInputError
from closeloop.flows.mirror import record_mapper
from closeloop.ports.flows import Binding, Unsignalled, xref_lookup
from tests.memory_system import MemorySystem


@dataclass
class ManualClock:
    """A clock the test moves (a fake of the Clock protocol)."""

    at: datetime = field(default_factory=lambda: datetime(2026, 9, 1, 12, tzinfo=UTC))

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


class Sender:
    """Each record signals the one ``counter`` instance, and a flow nobody configured."""

    name = "sender"

    def business_key(self, record: CanonicalRecord) -> str | None:
        return f"sender:{record.canonical_id}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        if record.data["name"] == "loop":
            return FlowStep("looping", {}, signals=(Signal("counter", "total", "echo"),))
        signals = (
            Signal("counter", "total", "add", {"name": record.data["name"]}),
            Signal("not-configured", "x", "add"),
        )
        return FlowStep("sent", {}, signals=signals)

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        return FlowStep("echoed", {}, signals=(Signal("counter", "total", "echo"),))

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        return None

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        return None


class Counter:
    """Counts names; an hour after the last one, its timer writes the count to ``erp``."""

    name = "counter"

    def business_key(self, record: CanonicalRecord) -> str | None:
        return None

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        return None

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        if signal.name == "echo":  # ping-pong with the sender: a loop the engine must stop
            return FlowStep("echo", {}, signals=(Signal("sender", "s", "echo"),))
        names = [*(state.data["names"] if state else []), signal.data["name"]]
        return FlowStep("counting", {"names": names}, wake_at=now + timedelta(hours=1))

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        names = state.data["names"]
        command = Command(
            "erp",
            "upsert",
            state.business_key,
            f"counter:total:{len(names)}",
            {"object": "Count", "id": "total", "data": {"names": sorted(names)}},
        )
        return FlowStep("reported", state.data, commands=(command,))

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        return FlowStep("confirmed", state.data)


def test_signals_reach_their_instance_and_its_timer_fires_once_when_due(sqlite_url: str) -> None:
    source, target = MemorySystem(name="crm"), MemorySystem(name="erp")
    clock = ManualClock()
    settings = Settings(database_url=sqlite_url)
    settings.worker.idle_wait_s = 0.01
    hub = build_hub(
        settings,
        connectors={"crm": source, "erp": target},
        bindings=[Binding("crm", "Record", "record", record_mapper, (Sender(),))],
        flows=[Counter()],
        clock=clock,
        upgrade=True,
    )
    try:
        for name in ("a", "b", "c"):
            source.put("Record", name, {"name": name})
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        with hub.store.transaction() as tx:
            (counter,) = tx.list_flows("counter", 10)
        assert counter.state == "counting" and sorted(counter.data["names"]) == ["a", "b", "c"]
        assert counter.wake_at == clock.at + timedelta(hours=1)
        assert not target.effects  # not due yet
        assert hub.worker.is_idle() and not hub.worker.is_idle(timers_within_s=3601)

        clock.at += timedelta(hours=1)
        assert hub.worker.run_until_idle(10)
        assert hub.worker.run_until_idle(10)  # a second round fires nothing again
        with hub.store.transaction() as tx:
            (counter,) = tx.list_flows("counter", 10)
        assert counter.state == "confirmed" and counter.wake_at is None
        assert [e.idempotency_key for e in target.effects] == ["counter:total:3"]
        assert target.targets["Count:total"]["names"] == ["a", "b", "c"]

        source.put("Record", "loop", {"name": "loop"})  # flows that signal each other forever
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        (exception,) = hub.operations.list_exceptions()
        stats = hub.operations.stats()
    finally:
        hub.close()
    assert exception.error_class.value == "internal" and "signal in a loop" in exception.message
    assert stats.inbox_by_status == {"applied": 3, "rejected": 1}


class Resolver(Unsignalled):
    """Each record asks the cross-reference what its account is in ``erp``, watching; once
    known, it writes the account's ERP id to ``erp``."""

    name = "resolver"

    def business_key(self, record: CanonicalRecord) -> str | None:
        return f"resolve:{record.source[2]}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        account = record.data["account"]
        if account == "bad key":  # a flow bug: a malformed cross-reference key
            return FlowStep("asking", {}, signals=(Signal("xref", "nonsense", "lookup", {}),))
        me = (self.name, f"resolve:{record.source[2]}")
        lookup = xref_lookup(("account", "crm", account), "erp", me, watch=True)
        return FlowStep("asking", {"account": account}, signals=(lookup,))

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        assert state is not None and signal.name == "xref"
        found = signal.data["external_id"]
        if found is None:
            return FlowStep("waiting", state.data)
        command = Command(
            "erp",
            "upsert",
            state.business_key,
            f"resolver:{state.business_key}:{found}",
            {"object": "Link", "id": state.business_key, "data": {"erp": found}},
        )
        return FlowStep("known", {**state.data, "erp": found}, commands=(command,))

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        return None


def test_the_cross_reference_answers_waiting_flows_when_a_person_links_a_record(
    sqlite_url: str,
) -> None:
    source, target = MemorySystem(name="crm"), MemorySystem(name="erp")
    settings = Settings(database_url=sqlite_url)
    settings.worker.idle_wait_s = 0.01
    hub = build_hub(
        settings,
        connectors={"crm": source, "erp": target},
        bindings=[Binding("crm", "Record", "record", record_mapper, (Resolver(),))],
        clock=ManualClock(),
        upgrade=True,
    )

    def states() -> dict[str, tuple[str, str | None]]:
        return {
            f.business_key: (f.state, f.data.get("erp")) for f in hub.operations.flows("resolver")
        }

    try:
        source.put("Record", "r1", {"name": "r1", "account": "A"})
        source.put("Record", "r2", {"name": "r2", "account": "A"})
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        assert states() == {"resolve:r1": ("waiting", None), "resolve:r2": ("waiting", None)}
        assert not target.effects

        with pytest.raises(OperationInputError):
            hub.operations.link("account", ("crm", "A"), ("erp", "E-1"), "kim", " ")
        moved = hub.operations.link("account", ("crm", "A"), ("erp", "E-1"), "kim", "picked")
        assert moved == [("resolver", "resolve:r1"), ("resolver", "resolve:r2")]
        assert hub.worker.run_until_idle(10)
        assert states() == {"resolve:r1": ("known", "E-1"), "resolve:r2": ("known", "E-1")}
        assert sorted(target.targets) == ["Link:resolve:r1", "Link:resolve:r2"]
        with hub.store.transaction() as tx:
            (audit,) = tx.list_audit("xref:account:crm:A", 10)
        assert audit.actor == "kim" and audit.detail["target"] == "erp:E-1"

        source.put("Record", "r3", {"name": "r3", "account": "A"})  # known now: answered at once
        source.put("Record", "r4", {"name": "r4", "account": "bad key"})
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(10)
        assert states()["resolve:r3"] == ("known", "E-1")
        (exception,) = hub.operations.list_exceptions()
        assert exception.error_class.value == "internal" and "cross-reference key" in (
            exception.message
        )
        # a correction moves the link; nobody waits any more, so nothing moves
        assert hub.operations.link("account", ("crm", "A"), ("erp", "E-2"), "kim", "fix") == []
        with hub.store.transaction() as tx:
            (account_id,) = tx.canonical_ids("account", "crm", ["A"]).values()
            assert tx.find_xref("account", account_id, "erp") == "E-2"
    finally:
        hub.close()
