"""Property-based tests of ordering and dedupe (hypothesis)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closeloop.domain.changes import Change, version_sort_key
from closeloop.sandboxes.faults import FaultPlan
from tests.conftest import make_hub
from tests.memory_system import MemorySystem


@given(st.lists(st.integers(-(10**12), 10**12), min_size=2, max_size=20))
def test_integer_versions_sort_numerically(values: list[int]) -> None:
    assert sorted(map(str, values), key=version_sort_key) == [str(v) for v in sorted(values)]


@given(st.datetimes(timezones=st.just(UTC)), st.integers(1, 10**6))
def test_instant_versions_sort_in_time_whatever_their_zone_spelling(
    moment: datetime, seconds: int
) -> None:
    later = moment + timedelta(seconds=seconds)
    shifted = later.astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert version_sort_key(moment.isoformat().replace("+00:00", "Z")) < version_sort_key(shifted)


deliveries = st.lists(
    st.tuples(st.integers(0, 4), st.integers(1, 6)),  # (record, version)
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries=deliveries, seed=st.integers(0, 10_000), batch=st.integers(1, 7))
def test_any_delivery_order_with_repeats_and_faults_gives_ordered_exactly_once_effects(
    deliveries: list[tuple[int, int]], seed: int, batch: int
) -> None:
    """Changes arrive in any order, repeated, in batches, while the target fails at random:
    each (record, version) accepted is written at most once, the versions written for a record
    only go up, and the newest version delivered for each record is the one the target holds."""
    source = MemorySystem(name="crm")
    target = MemorySystem(
        name="erp",
        faults=FaultPlan(
            rate_limited=0.1, server_error=0.1, timeout=0.1, lost_response=0.2, seed=seed
        ),
    )
    with tempfile.TemporaryDirectory() as folder:
        hub = make_hub(f"sqlite:///{Path(folder) / 'p.db'}", source, target)
        try:
            for start in range(0, len(deliveries), batch):
                hub.intake.accept(
                    [
                        Change(
                            system="crm",
                            object="Record",
                            external_id=f"r{r}",
                            version=str(v),
                            payload={"name": f"r{r}", "v": v},
                        )
                        for r, v in deliveries[start : start + batch]
                    ]
                )
                hub.worker.run_once()
            assert hub.worker.run_until_idle(60)
        finally:
            hub.close()
    keys = [e.idempotency_key for e in target.effects]
    assert len(keys) == len(set(keys))
    written: dict[str, list[int]] = {}
    for effect in target.effects:
        written.setdefault(effect.entity, []).append(effect.data["v"])
    for versions in written.values():
        assert versions == sorted(set(versions))
    newest_per_record = {f"r{r}": 0 for r, _ in deliveries}
    for r, v in deliveries:
        newest_per_record[f"r{r}"] = max(newest_per_record[f"r{r}"], v)
    # a version older than one already applied is stale and skipped; every newer one is
    # applied: so the target ends up holding each record's newest delivered version
    held = sorted(d["v"] for d in target.targets.values())
    assert sorted(newest_per_record.values()) == held
