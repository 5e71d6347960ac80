"""One record that a target cannot take fails alone: the dispatcher splits a batch refused as
a whole until that record stands alone, the rest go through, and the breaker stays closed.

The target is a fake implementing the engine's ``Connector`` Protocol around the memory
sandbox: it refuses (or, as a connector bug would, crashes on) any batch holding a record
named ``poison``, the way a vendor refuses a request whose JSON holds a lone surrogate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Outcome
from closeloop.engine.breaker import BreakerState
from closeloop.ports.connector import ConnectorLimits, RefusedError
from tests.conftest import make_hub
from tests.memory_system import MemorySystem


@dataclass
class PickyTarget:
    """A target that refuses every batch holding a poisoned record (``mode="refuse"``: as
    :class:`RefusedError`; ``mode="crash"``: as an unexpected exception after which the
    request may have gone out, so the engine must look up before resending)."""

    inner: MemorySystem
    mode: str = "refuse"
    batches: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def system(self) -> str:
        return self.inner.system

    @property
    def limits(self) -> ConnectorLimits:
        return self.inner.limits

    def objects(self) -> Sequence[str]:
        return self.inner.objects()

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        return self.inner.read_changes(object_name, since)

    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        self.batches.append(len(commands))
        poisoned = [c for c in commands if c.payload["data"].get("name", "").startswith("poison")]
        if self.mode == "broken":
            raise KeyError("id")  # a connector bug on every answer
        if poisoned and self.mode == "refuse":
            raise RefusedError("the request holds text that is not valid Unicode")
        if poisoned:
            raise UnicodeEncodeError("utf-8", "\udc00", 0, 1, "surrogates not allowed")
        return self.inner.execute(commands)

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        return self.inner.find(idempotency_keys)


@pytest.mark.parametrize("mode", ["refuse", "crash"])
def test_a_record_the_target_cannot_take_fails_alone(sqlite_url: str, mode: str) -> None:
    source = MemorySystem(name="crm")
    target = PickyTarget(MemorySystem(name="erp"), mode=mode)
    poison = {37, 161}
    for i in range(300):
        source.put("Record", f"r{i}", {"name": f"poison {i}" if i in poison else f"n{i}"})
    hub = make_hub(sqlite_url, source, target)  # type: ignore[arg-type]
    try:
        hub.worker.poll_all()
        assert hub.worker.run_until_idle(60)
        stats = hub.operations.stats()
        exceptions = hub.operations.list_exceptions("open", 10)
        breaker = hub.worker.dispatcher.gates["erp"].breaker.state
    finally:
        hub.close()
    applied = {e.entity for e in target.inner.effects}
    assert len(applied) == 298 and len(target.inner.effects) == 298
    assert not any(e.data["name"].startswith("poison") for e in target.inner.effects)
    assert stats.commands_by_status == {"done": 298, "parked": 2}
    assert len(exceptions) == 2
    expected_class = "validation" if mode == "refuse" else "internal"
    for exc in exceptions:
        assert exc.error_class.value == expected_class
        assert exc.entity not in applied and exc.entity in exc.message
    if mode == "refuse":
        assert all("not valid Unicode" in e.message for e in exceptions)
    else:
        assert all("UnicodeEncodeError" in e.message for e in exceptions)
    # three batches of 100; each poisoned one costs two calls per halving, about 2 log2 100
    assert len(target.batches) <= 3 + 2 * 2 * 7, target.batches
    assert breaker is BreakerState.CLOSED
    finds = target.inner.calls.get("find", 0)
    assert finds == 0 if mode == "refuse" else finds > 0  # after a crash: looked up first


def test_a_connector_failing_on_everything_parks_nothing_and_looks_up_before_each_retry(
    sqlite_url: str,
) -> None:
    source = MemorySystem(name="crm")
    target = PickyTarget(MemorySystem(name="erp"), mode="broken")
    for i in range(20):
        source.put("Record", f"r{i}", {"name": f"n{i}"})
    hub = make_hub(sqlite_url, source, target)  # type: ignore[arg-type]
    try:
        hub.worker.poll_all()
        for _ in range(5):
            hub.worker.run_once()
        stats = hub.operations.stats()
        exceptions = hub.operations.list_exceptions("open", 10)
    finally:
        hub.close()
    assert exceptions == []  # not the records' fault: retried until the deadline, not parked
    assert set(stats.commands_by_status) <= {"pending", "in_flight"}
    assert target.inner.effects == []
    assert target.inner.calls.get("find", 0) >= 2  # looked up after each failed attempt
