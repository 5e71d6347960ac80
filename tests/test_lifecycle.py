"""Lifecycle state machines: every allowed transition works, every other one is refused."""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.domain.lifecycle import (
    BILLABLE_ITEM,
    ENGAGEMENT,
    INVOICE,
    BillableItemState,
    EngagementState,
    IllegalTransitionError,
    InvoiceState,
    StateMachine,
)

MACHINES: list[tuple[StateMachine[Any], type[StrEnum]]] = [
    (ENGAGEMENT, EngagementState),
    (BILLABLE_ITEM, BillableItemState),
    (INVOICE, InvoiceState),
]


@pytest.mark.parametrize(("machine", "states"), MACHINES)
def test_every_state_is_described(machine: StateMachine[Any], states: type[StrEnum]) -> None:
    assert set(machine.transitions) == set(states)


@pytest.mark.parametrize(("machine", "states"), MACHINES)
def test_transitions_follow_the_table_exactly(
    machine: StateMachine[Any], states: type[StrEnum]
) -> None:
    for current in states:
        for target in states:
            allowed = current == target or target in machine.transitions[current]
            if allowed:
                assert machine.transition(current, target) is target
            else:
                with pytest.raises(IllegalTransitionError) as info:
                    machine.transition(current, target)
                assert f"from {current.value} to {target.value}" in str(info.value)


@given(data=st.data())
def test_random_walks_only_take_allowed_steps(data: st.DataObject) -> None:
    machine, states = data.draw(st.sampled_from(MACHINES))
    state = data.draw(st.sampled_from(list(states)))
    for _ in range(20):
        options = sorted(machine.allowed(state))
        if not options:
            assert machine.is_final(state)
            break
        state = machine.transition(state, data.draw(st.sampled_from(options)))


def test_the_project_to_cash_paths() -> None:
    e = EngagementState
    path = [
        e.WON,
        e.VALIDATED,
        e.CUSTOMER_RESOLVED,
        e.PROJECT_PROVISIONAL,
        e.PROJECT_PROVISIONED,
        e.ACTIVE,
        e.CLOSED,
    ]
    for a, b in itertools.pairwise(path):
        assert ENGAGEMENT.can(a, b)
    assert not ENGAGEMENT.can(e.CLOSED, e.ACTIVE)  # closed projects never reopen by themselves
    assert ENGAGEMENT.can(e.PROJECT_PROVISIONAL, e.CLOSED)  # lost before billing: compensation
    b = BillableItemState
    assert BILLABLE_ITEM.can(b.ON_HOLD, b.ELIGIBLE)  # finance approval arrived
    assert not BILLABLE_ITEM.can(b.ON_HOLD, b.INVOICED)  # held time is never billed directly
    assert not BILLABLE_ITEM.can(b.INVOICED, b.ELIGIBLE)  # no billing twice
    i = InvoiceState
    assert INVOICE.is_final(i.CREDITED) and INVOICE.is_final(i.VOIDED)
    with pytest.raises(IllegalTransitionError, match="allowed from paid: credited"):
        INVOICE.transition(i.PAID, i.DRAFT)
