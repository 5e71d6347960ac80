"""Lifecycle state machines: an illegal transition is an error, never a silent overwrite."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from closeloop.domain.errors import InputError

S = TypeVar("S", bound=StrEnum)


class IllegalTransitionError(InputError):
    """A state change the lifecycle does not allow; names the machine, both states, the way out."""


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """Allowed transitions of one lifecycle. ``transitions[a]`` lists the states ``a`` may go to."""

    name: str
    transitions: Mapping[S, frozenset[S]]

    def allowed(self, current: S) -> frozenset[S]:
        """States reachable from ``current`` in one step."""
        return self.transitions.get(current, frozenset())

    def can(self, current: S, target: S) -> bool:
        """Whether ``current -> target`` is allowed (staying put always is)."""
        return current == target or target in self.allowed(current)

    def transition(self, current: S, target: S) -> S:
        """``target`` when allowed; raises :class:`IllegalTransitionError` otherwise."""
        if not self.can(current, target):
            options = ", ".join(sorted(s.value for s in self.allowed(current))) or "none (final)"
            raise IllegalTransitionError(
                f"{self.name}: cannot go from {current.value} to {target.value}; "
                f"allowed from {current.value}: {options}"
            )
        return target

    def is_final(self, state: S) -> bool:
        """No transition leaves ``state``."""
        return not self.allowed(state)


def _machine(name: str, edges: dict[S, set[S]]) -> StateMachine[S]:
    return StateMachine(name, {state: frozenset(targets) for state, targets in edges.items()})


class EngagementState(StrEnum):
    """Mobilization of a closed-won engagement, from the won deal to an active project."""

    WON = "won"
    VALIDATED = "validated"
    CUSTOMER_RESOLVED = "customer_resolved"
    PROJECT_PROVISIONAL = "project_provisional"
    PROJECT_PROVISIONED = "project_provisioned"
    ACTIVE = "active"
    CLOSED = "closed"


_E = EngagementState
ENGAGEMENT = _machine(
    "engagement mobilization",
    {
        _E.WON: {_E.VALIDATED, _E.CLOSED},
        _E.VALIDATED: {_E.WON, _E.CUSTOMER_RESOLVED, _E.CLOSED},
        _E.CUSTOMER_RESOLVED: {_E.PROJECT_PROVISIONAL, _E.PROJECT_PROVISIONED, _E.CLOSED},
        # provisional: finance approval pending; billable time is held, not billed
        _E.PROJECT_PROVISIONAL: {_E.PROJECT_PROVISIONED, _E.CLOSED},
        _E.PROJECT_PROVISIONED: {_E.ACTIVE, _E.CLOSED},
        _E.ACTIVE: {_E.CLOSED},
        _E.CLOSED: set(),
    },
)
"""won -> validated -> customer resolved -> project provisional or provisioned -> active ->
closed; any state but closed may close (deal reopened or lost: compensation); a validated
deal whose data changes goes back to won to be validated again."""


class BillableItemState(StrEnum):
    """A billable item (time entry, expense, milestone) on its way to cash."""

    CAPTURED = "captured"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    ELIGIBLE = "eligible"
    INVOICED = "invoiced"
    PAID = "paid"
    ON_HOLD = "on_hold"
    EXCLUDED = "excluded"
    CREDITED = "credited"


_B = BillableItemState
BILLABLE_ITEM = _machine(
    "billable item",
    {
        _B.CAPTURED: {_B.SUBMITTED, _B.EXCLUDED},
        _B.SUBMITTED: {_B.APPROVED, _B.CAPTURED, _B.EXCLUDED},  # rejected: back to the consultant
        _B.APPROVED: {_B.ELIGIBLE, _B.ON_HOLD, _B.EXCLUDED},
        _B.ELIGIBLE: {_B.INVOICED, _B.ON_HOLD, _B.EXCLUDED},
        _B.ON_HOLD: {_B.ELIGIBLE, _B.EXCLUDED},  # e.g. finance approval arrives
        _B.INVOICED: {_B.PAID, _B.CREDITED},
        _B.PAID: {_B.CREDITED},
        _B.EXCLUDED: set(),
        _B.CREDITED: set(),
    },
)
"""captured -> submitted -> approved -> eligible -> invoiced -> paid; held items wait on hold;
written-off items are excluded; a credit note credits invoiced or paid items."""


class InvoiceState(StrEnum):
    """An invoice in the ERP."""

    DRAFT = "draft"
    POSTED = "posted"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOIDED = "voided"
    CREDITED = "credited"


_I = InvoiceState
INVOICE = _machine(
    "invoice",
    {
        _I.DRAFT: {_I.POSTED, _I.VOIDED},
        _I.POSTED: {_I.PARTIALLY_PAID, _I.PAID, _I.CREDITED, _I.VOIDED},
        _I.PARTIALLY_PAID: {_I.PAID, _I.CREDITED},
        _I.PAID: {_I.CREDITED},
        _I.VOIDED: set(),
        _I.CREDITED: set(),
    },
)
"""draft -> posted -> partially paid -> paid; a draft or an unpaid posted invoice may be
voided (cancelled); a posted, partially paid or paid one is credited by a credit note."""
