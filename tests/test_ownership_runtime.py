"""Field ownership enforced when changes are applied: a later version's change to a field
its system does not own reaches no flow; it is audited as drift and counted. A record's
first version is taken whole."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from closeloop.domain.changes import Change
from closeloop.domain.records import CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.engine.apply import Applier
from closeloop.engine.metrics import EngineMetrics
from closeloop.engine.registry import Registry
from closeloop.mdm.ownership import OwnershipPolicy
from closeloop.ports.flows import Binding
from closeloop.store import migrate
from closeloop.store.sql import SqlStore
from tests.test_flow_runtime import FixedClock

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


class Recorder:
    """A fake flow keeping every record's data it is offered."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def business_key(self, record: CanonicalRecord) -> str | None:
        return f"account:{record.source[2]}"

    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        self.seen.append(dict(record.data))
        return FlowStep("seen", {})

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        return None

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        return None

    def on_result(self, state: FlowState, operation: str, entity: str, outcome: Any) -> None:
        return None


@pytest.fixture
def store(tmp_path: Any) -> Iterator[SqlStore]:
    s = SqlStore.from_url(f"sqlite:///{tmp_path / 'hub.db'}")
    migrate.upgrade(s.engine)
    yield s
    s.close()


def test_a_non_owners_change_is_kept_out_and_recorded_as_drift(store: SqlStore) -> None:
    policy = OwnershipPolicy({"account": {"legal_name": "erp", "tax_ids": "tryton"}})
    role_of = {"salesforce": "crm", "tryton": "erp"}
    foreign = policy.foreign_fields("account", "salesforce", role_of)
    assert foreign == {"legal_name", "tax_ids"}
    assert policy.foreign_fields("account", "tryton", role_of) == frozenset()
    flow = Recorder()
    binding = Binding(
        "salesforce", "Account", "account", lambda c: dict(c.payload), (flow,), foreign
    )
    metrics = EngineMetrics()
    applier = Applier(store, Registry(bindings=[binding]), FixedClock(NOW), metrics)

    def version(n: int, **payload: Any) -> None:
        change = Change(
            system="salesforce",
            object="Account",
            external_id="001A",
            version=str(n),
            payload=payload,
        )
        with store.transaction() as tx:
            tx.insert_changes([change], NOW)
        applier.apply_batch()

    version(1, legal_name="Acme GmbH", tax_ids=["DE1"], phone="1")
    version(2, legal_name="Acme Holding", tax_ids=["DE1"], phone="2")
    version(3, legal_name="Acme Holding", tax_ids=["DE1"], phone="2")
    assert flow.seen == [
        {"legal_name": "Acme GmbH", "tax_ids": ["DE1"], "phone": "1"},  # first: whole
        {"legal_name": "Acme GmbH", "tax_ids": ["DE1"], "phone": "2"},  # owned field kept
    ]
    with store.transaction() as tx:
        drift = [a for a in tx.list_audit("salesforce:Account:001A", 10) if a.action == "drift"]
        statuses = tx.stats().inbox_by_status
    assert len(drift) == 2 and drift[-1].actor == "salesforce"
    assert drift[-1].detail["refused"] == {"legal_name": "Acme Holding"}
    assert drift[-1].detail["kept"] == {"legal_name": "Acme GmbH"}
    assert statuses == {"applied": 2, "unchanged": 1}
    refused = metrics.registry.get_sample_value(
        "closeloop_ownership_refused_total",
        {"system": "salesforce", "canonical_type": "account", "field": "legal_name"},
    )
    assert refused == 2
