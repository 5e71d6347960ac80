"""What the alerts evaluator keeps between evaluations, and the port that keeps it.

A *condition* is something an operator should hear about once (``open_exceptions``,
``sla:revenue``, ``breaker:harvest``, ``quota:salesforce``, ``drift``), not once per
exception: its row says whether it is firing, since when, when it was last notified and
which channels still owe that notification (a failed send is retried on the next
evaluation). *Claims* are named rows that at most one hub holds at a time (the evaluator's
lease) or that record a slot done (the day's digest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AlertState:
    """One condition as stored. ``key``: the condition key (``<rule>`` or ``<rule>:<what>``);
    ``rule``: the rule that raised it; ``summary``: one line a person reads; ``detail``: the
    structured figures (JSON-able); ``firing``; ``since``: when it last started firing;
    ``seen_at``: the last evaluation that saw it firing; ``sent_at``: when a notification of
    it last went out (any channel), ``None`` before; ``owed``: channel names still owing the
    current notification; ``cleared_at``: when it last stopped firing. Datetimes aware UTC."""

    key: str
    rule: str
    summary: str
    detail: dict[str, Any]
    firing: bool
    since: datetime
    seen_at: datetime
    sent_at: datetime | None = None
    owed: tuple[str, ...] = ()
    cleared_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A named claim: ``holder`` keeps it until ``until``; ``slot`` is the last slot done
    (e.g. the day's digest time) and ``owed`` the channels that still owe it."""

    name: str
    holder: str
    until: datetime
    slot: datetime | None = None
    owed: tuple[str, ...] = field(default=())


class AlertStore(Protocol):
    """The alert state on the hub's database, shared by every hub process."""

    def claim(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """Take (or keep) the claim ``name`` for ``holder`` until ``until``: ``True`` when
        no one else holds it at ``now``. Atomic across processes."""
        ...

    def get_claim(self, name: str) -> Claim | None:
        """The claim ``name`` as stored, or ``None``."""
        ...

    def set_claim_slot(self, name: str, slot: datetime | None, owed: Sequence[str]) -> None:
        """Record ``slot`` done on the claim ``name`` (made when missing) with the channels
        still ``owed``."""
        ...

    def states(self) -> list[AlertState]:
        """Every condition ever raised, firing first, then by key."""
        ...

    def save_states(self, states: Sequence[AlertState]) -> None:
        """Insert or replace these conditions (by key), in one transaction."""
        ...
