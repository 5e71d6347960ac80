"""The flow runtime's one failure policy and its signal delivery, with small fake flows over
the SQLite store: a flow raising on a record, a result, a signal or a timer costs one business
exception and no other instance's step; signals chain breadth first; a loop is stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, CommandStatus, ExceptionClass
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.engine import runtime as runtime_module
from closeloop.engine.apply import Applier
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.operations import OperationError, Operations
from closeloop.engine.registry import Registry
from closeloop.engine.runtime import FAILED_TIMER_RETRY_S, FlowRuntime
from closeloop.engine.timers import Timers
from closeloop.ports.flows import Binding, xref_lookup
from closeloop.ports.store import CommandRow
from closeloop.store import migrate
from closeloop.store.sql import SqlStore

NOW = datetime(2026, 9, 1, 12, tzinfo=UTC)
Route = list[list[str]]  # the instances a ping goes through, in turn: [[flow, key], ...]


@dataclass
class FixedClock:
    at: datetime = NOW

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


def ping(route: Route) -> Signal:
    """A ping to the route's first instance, which passes it on along the rest."""
    (flow, key), rest = route[0], route[1:]
    return Signal(flow, key, "ping", {"route": rest})


class Scripted:
    """A fake flow (the ``Flow`` protocol). Instances whose key is in ``broken`` raise on
    every event; the others note the event in ``seen`` and send what the event asks for: a
    record (to flow ``a``) its ``send`` routes, a ping the rest of its route, an echo an echo
    back (forever), a result or a timer the routes in the state's ``result_sends`` or
    ``timer_sends``. A step on a result also writes a command."""

    def __init__(self, name: str, broken: tuple[str, ...] = ()) -> None:
        self.name = name
        self.broken = set(broken)
        self.log: list[str] = []

    def business_key(self, record: CanonicalRecord) -> str | None:
        if record.data.get("key_bug") == self.name:
            raise ValueError("no key")
        key = record.data.get(self.name)
        return str(key) if key else None

    def _step(self, key: str, state: FlowState | None, event: str, sends: list[Signal]) -> FlowStep:
        if key in self.broken:
            raise RuntimeError(f"{self.name} {key} is broken")
        self.log.append(key)
        data: dict[str, Any] = dict(state.data) if state else {}
        data["seen"] = [*data.get("seen", []), event]
        return FlowStep("seen", data, signals=tuple(sends))

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        key = str(record.data[self.name])
        asks = record.data if self.name == "a" else {}  # only flow a sends on a record
        sends = [ping(r) for r in asks.get("send", [])]
        if asks.get("echo"):
            sends.append(self.echo(key))
        return self._step(key, state, "record", sends)

    def echo(self, key: str) -> Signal:
        """The first of an endless echo between this instance and ``b e1``."""
        return Signal("b", "e1", "echo", {"flow": self.name, "key": key})

    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        sends = [ping(r) for r in state.data.get("result_sends", [])]
        if state.data.get("echo"):
            sends.append(self.echo(state.business_key))
        step = self._step(state.business_key, state, "result", sends)
        done = Command("erp", "note", state.business_key, f"noted:{state.business_key}", {})
        return replace(step, commands=(done,))

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        if signal.name == "echo":
            me = {"flow": self.name, "key": signal.business_key}
            back = Signal(signal.data["flow"], signal.data["key"], "echo", me)
            return self._step(signal.business_key, state, "echo", [back])
        if signal.name == "xref":
            return self._step(signal.business_key, state, "xref", [])
        route = signal.data["route"]
        return self._step(signal.business_key, state, "ping", [ping(route)] if route else [])

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        sends = [ping(r) for r in state.data.get("timer_sends", [])]
        return self._step(state.business_key, state, "timer", sends)


def mapper(change: Change) -> dict[str, Any]:
    return dict(change.payload)


@dataclass
class World:
    """The SQLite store, flows ``a`` (instance ``bad`` raises) and ``b`` (``sick`` raises), both
    offered ``crm.Record``, and a way to look at what was written."""

    store: SqlStore
    a: Scripted = field(default_factory=lambda: Scripted("a", broken=("bad",)))
    b: Scripted = field(default_factory=lambda: Scripted("b", broken=("sick",)))
    registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        binding = Binding("crm", "Record", "record", mapper, (self.a, self.b))
        self.registry = Registry({}, [binding])

    def states(self) -> dict[tuple[str, str], FlowState]:
        with self.store.transaction() as tx:
            return {(f.flow, f.business_key): f for f in tx.list_flows(None, 1000)}

    def seen(self) -> dict[str, list[str]]:
        """What each instance that took a step has seen (its events, in order)."""
        return {
            f"{f}/{k}": s.data["seen"] for (f, k), s in self.states().items() if "seen" in s.data
        }

    def put(self, *states: FlowState) -> None:
        with self.store.transaction() as tx:
            tx.put_flows(list(states), NOW)


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    store = SqlStore.from_url(sqlite_url)
    migrate.upgrade(store.engine)
    yield World(store)
    store.close()


def record(external_id: str, **data: Any) -> Change:
    return Change(system="crm", object="Record", external_id=external_id, version="1", payload=data)


def apply(world: World, *changes: Change) -> dict[str, tuple[str, list[str]]]:
    """Apply ``changes`` in one batch; returns the open exceptions by entity:
    (class, messages)."""
    with world.store.transaction() as tx:
        tx.insert_changes(list(changes), NOW)
    applier = Applier(world.store, world.registry, FixedClock(), EngineMetrics())
    assert applier.apply_batch() == len(changes)
    return open_exceptions(world)


def open_exceptions(world: World) -> dict[str, tuple[str, list[str]]]:
    found: dict[str, tuple[str, list[str]]] = {}
    with world.store.transaction() as tx:
        for e in reversed(tx.list_exceptions("open", 100)):
            found.setdefault(e.entity, (e.error_class.value, []))[1].append(e.message)
    return found


def test_a_flow_raising_on_a_record_or_its_signal_rejects_only_that_record(world: World) -> None:
    opened = apply(
        world,
        record("r1", a="k1", b="k1", send=[[["b", "k9"]]]),
        record("r2", a="bad", b="k2"),  # a raises on the record: b's step goes too
        record("r3", a="k3", send=[[["b", "sick"]]]),  # a's signal's receiver raises
        record("r4", a="k4", b="k4", key_bug="b"),  # b raises in business_key
        record("r5", a="k5"),
    )
    assert world.seen() == {
        "a/k1": ["record"],
        "b/k1": ["record"],
        "b/k9": ["ping"],
        "a/k5": ["record"],
    }
    with world.store.transaction() as tx:
        assert tx.stats().inbox_by_status == {"applied": 2, "rejected": 3}
    assert sorted(opened) == ["crm:Record:r2", "crm:Record:r3", "crm:Record:r4"]
    assert {c for c, _ in opened.values()} == {"internal"}
    (r2,) = opened["crm:Record:r2"][1]
    assert r2 == (
        "crm Record r2 (version 1) could not be processed: RuntimeError: a bad is broken "
        "(flow a, instance bad, on the record)"
    )
    (r3,) = opened["crm:Record:r3"][1]
    assert r3.endswith("(flow b, instance sick, on signal 'ping' from a k3)")
    (r4,) = opened["crm:Record:r4"][1]
    assert "ValueError: no key (flow b" in r4 and "business_key" in r4

    # the rejected record comes again, whole, once the flow is fixed (replay)
    world.b.broken.clear()
    with world.store.transaction() as tx:
        exception = next(e for e in tx.list_exceptions("open", 10) if e.entity.endswith("r3"))
    ops = Operations(world.store, FixedClock(), world.registry)
    ops.replay(exception.id, "kim")
    Applier(world.store, world.registry, FixedClock(), EngineMetrics()).apply_batch()
    assert world.seen()["a/k3"] == ["record"] and world.seen()["b/sick"] == ["ping"]


def command_row(row_id: int, flow: str, key: str) -> CommandRow:
    command = Command("erp", "upsert", key, f"{flow}:{key}", {}, entity=f"Thing:{key}")
    return CommandRow(
        row_id, command, flow, CommandStatus.DONE, 1, False, f"corr-{row_id}", NOW, NOW
    )


def test_a_flow_raising_on_a_result_or_its_signal_loses_only_its_own_step(world: World) -> None:
    world.put(
        FlowState("a", "k1", "waiting", {"result_sends": [[["b", "sick"]], [["b", "x1"]]]}),
        FlowState("a", "bad", "waiting", {}),
        FlowState("a", "k2", "waiting", {"result_sends": [[["b", "x2"], ["b", "x3"]]]}),
    )
    offers = [
        (command_row(1, "a", "k1"), Applied()),
        (command_row(2, "a", "bad"), Applied()),
        (command_row(3, "a", "k2"), Applied()),
        (command_row(4, "a", "nobody"), Applied()),  # no instance: nothing to do
    ]
    with world.store.transaction() as tx:
        runtime = FlowRuntime(tx, world.registry, NOW)
        failures = runtime.offer_results(offers)
        runtime.buffer.write(tx, NOW)
    # the step on the result stands, and so does every receiver but the one that raised
    assert world.seen() == {"a/k1": ["result"], "a/k2": ["result"]} | {
        f"b/{k}": ["ping"] for k in ("x1", "x2", "x3")
    }
    assert world.states()[("a", "bad")].state == "waiting"
    assert [(f.error_class, f.command_id, f.entity) for f in failures] == [
        (ExceptionClass.INTERNAL, 1, "Thing:k1"),
        (ExceptionClass.INTERNAL, 2, "Thing:bad"),
    ]
    assert failures[0].message == (
        "erp upsert of Thing:k1 was applied, but a flow failed on it: RuntimeError: b sick is "
        "broken (flow b, instance sick, on signal 'ping' from a k1)"
    )
    assert failures[1].message.endswith("(flow a, instance bad, on the result of upsert Thing:bad)")
    assert failures[0].correlation_id == "corr-1"
    with world.store.transaction() as tx:  # the steps' commands keep the correlation id
        later = NOW + timedelta(hours=1)
        noted = tx.claim_commands(["erp"], NOW, 10, later, "test")
    assert sorted((c.command.business_key, c.correlation_id) for c in noted) == [
        ("k1", "corr-1"),
        ("k2", "corr-3"),
    ]


def test_a_flow_raising_on_its_timer_or_its_signal_fires_again_later(world: World) -> None:
    due = NOW - timedelta(minutes=1)
    world.put(
        FlowState("a", "t1", "s", {"timer_sends": [[["b", "y1"]], [["a", "t3"]]]}, due),
        FlowState("a", "bad", "s", {}, due + timedelta(seconds=1)),
        FlowState("a", "t2", "s", {"timer_sends": [[["b", "sick"]]]}, due + timedelta(seconds=2)),
        FlowState("a", "t3", "s", {}, due + timedelta(seconds=3)),  # t1's ping resets its timer
        FlowState("a", "later", "s", {}, NOW + timedelta(hours=1)),
    )
    timers = Timers(world.store, world.registry, FixedClock(), EngineMetrics())
    assert timers.fire_due() == 4
    states = world.states()
    retry = NOW + timedelta(seconds=FAILED_TIMER_RETRY_S)
    assert states[("a", "t1")].data["seen"] == ["timer"] and states[("a", "t1")].wake_at is None
    assert states[("b", "y1")].data["seen"] == ["ping"]
    assert states[("a", "t3")].data["seen"] == ["ping"] and states[("a", "t3")].wake_at is None
    for key in ("bad", "t2"):  # nothing of their timer written; it fires again later
        assert "seen" not in states[("a", key)].data and states[("a", key)].wake_at == retry
    assert ("b", "sick") not in states
    opened = open_exceptions(world)
    assert sorted(opened) == ["flow:a:bad", "flow:a:t2"]
    (t2,) = opened["flow:a:t2"][1]
    assert t2.startswith(f"the timer of a t2 failed and fires again at {retry.isoformat()}")
    assert t2.endswith("(flow b, instance sick, on signal 'ping' from a t2)")


def test_signals_are_delivered_breadth_first(world: World) -> None:
    routes = [[["b", "x1"], ["b", "x2"], ["b", "x3"]], [["b", "y1"], ["b", "y2"]], [["b", "z1"]]]
    assert apply(world, record("r1", a="k1", send=routes)) == {}
    assert world.b.log == ["x1", "y1", "z1", "x2", "y2", "x3"]


def test_a_loop_of_signals_is_stopped(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "MAX_SIGNALS", 50)
    opened = apply(world, record("r1", a="k1", echo=True), record("r2", a="k2"))
    assert world.seen() == {"a/k2": ["record"]}  # nothing of the looping record kept
    (message,) = opened["crm:Record:r1"][1]
    assert "SignalLoopError: more than 50 signals: flows signal in a loop" in message

    # after a result, the loop's chain goes and the flow's step on the result stays
    world.put(FlowState("a", "k7", "waiting", {"echo": True}))
    with world.store.transaction() as tx:
        runtime = FlowRuntime(tx, world.registry, NOW)
        (failure,) = runtime.offer_results([(command_row(7, "a", "k7"), Applied())])
        runtime.buffer.write(tx, NOW)
    assert "flows signal in a loop" in failure.message and failure.command_id == 7
    assert world.seen() == {"a/k2": ["record"], "a/k7": ["result"]}


def test_a_link_a_waiting_flow_fails_on_is_refused_and_nothing_is_linked(world: World) -> None:
    with world.store.transaction() as tx:  # two instances wait for account A's ERP id
        runtime = FlowRuntime(tx, world.registry, NOW)
        runtime.offer_signals(
            [
                xref_lookup(("account", "crm", "A"), "erp", ("b", key), watch=True)
                for key in ("w1", "w2")
            ]
        )
        runtime.buffer.write(tx, NOW)
    assert world.seen() == {"b/w1": ["xref"], "b/w2": ["xref"]}  # not known yet
    world.b.broken.add("w2")
    ops = Operations(world.store, FixedClock(), world.registry)
    with pytest.raises(OperationError, match=r"nothing was linked: .*instance w2, on signal"):
        ops.link("account", ("crm", "A"), ("erp", "E-1"), "kim", "picked")
    with world.store.transaction() as tx:
        (account,) = tx.canonical_ids("account", "crm", ["A"]).values()
        assert tx.find_xref("account", account, "erp") is None
    assert world.seen() == {"b/w1": ["xref"], "b/w2": ["xref"]}

    world.b.broken.clear()
    moved = ops.link("account", ("crm", "A"), ("erp", "E-1"), "kim", "picked")
    assert moved == [("b", "w1"), ("b", "w2")]
    assert world.seen() == {"b/w1": ["xref", "xref"], "b/w2": ["xref", "xref"]}
